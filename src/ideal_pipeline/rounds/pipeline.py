"""The rounds of a method, one nested namespace each: `ideal.round_001` ... `ideal.round_E`.

One factory builds IDEAL and its query-matched baselines. Every method's round is the same
three steps: an image source (given by the method's own pipeline: IDEAL's `train_generator` +
`materialize_synthetic`, a baseline's noise or real images), `label_with_teacher` and
`distill_student`. Each method lives in its own namespace, so it has its own artifacts and its
own budget, and kedro-viz folds it into one box (expand it for the rounds, a round for its steps).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node

from ideal_pipeline.parameter_schema import BASELINES
from ideal_pipeline.rounds import nodes, scoring

IDEAL = "ideal"
METHODS = (IDEAL, *BASELINES)
# The run-wide inputs every round reads; namespaces leave them unprefixed.
SHARED_INPUTS = ("teacher_api", "real_train")
# An image source: the round's index -> the nodes that write `synthetic_images` and `image_source_log`.
ImageSource = Callable[[int], list]


def method_namespace(method: str) -> str:
    """`ideal` for IDEAL; baselines are grouped under `baselines` (their own catalog folders)."""
    return IDEAL if method == IDEAL else f"baselines.{method}"


def round_dataset(namespace: str, round_index: int, name: str) -> str:
    """e.g. `ideal.round_007.student`: every artifact of a round lives under its namespace.

    Round 0 is the start of the chain: `ideal.initial_student`, `ideal.initial_pool_summary`.
    """
    if round_index == 0:
        return f"{namespace}.initial_{name}"
    return f"{namespace}.round_{round_index:03d}.{name}"


def materialize_synthetic_node():
    """The generator's images as stored uint8 samples (and their mirrors): IDEAL's and the untrained generator's."""
    return node(
        nodes.materialize_synthetic,
        ["generator", "teacher_api", "params:ideal.generator", "params:ideal.label_mirrors", "params:compute"],
        "synthetic_images",
        name="materialize_synthetic",
    )


def _round(namespace: str, image_source: ImageSource, round_index: int) -> Pipeline:
    """Round r of a method: names without a dot get the round's namespace."""
    previous = {
        "previous_student": round_dataset(namespace, round_index - 1, "student"),
        "previous_pool_summary": round_dataset(namespace, round_index - 1, "pool_summary"),
        "previous_generator": round_dataset(namespace, round_index - 1, "generator"),
    }
    steps = [
        *image_source(round_index),
        node(
            nodes.label_with_teacher,
            ["synthetic_images", "previous_pool_summary", "teacher_api", "paid_labels", "params:ideal.teacher_access"],
            ["teacher_labels", "labelling_receipt"],
            name="label_with_teacher",
        ),
        node(
            nodes.distill_student,
            [
                "previous_student",
                "previous_pool_summary",
                "labelled_pool",
                "synthetic_images",
                "teacher_labels",
                "image_source_log",
                "teacher_api",
                "params:ideal.distill",
                "params:ideal.student",
                "params:ideal.rounds",
                "params:ideal.seed",
                "params:compute",
            ],
            ["student", "pool_summary"],
            name="distill_student",
        ),
    ]
    round_pipeline = Pipeline(steps)
    # The paid labels and the pool reader belong to the method, not to the round.
    method_level = {"paid_labels": f"{namespace}.paid_labels", "labelled_pool": f"{namespace}.labelled_pool"}
    used = round_pipeline.inputs()
    return Pipeline(
        [round_pipeline],
        namespace=f"{namespace}.round_{round_index:03d}",
        inputs={
            **{k: v for k, v in previous.items() if k in used},
            **method_level,
            **{name: name for name in SHARED_INPUTS if name in used},
        },
        parameters={p for p in round_pipeline.inputs() if p.startswith("params:")},
    )


def create_method_pipeline(method: str, rounds: int, image_source: ImageSource) -> Pipeline:
    """Round 0 (budget check, initial student) and rounds 1..E of one method, in its namespace."""
    namespace = method_namespace(method)
    start = Pipeline(
        [
            node(
                update_wrapper(partial(nodes.plan_queries, method), nodes.plan_queries),
                ["paid_labels", "teacher_api", "params:ideal", "params:compute"],
                "query_plan",
                name="plan_queries",
            ),
            node(
                nodes.initialize_student,
                ["query_plan", "teacher_api", "params:ideal.student", "params:ideal.seed"],
                [round_dataset(namespace, 0, "student"), round_dataset(namespace, 0, "pool_summary")],
                name="initialize_student",
            ),
        ]
    )
    return Pipeline(
        [
            Pipeline(
                [start],
                namespace=namespace,
                inputs={"teacher_api"},
                outputs={round_dataset(namespace, 0, "student"), round_dataset(namespace, 0, "pool_summary")},
                parameters={p for p in start.inputs() if p.startswith("params:")},
            ),
            *[_round(namespace, image_source, r) for r in range(1, rounds + 1)],
        ]
    )


def score_round_students(namespace: str, rounds: int) -> node:
    """The method's student after every round, on the validation split and the test set."""
    return node(
        scoring.score_students,
        [
            f"{namespace}.round_students",
            f"{namespace}.pool_summaries",
            round_dataset(namespace, rounds, "pool_summary"),
            "real_validation",
            "real_test",
            "teacher_test_predictions",
            "teacher_api",
            "params:ideal.student",
            "params:compute",
            "params:evaluate.score_every",
        ],
        f"{namespace}.accuracy_vs_queries",
        name="score_students",
    )
