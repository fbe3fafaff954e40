"""Serve a saved classifier as a label-only black box over HTTP (see docs/http-teacher.md).

`create_app(...)` returns a Starlette ASGI app: `POST /labels` answers `{"labels": [...]}` and
nothing else about the model; `GET /billing` tells a token's owner what it was billed;
`GET /healthz` says the server is up. Billing counts samples of 200 answers only, once per
`Idempotency-Key` and token, so retries and restarted clients never pay twice; billing and the
idempotency cache live in SQLite (`server_state`), so a restarted server does not either.

A request is checked before its body is parsed (`npy_upload`), at most `max_concurrent` bodies
are held and labelled at once, and the model must label the configured shape with batches of
1 and 2 before the server starts.

`Faults` injects failures (500, 429, slow answers, dropped connections) FOR TESTING ONLY.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
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
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from torch import nn

from ideal_pipeline.teacher.local import load_model_file
from ideal_pipeline.teacher.npy_upload import MAX_HEADER_BYTES, Reject, Upload, UploadLimits, read_upload
from ideal_pipeline.teacher.server_state import ServerState
from ideal_pipeline.teacher.tokens import check_token

logger = logging.getLogger(__name__)

__all__ = ["Faults", "LabelService", "ModelSelfTestError", "Reject", "client_id", "create_app", "serve_in_thread"]

SELF_TEST_BATCHES = (1, 2)


@dataclass
class Faults:
    """Failure injection FOR TESTING ONLY: probabilities per labelling request."""

    p_500: float = 0.0  # answer 500 before doing anything (not billed)
    p_429: float = 0.0  # answer 429 with Retry-After: retry_after_s (not billed)
    p_slow: float = 0.0  # label and bill, then wait slow_s before answering (the client may time out and retry)
    slow_s: float = 1.0
    p_drop: float = 0.0  # label and bill, then close the connection without the answer
    retry_after_s: int = 0
    seed: int | None = None

    def enabled(self) -> bool:
        return any((self.p_500, self.p_429, self.p_slow, self.p_drop))


class ModelSelfTestError(ValueError):
    """The model cannot label the configured input shape: the server refuses to start."""


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


def client_id(token: str) -> str:
    """Public name of a token for logs and billing: never the token itself."""
    return "tok_" + hashlib.sha256(token.encode()).hexdigest()[:12]


def model_fingerprint(path: str | Path) -> str:
    """SHA-256 of the model file: cached answers belong to exactly these bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def self_test(model: nn.Module, input_shape: tuple[int, int, int], device: str) -> None:
    """Refuse a model that cannot label `input_shape` with batches of 1 and 2 (it would fail every request)."""
    generator = torch.Generator().manual_seed(0)
    for batch in SELF_TEST_BATCHES:
        images = torch.rand(batch, *input_shape, generator=generator).to(device)
        try:
            with torch.inference_mode():
                logits = model(images)
        except Exception as error:  # noqa: BLE001  (torch raises many types; the owner needs the model's own words)
            reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300] if str(error).strip() else ''}"
            raise ModelSelfTestError(
                f"the model fails on a batch of {batch} image(s) of (C, H, W) = {input_shape} ({reason}); "
                "check --input-shape, and that a .pt2 was exported with a dynamic batch dimension"
            ) from None
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != batch:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ModelSelfTestError(
                f"the model answers {shape} for a batch of {batch} image(s) of {input_shape}; "
                f"a classifier must answer (N, classes) logits"
            )


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
    """State behind the app: model, tokens, limits, rate limits, billing and idempotency (`ServerState`)."""

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
        state_db: str | Path | None = None,
        trust_model_file: bool = False,
        max_concurrent: int = 2,
    ):
        if not tokens:
            raise ValueError("the teacher server needs at least one client token")
        if input_shape is None or len(tuple(input_shape)) != 3 or min(input_shape) < 1:
            raise ValueError(f"input_shape must be the (C, H, W) the model takes, e.g. (1, 28, 28); got {input_shape}")
        if max_batch < 1 or max_concurrent < 1:
            raise ValueError(f"max_batch and max_concurrent must be >= 1, got {max_batch} and {max_concurrent}")
        checked = [check_token(token, f"client token {i}") for i, token in enumerate(tokens, 1)]
        self.tokens = {token: client_id(token) for token in checked}
        self.admin_tokens = [check_token(t, f"admin token {i}") for i, t in enumerate(admin_tokens, 1) if t]
        self.input_shape = tuple(int(v) for v in input_shape)
        self.device = device
        self.model = load_model_file(model_path, device, trusted=trust_model_file)
        self_test(self.model, self.input_shape, device)
        self.largest_labelled_batch = max(SELF_TEST_BATCHES)
        per_image = 4 * int(np.prod(self.input_shape))
        body_limit = max_body_bytes or max_batch * per_image + MAX_HEADER_BYTES
        self.limits = UploadLimits(self.input_shape, max_batch, body_limit)
        self.max_batch = max_batch
        self.max_body_bytes = self.limits.max_body_bytes
        self.rate_limit = (rate_limit_rps, rate_limit_burst or max(1.0, rate_limit_rps)) if rate_limit_rps else None
        self.buckets: dict[str, _TokenBucket] = {}
        self.state = ServerState(state_db, model_fingerprint(model_path), idempotency_cache_size)
        self.in_flight: dict[tuple[str, str], asyncio.Future] = {}
        self.faults = faults or Faults()
        self.random = random.Random(self.faults.seed)
        self.status_counts: collections.Counter = collections.Counter()  # for tests: every answer given
        self.max_concurrent = max_concurrent
        self._slots: asyncio.Semaphore | None = None  # made in the server's event loop, on first use
        self._model_lock = threading.Lock()  # one forward at a time: concurrent ones only fight for cores

    @property
    def slots(self) -> asyncio.Semaphore:
        """Bounds the bodies held and labelled at once: memory is about max_concurrent x the body limit."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrent)
        return self._slots

    @property
    def billing(self) -> dict[str, collections.Counter]:
        """Every client's persisted counters: billed_samples, billed_requests, replayed_requests, rejected_<status>."""
        return self.state.counters(list(self.tokens.values()))

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

    def predict(self, array: np.ndarray) -> list[int]:
        """Top-1 labels; a model failure is a 413 (batch larger than it has shown it takes) or a 422, never a 500."""
        with self._model_lock, torch.inference_mode():
            try:
                logits = self.model(torch.from_numpy(array).to(self.device))
                if logits.dim() != 2 or logits.shape[0] != len(array):
                    raise RuntimeError(f"the model answered {tuple(logits.shape)} for {len(array)} images")
            except Exception as error:
                # The model's own message stays in the owner's log: it would leak its internals to the client.
                fields = {"shape": list(array.shape), "error": type(error).__name__}
                logger.warning("model failed on a batch", exc_info=True, extra={"fields": fields})
                if len(array) > self.largest_labelled_batch:
                    raise Reject(
                        413,
                        f"the model cannot label a batch of {len(array)} images; the largest batch it has labelled "
                        f"is {self.largest_labelled_batch}",
                    ) from None
                raise Reject(422, f"the model cannot label these {len(array)} images") from None
            self.largest_labelled_batch = max(self.largest_labelled_batch, len(array))
            return logits.argmax(1).cpu().tolist()

    async def labels_for(self, cid: str, key: str | None, upload: Upload) -> tuple[list[int], bool]:
        """(labels, replayed): each (client, key) is labelled and billed once, even when concurrent or restarted."""
        digest = await run_in_threadpool(upload.digest)
        key = key or digest
        slot = (cid, key)
        while True:
            cached = await run_in_threadpool(self.state.lookup, cid, key)
            if cached is not None:
                if cached[0] != digest:
                    raise Reject(422, "Idempotency-Key was already used with a different body")
                await run_in_threadpool(self.state.replayed, cid, key)
                return cached[1], True
            if slot not in self.in_flight:
                break
            # The same request is still being labelled (a client retry after a timeout): wait for it,
            # then answer from the cache, or compute it here if it failed unbilled.
            await asyncio.wait([self.in_flight[slot]])
        future = self.in_flight[slot] = asyncio.get_running_loop().create_future()
        try:
            images = await run_in_threadpool(upload.images)
            labels = await run_in_threadpool(self.predict, images)
            del images
            await run_in_threadpool(self.state.billed, cid, key, digest, labels)  # stored before it is answered
            if self.random.random() < self.faults.p_slow:
                await asyncio.sleep(self.faults.slow_s)
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


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and (not key or len(key) > 200 or not key.isprintable()):
        raise Reject(422, "Idempotency-Key must be 1 to 200 printable characters")
    return key


