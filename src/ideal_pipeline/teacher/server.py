"""Serve a saved classifier as a label-only black box over HTTP (see docs/http-teacher.md).

`create_app(...)` returns a Starlette ASGI app: `POST /labels` answers `{"labels": [...]}` and
nothing else about the model; `GET /billing` tells a token's owner what it was billed;
`GET /healthz` says the server is up. Billing counts samples of 200 answers only, once per
`Idempotency-Key`, so retries and restarted clients never pay twice.

`Faults` injects failures (500, 429, slow answers, dropped connections) FOR TESTING ONLY.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import io
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ideal_pipeline.teacher.local import load_model_file

logger = logging.getLogger(__name__)


@dataclass
class Faults:
    """Failure injection FOR TESTING ONLY: probabilities per labelling request."""

    p_500: float = 0.0  # answer 500 before doing anything (not billed)
    p_429: float = 0.0  # answer 429 with Retry-After: retry_after_s (not billed)
    p_slow: float = 0.0  # sleep slow_s before answering (the client may time out and retry)
    slow_s: float = 1.0
    p_drop: float = 0.0  # label and bill, then close the connection without the answer
    retry_after_s: int = 0
    seed: int | None = None

    def enabled(self) -> bool:
        return any((self.p_500, self.p_429, self.p_slow, self.p_drop))


class Reject(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class _DropConnection(Exception):
    """Injected fault: the answer is lost after billing."""


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra={"fields": {...}}` adds structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _npy_header(prefix: bytes) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) from the start of a .npy body, or None if it is not one."""
    try:
        stream = io.BytesIO(prefix)
        major, _ = np.lib.format.read_magic(stream)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(stream)
        return shape, dtype
    except (ValueError, EOFError, OSError, SyntaxError):
        return None


def client_id(token: str) -> str:
    """Public name of a token for logs and billing: never the token itself."""
    return "tok_" + hashlib.sha256(token.encode()).hexdigest()[:12]


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


