"""Project hooks: pipelines shaped by the run's parameters, and where a run's time goes."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from pathlib import Path

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)
TIMING_DIR = Path("data/08_reporting/timing")


class PipelineShapeHook:
    """Checks the run's parameters against the schema, then builds the pipelines for them
    (rounds, baselines) before Kedro reads them.

    The parameters (environment and `--params` included) are known once the context exists;
    when they change the pipelines' shape, the registry is configured again through Kedro's
    public API so the next read of `pipelines` builds them anew.
    """

    @hook_impl
    def after_context_created(self, context) -> None:
        from kedro.framework.project import PACKAGE_NAME, pipelines

        from ideal_pipeline import pipeline_registry
        from ideal_pipeline.parameter_schema import validate_parameters

        # The raw parameters (runtime `--params` merged in): `context.params` would validate them
        # against the pipelines, i.e. build the pipelines before their shape is known.
        params = context.config_loader["parameters"]
        validate_parameters(params)  # before any work or query: a typo must not run under a default
        if pipeline_registry.use_parameters(params):
            pipelines.configure(f"{PACKAGE_NAME}.pipeline_registry")


def step_name(node_name: str) -> str:
    """`ideal.round_007.train_generator` -> `ideal.train_generator`: one entry per step, summed over rounds."""
    parts = node_name.split(".")
    return ".".join(part for part in parts if not part.startswith("round_"))


class NodeTimingHook:
    """Seconds per step of each stage, and the run's Kedro overhead (wall time outside the nodes).

    Writes `data/08_reporting/timing/<stage>.json` ({step: seconds}, DVC metrics of that stage) and
    `timing/kedro_run.json` (the last run: wall, node and overhead seconds).
    """

    def __init__(self):
        self._project = Path.cwd()
        self._started: dict[str, float] = {}
        self._seconds: dict[str, float] = {}
        self._run_started = 0.0

    @hook_impl
    def after_context_created(self, context) -> None:
        self._project = Path(context.project_path)

    @hook_impl
    def before_pipeline_run(self) -> None:
        self._run_started = time.perf_counter()
        self._seconds.clear()

    @hook_impl
    def before_node_run(self, node) -> None:
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node) -> None:
        self._seconds[node.name] = time.perf_counter() - self._started.pop(node.name)

    @hook_impl
    def after_pipeline_run(self) -> None:
        from kedro.framework.project import pipelines

        from ideal_pipeline.pipeline_registry import DEFAULT_PIPELINES

        wall = time.perf_counter() - self._run_started
        stage_of = {n.name: stage for stage in DEFAULT_PIPELINES for n in pipelines[stage].nodes}
        by_stage: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for name, seconds in self._seconds.items():
            by_stage[stage_of.get(name, "other")][step_name(name)] += seconds
        folder = self._project / TIMING_DIR
        folder.mkdir(parents=True, exist_ok=True)
        for stage, steps in by_stage.items():
            (folder / f"{stage}.json").write_text(
                json.dumps({k: round(v, 3) for k, v in sorted(steps.items())}, indent=1)
            )
        nodes = sum(self._seconds.values())
        run = {
            "wall_seconds": round(wall, 3),
            "node_seconds": round(nodes, 3),
            "kedro_overhead_seconds": round(wall - nodes, 3),
            "stages": {stage: round(sum(steps.values()), 3) for stage, steps in by_stage.items()},
        }
        (folder / "kedro_run.json").write_text(json.dumps(run, indent=1))
        logger.info(
            "run took %.0f s: nodes %.0f s, Kedro overhead %.1f s (%s)",
            wall,
            nodes,
            wall - nodes,
            ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in run["stages"].items()),
        )
