from kedro.pipeline import Pipeline, node

from ideal_pipeline.pipelines.ideal.pipeline import pool_datasets, student_dataset
from ideal_pipeline.pipelines.redistill.nodes import redistill_student


def create_pipeline(rounds: int = 1, **kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                redistill_student,
                [student_dataset(rounds), "teacher_api", "params:redistill", "params:ideal.student", *pool_datasets(rounds)],
                ["redistilled_student", "redistill_log"],
                name="redistill_student",
            )
        ]
    )
