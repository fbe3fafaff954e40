"""A trial's workspace, on the worker: a clone of the user's repository at the sweep's commit, its inputs,
its parameters, and the commands run in it.

The workspace is `git clone --shared` of the repository (its objects are read from the repository's,
nothing copied), checked out at the commit the sweep started from, with DVC's cache pointed at the
repository's: what a trial commits lands where `dvc exp apply` in the repository finds it. Raw data
that DVC tracks (`data/01_raw/*.dvc`) is copied from the repository's workspace, else checked out of
that cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import yaml

from ideal_pipeline.errors import UserError
from ideal_pipeline.sweep.spec import Trial, write_parameters

BIN = Path(sys.executable).parent
# Hydra's override parser is not known to be thread-safe; a worker runs several trials in threads.
_PARAMETERS_LOCK = threading.Lock()
# Children of this process's trials, so an interrupted embedded sweep can stop them (see `stop_children`).
_CHILDREN: set[subprocess.Popen] = set()
# Run as the child itself: ask Linux to kill it when the worker thread that started it dies (a worker
# killed with SIGKILL cannot stop its children, and an orphaned `kedro run` would keep writing into a
# workspace that the trial's retry is rebuilding), then become the command.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"  # 1 = PR_SET_PDEATHSIG
    "os.getppid() == int(sys.argv[1]) or sys.exit(70)\n"  # the parent died before prctl: stop now
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


class TrialFailed(UserError, RuntimeError):
    """A step of a trial exited with an error; the message has its last lines and the log's path."""


def git(*args: str, cwd: Path, check: bool = True) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if check and done.returncode:
        raise TrialFailed(f"`git {' '.join(args)}` failed in {cwd}: {done.stderr.strip()[-800:]}")
    return done.stdout.strip()


def run_logged(command: list[str], cwd: Path, env: dict[str, str], log: Path, what: str) -> None:
    """Run `command` with its output appended to `log`; raise `TrialFailed` with the last lines when it fails."""
    wrapped = command
    if sys.platform.startswith("linux"):
        wrapped = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *command]
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        child = subprocess.Popen(wrapped, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _CHILDREN.add(child)
        try:
            code = child.wait()
        finally:
            _CHILDREN.discard(child)
    if code:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise TrialFailed(f"{what} exited with status {code} (log: {log}); its last lines:\n{tail}")


def stop_children() -> None:
    """Kill the commands this process's trials are running (an interrupted embedded sweep)."""
    for child in list(_CHILDREN):
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGKILL)


def clone(repo: Path, commit: str, workspace: Path, dvc_cache: str) -> None:
    """A fresh workspace at `commit`: a half-written one of an earlier attempt is removed first (what that
    attempt paid is in the label store: the rerun gets it free)."""
    if workspace.exists():
        shutil.rmtree(workspace)
    workspace.parent.mkdir(parents=True, exist_ok=True)
    git("clone", "--quiet", "--shared", "--no-checkout", str(repo), str(workspace), cwd=workspace.parent)
    git("checkout", "--quiet", "--detach", commit, cwd=workspace)
    (workspace / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {dvc_cache}\n")


def copy_inputs(repo: Path, workspace: Path, extra: list[str], env: dict[str, str], log: Path) -> None:
    """Raw data DVC tracks, from the repository's workspace or else its cache; and the spec's `copy` paths."""
    for pointer in git("ls-files", "*.dvc", cwd=workspace).splitlines():
        outs = (yaml.safe_load((workspace / pointer).read_text()) or {}).get("outs") or []
        for out in outs:
            relative = (Path(pointer).parent / out["path"]).as_posix()
            if (repo / relative).exists():
                _copy(repo / relative, workspace / relative)
                continue
            # Not in the repository's workspace: from the shared cache, when it holds it. Data no trial of
            # this sweep reads (another data set) may be absent: a run that needs it says so itself.
            try:
                run_logged([str(BIN / "dvc"), "checkout", pointer], workspace, env, log, f"dvc checkout {pointer}")
            except TrialFailed:
                with open(log, "a") as out:
                    out.write(f"{relative}: neither in {repo} nor in its DVC cache; skipped (a run reading it fails)\n")
    for relative in extra:
        if not (repo / relative).exists():
            raise TrialFailed(f"copy: {repo / relative} does not exist")
        _copy(repo / relative, workspace / relative)


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)


def set_parameters(workspace: Path, trial: Trial) -> None:
    with _PARAMETERS_LOCK:
        write_parameters(workspace / "conf" / "base", trial.overrides)


def trial_environment(workspace: Path, threads_divisor: int, store: str | None, gpus: list[str]) -> dict[str, str]:
    """The worker's environment, adjusted so that each command runs the workspace's code as DVC would."""
    env = dict(os.environ)
    for name in ("KEDRO_ENV", "DVC_STAGE"):  # a recorded run uses conf/base (config.check_recordable)
        env.pop(name, None)
    # The workspace's own code first: the installed package may be another checkout's.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(workspace / "src"), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])  # `dvc`, `kedro` of this environment
    env.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    # compute.num_threads `auto` = this machine's cores / IDEAL_CONCURRENT_RUNS: one thread per CPU declared.
    env["IDEAL_CONCURRENT_RUNS"] = str(threads_divisor)
    if store:
        env["IDEAL_LABEL_STORE"] = store
    # A trial that declared no GPU sees none (`compute.device: auto` would take one a GPU trial holds).
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    if not git("config", "user.name", cwd=workspace, check=False):
        # `dvc exp save` commits; a worker without a git identity still records its trials.
        for role in ("AUTHOR", "COMMITTER"):
            env.setdefault(f"GIT_{role}_NAME", "ideal-sweep")
            env.setdefault(f"GIT_{role}_EMAIL", "ideal-sweep@localhost")
    return env


@contextlib.contextmanager
def file_lock(path: Path, poll_s: float = 0.5) -> Iterator[None]:
    """An exclusive `flock` on `path`, waited for (the kernel drops it when its holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def visible_gpus() -> list[str]:
    """The GPUs this worker may use: its CUDA_VISIBLE_DEVICES, else every GPU torch sees."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return [d for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


@contextlib.contextmanager
def gpu_slots(count: int, poll_s: float = 1.0) -> Iterator[list[str]]:
    """`count` GPUs of this machine that no other trial holds: the scheduler counts a worker's GPUs, but not
    which one each trial takes. One lock file per GPU in the machine's temporary folder."""
    if count <= 0:
        yield []
        return
    devices = visible_gpus()
    if len(devices) < count:
        raise TrialFailed(f"this trial needs {count} GPU(s) but the worker sees {len(devices)}: {devices}")
    while True:
        held = _try_gpus(devices, count)
        if held:
            break
        time.sleep(poll_s)  # all or none: two trials holding half of what each needs would wait forever
    try:
        yield [device for device, _ in held]
    finally:
        for _, handle in held:
            handle.close()  # closing drops the lock


def _try_gpus(devices: list[str], count: int) -> list[tuple[str, IO[str]]]:
    held: list[tuple[str, IO[str]]] = []
    for device in devices:
        handle = open(Path(tempfile.gettempdir()) / f"ideal-sweep-gpu-{device}.lock", "a")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        held.append((device, handle))
        if len(held) == count:
            return held
    for _, handle in held:
        handle.close()
    return []
