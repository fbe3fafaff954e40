"""FOR TESTING ONLY: injected failures and a server in a background thread.

The CLI imports this module only when a `--fault-*` option is given, so a production server
never loads it. Tests and benchmarks use `serve_in_thread`, which runs the app under the same
uvicorn settings and connection limits as `ideal-teacher serve`.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from ideal_pipeline.teacher.server.connections import uvicorn_config
from ideal_pipeline.teacher.server.upload import Reject


@dataclass
class Faults:
    """Failure injection: probabilities per labelling request."""

    p_500: float = 0.0  # answer 500 before doing anything (not billed)
    p_429: float = 0.0  # answer 429 with Retry-After: retry_after_s (not billed)
    p_slow: float = 0.0  # label and bill, then wait slow_s before answering (the client may time out and retry)
    slow_s: float = 1.0
    p_drop: float = 0.0  # label and bill, then close the connection without the answer
    retry_after_s: int = 0
    seed: int | None = None
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def before_labelling(self) -> None:
        if self._random.random() < self.p_500:
            raise Reject(500, "transient failure (injected for testing)")
        if self._random.random() < self.p_429:
            raise Reject(429, "rate limited (injected for testing)", {"Retry-After": str(self.retry_after_s)})

    async def after_billing(self) -> None:
        if self._random.random() < self.p_slow:
            await asyncio.sleep(self.slow_s)

    def dropped_answer(self):
        """An ASGI answer that loses the labels already billed, or None."""
        return _dropped if self._random.random() < self.p_drop else None


async def _dropped(scope: Scope, receive: Receive, send: Send) -> None:
    """Promise a body, send none, return: uvicorn closes the connection mid-answer."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})


@contextmanager
def serve_in_thread(app: Starlette, host: str = "127.0.0.1", timeout_s: float = 10.0) -> Iterator[str]:
    """Run `app` on a free port of `host` in a background thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    server = uvicorn.Server(uvicorn_config(app, log_level="warning", timeout_graceful_shutdown=timeout_s))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("teacher server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()
