"""The HTTP teacher end to end on 127.0.0.1: faults, rejections, idempotency, secrecy.

The server runs in a background thread of the test process (`serve_in_thread`), so its
billing and answer counts can be read directly.
"""

from __future__ import annotations

import io
import logging
import pickle
import threading

import httpx
import numpy as np
import pytest
import torch

from ideal_pipeline.models.files import load_model_file
from ideal_pipeline.teacher.blackbox import AccountedTeacher
from ideal_pipeline.teacher.http_client import (
    TeacherRequestRejected,
    TeacherUnavailable,
    encode_batch,
)
from ideal_pipeline.teacher.ledger import QueryLedger
from ideal_pipeline.teacher.server import client_id, create_app
from ideal_pipeline.teacher.server.testing import Faults, serve_in_thread
from tests.conftest import http_teacher

TOKEN = "s3cret-token-for-tests-only"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def images():
    """300 uint8 images of which 40 repeat others: 260 unique queries."""
    generator = torch.Generator().manual_seed(1)
    unique = torch.randint(0, 256, (260, 1, 28, 28), dtype=torch.uint8, generator=generator)
    return torch.cat([unique, unique[:40]])


@pytest.fixture(autouse=True)
def token_env(monkeypatch):
    monkeypatch.setenv("IDEAL_TEACHER_TOKEN", TOKEN)


def _server(model_file, **options):
    options = {"input_shape": (1, 28, 28), "max_batch": 100, "trust_model_file": True, **options}
    app = create_app(model_file, [TOKEN], admin_tokens=["admin-token"], **options)
    return app.state.service, serve_in_thread(app)


@torch.inference_mode()
def _top1(model_file, images):
    """The served model's own answer, loaded directly (the test wrote the file: it is trusted)."""
    return load_model_file(model_file, trusted=True)(images).argmax(1)


def _teacher(url, **options):
    return http_teacher(url + "/labels", **{"timeout_s": 5, "backoff_s": 0.01, **options})


def test_labels_survive_faults_and_are_billed_once(model_file, images, tmp_path):
    faults = Faults(p_500=0.2, p_429=0.2, p_slow=0.2, slow_s=0.3, p_drop=0.2, seed=3)
    service, server = _server(model_file, faults=faults)
    with server as url:
        teacher = _teacher(url, max_batch=10, timeout_s=0.2, max_retries=40)
        ledger = QueryLedger(tmp_path / "ledger.sqlite")
        labels = AccountedTeacher(teacher, ledger, max_queries=1000, max_batch=50).label(images)
        billing = httpx.get(url + "/billing", headers={"Authorization": "Bearer admin-token"}).json()
    assert torch.equal(labels, _top1(model_file, images.float() / 255))
    assert billing[client_id(TOKEN)]["billed_samples"] == 260 == ledger.paid_queries()
    # Every kind of fault happened, so the above is not luck (0 = dropped connection).
    assert all(service.status_counts[status] for status in (200, 500, 429, 0)), service.status_counts
    assert billing[client_id(TOKEN)]["replayed_requests"] >= 1


@pytest.mark.parametrize(
    "case, status, words",
    [
        ("bad token", 401, "token"),
        ("oversized batch", 413, "max_batch"),
        ("nan", 422, "NaN"),
        ("out of range", 422, "[0, 1]"),
        ("wrong shape", 422, "(C, H, W)"),
        ("not 4-d", 422, "(N, C, H, W)"),
        ("wrong dtype", 422, "float32"),
    ],
)
def test_rejections_raise_at_once_without_retries(model_file, tmp_path, monkeypatch, case, status, words):
    batch = torch.rand(20, 1, 28, 28)
    with_nan = batch.clone()
    with_nan[3, 0, 5, 5] = float("nan")
    batch = {
        "nan": with_nan,
        "out of range": batch * 2,
        "wrong shape": batch[:, :, :27],
        "not 4-d": batch[:, 0],
        "wrong dtype": batch.double(),
        "oversized batch": torch.rand(150, 1, 28, 28),
    }.get(case, batch)
    if case == "bad token":
        monkeypatch.setenv("IDEAL_TEACHER_TOKEN", "wrong")
    service, server = _server(model_file)
    with server as url:
        teacher = _teacher(url, max_batch=200, max_retries=5)
        with pytest.raises(TeacherRequestRejected) as error:
            teacher.label(batch)
        if case in ("bad token", "oversized batch", "wrong shape"):  # what uint8 images can hit via the ledger
            ledger = QueryLedger(tmp_path / "ledger.sqlite")
            uint8 = (batch * 255).to(torch.uint8)
            with pytest.raises(TeacherRequestRejected):
                AccountedTeacher(teacher, ledger, max_queries=1000, max_batch=200).label(uint8)
            assert ledger.paid_queries() == 0
    assert error.value.status == status and words in str(error.value)
    requests = 2 if case in ("bad token", "oversized batch", "wrong shape") else 1
    assert teacher.requests_sent == requests == sum(service.status_counts.values())
    assert service.billing[client_id(TOKEN)]["billed_samples"] == 0


