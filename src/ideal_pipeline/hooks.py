"""Project hooks: pipelines shaped by the run's parameters, one run per data folder, where a run's time goes."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path

from kedro.framework.hooks import hook_impl

from ideal_pipeline import progress
from ideal_pipeline.config import DATA, check_recordable, data_root
from ideal_pipeline.run_lock import RunLock

logger = logging.getLogger(__name__)
TIMING = Path("08_reporting") / "timing"  # under the environment's data folder


class PipelineShapeHook:
    """Checks the run's parameters against the schema, then builds the pipelines for them
    (rounds, baselines) before Kedro reads them.

    The parameters (environment and `--params` included) are known once the context exists;
    when they change the pipelines' shape, the registry is configured again through Kedro's
    public API so the next read of `pipelines` builds them anew.
    """

    def __init__(self):
        self._params: dict = {}

    @hook_impl
    def before_pipeline_run(self, run_params) -> None:
        """A teacher the user names is checked before any data is loaded or any model trained."""
        from ideal_pipeline.parameter_schema import ExternalTeacherParams
        from ideal_pipeline.pipelines.external_teacher.nodes import check_external_teacher

        if {"byo", "external_teacher"} & set(run_params.get("pipeline_names") or []):
            check_external_teacher(ExternalTeacherParams.model_validate(self._params["external_teacher"]))

    @hook_impl
    def after_context_created(self, context) -> None:
        from kedro.framework.project import PACKAGE_NAME, pipelines

        from ideal_pipeline import pipeline_registry
        from ideal_pipeline.parameter_schema import validate_parameters

        # The raw parameters (runtime `--params` merged in): `context.params` would validate them
        # against the pipelines, i.e. build the pipelines before their shape is known.
        params = context.config_loader["parameters"]
        validate_parameters(params)  # before any work or query: a typo must not run under a default
        self._params = params
        if os.environ.get("DVC_STAGE"):  # a `dvc repro` / `dvc exp run` stage: dvc.lock must tell the truth
            check_recordable(Path(context.project_path), context.env, params)
        if pipeline_registry.RUN_SHAPE.use(params):
            pipelines.configure(f"{PACKAGE_NAME}.pipeline_registry")


class RunLockHook:
    """One run at a time in a project's data folder (`run_lock`); taken when a run starts, not by `kedro viz`."""

    def __init__(self):
        self._data = DATA
        self._lock: RunLock | None = None

    @hook_impl
    def after_context_created(self, context) -> None:
        self._data = Path(context.project_path) / data_root(context.env)

    @hook_impl
    def before_pipeline_run(self) -> None:
        self._lock = RunLock(self._data / ".run.lock")
        self._lock.acquire()

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class ProgressHook:
    """After each round: one line with its queries, the student's validation accuracy and the time left.

    The student is scored on the validation split every `evaluate.score_every` rounds and at the last one.
    """

    def __init__(self):
        self._catalog = None
        self._params: dict = {}
        self._methods: dict[str, progress.MethodProgress] = {}
        self._paid_now: dict[str, int] = {}
        self._node_started: dict[str, float] = {}
        self._validation = None

    @hook_impl
    def after_context_created(self, context) -> None:
        self._params = context.config_loader["parameters"]

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        self._catalog = catalog
        self._validation = None

    @hook_impl
    def before_pipeline_run(self, pipeline) -> None:
        totals: dict[str, int] = defaultdict(int)
        for node in pipeline.nodes:
            if node.name.endswith(".distill_student"):
                totals[node.name.split(".round_")[0]] += 1
        self._methods = {method: progress.MethodProgress(total) for method, total in totals.items()}

    @hook_impl
    def before_node_run(self, node) -> None:
        self._node_started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node, inputs, outputs) -> None:
        method = node.name.partition(".round_")[0]
        started = self._node_started.pop(node.name, None)
        if method in self._methods and started is not None:
            self._methods[method].seconds += time.perf_counter() - started
        if node.name.endswith(".label_with_teacher"):
            receipt = next(v for k, v in outputs.items() if k.endswith("labelling_receipt"))
            self._paid_now[method] = receipt["queries_paid_now"]
        if not node.name.endswith(".distill_student") or method not in self._methods:
            return
        state, summary = (
            next(v for k, v in outputs.items() if k.endswith(name)) for name in ("student", "pool_summary")
        )
        tracker = self._methods[method]
        tracker.done += 1
        accuracy = None
        every = self._params.get("evaluate", {}).get("score_every", 1)
        if summary["round"] % every == 0 or tracker.done == tracker.total:
            accuracy = self._accuracy(state, next(v for k, v in inputs.items() if k.endswith("teacher_api")))
        progress.logger.info(
            progress.round_line(
                method, summary, self._paid_now.pop(method, None), accuracy, progress.time_left(self._methods.values())
            )
        )

    def _accuracy(self, state, card) -> float | None:
        if self._validation is None:
            try:
                self._validation = self._catalog.load("real_validation")
            except Exception:  # noqa: BLE001 - no validation split on disk (a partial run): progress goes on without it
                self._validation = {}
        if not self._validation:
            return None
        architecture = self._params["ideal"]["student"]["architecture"]
        return progress.validation_accuracy(state, architecture, card, self._validation)


