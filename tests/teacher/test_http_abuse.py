"""Honest tenants are served while another client abuses the server: stalled and dripping uploads,
slow or oversized headers, idle connections beyond the cap. Real sockets against a server on
127.0.0.1, with small limits and deadlines so that each test takes seconds."""

from __future__ import annotations

import select
import socket
import threading
import time

import httpx
import numpy as np
import pytest

from ideal_pipeline.teacher.http_client import encode_batch
from ideal_pipeline.teacher.server import create_app
from ideal_pipeline.teacher.server.testing import serve_in_thread

pytestmark = pytest.mark.timeout(60)
ALICE, BOB = "alice-abuses-the-server", "bob-is-an-honest-client"


def _app(model_file, **options):
    options = {"input_shape": (1, 28, 28), "max_batch": 100, "trust_model_file": True, **options}
    return create_app(model_file, [ALICE, BOB], **options)


def _batch(n: int, seed: int = 0) -> bytes:
    return encode_batch(np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32))


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _head(token: str, length: int, *extra: str) -> bytes:
    lines = ["POST /labels HTTP/1.1", "Host: teacher", f"Authorization: Bearer {token}", f"Content-Length: {length}"]
    return ("\r\n".join([*lines, *extra, "", ""])).encode()


def _answer(sock: socket.socket, timeout_s: float) -> int | str:
    """The status of the answer on `sock`, 'closed' if it closed without one, 'silent' if nothing came in time."""
    sock.settimeout(timeout_s)
    try:
        data = sock.recv(65536)
    except TimeoutError:
        return "silent"
    except ConnectionResetError:
        return "closed"
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else "closed"


