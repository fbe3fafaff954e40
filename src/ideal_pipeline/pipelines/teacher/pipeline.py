from kedro.pipeline import Pipeline, node

from ideal_pipeline.pipelines.teacher.nodes import evaluate_victim_teacher, publish_teacher_api, train_victim_teacher


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                train_victim_teacher,
                ["real_train", "params:teacher"],
                ["victim_teacher", "teacher_training_log"],
                name="train_victim_teacher",
            ),
            node(
                evaluate_victim_teacher,
                ["victim_teacher", "real_test", "params:teacher"],
                ["teacher_test_predictions", "teacher_metrics"],
                name="evaluate_victim_teacher",
            ),
            node(
                publish_teacher_api,
                ["victim_teacher", "real_test", "params:teacher"],
                "teacher_api",
                name="publish_teacher_api",
            ),
        ]
    )