PARTIAL_RUN_OPTIONS = ("node_names", "from_nodes", "to_nodes", "from_inputs", "to_outputs", "namespaces", "tags")


def step_name(node_name: str) -> str:
    """`ideal.round_007.train_generator` -> `ideal.train_generator`: one entry per step, summed over rounds."""
    parts = node_name.split(".")
    return ".".join(part for part in parts if not part.startswith("round_"))


class NodeTimingHook:
    """Seconds per step of each stage, and the run's Kedro overhead (wall time outside the nodes).

    Writes `<data>/08_reporting/timing/<stage>.json` ({step: seconds summed over rounds}, DVC metrics
    of that stage) from a per-node record (`timing/nodes/<stage>.json`), and `timing/kedro_run.json`
    (the last whole run: wall, node and overhead seconds, and its `--params`, which the report needs to
    name the run by what it ran with, not by conf/ alone). A partial run (`--nodes`,
    `--namespaces`, ...) replaces only its own nodes' seconds and leaves the whole-run record alone.
    """

    def __init__(self):
        self._folder = DATA / TIMING
        self._started: dict[str, float] = {}
        self._seconds: dict[str, float] = {}
        self._run_started = 0.0
        self._partial = False
        self._runtime_params: dict = {}

    @hook_impl
    def after_context_created(self, context) -> None:
        self._folder = Path(context.project_path) / data_root(context.env) / TIMING

    @hook_impl
    def before_pipeline_run(self, run_params) -> None:
        self._run_started = time.perf_counter()
        self._seconds.clear()
        self._partial = any(run_params.get(key) for key in PARTIAL_RUN_OPTIONS)
        self._runtime_params = run_params.get("runtime_params") or {}

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
        by_stage: dict[str, dict[str, float]] = defaultdict(dict)
        for name, seconds in self._seconds.items():
            by_stage[stage_of.get(name, "other")][name] = seconds
        (self._folder / "nodes").mkdir(parents=True, exist_ok=True)
        for stage, seconds in by_stage.items():
            record = self._folder / "nodes" / f"{stage}.json"
            if self._partial and record.exists():
                seconds = {**json.loads(record.read_text()), **seconds}
            record.write_text(json.dumps({k: round(v, 3) for k, v in sorted(seconds.items())}, indent=1))
            steps: dict[str, float] = defaultdict(float)
            for name, value in seconds.items():
                steps[step_name(name)] += value
            (self._folder / f"{stage}.json").write_text(
                json.dumps({k: round(v, 3) for k, v in sorted(steps.items())}, indent=1)
            )
        nodes = sum(self._seconds.values())
        stages = {stage: round(sum(seconds.values()), 3) for stage, seconds in by_stage.items()}
        logger.info(
            "run took %.0f s: nodes %.0f s, Kedro overhead %.1f s (%s)",
            wall,
            nodes,
            wall - nodes,
            ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in stages.items()),
        )
        if self._partial:
            return
        run = {
            "wall_seconds": round(wall, 3),
            "node_seconds": round(nodes, 3),
            "kedro_overhead_seconds": round(wall - nodes, 3),
            "stages": stages,
            "runtime_params": self._runtime_params,
        }
        (self._folder / "kedro_run.json").write_text(json.dumps(run, indent=1))