def test_answers_carry_labels_and_nothing_else(model_file):
    _, server = _server(model_file)
    batch = torch.rand(7, 1, 28, 28).numpy()
    with server as url:
        ok = httpx.post(url + "/labels", content=encode_batch(batch), headers={"Authorization": f"Bearer {TOKEN}"})
        bad = httpx.post(url + "/labels", content=b"not npy", headers={"Authorization": f"Bearer {TOKEN}"})
        anonymous = httpx.post(url + "/labels", content=encode_batch(batch))
        pickled = io.BytesIO()
        np.save(pickled, np.array([{"x": 1}], dtype=object), allow_pickle=True)
        pickle_body = httpx.post(
            url + "/labels", content=pickled.getvalue(), headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert ok.status_code == 200 and set(ok.json()) == {"labels"}
    assert len(ok.json()["labels"]) == 7 and all(type(label) is int for label in ok.json()["labels"])
    assert set(ok.headers) <= {"content-type", "content-length"}
    assert (bad.status_code, anonymous.status_code, pickle_body.status_code) == (422, 401, 422)
    assert all(set(r.json()) == {"error"} for r in (bad, anonymous, pickle_body))


def test_idempotency_key_replays_without_billing(model_file):
    service, server = _server(model_file, faults=Faults(p_slow=1.0, slow_s=0.3))
    body = encode_batch(torch.rand(10, 1, 28, 28).numpy())
    headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "abc123"}
    with server as url:
        answers = []
        # Two concurrent sends of one key (a retry racing the original) are labelled and billed once.
        threads = [
            threading.Thread(
                target=lambda: answers.append(httpx.post(url + "/labels", content=body, headers=headers, timeout=5))
            )
            for _ in range(2)
        ]
        [thread.start() for thread in threads]
        [thread.join(10) for thread in threads]
        again = httpx.post(url + "/labels", content=body, headers=headers, timeout=5)
        other = httpx.post(
            url + "/labels", content=encode_batch(torch.rand(10, 1, 28, 28).numpy()), headers=headers, timeout=5
        )
    assert [a.json() for a in answers] == [again.json()] * 2
    assert service.billing[client_id(TOKEN)]["billed_samples"] == 10
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["error"]


def test_rate_limit_answers_429_and_client_waits(model_file):
    service, server = _server(model_file, rate_limit_rps=2, rate_limit_burst=1)
    body = encode_batch(torch.rand(5, 1, 28, 28).numpy())
    with server as url:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        first, second = (httpx.post(url + "/labels", content=body, headers=headers) for _ in range(2))
        labels = _teacher(url, max_retries=3).label(torch.rand(5, 1, 28, 28))
    assert first.status_code == 200 and second.status_code == 429 and int(second.headers["Retry-After"]) >= 1
    assert labels.shape == (5,) and service.status_counts[429] >= 1


def test_token_never_leaks(model_file, caplog):
    caplog.set_level(logging.DEBUG)
    _, server = _server(model_file, faults=Faults(p_500=1.0))
    with server as url:
        teacher = _teacher(url, max_retries=2)
        with pytest.raises(TeacherUnavailable) as error:
            teacher.label(torch.rand(4, 1, 28, 28))
    assert TOKEN not in caplog.text + str(error.value) + repr(teacher) + repr(vars(teacher))
    assert teacher.requests_sent == 3
    with pytest.raises(ValueError, match="IDEAL_UNSET_TOKEN"):
        http_teacher(url, "IDEAL_UNSET_TOKEN")
    assert TOKEN.encode() not in pickle.dumps(teacher)
