"""Shared fixtures: a throw-away copy of the project, run in the small `test` environment."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAW = REPO / "data" / "01_raw" / "fashion-mnist"
COPIED = [
    "conf",
    "pyproject.toml",
    ".telemetry",
    "dvc.yaml",
    ".dvc/config",
    ".dvc/.gitignore",  # as in a clone: DVC's own files are ignored, which `git add` in a sweep trial meets
    ".dvcignore",
    ".gitignore",
    "notebooks",
    "data/01_raw/fashion-mnist.dvc",
]

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
STORE_ENV = "IDEAL_LABEL_STORE"  # ideal_pipeline.teacher.label_store.STORE_ENV
DATA = "data/envs/test"  # where `--env test` writes (ideal_pipeline.config.data_root)


def paid_queries(store: Path, scope: str | None = None) -> int:
    """Labels recorded in the label store at `store` (every teacher), or those whose tag starts with `scope`."""
    from ideal_pipeline.teacher.ledger import QueryLedger

    return sum(QueryLedger(path).paid_queries(scope) for path in sorted(Path(store).glob("*.sqlite")))


@pytest.fixture(autouse=True)
def label_store(tmp_path, monkeypatch) -> Path:
    """Every test pays into a label store of its own, never the user's."""
    store = tmp_path / "label-store"
    monkeypatch.setenv(STORE_ENV, str(store))
    return store


def make_project_copy(target: Path) -> Path:
    """conf/, pyproject and DVC files in `target`, with the raw Fashion-MNIST files copied in."""
    if not (RAW / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.fail(f"{RAW} is empty: run `make setup` (it copies Debian's dataset-fashion-mnist)")
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("local"))
        elif source.exists():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target / name)
    (target / "conf" / "local").mkdir(exist_ok=True)
    (target / "conf" / "local" / ".gitkeep").touch()  # git keeps the folder, as in the repository
    # Kedro's bootstrap wants the source folder inside the project; DVC hashes it as a dependency.
    shutil.copytree(REPO / "src", target / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(RAW, target / "data" / "01_raw" / "fashion-mnist")
    return target


def run_kedro(project: Path, env: str = "test", **run_kwargs):
    """Run the project in-process through a KedroSession, as `kedro run` does."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    runtime_params = run_kwargs.pop("runtime_params", None)
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params=runtime_params) as session:
        return session.run(**run_kwargs)


@pytest.fixture(scope="session")
def ran_project(tmp_path_factory):
    """The whole default pipeline, run once in the test environment; tests read its artifacts.

    Its label store is `<project>/label-store`.
    """
    project = make_project_copy(tmp_path_factory.mktemp("project"))
    cwd, store = os.getcwd(), os.environ.get(STORE_ENV)
    os.chdir(project)
    os.environ[STORE_ENV] = str(project / "label-store")
    try:
        run_kedro(project)
    finally:
        os.chdir(cwd)
        if store is None:
            del os.environ[STORE_ENV]
        else:
            os.environ[STORE_ENV] = store
    return project


@pytest.fixture
def in_project(ran_project, monkeypatch):
    monkeypatch.chdir(ran_project)
    monkeypatch.setenv(STORE_ENV, str(ran_project / "label-store"))
    return ran_project


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def server_up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def billing_of(url: str, admin_token: str, client: str) -> dict[str, int]:
    """One client's counters from the teacher server's `GET /billing` (admin view)."""
    import httpx

    answer = httpx.get(url + "/billing", headers={"Authorization": f"Bearer {admin_token}"}, timeout=5)
    answer.raise_for_status()
    return answer.json().get(client, {})


def base_parameters() -> dict:
    """conf/base's parameters (the only place values live)."""
    from ideal_pipeline.config import parameters_from_conf

    return parameters_from_conf(REPO, "base")


def settings(section: str, **overrides):
    """A typed parameter section (`ideal.generator`, `ideal.distill`, `victim`, ...): conf/base's values
    with `overrides`, as a node receives it."""
    from ideal_pipeline import parameter_schema

    classes = {
        "ideal.generator": parameter_schema.GeneratorParams,
        "ideal.distill": parameter_schema.DistillParams,
        "ideal.teacher_access": parameter_schema.TeacherAccessParams,
        "ideal.student": parameter_schema.StudentParams,
        "victim": parameter_schema.VictimParams,
        "victim_api": parameter_schema.VictimApiParams,
        "redistill": parameter_schema.RedistillParams,
        "external_teacher": parameter_schema.ExternalTeacherParams,
        "compute": parameter_schema.ComputeParams,
        "evaluate": parameter_schema.EvaluateParams,
        "data": parameter_schema.DataParams,
    }
    values = base_parameters()
    for key in section.split("."):
        values = values[key]
    return classes[section].model_validate({**values, **overrides})


def plain_distill(**overrides):
    """`ideal.distill` as one plain pass per epoch with a fresh optimiser, before `overrides`."""
    return settings("ideal.distill", **{"min_steps": 0, "keep_optimizer": False, **overrides})


def http_teacher(url: str, token_env: str = "IDEAL_TEACHER_TOKEN", **overrides):
    """An HTTP teacher client with conf/base's transport settings, before `overrides`."""
    from ideal_pipeline.teacher.http_client import HttpTeacher

    access = settings("ideal.teacher_access")
    options = {
        "max_batch": access.max_batch,
        "timeout_s": access.timeout_s,
        "max_retries": access.max_retries,
        "backoff_s": access.backoff_s,
        "max_backoff_s": access.max_backoff_s,
        **overrides,
    }
    return HttpTeacher(url, token_env, **options)
