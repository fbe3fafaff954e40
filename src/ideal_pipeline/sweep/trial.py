"""One trial, as the task a worker runs: the default pipeline in its own workspace, saved as a DVC experiment.

Steps: check that this worker sees the sweep's folder and label store; take the trial's lock (two
attempts never share a workspace); return the recorded result when an earlier attempt finished;
else rebuild the workspace, write the parameters, `dvc repro data victim` (restored from DVC's run cache when
an earlier trial trained the same victim), `kedro run` of the other pipelines, `dvc exp save -n <trial>`.
The driver then fetches the experiment into the user's repository.

Paid labels live in the label store, outside every workspace: an attempt on another worker, after
this one died, finds them and pays nothing for them again.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ideal_pipeline.sweep import workspace as ws
from ideal_pipeline.sweep.spec import Trial

ID_FILE = ".ideal-sweep-id"  # in the sweep's folder and in the label store: proves a worker sees the same ones


@dataclass(frozen=True)
class SweepContext:
    """What every trial of one sweep shares; travels to the workers with each task."""

    repo: str
    baseline: str  # the commit every trial runs
    workdir: str
    sweep_id: str
    store: str | None  # the spec's label_store; None: each worker's IDEAL_LABEL_STORE or default
    store_id: str
    dvc_cache: str
    resources: dict[str, float] = field(default_factory=dict)
    copy: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrialPaths:
    workdir: Path
    name: str

    @property
    def workspace(self) -> Path:
        return self.workdir / "trials" / self.name

    @property
    def lock(self) -> Path:
        return self.workdir / "locks" / f"{self.name}.lock"

    @property
    def result(self) -> Path:
        return self.workdir / "results" / f"{self.name}.json"

    @property
    def attempts(self) -> Path:
        return self.workdir / "attempts" / f"{self.name}.jsonl"

    def log(self, attempt: int) -> Path:
        return self.workdir / "logs" / f"{self.name}.{attempt}.log"


def experiment_ref(baseline: str, name: str) -> str:
    """Where DVC keeps an experiment named `name` of commit `baseline`."""
    return f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"


def read_id(folder: Path) -> str | None:
    try:
        return (folder / ID_FILE).read_text().strip()
    except OSError:
        return None


def ensure_id(folder: Path) -> str:
    """The folder's id, created once (`x` mode: two sweeps starting together agree on one)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with open(folder / ID_FILE, "x") as handle:
            handle.write(uuid.uuid4().hex)
    except FileExistsError:
        pass
    return read_id(folder) or ""


def store_root(ctx: SweepContext) -> Path:
    from ideal_pipeline.teacher.label_store import default_store_root

    return Path(ctx.store).expanduser() if ctx.store else default_store_root()


def check_shared(ctx: SweepContext) -> None:
    """Refuse to start on a worker that does not share the sweep's folder or label store: its workspace
    would be invisible to the driver, or a retry elsewhere would not find what this attempt paid."""
    host = socket.gethostname()
    if read_id(Path(ctx.workdir)) != ctx.sweep_id:
        raise ws.TrialFailed(
            f"worker on {host} does not see the sweep's folder {ctx.workdir} (or sees another): put it, and the "
            "repository, on storage every worker mounts at the same path (--workdir)"
        )
    root = store_root(ctx)
    if read_id(root) != ctx.store_id:
        raise ws.TrialFailed(
            f"worker on {host} pays into the label store {root}, not the sweep's: a trial retried on another "
            "worker would pay again for what this one bought. Point IDEAL_LABEL_STORE of every worker (or "
            "`label_store:` in the spec) at one folder they all share"
        )


