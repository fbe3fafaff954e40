"""The pipelines against a teacher the user names: a model file, or an HTTP endpoint with faults."""

import json
import os
import shutil
import subprocess
import sys

import httpx
import pytest
import torch

from ideal_pipeline.models.classifiers import LeNet
from ideal_pipeline.models.files import UntrustedModelFile, load_model_file, model_fingerprint, save_model_file
from ideal_pipeline.pipelines.external_teacher.nodes import EVALUATION_SCOPE, ExternalTeacherMismatch
from ideal_pipeline.teacher.blackbox import TeacherInputError
from ideal_pipeline.teacher.label_store import LabelStore
from ideal_pipeline.teacher.server import client_id, create_app
from ideal_pipeline.teacher.server.testing import Faults, serve_in_thread
from tests.conftest import DATA, free_port, paid_queries, run_kedro, server_up, wait_for

pytestmark = pytest.mark.timeout(300)
TOKEN, ADMIN = "token-for-the-pipeline-test", "admin-token-for-the-pipeline-test"
VICTIM = f"{DATA}/06_models/victim/victim_teacher.safetensors"
VICTIM_CARD = f"{DATA}/06_models/victim/teacher_api.json"
BYO_CARD = f"{DATA}/06_models/external_teacher/teacher_api.json"


@pytest.fixture
def fresh_copy(ran_project, tmp_path, monkeypatch):
    """A copy of the ran project, paying into an empty label store: nothing paid yet."""
    project = tmp_path / "project"
    shutil.copytree(ran_project, project)
    shutil.rmtree(project / f"{DATA}/03_primary/ideal/paid_labels")
    monkeypatch.chdir(project)
    return project


def test_ideal_over_http_with_faults_bills_exactly_one_query_per_sample(fresh_copy, monkeypatch, label_store):
    monkeypatch.setenv("IDEAL_TEACHER_TOKEN", TOKEN)
    faults = Faults(p_500=0.15, p_429=0.15, p_drop=0.15, seed=0)
    app = create_app(fresh_copy / VICTIM, [TOKEN], input_shape=(1, 28, 28), faults=faults)
    with serve_in_thread(app) as url:
        access = {"kind": "http", "url": f"{url}/labels", "timeout_s": 5, "backoff_s": 0.01, "max_retries": 50}
        run_kedro(fresh_copy, pipeline_names=["ideal"], runtime_params={"ideal": {"teacher_access": access}})
    summary = json.loads((fresh_copy / f"{DATA}/06_models/ideal/round_002/pool_summary.json").read_text())
    billed = app.state.service.billing[client_id(TOKEN)]["billed_samples"]
    assert billed == summary["queries_used"] == summary["pool_size"] > 0
    assert paid_queries(label_store, "ideal/") == billed


def their_pt2(project):
    """A third-party teacher file: the victim exported with torch.export (read with pickle)."""
    own = project / "their_teacher.pt2"
    save_model_file(load_model_file(project / VICTIM), own, torch.rand(2, 1, 28, 28))
    return own


def test_bring_your_own_model_file_teacher(fresh_copy, label_store):
    own = their_pt2(fresh_copy)
    victim_card = (fresh_copy / VICTIM_CARD).read_bytes()
    with pytest.raises(UntrustedModelFile, match="external_teacher.trusted_model_file: true"):
        run_kedro(fresh_copy, pipeline_names=["byo"], runtime_params={"external_teacher": {"model_path": str(own)}})
    assert paid_queries(label_store) == 0
    # Trusted once, in external_teacher: the card carries it to the IDEAL rounds.
    external = {"model_path": str(own), "trusted_model_file": True}
    run_kedro(fresh_copy, pipeline_names=["byo"], runtime_params={"external_teacher": external})
    card = json.loads((fresh_copy / BYO_CARD).read_text())
    metrics = json.loads((fresh_copy / f"{DATA}/08_reporting/evaluate/metrics.json").read_text())
    test_size = json.loads((fresh_copy / f"{DATA}/08_reporting/external_teacher/teacher_metrics.json").read_text())
    assert card["model_path"] == str(own) and card["trusted_model_file"] is True
    assert paid_queries(label_store, EVALUATION_SCOPE) == test_size["test_samples"]
    assert paid_queries(label_store, "ideal/") == metrics["queries_used"]
    assert (fresh_copy / VICTIM_CARD).read_bytes() == victim_card  # the victim's outputs are never written