class LabelService:
    """State behind the app: model, tokens, rate limits, idempotency cache, billing."""

    def __init__(
        self,
        model_path: str | Path,
        tokens: list[str],
        admin_tokens: list[str] = (),
        max_batch: int = 1000,
        max_body_bytes: int | None = None,
        input_shape: tuple[int, int, int] | None = None,
        rate_limit_rps: float | None = None,
        rate_limit_burst: float | None = None,
        idempotency_cache_size: int = 100_000,
        faults: Faults | None = None,
        device: str = "cpu",
    ):
        if not tokens or not all(tokens):
            raise ValueError("the teacher server needs at least one non-empty client token")
        self.model = load_model_file(model_path, device)
        self.device = device
        self.tokens = {token: client_id(token) for token in tokens}
        self.admin_tokens = [token for token in admin_tokens if token]
        self.max_batch = max_batch
        self.input_shape = tuple(input_shape) if input_shape else None
        per_image = 4 * int(np.prod(self.input_shape)) if self.input_shape else 4 * 3 * 224 * 224
        self.max_body_bytes = max_body_bytes or max_batch * per_image + 4096  # + .npy header
        self.rate_limit = (rate_limit_rps, rate_limit_burst or max(1.0, rate_limit_rps)) if rate_limit_rps else None
        self.buckets: dict[str, _TokenBucket] = {}
        self.cache: collections.OrderedDict[tuple[str, str], tuple[str, list[int]]] = collections.OrderedDict()
        self.cache_size = idempotency_cache_size
        self.in_flight: dict[tuple[str, str], asyncio.Future] = {}
        self.billing: dict[str, collections.Counter] = {cid: collections.Counter() for cid in self.tokens.values()}
        self.faults = faults or Faults()
        self.random = random.Random(self.faults.seed)
        self.status_counts: collections.Counter = collections.Counter()  # for tests: every answer given
        self._model_lock = threading.Lock()  # one forward at a time: concurrent ones only fight for cores

    def authenticate(self, request: Request) -> tuple[str, bool]:
        """(client id, is admin) for the bearer token, or 401."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            for known, cid in self.tokens.items():
                if hmac.compare_digest(known.encode(), token.encode()):
                    return cid, False
            if any(hmac.compare_digest(admin.encode(), token.encode()) for admin in self.admin_tokens):
                return "admin", True
        raise Reject(401, "missing or unknown bearer token", {"WWW-Authenticate": "Bearer"})

    def check_rate(self, cid: str) -> None:
        if self.rate_limit is None:
            return
        wait = self.buckets.setdefault(cid, _TokenBucket(*self.rate_limit)).take()
        if wait:
            raise Reject(429, "rate limit exceeded", {"Retry-After": str(max(1, int(np.ceil(wait))))})

    async def read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > 4 * self.max_body_bytes:
            raise Reject(413, f"body of {declared} bytes exceeds the limit of {self.max_body_bytes}")
        chunks, size, prefix = [], 0, b""
        # Drain an oversized body instead of closing mid-upload: the client then reads a clean 413
        # rather than a broken pipe it would retry.
        async for chunk in request.stream():
            size += len(chunk)
            prefix = prefix if len(prefix) >= 4096 else (prefix + chunk)[:4096]
            if size <= self.max_body_bytes:
                chunks.append(chunk)
        if size > self.max_body_bytes:
            header = _npy_header(prefix)
            if header is not None:  # a wrong dtype or shape is the more useful answer
                self.check_header(*header)
            raise Reject(413, f"body of {size} bytes exceeds the limit of {self.max_body_bytes}")
        return b"".join(chunks)

    def check_header(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        if dtype.kind != "f" or dtype.itemsize != 4:
            raise Reject(422, f"images must be float32, got {dtype}")
        if len(shape) != 4:
            raise Reject(422, f"images must have shape (N, C, H, W), got {shape}")
        if shape[0] == 0:
            raise Reject(422, "the batch is empty")
        if self.input_shape and tuple(shape[1:]) != self.input_shape:
            raise Reject(422, f"images must have (C, H, W) = {self.input_shape}, got {tuple(shape[1:])}")
        if shape[0] > self.max_batch:
            raise Reject(413, f"batch of {shape[0]} images exceeds max_batch={self.max_batch}")

    def parse(self, body: bytes) -> np.ndarray:
        try:
            array = np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, EOFError, OSError, SyntaxError):  # numpy's ways to say 'not a .npy file'
            raise Reject(422, "body is not a .npy array (application/x-npy, no pickle)") from None
        if not isinstance(array, np.ndarray):
            raise Reject(422, "body is not a single .npy array")
        self.check_header(array.shape, array.dtype)
        if not np.isfinite(array).all():
            raise Reject(422, "images contain NaN or infinite values")
        if array.min() < 0 or array.max() > 1:
            raise Reject(422, "image values must lie in [0, 1]")
        return np.ascontiguousarray(array, dtype=np.float32)

    def predict(self, array: np.ndarray) -> list[int]:
        with self._model_lock, torch.inference_mode():
            try:
                logits = self.model(torch.from_numpy(array).to(self.device))
            except Exception:
                if self.input_shape:
                    raise
                # Without a declared shape a bad shape shows up here; the model's message would leak its internals.
                logger.warning("model rejected a batch", exc_info=True, extra={"fields": {"shape": list(array.shape)}})
                raise Reject(422, f"the model cannot take images of (C, H, W) = {array.shape[1:]}") from None
            return logits.argmax(1).cpu().tolist()

    async def labels_for(self, cid: str, key: str, body: bytes, array: np.ndarray) -> tuple[list[int], bool]:
        """(labels, replayed): each (client, key) is computed and billed once, even when concurrent."""
        slot, digest = (cid, key), hashlib.sha256(body).hexdigest()
        while True:
            if slot in self.cache:
                cached_digest, labels = self.cache[slot]
                if cached_digest != digest:
                    raise Reject(422, "Idempotency-Key was already used with a different body")
                self.cache.move_to_end(slot)
                self.billing[cid]["replayed_requests"] += 1
                return labels, True
            if slot not in self.in_flight:
                break
            # The same request is still being labelled (a client retry after a timeout): wait for it,
            # then answer from the cache, or compute it here if it failed unbilled.
            await asyncio.wait([self.in_flight[slot]])
        future = self.in_flight[slot] = asyncio.get_running_loop().create_future()
        try:
            if self.random.random() < self.faults.p_slow:
                await asyncio.sleep(self.faults.slow_s)
            labels = await run_in_threadpool(self.predict, array)
            self.billing[cid]["billed_samples"] += len(labels)
            self.billing[cid]["billed_requests"] += 1
            self.cache[slot] = (digest, labels)
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
            future.set_result(labels)
            return labels, False
        except BaseException as error:
            future.set_exception(error if isinstance(error, Exception) else RuntimeError("cancelled"))
            future.exception()  # mark retrieved: nobody may be waiting
            raise
        finally:
            del self.in_flight[slot]

    def inject_fault(self) -> None:
        if self.random.random() < self.faults.p_500:
            raise Reject(500, "transient failure (injected for testing)")
        if self.random.random() < self.faults.p_429:
            raise Reject(429, "rate limited (injected for testing)", {"Retry-After": str(self.faults.retry_after_s)})


def _log(event: str, **fields) -> None:
    logger.info(event, extra={"fields": {"event": event, **fields}})


async def _label_endpoint(request: Request) -> Response:
    service: LabelService = request.app.state.service
    started, cid, fields = time.perf_counter(), None, {}
    try:
        cid, is_admin = service.authenticate(request)
        if is_admin:
            raise Reject(401, "the admin token reads billing; label with a client token")
        service.check_rate(cid)
        service.inject_fault()
        body = await service.read_body(request)
        array = await run_in_threadpool(service.parse, body)  # a big batch would stall the event loop
        key = request.headers.get("idempotency-key") or hashlib.sha256(body).hexdigest()
        if len(key) > 200 or not key.isprintable():
            raise Reject(422, "Idempotency-Key must be at most 200 printable characters")
        labels, replayed = await service.labels_for(cid, key, body, array)
        fields = {"n": len(labels), "replayed": replayed, "key": key[:16]}
        if service.random.random() < service.faults.p_drop:
            raise _DropConnection()
        status, response = 200, JSONResponse({"labels": labels})
    except Reject as reject:
        status, response = reject.status, JSONResponse({"error": reject.message}, reject.status, reject.headers)
        fields["error"] = reject.message
        if cid and reject.status != 401:
            service.billing[cid][f"rejected_{reject.status}"] += 1
    except _DropConnection:
        status, response = 0, _dropped
    except Exception:
        logger.exception("labelling failed", extra={"fields": {"client": cid}})
        status, response = 500, JSONResponse({"error": "internal error"}, 500)
    service.status_counts[status] += 1
    _log("label", client=cid, status=status, ms=round(1000 * (time.perf_counter() - started), 1), **fields)
    return response


async def _dropped(scope: Scope, receive: Receive, send: Send) -> None:
    """Promise a body, send none, return: uvicorn closes the connection mid-answer."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})


