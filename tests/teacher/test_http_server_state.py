"""Idempotency and billing state: per tenant, persisted across restarts, bound to the model (not its file bytes)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

import ideal_pipeline
from ideal_pipeline.models.classifiers import LeNet
from ideal_pipeline.models.files import load_model_file, save_model_file
from ideal_pipeline.teacher.http_client import encode_batch
from ideal_pipeline.teacher.server import client_id, create_app
from ideal_pipeline.teacher.server.testing import serve_in_thread
from tests.conftest import billing_of, free_port, server_up, wait_for

pytestmark = pytest.mark.timeout(180)
ALICE, BOB, ADMIN = "alice-token", "bob-token", "state-admin-token"


def _model(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_model_file(LeNet(), path, torch.rand(2, 1, 28, 28))
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return _model(tmp_path_factory.mktemp("teacher") / "lenet.pt", seed=0)


def _batch(seed: int, n: int = 4) -> bytes:
    return encode_batch(np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32))


def _post(url: str, token: str, body: bytes, key: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    return httpx.post(url + "/labels", content=body, headers=headers, timeout=30)


def test_one_tenants_traffic_cannot_evict_anothers_keys(model_file):
    app = create_app(model_file, [ALICE, BOB], input_shape=(1, 28, 28), trust_model_file=True, idempotency_cache_size=2)
    with serve_in_thread(app) as url:
        first = _post(url, ALICE, _batch(0), "alice-1")
        for i in range(5):  # more keys than the cache holds, all Bob's
            assert _post(url, BOB, _batch(100 + i), f"bob-{i}").status_code == 200
        again = _post(url, ALICE, _batch(0), "alice-1")
        bob_recent = _post(url, BOB, _batch(104), "bob-4")
    alice, bob = (app.state.service.billing[client_id(token)] for token in (ALICE, BOB))
    assert again.json() == first.json()
    assert (alice["billed_samples"], alice["billed_requests"], alice["replayed_requests"]) == (4, 1, 1)
    assert bob_recent.status_code == 200 and (bob["billed_requests"], bob["replayed_requests"]) == (5, 1)


def _start_server(model: Path, state_db: Path, log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    src = str(Path(ideal_pipeline.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src, "IDEAL_TEACHER_TOKEN": ALICE, "IDEAL_TEACHER_ADMIN_TOKEN": ADMIN}
    command = [sys.executable, "-m", "ideal_pipeline.teacher.server.cli", "serve", "--model", str(model)]
    command += ["--port", str(port)]
    command += ["--input-shape", "1,28,28", "--trust-model-file", "--state-db", str(state_db)]
    server = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: server_up(url) or server.poll() is not None, 90, "the teacher server")
    except TimeoutError:
        server.kill()
        raise
    assert server.poll() is None, "the teacher server exited at start"
    return server, url


def test_a_restarted_server_replays_without_billing_again(model_file, tmp_path):
    """Original request, server process stopped and started again on the same --state-db, replay: billed once."""
    body, state_db = _batch(7, n=6), tmp_path / "state.sqlite"
    with open(tmp_path / "server.log", "w") as log:
        server, url = _start_server(model_file, state_db, log)
        try:
            original = _post(url, ALICE, body, "batch-7")
        finally:
            server.terminate()
            server.wait(10)
        server, url = _start_server(model_file, state_db, log)
        try:
            replay = _post(url, ALICE, body, "batch-7")
            reused_key = _post(url, ALICE, _batch(8, n=6), "batch-7")
            billing = billing_of(url, ADMIN, client_id(ALICE))
        finally:
            server.terminate()
            server.wait(10)
    assert original.status_code == replay.status_code == 200
    assert replay.json() == original.json()
    assert (billing["billed_samples"], billing["billed_requests"], billing["replayed_requests"]) == (6, 1, 1)
    assert reused_key.status_code == 422 and "Idempotency-Key" in reused_key.json()["error"]


RESAVE = """
import sys, torch
from safetensors.torch import save_file
from ideal_pipeline.models.classifiers import LeNet
from ideal_pipeline.models.files import architecture_name, classifier_weights_bytes, weights_metadata
torch.manual_seed(0)
model = LeNet()
metadata = weights_metadata(classifier_weights_bytes(model, architecture_name(model), (1, 28, 28), 10), "lenet")
save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, sys.argv[1], metadata=metadata)
"""


def _resave(path: Path) -> bytes:
    """The same weights saved by safetensors' own writer in a new process (its metadata order varies per process)."""
    env = {**os.environ, "PYTHONPATH": str(Path(ideal_pipeline.__file__).parents[1])}
    subprocess.run([sys.executable, "-c", RESAVE, str(path)], env=env, check=True, timeout=120)
    return path.read_bytes()


def test_a_server_restarted_on_a_re_saved_identical_model_replays_without_billing(tmp_path):
    first, second = tmp_path / "a" / "lenet.safetensors", tmp_path / "b" / "lenet.safetensors"
    first.parent.mkdir(), second.parent.mkdir()
    original = _resave(first)
    for _ in range(10):  # two processes write the same order 1 time in 24
        if _resave(second) != original:
            break
    assert second.read_bytes() != original
    state_db, body, answers = tmp_path / "state.sqlite", _batch(5), []
    for model in (first, second):  # the server restarted on the re-saved copy, same --state-db
        app = create_app(model, [ALICE], input_shape=(1, 28, 28), state_db=state_db)
        with serve_in_thread(app) as url:
            answers.append(_post(url, ALICE, body, "same-key"))
    billing = app.state.service.billing[client_id(ALICE)]
    assert [answer.status_code for answer in answers] == [200, 200] and answers[0].json() == answers[1].json()
    assert (billing["billed_samples"], billing["billed_requests"], billing["replayed_requests"]) == (4, 1, 1)


def test_cached_answers_of_a_replaced_model_are_never_replayed(tmp_path):
    """The same key after the model file changed is labelled (and billed) by the new model."""
    path, state_db, body = tmp_path / "teacher.pt", tmp_path / "state.sqlite", _batch(3, n=16)
    answers = []
    for seed in (0, 1):
        _model(path, seed)
        app = create_app(path, [ALICE], input_shape=(1, 28, 28), trust_model_file=True, state_db=state_db)
        with serve_in_thread(app) as url:
            answers.append(_post(url, ALICE, body, "same-key").json()["labels"])
    images = torch.from_numpy(np.load(io.BytesIO(body)))
    with torch.inference_mode():
        expected = load_model_file(path, trusted=True)(images).argmax(1).tolist()
    billing = app.state.service.billing[client_id(ALICE)]
    assert answers[1] == expected and answers[0] != answers[1]
    assert (billing["billed_samples"], billing["replayed_requests"]) == (32, 0)


def test_the_default_state_file_is_per_model_and_outside_the_project(model_file, tmp_path, monkeypatch):
    from ideal_pipeline.models.files import model_fingerprint
    from ideal_pipeline.teacher.server.cli import default_state_db

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    path = default_state_db(model_file)
    digest = model_fingerprint(model_file).removeprefix("model:sha256:")
    assert path == tmp_path / "state" / "ideal-teacher" / f"{digest[:16]}.sqlite"
    copies = [tmp_path / name / "lenet.safetensors" for name in ("a", "b")]
    for copy in copies:  # two saves of one model name one state file, whatever their bytes
        copy.parent.mkdir()
        _resave(copy)
    assert default_state_db(copies[0]) == default_state_db(copies[1]) != path
