"""The label-only service and its routes (see docs/http-teacher.md).

`POST /labels` answers `{"labels": [...]}` and nothing else about the model; `GET /billing` tells
a token's owner what it was billed; `GET /healthz` says the server is up. Billing counts samples
of 200 answers only, once per `Idempotency-Key` and token, so retries and restarted clients never
pay twice; billing and the idempotency cache live in SQLite (`state`), so a restarted server does
not either.

A labelling request goes through, in order: token, rate limit, `Idempotency-Key`, the declared
`Content-Length`; then an upload slot (its token's, then the server's); then its body, read within
`body_timeout_s` (`upload`); only then a labelling slot (`max_concurrent`), so a tenant whose
uploads stall holds nothing another tenant needs.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ideal_pipeline.teacher.server.limits import Limits, RateLimiter, UploadSlots
from ideal_pipeline.teacher.server.model import ServedModel
from ideal_pipeline.teacher.server.state import ServerState
from ideal_pipeline.teacher.server.upload import (
    MAX_HEADER_BYTES,
    Reject,
    Upload,
    UploadLimits,
    declared_length,
    read_upload,
)
from ideal_pipeline.teacher.tokens import check_token

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    """What to serve, to whom, and within which `Limits`."""

    model_path: Path
    tokens: tuple[str, ...]
    input_shape: tuple[int, int, int] | None = None  # required; None only so that its absence is a clear error
    admin_tokens: tuple[str, ...] = ()
    trust_model_file: bool = False  # .pt/.pt2 files unpickle: they load only when trusted
    device: str = "cpu"
    state_db: Path | None = None  # None keeps billing and idempotency in memory (tests)
    idempotency_cache_size: int = 100_000  # answers kept per client token
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def of(cls, model_path: str | Path, tokens: list[str], **options) -> ServerSettings:
        """Settings from keywords: `Limits` field names go to `limits`, the others are `ServerSettings` fields."""
        limit_options = {name: options.pop(name) for name in Limits.names() & set(options)}
        unknown = set(options) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown teacher server options {sorted(unknown)}")
        options["admin_tokens"] = tuple(options.get("admin_tokens") or ())
        return cls(Path(model_path), tuple(tokens), limits=Limits(**limit_options), **options)


def client_id(token: str) -> str:
    """Public name of a token for logs and billing: never the token itself."""
    return "tok_" + hashlib.sha256(token.encode()).hexdigest()[:12]


class LabelService:
    """State behind the app: model, tokens, limits, billing and idempotency (`ServerState`).

    `faults` injects failures FOR TESTING ONLY (`ideal_pipeline.teacher.server.testing.Faults`).
    """

    def __init__(self, settings: ServerSettings, faults=None):
        shape = settings.input_shape
        if not settings.tokens:
            raise ValueError("the teacher server needs at least one client token")
        if shape is None or len(tuple(shape)) != 3 or min(shape) < 1:
            raise ValueError(f"input_shape must be the (C, H, W) the model takes, e.g. (1, 28, 28); got {shape}")
        self.settings, self.limits = settings, settings.limits
        checked = [check_token(token, f"client token {i}") for i, token in enumerate(settings.tokens, 1)]
        self.tokens = {token: client_id(token) for token in checked}
        self.admin_tokens = [check_token(t, f"admin token {i}") for i, t in enumerate(settings.admin_tokens, 1) if t]
        self.input_shape = tuple(int(v) for v in shape)
        self.model = ServedModel(settings.model_path, self.input_shape, settings.device, settings.trust_model_file)
        per_image = 4 * int(np.prod(self.input_shape))
        body_limit = self.limits.max_body_bytes or self.limits.max_batch * per_image + MAX_HEADER_BYTES
        self.upload_limits = UploadLimits(self.input_shape, self.limits.max_batch, body_limit)
        self.rate = RateLimiter(self.limits.rate_limit_rps, self.limits.rate_limit_burst)
        self.state = ServerState(settings.state_db, self.model.fingerprint, settings.idempotency_cache_size)
        self.in_flight: dict[tuple[str, str], asyncio.Future] = {}
        self.faults = faults
        self.status_counts: collections.Counter = collections.Counter()  # every answer given, by status
        self._slots: tuple[UploadSlots, asyncio.Semaphore] | None = None

    @property
    def slots(self) -> tuple[UploadSlots, asyncio.Semaphore]:
        """(upload slots, labelling slots), made in the server's event loop on first use."""
        if self._slots is None:
            uploads = UploadSlots(
                self.limits.max_uploads, self.limits.max_uploads_per_client, self.limits.body_timeout_s
            )
            self._slots = uploads, asyncio.Semaphore(self.limits.max_concurrent)
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

    async def read_body(self, request: Request, length: int) -> Upload:
        """The checked body, or a 408 once `body_timeout_s` passed: a stalled or dripping upload frees its slots."""
        timeout = self.limits.body_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await read_upload(request, self.upload_limits, length)
        except TimeoutError:
            # The rest of the body is never read: the connection closes after this answer.
            raise Reject(408, f"the body did not arrive within {timeout:g} s", {"Connection": "close"}) from None

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
            labels = await run_in_threadpool(self.model.predict, images)
            del images
            await run_in_threadpool(self.state.billed, cid, key, digest, labels)  # stored before it is answered
            if self.faults is not None:
                await self.faults.after_billing()
            future.set_result(labels)
            return labels, False
        except BaseException as error:
            future.set_exception(error if isinstance(error, Exception) else RuntimeError("cancelled"))
            future.exception()  # mark retrieved: nobody may be waiting
            raise
        finally:
            del self.in_flight[slot]


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
        service.rate.check(cid)
        if service.faults is not None:
            service.faults.before_labelling()
        key = _idempotency_key(request)
        length = declared_length(request, service.upload_limits)
        uploads, labelling = service.slots
        async with uploads.hold(cid):
            upload = await service.read_body(request, length)
            async with labelling:
                labels, replayed = await service.labels_for(cid, key, upload)
            del upload
        fields = {"n": len(labels), "replayed": replayed, "key": (key or "body-sha256")[:16]}
        dropped = service.faults.dropped_answer() if service.faults is not None else None
        status, response = (0, dropped) if dropped else (200, JSONResponse({"labels": labels}))
    except Reject as reject:
        status, response = reject.status, JSONResponse({"error": reject.message}, reject.status, reject.headers)
        fields["error"] = reject.message
        if cid and reject.status != 401:
            await run_in_threadpool(service.state.count, cid, f"rejected_{reject.status}")
    except ClientDisconnect:  # gone mid-upload: nobody reads this answer
        status, response = 499, Response(status_code=400)
    except Exception:
        logger.exception("labelling failed", extra={"fields": {"client": cid}})
        status, response = 500, JSONResponse({"error": "internal error"}, 500)
    service.status_counts[status] += 1
    _log("label", client=cid, status=status, ms=round(1000 * (time.perf_counter() - started), 1), **fields)
    return response


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