async def _label_endpoint(request: Request) -> Response:
    service: LabelService = request.app.state.service
    started, cid, fields = time.perf_counter(), None, {}
    try:
        cid, is_admin = service.authenticate(request)
        if is_admin:
            raise Reject(401, "the admin token reads billing; label with a client token")
        service.check_rate(cid)
        service.inject_fault()
        key = _idempotency_key(request)
        async with service.slots:
            upload = await read_upload(request, service.limits)
            labels, replayed = await service.labels_for(cid, key, upload)
            del upload
        fields = {"n": len(labels), "replayed": replayed, "key": (key or "body-sha256")[:16]}
        if service.random.random() < service.faults.p_drop:
            raise _DropConnection()
        status, response = 200, JSONResponse({"labels": labels})
    except Reject as reject:
        status, response = reject.status, JSONResponse({"error": reject.message}, reject.status, reject.headers)
        fields["error"] = reject.message
        if cid and reject.status != 401:
            await run_in_threadpool(service.state.count, cid, f"rejected_{reject.status}")
    except ClientDisconnect:  # gone mid-upload: nobody reads this answer
        status, response = 499, Response(status_code=400)
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
    billing = await run_in_threadpool(lambda: service.billing)
    visible = billing if is_admin else {cid: billing[cid]}
    return JSONResponse({client: dict(counts) for client, counts in visible.items()})


async def _health_endpoint(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(model_path: str | Path, tokens: list[str], **options) -> Starlette:
    """ASGI app serving `model_path` label-only to bearers of `tokens`; `options` go to `LabelService`.

    `input_shape` is required; `trust_model_file=True` is needed for .pt/.pt2 files (they unpickle);
    `state_db=None` keeps billing and idempotency in memory (tests), a path persists them.
    """
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
