"""Runs to report: DVC experiments (`dvc exp show --json -A`), project copies after `kedro run`, and
the run record that keeps both once their experiments or copies are gone."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ideal_pipeline.config import BASE_ENV, DATA, data_root, flatten, parameters_from_conf

METRICS = "data/08_reporting/evaluate/metrics.json"
BASELINE_METRICS = "data/08_reporting/baselines_metrics.json"
TIMING = "data/08_reporting/timing"
RECORD = Path("benchmarks/results/runs.json")
WHOLE_RUN, WALL = "kedro_run", "wall clock of the whole run"  # the timing table's stage and step for it
# What the run resolved on its machine, metrics.json's names, `compute.<key>` among the parameters: the
# device and precision `auto` chose, and the processor (the same parameters give other figures on another).
RESOLVED_KEYS = ("device", "precision", "processor")
RESOLVED = tuple(f"compute.{key}" for key in RESOLVED_KEYS)


@dataclass
class Run:
    name: str
    params: dict[str, Any]  # dotted keys
    metrics: dict[str, Any]
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    timing: dict[str, dict[str, float]] = field(default_factory=dict)
    finished: str = ""  # ISO time the run's results were recorded: the later of a seed_on_victim counts

    @property
    def seed_on_victim(self) -> tuple[Any, Any]:
        """What makes two runs of one configuration the same run: the seed and the black box it copied.

        The same victim parameters trained with another thread count or code are another black box
        (3-4 points apart on every seed, docs/results.md 2026-12-07 late night); its accuracy on the test
        set tells instances apart, so a rerun replaces a run only on the same victim, and pairs stay within one.
        """
        return self.params.get("ideal.seed"), self.metrics.get("teacher_accuracy")


def latest_by_seed(runs: list[Run], group: Callable[[Run], Any]) -> dict[Any, dict[Any, Run]]:
    """The runs by `group(run)` and then by `Run.seed_on_victim`, the latest run of each counting."""
    groups: dict[Any, dict[Any, Run]] = defaultdict(dict)
    for run in sorted(runs, key=lambda r: r.finished):
        groups[group(run)][run.seed_on_victim] = run
    return groups


def resolved_compute(params: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """`compute.device` / `compute.precision` as the run resolved them ("auto" means different
    arithmetic on different machines) and `compute.processor`, where its metrics say so."""
    resolved = {f"compute.{key}": metrics[key] for key in RESOLVED_KEYS if key in metrics}
    return {**params, **resolved}


# ---------------------------------------------------------------------------------------------- DVC


def runs_from_dvc_json(exp_show: list[dict[str, Any]], head: str | None = None) -> list[Run]:
    """Runs out of `dvc exp show --json -A`: every experiment, and every commit that has metrics
    (only `head`'s when given: older commits hold runs of older code)."""
    runs = []

    def add(name: str, data: dict[str, Any]) -> None:
        metrics = {path: entry.get("data", {}) for path, entry in (data.get("metrics") or {}).items()}
        if not metrics.get(METRICS):
            return
        params: dict[str, Any] = {}
        for entry in (data.get("params") or {}).values():
            params.update(flatten(entry.get("data", {})))
        timing = {Path(p).stem: m for p, m in metrics.items() if p.startswith(TIMING + "/")}
        finished = data.get("timestamp") or ""
        params = resolved_compute(params, metrics[METRICS])
        runs.append(Run(name, params, metrics[METRICS], metrics.get(BASELINE_METRICS) or {}, timing, finished))

    for commit in exp_show:
        if commit.get("rev") == "workspace":
            continue
        if commit.get("data") and head in (None, commit.get("rev")):
            add(commit.get("name") or commit["rev"][:7], commit["data"])
        for experiment in commit.get("experiments") or []:
            if (experiment.get("executor") or {}).get("state") not in (None, "success"):
                continue  # queued, running or failed: DVC shows its base commit's metrics beside its own params
            for rev in experiment.get("revs", [])[:1]:  # the experiment's final state
                add(experiment.get("name") or rev["rev"][:7], rev.get("data") or {})
    return runs


def runs_from_dvc(repo: Path) -> list[Run]:
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "show", "--json", "-A"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"`dvc exp show --json -A` failed in {repo}: {done.stderr.strip()[-500:]}")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
    return runs_from_dvc_json(json.loads(done.stdout), head.stdout.strip())


