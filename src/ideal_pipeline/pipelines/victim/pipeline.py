"""The model owner's side: trains the victim on real data and publishes its label-only API card.

Everything after this pipeline reaches the victim only through `teacher_api` and the counted,
label-only client in `ideal_pipeline.teacher`.
"""

from kedro.pipeline import Pipeline, node

from ideal_pipeline.pipelines.victim.nodes import evaluate_victim_teacher, publish_teacher_api, train_victim_teacher


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                train_victim_teacher,
                ["real_train", "params:victim", "params:compute"],
                ["victim_teacher", "victim_training_log"],
                name="train_victim_teacher",
            ),
            node(
                evaluate_victim_teacher,
                ["victim_teacher", "real_test"],
                ["teacher_test_predictions", "teacher_metrics"],
                name="evaluate_victim_teacher",
            ),
            node(
                publish_teacher_api,
                ["victim_teacher", "real_test", "params:victim", "params:victim_api", "real_class_names"],
                "teacher_api",
                name="publish_teacher_api",
            ),
        ],
        namespace="victim",  # one box in kedro-viz; dataset names stay as they are
        prefix_datasets_with_namespace=False,
    )
