from kedro.pipeline import Pipeline, node

from ideal_pipeline.pipelines.evaluate.nodes import (
    plot_accuracy_curve,
    plot_class_coverage,
    plot_synthetic_grid,
    summarize_metrics,
)
from ideal_pipeline.rounds.pipeline import IDEAL, round_dataset, score_round_students


def create_pipeline(rounds: int = 1, **kwargs) -> Pipeline:
    final_summary = round_dataset(IDEAL, rounds, "pool_summary")
    return Pipeline(
        [
            score_round_students(IDEAL, rounds),
            node(
                summarize_metrics,
                [
                    f"{IDEAL}.accuracy_vs_queries",
                    "redistilled_student",
                    final_summary,
                    "real_validation",
                    "real_test",
                    "teacher_test_predictions",
                    "teacher_metrics",
                    "teacher_api",
                    "params:ideal.student",
                    "params:ideal.batch_size",
                    "params:compute",
                ],
                "ideal_metrics",
                name="summarize_metrics",
            ),
            node(
                plot_accuracy_curve,
                [f"{IDEAL}.accuracy_vs_queries", "ideal_metrics"],
                "accuracy_vs_queries_plot",
                name="plot_accuracy_curve",
            ),
            node(
                plot_class_coverage,
                [f"{IDEAL}.pool_summaries", final_summary, "teacher_api"],
                "class_coverage_plot",
                name="plot_class_coverage",
            ),
            node(
                plot_synthetic_grid,
                [f"{IDEAL}.labelled_pool", final_summary, "teacher_api", "params:evaluate"],
                "synthetic_grid_plot",
                name="plot_synthetic_grid",
            ),
        ],
        namespace="evaluate",  # one box in kedro-viz; dataset names stay as they are
        prefix_datasets_with_namespace=False,
    )
