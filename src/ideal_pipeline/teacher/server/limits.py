"""Every limit the teacher server enforces, and the per-request guards built on them.

`Limits` lists them all with their defaults (docs/http-teacher.md, "Limits", gives the CLI
option of each). Connection-level limits (header size, header deadline, connection cap) are
enforced by the HTTP protocol in `connections`; the rest by the app:

- `RateLimiter`: a token bucket per client token;
- `UploadSlots`: how many request bodies are received or held in memory at once, in all and
  per client token. A client's slot is taken before its body is read, so one tenant's stalled
  uploads hold only that tenant's slots, never the labelling slots (`max_concurrent`), which a
  request takes only once its whole body has arrived.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields

from ideal_pipeline.teacher.server.upload import Reject


@dataclass(frozen=True)
class Limits:
    """What one server accepts; the defaults suit a LeNet-sized model on a small machine."""

    # Each request.
    max_batch: int = 1000  # images per request (413 above)
    max_body_bytes: int | None = None  # None: max_batch images of the input shape plus a .npy header
    # Per client token.
    rate_limit_rps: float | None = None  # token bucket, requests per second; None: unlimited
    rate_limit_burst: float | None = None  # bucket size; None: max(1, rate_limit_rps)
    max_uploads_per_client: int = 2  # bodies one token has received or in memory at once; as many more may wait
    # The whole server.
    max_uploads: int = 4  # bodies received or in memory at once: memory is about this x the body limit
    max_concurrent: int = 2  # requests validated and labelled at once, each only after its whole body arrived
    max_connections: int = 1000  # open connections; above, the one idle longest is closed
    # Timing and size of what a client sends.
    max_header_bytes: int = 16 * 1024  # request line and headers (431 above)
    max_headers: int = 100  # header fields (431 above)
    header_timeout_s: float = 10.0  # from connecting (or the previous answer) to the end of the headers (408)
    body_timeout_s: float = 60.0  # to receive a body; also the longest wait for an upload slot (408 / 429 / 503)

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None and field.name in ("max_body_bytes", "rate_limit_rps", "rate_limit_burst"):
                continue
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{field.name} must be a positive number, got {value!r}")
        if self.max_uploads_per_client > self.max_uploads:
            raise ValueError(
                f"max_uploads_per_client ({self.max_uploads_per_client}) cannot exceed max_uploads ({self.max_uploads})"
            )

    @classmethod
    def names(cls) -> set[str]:
        return {field.name for field in fields(cls)}


class _TokenBucket:
    def __init__(self, rate: float, burst: float):
        self.rate, self.capacity, self.tokens, self.stamp = rate, burst, burst, time.monotonic()

    def take(self) -> float:
        """0 if a request may go now, else the seconds until it may."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """A token bucket per client; `check` raises a 429 with Retry-After when the client's bucket is empty."""

    def __init__(self, rate: float | None, burst: float | None):
        self.rate = rate
        self.burst = burst or max(1.0, rate or 1.0)
        self.buckets: dict[str, _TokenBucket] = {}

    def check(self, client: str) -> None:
        if self.rate is None:
            return
        wait = self.buckets.setdefault(client, _TokenBucket(self.rate, self.burst)).take()
        if wait:
            raise Reject(429, "rate limit exceeded", {"Retry-After": str(max(1, math.ceil(wait)))})


class UploadSlots:
    """At most `total` bodies received or held at once, at most `per_client` of them per client.

    A request waits at most `wait_s` for its slots: as long as any upload may hold one, so a slot
    an abusive upload holds is free again by then. A client with `per_client` requests waiting
    already is answered 429 at once: its extra connections cannot pile up in the queue.
    """

    def __init__(self, total: int, per_client: int, wait_s: float):
        self.per_client, self.wait_s = per_client, wait_s
        self._total = asyncio.Semaphore(total)
        self._clients: dict[str, asyncio.Semaphore] = {}
        self._pending: collections.Counter[str] = collections.Counter()

    @asynccontextmanager
    async def hold(self, client: str) -> AsyncIterator[None]:
        if self._pending[client] >= 2 * self.per_client:
            raise Reject(429, f"this token already has {self._pending[client]} requests in flight", _RETRY_SOON)
        self._pending[client] += 1
        own = self._clients.setdefault(client, asyncio.Semaphore(self.per_client))
        try:
            await self._acquire(own, 429, f"this token's {self.per_client} upload slots stayed busy")
            try:
                await self._acquire(self._total, 503, "every upload slot stayed busy")
                try:
                    yield
                finally:
                    self._total.release()
            finally:
                own.release()
        finally:
            self._pending[client] -= 1
            if not self._pending[client]:
                del self._pending[client], self._clients[client]

    async def _acquire(self, semaphore: asyncio.Semaphore, status: int, why: str) -> None:
        try:
            async with asyncio.timeout(self.wait_s):
                await semaphore.acquire()
        except TimeoutError:
            raise Reject(status, f"{why} for {self.wait_s:g} s; retry later", _RETRY_SOON) from None


_RETRY_SOON = {"Retry-After": "1"}
