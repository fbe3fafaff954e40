"""The sweep itself, on the machine that starts it: which trials are left, submitting them, watching them,
and collecting each finished one into the user's repository (a DVC experiment) and the run record.

A trial is finished when the repository holds its experiment for the commit the sweep runs
(`refs/exps/<commit>/<trial name>`, names from the trial's parameters): a sweep restarted with the same
spec runs only the others. The driver alone writes to the repository and the record, one trial at a time.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ideal_pipeline.errors import UserError
from ideal_pipeline.sweep import cluster as clusters
from ideal_pipeline.sweep.progress import SweepProgress
from ideal_pipeline.sweep.spec import SpecError, SweepSpec, Trial, check_trials, expand, load_spec
from ideal_pipeline.sweep.trial import SweepContext, TrialPaths, ensure_id, experiment_ref, run_trial, store_root

# What a trial's workspace takes from the repository: uncommitted changes there are not in the trials.
CODE_PATHS = ("src", "conf", "dvc.yaml", "pyproject.toml", "*.dvc")


@dataclass
class SweepOptions:
    address: str | None = None  # None: an embedded cluster on this machine
    workdir: Path | None = None  # None: <repo>/.dvc/tmp/sweeps/<name> (git ignores .dvc/tmp)
    record: Path | None = None  # None: no run record
    max_parallel: int | None = None  # embedded cluster: at most this many trials at once
    progress_every_s: float = 30.0
    allow_dirty: bool = False
    wait_for_workers_s: float = 120.0
    keep_workspaces: bool = False
    list_only: bool = False


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if done.returncode:
        raise UserError(f"`git {' '.join(args)}` failed in {repo}: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def check_committed(repo: Path, allow_dirty: bool, say: Callable[[str], None]) -> None:
    changed = git(repo, "status", "--porcelain", "--", *CODE_PATHS)
    if not changed:
        return
    message = f"uncommitted changes in {repo} that the trials would not run (each trial is a clone of HEAD):\n{changed}"
    if not allow_dirty:
        raise UserError(message + "\ncommit them first, or pass --allow-dirty to sweep HEAD without them")
    say("warning: " + message)


def dvc_cache_dir(repo: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "cache", "dir"], cwd=repo, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise UserError(f"{repo} is not a DVC repository (`dvc cache dir`: {done.stderr.strip()[-300:]})")
    return str(Path(done.stdout.strip()).resolve())


def finished_names(repo: Path, baseline: str) -> set[str]:
    """Experiments the repository already holds for `baseline`."""
    prefix = experiment_ref(baseline, "")
    refs = git(repo, "for-each-ref", "--format=%(refname)", prefix)
    return {ref.removeprefix(prefix) for ref in refs.splitlines() if ref}


def record_results(record: Path | None, results: list[dict[str, Any]]) -> None:
    """Merge the trials' runs into the run record (idempotent: a run seen again is kept once)."""
    if record is None or not results:
        return
    from ideal_pipeline.reporting.runs import Run, merge_runs, read_record, write_record

    write_record(merge_runs(read_record(record), [Run(**r["run"]) for r in results]), record)