class _HeaderCountLimit:
    """431 for a request with more than `max_headers` header fields (their total size is bounded by the protocol)."""

    def __init__(self, app: ASGIApp, max_headers: int):
        self.app, self.max_headers = app, max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and len(scope["headers"]) > self.max_headers:
            message = f"more than {self.max_headers} header fields"
            await JSONResponse({"error": message}, 431)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(model_path: str | Path, tokens: list[str], faults=None, **options) -> Starlette:
    """ASGI app serving `model_path` label-only to bearers of `tokens`.

    `options` are `ServerSettings` and `Limits` fields by name: `input_shape` is required;
    `trust_model_file=True` is needed for .pt/.pt2 files (they unpickle); `state_db=None` keeps
    billing and idempotency in memory (tests), a path persists them. Run it with
    `connections.uvicorn_config`, which enforces the connection-level limits.
    """
    service = LabelService(ServerSettings.of(model_path, tokens, **options), faults)
    app = Starlette(
        routes=[
            Route("/labels", _label_endpoint, methods=["POST"]),
            Route("/billing", _billing_endpoint, methods=["GET"]),
            Route("/healthz", _health_endpoint, methods=["GET"]),
        ],
        middleware=[Middleware(_HeaderCountLimit, max_headers=service.limits.max_headers)],
    )
    app.state.service = service
    if faults is not None:
        logger.warning("FAULT INJECTION ENABLED (for testing only)", extra={"fields": {"faults": repr(faults)}})
    return app
