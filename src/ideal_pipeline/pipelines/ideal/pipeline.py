"""The rounds of a method, one nested namespace each: `ideal.round_001` ... `ideal.round_E`.

One factory builds IDEAL and its query-matched baselines. Every method's round is the same
three steps, an image source, `label_with_teacher` and `distill_student`; only the image source
differs (IDEAL: `train_generator` + `materialize_synthetic` against the current student). Each
method lives in its own namespace, so it has its own artifacts and its own query ledger, and
kedro-viz folds it into one box (expand it for the rounds, expand a round for its stages).
"""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node

from ideal_pipeline.pipelines.ideal import nodes

IDEAL = "ideal"
BASELINES = ("uniform_noise", "gaussian_noise", "untrained_generator", "real_data")
METHODS = (IDEAL, *BASELINES)

# The run-wide inputs every round reads; namespaces leave them unprefixed.
SHARED_INPUTS = ("teacher_api", "real_train")


def method_namespace(method: str) -> str:
    """`ideal` for IDEAL; baselines are grouped under `baselines` (their own catalog folders)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    return IDEAL if method == IDEAL else f"baselines.{method}"


def round_dataset(namespace: str, round_index: int, name: str) -> str:
    """e.g. `ideal.round_007.student`: every artifact of a round lives under its namespace.

    Round 0 is the start of the chain: `ideal.initial_student`, `ideal.initial_pool_summary`.
    """
    if round_index == 0:
        return f"{namespace}.initial_{name}"
    return f"{namespace}.round_{round_index:03d}.{name}"


def _materialize_synthetic():
    """The generator's images as stored uint8 samples (and their mirrors): IDEAL's and the untrained generator's."""
    return node(
        nodes.materialize_synthetic,
        ["generator", "teacher_api", "params:ideal.generator", "params:ideal.label_mirrors", "params:compute"],
        "synthetic_images",
        name="materialize_synthetic",
    )


def _image_source(method: str, reinitialize: bool, round_index: int) -> list:
    """Nodes that make the round's `synthetic_images` (and an `image_source_log`)."""
    previous = ["previous_student", "previous_pool_summary"]
    if method == IDEAL:
        # The previous round's generator is read only when it is continued (an ablation).
        continued = ["previous_generator"] if not reinitialize and round_index > 1 else []
        return [
            node(
                nodes.train_generator,
                [
                    *previous,
                    "teacher_api",
                    "params:ideal.generator",
                    "params:ideal.student",
                    "params:ideal.batch_size",
                    "params:ideal.seed",
                    "params:compute",
                    *continued,
                ],
                ["generator", "image_source_log"],
                name="train_generator",
            ),
            _materialize_synthetic(),
        ]
    plan = ["previous_pool_summary", "params:ideal.batch_size", "params:ideal.label_mirrors", "params:ideal.seed"]
    if method == "untrained_generator":
        return [
            node(
                nodes.initialize_generator,
                [
                    "previous_pool_summary",
                    "teacher_api",
                    "params:ideal.generator",
                    "params:ideal.batch_size",
                    "params:ideal.seed",
                ],
                ["generator", "image_source_log"],
                name="initialize_generator",
            ),
            _materialize_synthetic(),
        ]
    if method == "real_data":
        return [
            node(
                nodes.sample_real_images,
                ["real_train", *plan],
                ["synthetic_images", "image_source_log"],
                name="sample_real_images",
            )
        ]
    draw = nodes.draw_uniform_noise if method == "uniform_noise" else nodes.draw_gaussian_noise
    return [node(draw, ["teacher_api", *plan], ["synthetic_images", "image_source_log"], name=draw.__name__)]


def _round(namespace: str, method: str, reinitialize: bool, round_index: int) -> Pipeline:
    """Round r of a method: names without a dot get the round's namespace."""
    previous = {
        "previous_student": round_dataset(namespace, round_index - 1, "student"),
        "previous_pool_summary": round_dataset(namespace, round_index - 1, "pool_summary"),
        "previous_generator": round_dataset(namespace, round_index - 1, "generator"),
    }
    steps = [
        *_image_source(method, reinitialize, round_index),
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
    method_level = {
        "paid_labels": f"{namespace}.paid_labels",
        "labelled_pool": f"{namespace}.labelled_pool",
    }
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


def create_method_pipeline(method: str, rounds: int, reinitialize: bool = True) -> Pipeline:
    """Round 0 (budget check, initial student) and rounds 1..E of one method, in its namespace."""
    namespace = method_namespace(method)
    if rounds < 1:
        raise ValueError(f"ideal.rounds must be >= 1, got {rounds}")
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
            *[_round(namespace, method, reinitialize, r) for r in range(1, rounds + 1)],
        ]
    )


def create_pipeline(rounds: int = 1, reinitialize: bool = True, **kwargs) -> Pipeline:
    """IDEAL itself: the default graph, with no edge from real training data."""
    return create_method_pipeline(IDEAL, rounds, reinitialize)