def collect(repo: Path, result: dict[str, Any], paths: TrialPaths, record: Path | None, keep: bool) -> None:
    """Fetch a finished trial's experiment into the repository, record its run, drop its workspace."""
    ref = result["ref"]
    git(repo, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", str(paths.workspace), f"+{ref}:{ref}")
    record_results(record, [result])
    if not keep:
        shutil.rmtree(paths.workspace, ignore_errors=True)


def last_attempt(paths: TrialPaths) -> dict[str, Any]:
    try:
        return json.loads(paths.attempts.read_text().splitlines()[-1])
    except (OSError, IndexError, ValueError):
        return {}


def running_now(client, active: dict, context: SweepContext, since: float, say, announced: dict[str, int]) -> set[str]:
    """Trials running now: the scheduler gave each to a worker, which started an attempt of it in this sweep.
    (A worker also holds tasks waiting for its resources; a dead worker's attempt stays the last one until the
    trial starts again elsewhere.) Says so when a trial starts again."""
    where = {key: worker for worker, keys in client.processing().items() for key in keys}
    running = set()
    for name, future in active.items():
        attempt = last_attempt(TrialPaths(Path(context.workdir), name))
        if future.key not in where or attempt.get("started", 0) < since or attempt["worker"] != where[future.key]:
            continue
        running.add(name)
        if attempt["attempt"] > 1 and announced.get(name) != attempt["attempt"]:
            announced[name] = attempt["attempt"]
            say(f"retry: {name}, attempt {attempt['attempt']} on {attempt['worker']} (the last one did not finish)")
    return running


def error_text(future) -> str:
    try:
        error = future.exception(timeout=10)
    except Exception as lost:  # noqa: BLE001 - the cluster's own failure, reported as the trial's
        return f"the cluster lost the trial ({future.status}): {type(lost).__name__}: {lost}"
    if error is None:
        return f"the cluster lost the trial ({future.status})"
    if isinstance(error, UserError):
        return str(error)
    lines = traceback.format_exception(type(error), error, future.traceback())
    return "".join(lines[-12:]).rstrip()


def prepare(spec: SweepSpec, repo: Path, options: SweepOptions, say: Callable[[str], None]):
    """Everything checked before any trial starts: the commit, the trials' parameters, the shared folders."""
    check_committed(repo, options.allow_dirty, say)
    baseline = git(repo, "rev-parse", "HEAD")
    trials = expand(spec, repo)
    check_trials(repo, trials)
    workdir = (options.workdir or repo / ".dvc" / "tmp" / "sweeps" / spec.name).resolve()
    store = str((repo / Path(spec.label_store).expanduser()).resolve()) if spec.label_store else None
    context = SweepContext(
        repo=str(repo),
        baseline=baseline,
        workdir=str(workdir),
        sweep_id=ensure_id(workdir),
        store=store,
        store_id="",
        dvc_cache=dvc_cache_dir(repo),
        resources=dict(spec.resources),
        copy=tuple(spec.copy),
    )
    context = replace(context, store_id=ensure_id(store_root(context)))
    (workdir / "sweep.json").write_text(
        json.dumps({"spec": str(spec.path), "baseline": baseline, "trials": [t.__dict__ for t in trials]}, default=str)
    )
    return trials, context


def run_sweep(spec_path: Path, repo: Path, options: SweepOptions, say: Callable[[str], None] = print) -> SweepProgress:
    spec = load_spec(spec_path)
    repo = Path(git(repo, "rev-parse", "--show-toplevel"))
    trials, context = prepare(spec, repo, options, say)
    done_before = finished_names(repo, context.baseline) & {t.name for t in trials}
    progress = SweepProgress(spec.name, trials, done_before)
    # A driver that died after a trial's experiment was fetched but before it was recorded: record it now.
    earlier = [TrialPaths(Path(context.workdir), name).result for name in sorted(done_before)]
    earlier_results = [json.loads(p.read_text()) for p in earlier if p.is_file()]
    record_results(options.record, [r for r in earlier_results if r.get("baseline") == context.baseline])
    pending = [t for t in trials if t.name not in done_before]
    say(
        f"sweep {spec.name}: {len(trials)} trials of {spec_path} at commit {context.baseline[:10]}; "
        f"{len(done_before)} done before, {len(pending)} to run; workspaces in {context.workdir}"
    )
    if options.list_only:
        for trial in trials:
            state = "done" if trial.name in done_before else "to run"
            say(f"  {trial.name}  {state:6}  {', '.join(f'{k}={v}' for k, v in trial.shown.items())}")
        return progress
    if pending:
        with clusters.connect(options.address, spec.resources, options.max_parallel, options.wait_for_workers_s) as c:
            where = "an embedded local cluster" if c.embedded else f"the cluster at {c.address}"
            say(f"running on {where}: {c.slots} trial(s) at once, each with {spec.resources}")
            try:
                watch(c.client, spec, pending, context, options, progress, say)
            except KeyboardInterrupt:
                if c.embedded:  # its trials are this process's threads: stop their `kedro run`s too
                    from ideal_pipeline.sweep.workspace import stop_children

                    stop_children()
                raise
    summary = progress.summary()
    say(summary)
    (Path(context.workdir) / "summary.txt").write_text(summary + "\n")
    return progress


def watch(client, spec: SweepSpec, pending: list[Trial], context: SweepContext, options, progress, say) -> None:
    """Submit the trials, then report each as it ends and the counts every `progress_every_s`."""
    tag = hashlib.sha256(f"{context.repo}|{context.baseline}".encode()).hexdigest()[:8]
    active = {
        trial.name: client.submit(
            run_trial,
            trial,
            context,
            key=f"ideal-sweep-{trial.name}-{tag}",  # two repositories' sweeps on one cluster never share a key
            resources=spec.resources or None,
            retries=spec.retries,  # errors; a worker's death is retried by the scheduler (allowed-failures)
            pure=False,
        )
        for trial in pending
    }
    last_line, since, announced = 0.0, time.time(), {}
    while active:
        # Which run, before which ended: a trial that ends in between is then counted once, as done.
        running = running_now(client, active, context, since, say, announced)
        changed = False
        for name, future in list(active.items()):
            if future.status == "finished":
                paths = TrialPaths(Path(context.workdir), name)
                result = future.result()
                try:
                    collect(Path(context.repo), result, paths, options.record, options.keep_workspaces)
                    progress.results[name] = result
                    say(f"done: {name} (attempt {result['attempt']}, {result['seconds']:.0f} s, {result['worker']})")
                except UserError as error:
                    progress.errors[name] = f"finished, but could not be collected: {error}"
                    say(f"FAILED: {name}: {progress.errors[name]}")
            elif future.status in ("error", "cancelled", "lost"):
                progress.errors[name] = error_text(future)
                say(f"FAILED: {name}: {progress.errors[name].splitlines()[0]}")
            else:
                continue
            del active[name]
            changed = True
        changed |= progress.set_running(running & set(active))
        if changed or time.monotonic() - last_line >= options.progress_every_s:
            say(progress.line())
            last_line = time.monotonic()
        if active:
            time.sleep(1.0)


def main_run(spec: str, repo: str, options: SweepOptions) -> int:
    try:
        progress = run_sweep(Path(spec), Path(repo), options)
    except (SpecError, UserError) as error:
        print(f"ideal-sweep: {error}", file=sys.stderr)
        return 2
    return 1 if progress.errors else 0
