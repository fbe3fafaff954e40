"""`ideal-sweep` on Dask: a cluster of one scheduler and two worker processes on 127.0.0.1, one worker killed
during a trial; then the same spec on the embedded cluster. The teacher is an HTTP server in this process that
counts what it bills, so a trial that paid twice shows in its bill."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, free_port, make_project_copy, wait_for

distributed = pytest.importorskip("distributed", reason="the sweep runs on Dask: pip install -e '.[test]'")

pytestmark = pytest.mark.timeout(600)
BIN = Path(sys.executable).parent
TOKEN = "token-of-the-sweep-test"
GIT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t"}
GIT["GIT_COMMITTER_EMAIL"] = "t@example.com"
PLAN = 2 * 20 * 2  # conf/test: 2 rounds of 20 images, and their mirrors


def git_repository(tmp_path: Path) -> Path:
    """A copy of the project, committed: a sweep runs a commit."""
    repo = make_project_copy(tmp_path / "repo")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "the project"]):
        subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT}, check=True)
    return repo


def counting_teacher(tmp_path: Path):
    """An HTTP teacher (a LeNet's weights) that bills every sample it labels once per idempotency key."""
    from ideal_pipeline.models.classifiers import LeNet
    from ideal_pipeline.models.files import save_classifier_weights
    from ideal_pipeline.teacher.server import create_app

    model = tmp_path / "teacher.safetensors"
    save_classifier_weights(LeNet().eval(), model, "lenet", (1, 28, 28), 10)
    return create_app(model, [TOKEN], input_shape=(1, 28, 28))


def smoke_spec(tmp_path: Path, url: str) -> Path:
    """benchmarks/sweeps/smoke.yaml, its trials labelled by the counting teacher."""
    spec = yaml.safe_load((REPO / "benchmarks/sweeps/smoke.yaml").read_text())
    spec["set"].update({"ideal.teacher_access.kind": "http", "ideal.teacher_access.url": f"{url}/labels"})
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@contextlib.contextmanager
def dask_cluster(tmp_path: Path, workers: int = 2, slots: int = 2) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """`dask scheduler` and `dask worker`s, each its own process group: killing one is a machine dying."""
    address = f"tcp://127.0.0.1:{free_port()}"
    common = ["--host", "127.0.0.1", "--no-dashboard"]
    commands = [[str(BIN / "dask"), "scheduler", "--port", address.rsplit(":", 1)[1], *common]]
    for i in range(workers):
        commands.append(
            [str(BIN / "dask"), "worker", address, "--nthreads", str(slots), "--resources", f"CPU={slots}", *common]
            + ["--name", f"worker-{i}"]
        )
    processes = []
    try:
        for i, command in enumerate(commands):
            with open(tmp_path / f"dask-{i}.log", "w") as log:
                processes.append(subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True))
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
        yield address, processes[1:]
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