# ---------------------------------------------------------------------------------------------- project copies


def run_from_project(project: Path, env: str | None = None) -> Run:
    """A project copy after `kedro run --env ENV [--params ...]`: parameters through the project's own
    config loader with the last whole run's `--params` over them, results from that environment's data folder."""
    data = project / data_root(env)
    metrics_path = data / Path(METRICS).relative_to(DATA)
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path} is missing: did `kedro run` finish in {project}?")
    baselines = data / Path(BASELINE_METRICS).relative_to(DATA)
    timing_dir = data / Path(TIMING).relative_to(DATA)
    timing = {p.stem: json.loads(p.read_text()) for p in timing_dir.glob("*.json") if p.stem != WHOLE_RUN}
    # kedro_run.json holds the whole run's seconds, not one stage's steps: its wall clock becomes a row
    # of its own, and its `--params` go over conf/. Only a project copy has it (git ignores it, so DVC
    # experiments do not carry it; their parameters are in their commits).
    whole_run_path = timing_dir / f"{WHOLE_RUN}.json"
    whole_run = json.loads(whole_run_path.read_text()) if whole_run_path.is_file() else {}
    if whole_run:
        timing[WHOLE_RUN] = {WALL: whole_run["wall_seconds"]}
    params = parameters_from_conf(project, env, whole_run.get("runtime_params"))
    metrics = json.loads(metrics_path.read_text())
    return Run(
        project.name,
        resolved_compute(flatten(params), metrics),
        metrics,
        json.loads(baselines.read_text()) if baselines.is_file() else {},
        timing,
        datetime.fromtimestamp(metrics_path.stat().st_mtime).isoformat(),
    )


def project_defaults(project: Path) -> dict[str, dict[str, Any]] | None:
    """The flat parameters configurations are named against: conf/base's (`defaults`) and each Kedro
    environment's that sets parameters (`env cifar10`: conf/base with conf/cifar10 over it); None
    where `project` has no conf/base."""
    conf = project / "conf"
    if not (conf / "base").is_dir():
        return None
    named = {"defaults": flatten(parameters_from_conf(project, BASE_ENV))}
    for env in sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name not in (BASE_ENV, "local")):
        if any((conf / env).glob("parameters*.yml")):
            named[f"env {env}"] = flatten(parameters_from_conf(project, env))
    return named


# ---------------------------------------------------------------------------------------------- the run record


def read_record(path: Path) -> list[Run]:
    """The runs an earlier report recorded (none when `path` does not exist yet)."""
    if not path.is_file():
        return []
    try:
        return [Run(**entry) for entry in json.loads(path.read_text())]
    except (json.JSONDecodeError, TypeError) as error:
        raise ValueError(f"{path} is not a run record written by this report: {error}") from error


def merge_runs(recorded: list[Run], new: list[Run]) -> list[Run]:
    """The recorded runs and the new ones; a run seen again (same name and finishing time) once.

    Runs of one seed with the very same metrics and seconds per step are one run seen twice, the
    earliest kept: a later commit that changes parameters without rerunning the pipeline shows the
    earlier run's metrics beside parameters that run never had.
    """
    merged = {(r.name, r.finished): r for r in recorded}
    merged.update({(r.name, r.finished): r for r in new})
    by_outcome: dict[str, Run] = {}
    for run in sorted(merged.values(), key=lambda r: r.finished):
        outcome = [run.params.get("ideal.seed"), run.metrics, run.baselines, run.timing]
        by_outcome.setdefault(json.dumps(outcome, sort_keys=True), run)
    return list(by_outcome.values())


def write_record(runs: list[Run], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(runs, key=lambda r: (r.finished, r.name))
    text = json.dumps([asdict(r) for r in ordered], indent=1, sort_keys=True) + "\n"
    partial = path.with_suffix(".json.partial")
    partial.write_text(text)
    partial.replace(path)  # an interrupted report leaves the previous record whole
