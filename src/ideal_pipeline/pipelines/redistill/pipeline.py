from kedro.pipeline import Pipeline, node

from ideal_pipeline.pipelines.redistill.nodes import redistill_student
from ideal_pipeline.rounds.pipeline import IDEAL, round_dataset


def create_pipeline(rounds: int = 1, **kwargs) -> Pipeline:
    """A student trained on IDEAL's whole labelled pool after the last round: zero queries."""
    return Pipeline(
        [
            node(
                redistill_student,
                [
                    round_dataset(IDEAL, rounds, "student"),
                    round_dataset(IDEAL, rounds, "pool_summary"),
                    f"{IDEAL}.labelled_pool",
                    "teacher_api",
                    "params:redistill",
                    "params:ideal.student",
                    "params:compute",
                ],
                ["redistilled_student", "redistill_log"],
                name="redistill_student",
            )
        ],
        namespace="redistill",  # one box in kedro-viz; dataset names stay as they are
        prefix_datasets_with_namespace=False,
    )
