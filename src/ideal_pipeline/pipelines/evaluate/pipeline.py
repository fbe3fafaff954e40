from kedro.pipeline import Pipeline, node

from ideal_pipeline.pipelines.evaluate.nodes import plot_accuracy_curve, plot_synthetic_grid, score_students, summarize_metrics
from ideal_pipeline.pipelines.ideal.pipeline import pool_datasets, student_dataset, summary_dataset


def create_pipeline(rounds: int = 1, **kwargs) -> Pipeline:
    per_round = [name for r in range(1, rounds + 1) for name in (student_dataset(r), summary_dataset(r))]
    return Pipeline(
        [
            node(
                score_students,
                ["real_test", "teacher_test_predictions", "teacher_api", "params:ideal", "params:evaluate", *per_round],
                "accuracy_vs_queries",
                name="score_students",
            ),
            node(
                summarize_metrics,
                ["accuracy_vs_queries", "redistilled_student", "real_test", "teacher_test_predictions", "teacher_metrics",
                 summary_dataset(rounds), "teacher_api", "params:ideal", "params:evaluate"],
                "ideal_metrics",
                name="summarize_metrics",
            ),  # fmt: skip
            node(plot_accuracy_curve, ["accuracy_vs_queries", "ideal_metrics"], "accuracy_vs_queries_plot", name="plot_accuracy_curve"),
            node(
                plot_synthetic_grid,
                ["teacher_api", "params:evaluate", *pool_datasets(rounds)],
                "synthetic_grid_plot",
                name="plot_synthetic_grid",
            ),
        ]
    )
