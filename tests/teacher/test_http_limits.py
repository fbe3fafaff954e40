"""Server limits: checks before the body is parsed, clear 4xx instead of 500,
bounded concurrency, a start-up self-test, and a model that cannot take a batch answering a
non-retried 413."""

from __future__ import annotations

import io
import threading
import time

import httpx
import numpy as np
import pytest
import torch

from ideal_pipeline.models.classifiers import LeNet
from ideal_pipeline.models.files import load_model_file
from ideal_pipeline.teacher.http_client import TeacherRequestRejected, encode_batch
from ideal_pipeline.teacher.server import ModelSelfTestError, create_app
from ideal_pipeline.teacher.server.testing import Faults, serve_in_thread
from tests.conftest import http_teacher

pytestmark = pytest.mark.timeout(120)
TOKEN = "limits-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _app(model_file, **options):
    options = {"input_shape": (1, 28, 28), "max_batch": 100, "trust_model_file": True, **options}
    return create_app(model_file, [TOKEN], **options)


def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _export(path, batch_dim=None):
    """LeNet as .pt2; `batch_dim=None` fixes the batch at the example's 4 images."""
    dynamic = {"x": {0: batch_dim}} if batch_dim is not None else None
    program = torch.export.export(LeNet().eval(), (torch.rand(4, 1, 28, 28),), dynamic_shapes=dynamic)
    torch.export.save(program, str(path))
    return path


def test_headers_are_checked_before_the_body_is_read(model_file):
    app = _app(model_file, max_body_bytes=20 * 784 * 4)
    five = encode_batch(np.random.rand(5, 1, 28, 28).astype(np.float32))
    with serve_in_thread(app) as url:

        def post(body):
            return httpx.post(url + "/labels", content=body, headers=AUTH, timeout=10)

        huge = post(_npy_header((10**9, 1, 28, 28)))  # a header claiming 10^9 images, and nothing else
        zero_batch = post(_npy_header((0, 1, 28, 28)))
        zero_height = post(_npy_header((5, 1, 0, 28)))
        lying = post(_npy_header((10, 1, 28, 28)) + five[len(_npy_header((5, 1, 28, 28))) :])
        over_limit = post(encode_batch(np.random.rand(30, 1, 28, 28).astype(np.float32)))
        chunked = post(iter([five[:100], five[100:]]))  # no Content-Length
        long_header = post(b"\x93NUMPY\x01\x00" + (60000).to_bytes(2, "little") + b" " * 60000)
    assert huge.status_code == 413 and "max_batch" in huge.json()["error"]
    assert zero_batch.status_code == zero_height.status_code == 422
    assert "zero-size" in zero_batch.json()["error"] and "zero-size" in zero_height.json()["error"]
    assert lying.status_code == 422 and "Content-Length" in lying.json()["error"]
    assert over_limit.status_code == 413 and "limit" in over_limit.json()["error"]
    assert chunked.status_code == 411
    assert long_header.status_code == 422 and "header" in long_header.json()["error"]
    assert app.state.service.status_counts[500] == 0


def test_fortran_order_and_big_endian_bodies_are_labelled_like_plain_ones(model_file):
    images = np.random.default_rng(0).random((6, 1, 28, 28), dtype=np.float32)
    fortran, swapped = io.BytesIO(), io.BytesIO()
    np.save(fortran, np.asfortranarray(images))
    np.save(swapped, images.astype(">f4"))
    with serve_in_thread(_app(model_file)) as url:
        answers = [
            httpx.post(url + "/labels", content=body, headers=AUTH, timeout=10).json()["labels"]
            for body in (encode_batch(images), fortran.getvalue(), swapped.getvalue())
        ]
    with torch.inference_mode():
        expected = load_model_file(model_file, trusted=True)(torch.from_numpy(images)).argmax(1).tolist()
    assert answers == [expected] * 3


def test_parsing_and_labelling_are_bounded_to_max_concurrent(model_file):
    """Three requests, each held 0.4 s inside its slot: with one slot they cannot overlap."""
    app = _app(model_file, max_concurrent=1, faults=Faults(p_slow=1.0, slow_s=0.4))
    bodies = [encode_batch(np.random.rand(4, 1, 28, 28).astype(np.float32)) for _ in range(3)]
    statuses = []
    with serve_in_thread(app) as url:

        def send(body):
            statuses.append(httpx.post(url + "/labels", content=body, headers=AUTH, timeout=30))

        threads = [threading.Thread(target=send, args=(body,)) for body in bodies]
        started = time.perf_counter()
        [thread.start() for thread in threads]
        [thread.join(30) for thread in threads]
        elapsed = time.perf_counter() - started
    assert [answer.status_code for answer in statuses] == [200] * 3
    assert elapsed >= 3 * 0.4


def test_the_input_shape_is_required(model_file):
    with pytest.raises(ValueError, match="input_shape"):
        create_app(model_file, [TOKEN], trust_model_file=True)


def test_a_model_that_fails_the_self_test_is_refused(model_file, tmp_path):
    with pytest.raises(ModelSelfTestError, match=r"batch of 1 image\(s\) of \(C, H, W\) = \(3, 32, 32\)"):
        _app(model_file, input_shape=(3, 32, 32))
    with pytest.raises(ModelSelfTestError, match=r"batch of 1 image\(s\).*Guard failed"):  # exported for 4 images only
        _app(_export(tmp_path / "static.pt2"))


def test_a_batch_the_model_cannot_take_is_a_413_the_client_does_not_retry(tmp_path):
    model = _export(tmp_path / "small.pt2", torch.export.Dim("batch", min=1, max=8))
    app = _app(model)  # batches of 1 and 2 pass the self-test
    with serve_in_thread(app) as url:
        teacher = http_teacher(url + "/labels", "TOKEN_ENV", max_batch=20, max_retries=5, backoff_s=0.01)
        assert teacher.label(torch.rand(8, 1, 28, 28)).shape == (8,)
        with pytest.raises(TeacherRequestRejected) as error:
            teacher.label(torch.rand(20, 1, 28, 28))
    assert error.value.status == 413 and "largest batch it has labelled is 8" in str(error.value)
    assert teacher.requests_sent == 2 and app.state.service.status_counts[500] == 0


@pytest.fixture(autouse=True)
def token_env(monkeypatch):
    monkeypatch.setenv("TOKEN_ENV", TOKEN)