def sweep(repo: Path, spec: Path, *args: str, timeout: float = 480) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ideal_pipeline.sweep", str(spec), "--progress-every", "5", *args]
    env = {**os.environ, **GIT, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def kill_a_worker_that_paid(address: str, workers: list[subprocess.Popen], workdir: Path, sweeping) -> str:
    """Wait until a trial has paid its first round, then SIGKILL the process group of the worker running it
    (its `kedro run`s die with it); the worker's address."""
    chunks = "trials/*/data/03_primary/ideal/paid_labels/*/*.json"
    wait_for(lambda: any(workdir.glob(chunks)) or sweeping.poll() is not None, 300, "a trial's first paid labels")
    assert sweeping.poll() is None, "the sweep ended before any trial paid"
    trial = next(workdir.glob(chunks)).relative_to(workdir / "trials").parts[0]
    worker = json.loads((workdir / "attempts" / f"{trial}.jsonl").read_text().splitlines()[-1])["worker"]
    with distributed.Client(address, timeout=30) as client:
        pid = client.run(os.getpid, workers=[worker])[worker]
    group = os.getpgid(pid)
    assert group in [w.pid for w in workers]
    os.killpg(group, signal.SIGKILL)
    return worker


def attempts(workdir: Path, trial: str) -> list[dict]:
    return [json.loads(line) for line in (workdir / "attempts" / f"{trial}.jsonl").read_text().splitlines()]


def test_a_sweep_survives_a_dead_worker_pays_nothing_twice_and_lands_in_dvc_and_the_report(
    tmp_path, label_store, monkeypatch
):
    from ideal_pipeline.teacher.ledger import QueryLedger
    from ideal_pipeline.teacher.server import client_id
    from ideal_pipeline.teacher.server.testing import serve_in_thread

    repo = git_repository(tmp_path)
    workdir = repo / ".dvc/tmp/sweeps/smoke"  # the default
    app = counting_teacher(tmp_path)
    monkeypatch.setenv("IDEAL_TEACHER_TOKEN", TOKEN)  # the workers' environment: they start after this
    with serve_in_thread(app) as url, dask_cluster(tmp_path) as (address, workers):
        spec = smoke_spec(tmp_path, url)
        command = [sys.executable, "-m", "ideal_pipeline.sweep", str(spec), "--address", address]
        with open(tmp_path / "sweep.log", "w") as log:
            env = {**os.environ, **GIT, "PATH": f"{BIN}:{os.environ['PATH']}"}
            sweeping = subprocess.Popen([*command, "--progress-every", "5"], cwd=repo, env=env, stdout=log, stderr=log)
            try:
                killed = kill_a_worker_that_paid(address, workers, workdir, sweeping)
                sweeping.wait(420)
            finally:
                sweeping.kill()
        output = (tmp_path / "sweep.log").read_text()
        assert sweeping.returncode == 0, output[-4000:]
        assert "4 done, 0 failed, 0 done before" in output, output[-4000:]
        bill = app.state.service.billing[client_id(TOKEN)]

        trials = json.loads((workdir / "sweep.json").read_text())["trials"]
        names = [t["name"] for t in trials]
        assert len(names) == 4
        # The trials the dead worker was running ran again on the other one, and only those.
        retried = [name for name in names if len(attempts(workdir, name)) > 1]
        assert retried, output[-4000:]
        for name in retried:
            tries = attempts(workdir, name)
            assert tries[0]["worker"] == killed and tries[-1]["worker"] != killed, tries
            assert f"retry: {name}, attempt 2" in output
        for name in set(names) - set(retried):
            assert attempts(workdir, name)[0]["worker"] != killed
        # The trials share their data and victim parameters: those that start after one trained the victim
        # restore it from DVC's run cache instead of training it again.
        logs = [path.read_text() for path in (workdir / "logs").glob("*.log")]
        assert any("Stage 'victim' is cached - skipping run" in text for text in logs), logs[-1][-3000:]

        # Nothing paid twice: the teacher billed each label the store holds once, no request was sent again
        # but the one each killed trial may have had in flight, and no reservation is left unsettled.
        ledgers = [QueryLedger(path) for path in sorted(label_store.glob("*.sqlite"))]
        assert ledgers
        assert bill["billed_samples"] == sum(ledger.paid_queries() for ledger in ledgers) == 4 * PLAN
        assert bill["replayed_requests"] <= len(retried), bill
        assert all(ledger.reserved_queries() == 0 for ledger in ledgers)
        record = json.loads((repo / "benchmarks/results/runs.json").read_text())
        assert sorted(run["name"] for run in record) == sorted(names)
        assert all(run["metrics"]["queries_used"] == PLAN for run in record)

        # The 4 runs are DVC experiments of the repository, and the report reads them.
        shown = subprocess.run(
            [str(BIN / "dvc"), "exp", "show", "--json"], cwd=repo, capture_output=True, text=True, check=True
        )
        experiments = [e.get("name") for c in json.loads(shown.stdout) for e in c.get("experiments") or []]
        assert sorted(experiments) == sorted(names)
        report = tmp_path / "report"
        subprocess.run(
            [sys.executable, "-m", "ideal_pipeline.reporting", "--dvc", "--out-dir", str(report)]
            + ["--record", str(tmp_path / "record.json")],
            cwd=repo,
            check=True,
            capture_output=True,
        )
        final = pd.read_csv(report / "comparison.csv").set_index("row").loc["IDEAL, final student"]
        assert final["seeds"] == 4 and sorted(final["seed_list"].split()) == ["0", "1", "2", "3"]

        # The same spec without an address: the embedded cluster, which runs only what is not finished.
        again = sweep(repo, spec)
        assert again.returncode == 0 and "4 done before, 0 to run" in again.stdout, again.stdout + again.stderr
        # A trial whose experiment is gone runs again, paying nothing; a trial that fails is reported with its
        # error while the other finishes.
        subprocess.run([str(BIN / "dvc"), "exp", "remove", names[0]], cwd=repo, check=True, capture_output=True)
        failing = yaml.safe_load(spec.read_text())
        failing.update(seeds=[0], configurations=[{}, {"data.source": "torchvision", "data.torchvision_name": "SVHN"}])
        (tmp_path / "failing.yaml").write_text(yaml.safe_dump(failing))
        rerun = sweep(repo, tmp_path / "failing.yaml")
        assert rerun.returncode == 1, rerun.stdout + rerun.stderr
        assert "0 done before, 2 to run" in rerun.stdout and "embedded local cluster" in rerun.stdout
        assert f"done: {names[0]}" in rerun.stdout and "1 done, 1 failed" in rerun.stdout
        assert "FAILED: smoke-s0-" in rerun.stdout and "Dataset not found" in rerun.stdout
        assert app.state.service.billing[client_id(TOKEN)]["billed_samples"] == 4 * PLAN  # its labels: free


def test_the_spec_expands_to_named_trials_and_bad_parameters_are_refused_before_any_run(tmp_path):
    from ideal_pipeline.sweep.spec import SpecError, check_trials, expand, load_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: grid\nenv: test\nseeds: [0, 1]\nset: {ideal.rounds: 3}\n"
        "grid: {victim.architecture: [lenet, tanhnet]}\nconfigurations: [{}, {ideal.generator.g_steps: 1}]\n"
    )
    trials = expand(load_spec(spec), REPO)
    assert len(trials) == 2 * 2 * 2 and len({t.name for t in trials}) == 8
    assert all(t.name.startswith(f"grid-s{t.shown['ideal.seed']}-") for t in trials)
    tiny = yaml.safe_load((REPO / "conf/test/parameters_ideal.yml").read_text())["ideal"]["batch_size"]
    assert dict(trials[0].overrides)["ideal.batch_size"] == tiny  # conf/test's, under the spec's
    assert expand(load_spec(spec), REPO) == trials  # names are the parameters': a restart finds them
    check_trials(REPO, trials[:1])

    spec.write_text("name: typo\nset: {ideal.generator.g_stepz: 3}\n")
    with pytest.raises(SpecError, match="g_stepz"):
        check_trials(REPO, expand(load_spec(spec), REPO))
    spec.write_text("name: typo\nseed: [0]\n")
    with pytest.raises(SpecError, match="unknown key"):
        load_spec(spec)


@pytest.mark.parametrize("spec", sorted((REPO / "benchmarks/sweeps").glob("*.yaml")), ids=lambda path: path.stem)
def test_every_shipped_spec_expands_to_trials_the_schema_accepts(spec):
    from ideal_pipeline.sweep.spec import check_trials, expand, load_spec

    trials = expand(load_spec(spec), REPO)
    assert trials and len({t.name for t in trials}) == len(trials)
    check_trials(REPO, trials)
