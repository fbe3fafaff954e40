"""Every malformed `.npy` header is a 4xx: a 5xx would be retried by clients as a transient failure."""

from __future__ import annotations

import random

import httpx
import numpy as np
import pytest

from ideal_pipeline.teacher.http_client import encode_batch
from ideal_pipeline.teacher.server import create_app
from ideal_pipeline.teacher.server.testing import serve_in_thread

pytestmark = pytest.mark.timeout(120)
TOKEN = "npy-fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IMAGE_BYTES = 1 * 28 * 28 * 4


def _npy(header: str, version: int = 1, data: bytes = b"") -> bytes:
    """A .npy file whose header dictionary is the text `header`, padded as NumPy pads it."""
    text = header.encode("latin1")
    fixed = 10 if version == 1 else 12
    text += b" " * (-(fixed + len(text) + 1) % 64) + b"\n"
    size = len(text).to_bytes(2 if version == 1 else 4, "little")
    return b"\x93NUMPY" + bytes([version, 0]) + size + text + data


def _dict(shape: str, descr: str = "'<f4'", fortran: str = "False") -> str:
    return f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}"


ONE_IMAGE = bytes(IMAGE_BYTES)
CASES = {
    "bool batch": _npy(_dict("(True, 1, 28, 28)"), data=ONE_IMAGE),
    "bool height": _npy(_dict("(1, 1, True, 28)"), data=ONE_IMAGE),
    "negative batch": _npy(_dict("(-1, 1, 28, 28)")),
    "negative dims": _npy(_dict("(-2, 1, -28, 28)"), data=ONE_IMAGE),
    "huge batch": _npy(_dict(f"({10**30}, 1, 28, 28)")),
    "huge width": _npy(_dict(f"(1, 1, 28, {10**30})")),
    "float dims": _npy(_dict("(1.0, 1, 28, 28)"), data=ONE_IMAGE),
    "list shape": _npy(_dict("[1, 1, 28, 28]"), data=ONE_IMAGE),
    "int shape": _npy(_dict("784"), data=ONE_IMAGE),
    "string shape": _npy(_dict("'1, 1, 28, 28'"), data=ONE_IMAGE),
    "fortran_order not a bool": _npy(_dict("(1, 1, 28, 28)", fortran="1"), data=ONE_IMAGE),
    "fortran_order a string": _npy(_dict("(1, 1, 28, 28)", fortran="'yes'"), data=ONE_IMAGE),
    "object dtype": _npy(_dict("(1, 1, 28, 28)", descr="'|O'"), data=bytes(8 * 784)),
    "structured dtype": _npy(_dict("(1, 1, 28, 28)", descr="[('x', '<f4')]"), data=ONE_IMAGE),
    "subarray dtype": _npy(_dict("(1, 1, 28, 7)", descr="('<f4', (4,))"), data=ONE_IMAGE),
    "float64": _npy(_dict("(1, 1, 28, 28)", descr="'<f8'"), data=bytes(8 * 784)),
    "unknown dtype": _npy(_dict("(1, 1, 28, 28)", descr="'<q9'"), data=ONE_IMAGE),
    "missing key": _npy("{'descr': '<f4', 'shape': (1, 1, 28, 28), }", data=ONE_IMAGE),
    "extra key": _npy(_dict("(1, 1, 28, 28)")[:-1] + "'x': 1}", data=ONE_IMAGE),
    "not a dict": _npy("(1, 1, 28, 28)", data=ONE_IMAGE),
    "not a literal": _npy("{'descr': __import__('os').getcwd()}", data=ONE_IMAGE),
    "deeply nested": _npy("{'descr': " + "(" * 1000 + ")" * 1000 + "}"),
    "unterminated": _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 28"),
    "not latin1 text": b"\x93NUMPY\x01\x00\x10\x00" + b"\xff" * 15 + b"\n" + ONE_IMAGE,
    "truncated header": _npy(_dict("(1, 1, 28, 28)"))[:40],
    "magic only": b"\x93NUMPY",
    "wrong magic": b"\x93NUMPZ" + _npy(_dict("(1, 1, 28, 28)"), data=ONE_IMAGE)[6:],
    "zip file": b"PK\x03\x04" + bytes(200),
    "empty body": b"",
    "version 3": _npy(_dict("(1, 1, 28, 28)"), version=2, data=ONE_IMAGE).replace(b"NUMPY\x02", b"NUMPY\x03", 1),
    "header length past the body": b"\x93NUMPY\x01\x00\xff\x0f" + b" " * 100,
    "zero header length": b"\x93NUMPY\x01\x00\x00\x00" + ONE_IMAGE,
}


@pytest.fixture(scope="module")
def server(model_file):
    app = create_app(model_file, [TOKEN], input_shape=(1, 28, 28), max_batch=10, trust_model_file=True)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=10) as client:
        yield app.state.service, client


@pytest.mark.parametrize("case", CASES)
def test_a_malformed_header_is_a_4xx(server, case):
    service, client = server
    failures = service.status_counts[500]
    answer = client.post("/labels", content=CASES[case])
    assert 400 <= answer.status_code < 500 and set(answer.json()) == {"error"}, (answer.status_code, answer.text)
    assert service.status_counts[500] == failures


def test_version_2_and_fortran_order_headers_are_labelled(server):
    _, client = server
    images = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    fortran = _npy(_dict("(2, 1, 28, 28)", fortran="True"), data=np.asfortranarray(images).tobytes(order="F"))
    version_2 = _npy(_dict("(2, 1, 28, 28)"), version=2, data=images.tobytes())
    answers = [client.post("/labels", content=body) for body in (encode_batch(images), fortran, version_2)]
    assert [answer.status_code for answer in answers] == [200] * 3
    assert answers[0].json() == answers[1].json() == answers[2].json()


def test_random_corruptions_of_a_header_are_never_a_5xx(server):
    service, client = server
    failures = service.status_counts[500]
    valid = encode_batch(np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32))
    header_size = 10 + int.from_bytes(valid[8:10], "little")
    generator = random.Random(0)
    statuses = []
    for _ in range(300):
        body = bytearray(valid)
        for _ in range(generator.randint(1, 4)):
            body[generator.randrange(header_size)] = generator.randrange(256)
        if generator.random() < 0.2:
            body = body[: generator.randrange(len(body))]
        statuses.append(client.post("/labels", content=bytes(body)).status_code)
    assert all(status == 200 or 400 <= status < 500 for status in statuses), sorted(set(statuses))
    assert service.status_counts[500] == failures and sum(400 <= status < 500 for status in statuses) > 200