def _closed(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the server closed `sock` (after any answer) within `timeout_s`."""
    sock.settimeout(timeout_s)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def _honest(url: str) -> tuple[int, float]:
    """Bob's request: (status, seconds)."""
    started = time.monotonic()
    answer = httpx.post(
        url + "/labels", content=_batch(4, seed=1), headers={"Authorization": f"Bearer {BOB}"}, timeout=15
    )
    return answer.status_code, time.monotonic() - started


def test_stalled_uploads_of_one_tenant_do_not_hold_up_another(model_file):
    """Alice sends the headers and 138 bytes of two uploads, then nothing: Bob is answered at once."""
    app = _app(model_file, body_timeout_s=3)  # default slots: 2 labelling, 2 uploads per client
    body = _batch(100)
    with serve_in_thread(app) as url:
        stalled = [_connect(url) for _ in range(2)]
        for sock in stalled:
            sock.sendall(_head(ALICE, len(body)) + body[:138])
        time.sleep(0.3)  # both are inside the server, reading their bodies
        status, seconds = _honest(url)
        started = time.monotonic()
        statuses = [_answer(sock, 10) for sock in stalled]
        expired_after = time.monotonic() - started
    assert status == 200 and seconds < 2.5, (status, seconds)
    assert statuses == [408, 408] and expired_after < 4, (statuses, expired_after)
    assert app.state.service.status_counts[408] == 2


def test_a_dripping_body_is_cut_off_at_the_body_deadline(model_file):
    app = _app(model_file, body_timeout_s=1.5)
    body = _batch(10)
    with serve_in_thread(app) as url:
        sock = _connect(url)
        sock.sendall(_head(ALICE, len(body)) + body[:200])
        stop = threading.Event()

        def drip() -> None:
            for i in range(200, len(body)):
                if stop.wait(0.1):
                    return
                try:
                    sock.sendall(body[i : i + 1])
                except OSError:
                    return

        dripper = threading.Thread(target=drip)
        started = time.monotonic()
        dripper.start()
        status = _answer(sock, 10)
        seconds = time.monotonic() - started
        stop.set()
        dripper.join()
        assert _honest(url)[0] == 200
    assert status == 408 and seconds < 4, (status, seconds)


def test_a_tenant_cannot_queue_more_than_its_share(model_file):
    """Beyond its upload slots and as many waiting, a tenant's next request is a 429 at once."""
    app = _app(model_file, body_timeout_s=4, max_uploads_per_client=1)
    body = _batch(100)
    with serve_in_thread(app) as url:
        held = [_connect(url) for _ in range(2)]  # one uploading, one waiting for Alice's slot
        for sock in held:
            sock.sendall(_head(ALICE, len(body)) + body[:138])
        time.sleep(0.3)
        extra = _connect(url)
        extra.sendall(_head(ALICE, len(body)) + body[:138])
        assert _answer(extra, 2) == 429
        assert _honest(url)[0] == 200
        # The stalled upload ends with a 408; the waiting one with a 429, or a 408 if it got the slot first.
        assert {_answer(sock, 12) for sock in held} <= {408, 429}


def test_headers_must_arrive_before_the_header_deadline(model_file):
    app = _app(model_file, header_timeout_s=1)
    with serve_in_thread(app) as url:
        silent, partial, dripping = _connect(url), _connect(url), _connect(url)
        partial.sendall(b"POST /labels HTTP/1.1\r\nHost: teacher\r\n")
        stop = threading.Event()

        def drip() -> None:  # a byte of a header every 0.1 s: never idle, never done
            dripping.sendall(b"POST /labels HTTP/1.1\r\n")
            while not stop.wait(0.1):
                try:
                    dripping.sendall(b"X")
                except OSError:
                    return

        dripper = threading.Thread(target=drip)
        dripper.start()
        started = time.monotonic()
        statuses = [_answer(partial, 5), _answer(dripping, 5)]
        closed = _closed(silent, 5)
        seconds = time.monotonic() - started
        stop.set()
        dripper.join()
        assert _honest(url)[0] == 200
    assert statuses == [408, 408] and closed and seconds < 3.5, (statuses, closed, seconds)


def test_oversized_or_too_many_headers_are_refused_before_the_app(model_file):
    app = _app(model_file, max_header_bytes=8192, max_headers=20)
    with serve_in_thread(app) as url:
        big = _connect(url)
        big.sendall(b"POST /labels HTTP/1.1\r\nHost: teacher\r\nX-Big: ")
        answer, sent = b"", 0
        while not answer and sent < 4 * 2**20:  # one header line of up to 4 MiB, until the server answers
            try:
                big.sendall(b"a" * 65536)
            except OSError:
                break
            sent += 65536
            if select.select([big], [], [], 0.2)[0]:
                answer = big.recv(65536)
        big_status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else _answer(big, 1)
        many = _connect(url)
        many.sendall(_head(BOB, 0, *(f"X-Header-{i}: {i}" for i in range(30))))
        many_status = _answer(many, 5)
        assert _honest(url)[0] == 200
    assert big_status == 431 and sent <= 65536, (big_status, sent)
    assert many_status == 431


def test_idle_connections_beyond_the_cap_are_closed_oldest_first(model_file):
    app = _app(model_file, max_connections=10, header_timeout_s=30)
    with serve_in_thread(app) as url:
        idle = []
        for _ in range(30):
            idle.append(_connect(url))
            time.sleep(0.005)  # in order: the cap closes the one idle longest
        status, seconds = _honest(url)
        closed = [_closed(sock, 0.5 if i < 21 else 0.05) for i, sock in enumerate(idle)]
    assert status == 200 and seconds < 3
    assert all(closed[:21]) and not any(closed[21:]), closed


def test_at_the_cap_with_every_connection_busy_a_new_one_is_answered_503(model_file):
    app = _app(model_file, max_connections=2, body_timeout_s=3)
    body = _batch(100)
    with serve_in_thread(app) as url:
        busy = [_connect(url) for _ in range(2)]
        for sock in busy:
            sock.sendall(_head(ALICE, len(body)) + body[:138])
        time.sleep(0.3)
        late = _connect(url)
        late.sendall(_head(BOB, len(body)) + body)
        late_status = _answer(late, 5)
        assert [_answer(sock, 10) for sock in busy] == [408, 408]
        assert _honest(url)[0] == 200  # the busy connections are gone: room again
    assert late_status == 503
