"""Query-matched baselines, built by IDEAL's own round factory: only the image source differs.

`baselines.methods` (a parameter) picks which run; each gets its own namespace
(`baselines.uniform_noise`, ...), artifacts and ledger, so no method shares labels or budget.
Only `real_data`, the upper bound, reads real training images.
"""

from kedro.pipeline import Pipeline, node

from ideal_pipeline.pipelines.baselines.nodes import collect_baselines
from ideal_pipeline.pipelines.evaluate.nodes import summarize_baseline
from ideal_pipeline.pipelines.evaluate.pipeline import score_round_students
from ideal_pipeline.pipelines.ideal.pipeline import BASELINES, create_method_pipeline, method_namespace, round_dataset


def method_list(methods: list[str] | str | None) -> tuple[str, ...]:
    """`baselines.methods` as a list (YAML, `dvc exp run -S`) or a `+`-joined string (`kedro run --params`,
    whose values cannot hold commas): `uniform_noise+real_data`."""
    names = methods.split("+") if isinstance(methods, str) else list(methods or [])
    names = [name.strip() for name in names if name.strip()]
    unknown = [name for name in names if name not in BASELINES]
    if unknown:
        raise ValueError(f"baselines.methods: unknown method(s) {unknown}; choose from {list(BASELINES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"baselines.methods lists a method twice: {names}")
    return tuple(names)


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
        collect_baselines,
        [f"{method_namespace(m)}.metrics" for m in methods],
        ["baselines_metrics", "baselines_index", "baselines_paid_labels_index"],
        name="collect_baselines",
    )
    parts = [Pipeline([create_method_pipeline(m, rounds), _scoring(m, rounds)]) for m in methods]
    return Pipeline([*parts, Pipeline([collect], namespace="baselines", prefix_datasets_with_namespace=False)])
