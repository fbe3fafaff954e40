"""Query-matched baselines, built by IDEAL's own round factory: only the image source differs.

`baselines.methods` (a parameter) picks which run; each gets its own namespace
(`baselines.uniform_noise`, ...), artifacts and budget, so no method shares labels or budget.
Only `real_data`, the upper bound, reads real training images.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from ideal_pipeline.pipelines.baselines import nodes
from ideal_pipeline.rounds.pipeline import (
    create_method_pipeline,
    materialize_synthetic_node,
    method_namespace,
    round_dataset,
    score_round_students,
)
from ideal_pipeline.rounds.scoring import summarize_baseline

_PLAN = ["previous_pool_summary", "params:ideal.batch_size", "params:ideal.label_mirrors", "params:ideal.seed"]


def method_list(methods: list[str] | str) -> tuple[str, ...]:
    """`baselines.methods` as a list (YAML, `dvc exp run -S`) or a `+`-joined string (`kedro run --params`,
    whose values cannot hold commas): `uniform_noise+real_data`."""
    names = methods.split("+") if isinstance(methods, str) else methods
    return tuple(name.strip() for name in names if name.strip())


def image_source(method: str):
    """The nodes that make a baseline's `synthetic_images` (and `image_source_log`) in each round."""
    outputs = ["synthetic_images", "image_source_log"]

    def nodes_of(_round_index: int) -> list:
        if method == "untrained_generator":
            inputs = ["previous_pool_summary", "teacher_api", "params:ideal.generator", *_PLAN[1:2], _PLAN[3]]
            initialize = node(
                nodes.initialize_generator, inputs, ["generator", "image_source_log"], name="initialize_generator"
            )
            return [initialize, materialize_synthetic_node()]
        if method == "real_data":
            return [node(nodes.sample_real_images, ["real_train", *_PLAN], outputs, name="sample_real_images")]
        draw = nodes.draw_uniform_noise if method == "uniform_noise" else nodes.draw_gaussian_noise
        return [node(draw, ["teacher_api", *_PLAN], outputs, name=draw.__name__)]

    return nodes_of


def _scoring(method: str, rounds: int) -> Pipeline:
    namespace = method_namespace(method)
    return Pipeline(
        [
            score_round_students(namespace, rounds),
            node(
                summarize_baseline,
                [f"{namespace}.accuracy_vs_queries", round_dataset(namespace, rounds, "pool_summary")],
                f"{namespace}.metrics",
                name="summarize_baseline",
            ),
        ],
        namespace=namespace,
        prefix_datasets_with_namespace=False,
    )


def create_pipeline(rounds: int = 1, methods: tuple[str, ...] = (), **kwargs) -> Pipeline:
    collect = node(
        nodes.collect_baselines,
        [f"{method_namespace(m)}.metrics" for m in methods],
        ["baselines_metrics", "baselines_index", "baselines_paid_labels_index"],
        name="collect_baselines",
    )
    parts = [Pipeline([create_method_pipeline(m, rounds, image_source(m)), _scoring(m, rounds)]) for m in methods]
    return Pipeline([*parts, Pipeline([collect], namespace="baselines", prefix_datasets_with_namespace=False)])
