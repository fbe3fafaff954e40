"""One namespaced sub-pipeline per round (`round_001`, ...), chained through the student.

Each round is its own Kedro namespace, so kedro-viz collapses it into one box and a single
stage reruns with `kedro run --nodes round_007.distill_student`.
"""

from kedro.pipeline import Pipeline, node

from ideal_pipeline.pipelines.ideal.nodes import (
    distill_student,
    initialize_student,
    label_with_teacher,
    materialize_synthetic,
    train_round_generator,
)


def round_namespace(round_index: int) -> str:
    return f"round_{round_index:03d}"


def student_dataset(round_index: int) -> str:
    return f"student_{round_index:03d}"


def summary_dataset(round_index: int) -> str:
    return f"pool_summary_{round_index:03d}"


def pool_datasets(rounds: int) -> list[str]:
    """Images and teacher labels of rounds 1..`rounds`, interleaved: the labelled pool."""
    names = []
    for r in range(1, rounds + 1):
        names += [f"{round_namespace(r)}.synthetic_images", f"{round_namespace(r)}.teacher_labels"]
    return names


def _round(r: int) -> Pipeline:
    """Round r's four nodes; names without a dot get the round's namespace."""
    previous = [student_dataset(r - 1), summary_dataset(r - 1)]
    earlier_pool = pool_datasets(r - 1)
    # Used only with generator.reinitialize false; round r already depends on round r-1 through
    # the student, so the edge changes no order.
    previous_generator = [f"{round_namespace(r - 1)}.generator"] if r > 1 else []
    return Pipeline(
        [
            node(
                train_round_generator,
                [*previous, "teacher_api", "params:ideal", *previous_generator],
                ["generator", "generator_log"],
                name="train_generator",
            ),
            node(materialize_synthetic, ["generator", "teacher_api", "params:ideal"], "synthetic_images", name="materialize_synthetic"),
            node(
                label_with_teacher,
                ["synthetic_images", "teacher_api", "teacher_query_ledger", "params:ideal"],
                ["teacher_labels", "labelling_receipt"],
                name="label_with_teacher",
            ),
            node(
                distill_student,
                [*previous, "generator_log", "labelling_receipt", "teacher_api", "params:ideal",
                 *earlier_pool, "synthetic_images", "teacher_labels"],
                [student_dataset(r), summary_dataset(r)],
                name="distill_student",
            ),  # fmt: skip
        ],
        namespace=round_namespace(r),
        inputs={*previous, "teacher_api", "teacher_query_ledger", *earlier_pool, *previous_generator},
        outputs={student_dataset(r), summary_dataset(r)},
        parameters={"params:ideal"},
    )


def create_pipeline(rounds: int = 1, **kwargs) -> Pipeline:
    start = node(
        initialize_student,
        ["teacher_api", "params:ideal"],
        [student_dataset(0), summary_dataset(0)],
        name="initialize_student",
    )
    return Pipeline([Pipeline([start]), *[_round(r) for r in range(1, rounds + 1)]])