def test_another_teacher_gets_a_ledger_of_its_own(ran_project, tmp_path, monkeypatch):
    """A byo run with another teacher file pays into that teacher's ledger; the victim's is untouched."""
    project = tmp_path / "project"
    shutil.copytree(ran_project, project)
    monkeypatch.chdir(project)
    monkeypatch.setenv("IDEAL_LABEL_STORE", str(project / "label-store"))
    victim = model_fingerprint(project / VICTIM)
    store = LabelStore(project / "label-store")
    paid = store.ledger(victim).paid_queries()
    external = {"model_path": str(their_pt2(project)), "trusted_model_file": True}
    run_kedro(project, pipeline_names=["byo"], runtime_params={"external_teacher": external})
    theirs = store.ledger(model_fingerprint(external["model_path"]))
    metrics = json.loads((project / f"{DATA}/08_reporting/evaluate/metrics.json").read_text())
    assert store.ledger(victim).paid_queries() == paid
    assert theirs.paid_queries("ideal/") == metrics["queries_used"]  # paid again: another teacher's answers


def test_a_teacher_file_that_does_not_match_is_refused_before_any_work(fresh_copy, label_store):
    data = fresh_copy / f"{DATA}/02_intermediate/real/real_train.safetensors"
    before = data.stat().st_mtime_ns
    with pytest.raises(ExternalTeacherMismatch, match="answers 10 classes.*num_classes 5"):
        run_kedro(
            fresh_copy,
            pipeline_names=["byo"],
            runtime_params={"external_teacher": {"model_path": str(fresh_copy / VICTIM), "num_classes": 5}},
        )
    assert data.stat().st_mtime_ns == before and paid_queries(label_store) == 0


@pytest.fixture
def teacher_server(fresh_copy):
    """`ideal-teacher serve` on the victim's weights, as a separate process; yields its base url."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SERVER_TOKENS": TOKEN, "IDEAL_TEACHER_ADMIN_TOKEN": ADMIN}
    serve = [sys.executable, "-m", "ideal_pipeline.teacher.server.cli", "serve", "--model", str(fresh_copy / VICTIM)]
    serve += ["--port", str(port), "--input-shape", "1,28,28", "--token-env", "SERVER_TOKENS"]
    # A state (idempotency keys, billing) of its own: the default is the user's, keyed by the model's
    # fingerprint, and the test's victim is the same model every run, so its bill carried over between runs.
    serve += ["--state-db", str(fresh_copy / "server-state.sqlite")]
    with open(fresh_copy / "server.log", "w") as log:
        server = subprocess.Popen(serve, env=env, stdout=log, stderr=log)
        try:
            wait_for(lambda: server_up(url) or server.poll() is not None, 60, "the teacher server")
            assert server.poll() is None, (fresh_copy / "server.log").read_text()[-2000:]
            yield url
        finally:
            server.terminate()
            server.wait(10)


def test_bring_your_own_http_teacher_needs_the_endpoint_once(fresh_copy, teacher_server, monkeypatch, label_store):
    """external_teacher names the endpoint; ideal.teacher_access.url stays null and reads the card."""
    monkeypatch.setenv("BYO_TEACHER_TOKEN", TOKEN)
    monkeypatch.delenv("IDEAL_TEACHER_TOKEN", raising=False)  # only the card's token_env can work
    external = {"kind": "http", "url": teacher_server + "/labels", "token_env": "BYO_TEACHER_TOKEN"}
    run_kedro(fresh_copy, pipeline_names=["byo"], runtime_params={"external_teacher": external})
    card_text = (fresh_copy / BYO_CARD).read_text()
    card = json.loads(card_text)
    assert (card["kind"], card["url"], card["token_env"]) == ("http", teacher_server + "/labels", "BYO_TEACHER_TOKEN")
    assert TOKEN not in card_text
    billing = httpx.get(teacher_server + "/billing", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    evaluation = paid_queries(label_store, EVALUATION_SCOPE)
    ideal = paid_queries(label_store, "ideal/")
    metrics = json.loads((fresh_copy / f"{DATA}/08_reporting/evaluate/metrics.json").read_text())
    assert ideal == metrics["queries_used"] > 0 and evaluation > 0
    assert billing[client_id(TOKEN)]["billed_samples"] == evaluation + ideal


def test_a_test_set_of_another_shape_is_refused_before_any_query(fresh_copy, label_store, tmp_path):
    torch.manual_seed(0)
    rgb = tmp_path / "rgb.safetensors"
    save_model_file(LeNet(channels=3, image_size=32), rgb, torch.rand(2, 3, 32, 32))
    external = {"model_path": str(rgb), "input_shape": [3, 32, 32]}
    with pytest.raises(TeacherInputError, match=r"teacher takes \[3, 32, 32\]"):
        run_kedro(fresh_copy, pipeline_names=["byo"], runtime_params={"external_teacher": external})
    assert paid_queries(label_store) == 0