def threads_divisor(cpus: float) -> int:
    """IDEAL_CONCURRENT_RUNS for a trial declared with `cpus` CPUs: cores // cpus, so `auto` threads = cpus."""
    from ideal_pipeline.compute import usable_cores

    return max(1, int(usable_cores() // max(cpus, 1)))


def finished(paths: TrialPaths, trial: Trial, ctx: SweepContext) -> dict[str, Any] | None:
    """The result of an earlier attempt that saved this very trial (a driver that died before collecting it)."""
    try:
        result = json.loads(paths.result.read_text())
    except (OSError, ValueError):
        return None
    if (result.get("digest"), result.get("baseline")) != (trial.digest, ctx.baseline):
        return None
    if not paths.workspace.is_dir():
        return None
    saved = ws.git("rev-parse", "--verify", "--quiet", result["ref"], cwd=paths.workspace, check=False)
    return result if saved == result.get("commit") else None


def worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "no worker"


def start_attempt(paths: TrialPaths) -> int:
    paths.attempts.parent.mkdir(parents=True, exist_ok=True)
    attempt = (len(paths.attempts.read_text().splitlines()) if paths.attempts.exists() else 0) + 1
    entry = {"attempt": attempt, "host": socket.gethostname(), "pid": os.getpid(), "worker": worker_name()}
    with open(paths.attempts, "a") as handle:
        handle.write(json.dumps({**entry, "started": time.time()}) + "\n")
    return attempt


def run_trial(trial: Trial, ctx: SweepContext) -> dict[str, Any]:
    """The task: run `trial` (or return what an earlier attempt recorded); its result for the driver."""
    check_shared(ctx)
    paths = TrialPaths(Path(ctx.workdir), trial.name)
    with ws.file_lock(paths.lock):  # a cancelled attempt may still be running: wait for it
        done = finished(paths, trial, ctx)
        if done is not None:
            return done
        return _attempt(trial, ctx, paths)


# DVC stages that trials of one commit share when their parameters match: the real-data split and the
# victim (about a third of a 10,000-query trial on CPU). DVC's run cache, in the DVC cache every trial
# shares, restores them for a trial whose data and victim an earlier trial already trained.
SHARED_STAGES = ("data", "victim")


def run_default_pipeline(workspace: Path, env: dict[str, str], log: Path) -> None:
    """The default `kedro run`, in two commands: `dvc repro` of the shared stages (restored from DVC's
    run cache, or run and recorded there), then `kedro run` of every other pipeline."""
    stages = list(yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"])
    python = sys.executable
    ws.run_logged([python, "-m", "dvc", "repro", *SHARED_STAGES], workspace, env, log, "dvc repro (data, victim)")
    rest = ",".join(stage for stage in stages if stage not in SHARED_STAGES)
    ws.run_logged([python, "-m", "kedro", "run", "--pipelines", rest], workspace, env, log, "kedro run")


def _attempt(trial: Trial, ctx: SweepContext, paths: TrialPaths) -> dict[str, Any]:
    started = time.monotonic()
    attempt = start_attempt(paths)
    log = paths.log(attempt)
    log.parent.mkdir(parents=True, exist_ok=True)
    workspace, repo = paths.workspace, Path(ctx.repo)
    paths.result.unlink(missing_ok=True)
    ws.clone(repo, ctx.baseline, workspace, ctx.dvc_cache)
    divisor = threads_divisor(ctx.resources.get("CPU", 1))
    with ws.gpu_slots(math.ceil(ctx.resources.get("GPU", 0))) as gpus:
        env = ws.trial_environment(workspace, divisor, ctx.store, gpus)
        ws.copy_inputs(repo, workspace, list(ctx.copy), env, log)
        ws.set_parameters(workspace, trial)
        run_default_pipeline(workspace, env, log)
    from ideal_pipeline.reporting.runs import WHOLE_RUN, run_from_project

    run = replace(run_from_project(workspace, "base"), name=trial.name)
    run.timing.pop(WHOLE_RUN, None)  # the last command's wall clock only; the trial's is the result's `seconds`
    # `dvc exp save` records the run (its `dvc commit` of dvc.yaml's stages writes dvc.lock; raw data pointers
    # such as an absent data set's `.dvc` file are left alone) with what git would commit of it: the metrics
    # DVC keeps in git, and dvc.lock, named when git does not track it yet. No check that the run used
    # conf/base's parameters (`dvc_stages --commit`): a fresh clone without KEDRO_ENV has no others.
    # This workspace's own DVC settings and scratch stay out. Not as excluded pathspecs: git refuses to add
    # when a pathspec names an ignored file, and DVC's own .dvc/.gitignore ignores both.
    ws.git("add", "--all", "--", ".", cwd=workspace)
    ws.git("rm", "--cached", "-r", "-q", "--ignore-unmatch", "--", ".dvc/config.local", ".dvc/tmp", cwd=workspace)
    save = [sys.executable, "-m", "dvc", "exp", "save", "--force", "-n", trial.name, "dvc.yaml"]
    if not ws.git("ls-files", "dvc.lock", cwd=workspace):
        save += ["--include-untracked", "dvc.lock"]
    ws.run_logged(save, workspace, env, log, "dvc exp save")
    ref = experiment_ref(ctx.baseline, trial.name)
    result = {
        "name": trial.name,
        "digest": trial.digest,
        "baseline": ctx.baseline,
        "ref": ref,
        "commit": ws.git("rev-parse", "--verify", ref, cwd=workspace),
        "run": asdict(run),
        "attempt": attempt,
        "host": socket.gethostname(),
        "worker": worker_name(),
        "gpus": gpus,
        "threads_divisor": divisor,
        "seconds": round(time.monotonic() - started, 1),
    }
    partial = paths.result.with_suffix(".partial")
    paths.result.parent.mkdir(parents=True, exist_ok=True)
    partial.write_text(json.dumps(result, indent=1, default=str))
    partial.replace(paths.result)
    return result