async def _billing_endpoint(request: Request) -> Response:
    service: LabelService = request.app.state.service
    try:
        cid, is_admin = service.authenticate(request)
    except Reject as reject:
        return JSONResponse({"error": reject.message}, reject.status, reject.headers)
    visible = service.billing if is_admin else {cid: service.billing[cid]}
    return JSONResponse({client: dict(counts) for client, counts in visible.items()})


async def _health_endpoint(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(model_path: str | Path, tokens: list[str], **options) -> Starlette:
    """ASGI app serving `model_path` label-only to bearers of `tokens`; `options` go to `LabelService`."""
    service = LabelService(model_path, tokens, **options)
    app = Starlette(
        routes=[
            Route("/labels", _label_endpoint, methods=["POST"]),
            Route("/billing", _billing_endpoint, methods=["GET"]),
            Route("/healthz", _health_endpoint, methods=["GET"]),
        ]
    )
    app.state.service = service
    if service.faults.enabled():
        logger.warning("FAULT INJECTION ENABLED (for testing only)", extra={"fields": {"faults": vars(service.faults)}})
    return app


@contextmanager
def serve_in_thread(app: Starlette, host: str = "127.0.0.1", timeout_s: float = 10.0) -> Iterator[str]:
    """Run `app` on a free port of `host` in a background thread; yields the base URL (tests, benchmarks)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False, date_header=False)
    server = uvicorn.Server(config)
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
