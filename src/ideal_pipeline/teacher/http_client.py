"""Label-only teacher behind HTTP: a robust transport for `AccountedTeacher`.

Protocol (see docs/http-teacher.md): POST a `.npy` float32 (N, C, H, W) batch with a bearer
token and an `Idempotency-Key`; the answer is `{"labels": [...]}` and nothing else.

The idempotency key is the SHA-256 of the exact body, so any resend of the same batch -- a
retry after a timeout, or a whole process restarted after being killed -- carries the same key
and is never billed twice by the server.
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import logging
import random
import time
from typing import Any, ClassVar

import httpx
import numpy as np
import torch

from ideal_pipeline.errors import UserError
from ideal_pipeline.teacher.blackbox import PossiblyBilled
from ideal_pipeline.teacher.tokens import read_token

logger = logging.getLogger(__name__)

# 4xx answers that say "this request can never succeed as sent": retrying only burns budget.
_RETRYABLE_STATUS = {408, 429}


class TeacherRequestRejected(UserError, RuntimeError):
    """The teacher refused the request itself (401, 413, 422, ...); resending will not help."""

    _HINTS: ClassVar[dict[int, str]] = {
        401: "check that the token in the environment variable is the one the teacher's owner issued",
        403: "this token is not allowed to query the teacher",
        413: "the batch or body is larger than the server or its model accepts; lower teacher_access.max_batch",
        422: "the images do not match the protocol: float32 (N, C, H, W) in [0, 1], finite, of the model's shape",
    }

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        hint = self._HINTS.get(status, "")
        super().__init__(f"teacher rejected the request with HTTP {status}: {message}" + (f" ({hint})" if hint else ""))


class TeacherUnavailable(UserError, PossiblyBilled, RuntimeError):
    """The teacher kept failing transiently (timeouts, dropped answers, 429, 5xx) past `max_retries`.

    At least one attempt reached the teacher, which may have billed it: the ledger keeps the
    batch reserved until the same request, sent again, settles it.
    """


class TeacherUnreachable(TeacherUnavailable):
    """No attempt could even connect: nothing reached the teacher, nothing was billed."""

    may_have_been_billed = False


class TeacherRequestInvalid(UserError, RuntimeError):
    """The request could not be sent as built (e.g. a header httpx refuses); resending it will not help."""


class TeacherProtocolError(PossiblyBilled, RuntimeError):
    """The teacher answered 200 with something that is not one label per image (and billed it)."""


def encode_batch(images: np.ndarray) -> bytes:
    """The request body: `images` exactly as given, in NumPy's `.npy` format (no pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(images), allow_pickle=False)
    return buffer.getvalue()


def _retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))[:500]
    except (ValueError, AttributeError):
        return response.text[:500] or response.reason_phrase


class HttpTeacher:
    """`label(images)` over HTTP, split into batches of `max_batch`, with bounded retries.

    Only the *name* of the environment variable holding the token is stored; the token is read
    at each request, so it never sits in this object's state, repr, pickles or exceptions.
    """

    def __init__(
        self,
        url: str,
        token_env: str,
        *,
        max_batch: int,
        timeout_s: float,
        max_retries: int,
        backoff_s: float,
        max_backoff_s: float,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        read_token(token_env)  # fail now, not at the first request, on a missing or malformed token
        self.url = url
        self.token_env = token_env
        self.max_batch = int(max_batch)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.requests_sent = 0  # attempts, retries included: what a retry storm would show
        self._client = httpx.Client(timeout=self.timeout_s)

    def label(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float32 in [0, 1] -> (N,) int64 labels. Sent as given: the server validates."""
        array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        if array.ndim == 0:
            raise ValueError("images must be a batch (N, C, H, W), got a scalar")
        if len(array) == 0:
            return torch.empty(0, dtype=torch.int64)
        labels = [self._post(array[i : i + self.max_batch]) for i in range(0, len(array), self.max_batch)]
        return torch.tensor(np.concatenate(labels), dtype=torch.int64)

    def _post(self, batch: np.ndarray) -> np.ndarray:
        body = encode_batch(batch)
        key = hashlib.sha256(body).hexdigest()
        failure, reached = "", False
        for attempt in range(self.max_retries + 1):
            if attempt:
                logger.warning(
                    "teacher request %s… failed (%s); retry %d/%d", key[:12], failure, attempt, self.max_retries
                )
            wait = min(self.max_backoff_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
            headers = self._headers(key)  # a missing or malformed token raises TokenError here: nothing is sent
            try:
                self.requests_sent += 1
                response = self._client.post(self.url, content=body, headers=headers)
            except httpx.LocalProtocolError as error:
                # Raised while *building* the request: it would fail the same way every time, and its
                # text may quote a header value, i.e. the token.
                raise TeacherRequestInvalid(
                    f"could not send a request to {self.url}: {type(error).__name__} (a malformed header?); not retried"
                ) from None
            except httpx.TransportError as error:  # connect/read timeouts, refused or dropped connections
                failure = f"{type(error).__name__}: {error}"
                reached = reached or not isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
            else:
                reached = True
                if response.status_code == 200:
                    return self._parse(response, len(batch))
                failure = f"HTTP {response.status_code}: {_error_message(response)}"
                if response.status_code < 500 and response.status_code not in _RETRYABLE_STATUS:
                    raise TeacherRequestRejected(response.status_code, _error_message(response))
                retry_after = _retry_after_s(response.headers.get("Retry-After"))
                if retry_after is not None:
                    wait = max(wait, min(retry_after, self.max_backoff_s)) + random.uniform(0, self.backoff_s)
            if attempt < self.max_retries:
                time.sleep(wait)
        unavailable = TeacherUnavailable if reached else TeacherUnreachable
        raise unavailable(
            f"teacher at {self.url} still failing after {self.max_retries + 1} attempts (last: {failure}); "
            "labels already paid are in the ledger, rerun to resume"
        )

    def _headers(self, key: str) -> dict[str, str]:
        token = read_token(self.token_env)  # read at each request: never kept in this object's state
        return {"Authorization": f"Bearer {token}", "Idempotency-Key": key, "Content-Type": "application/x-npy"}

    @staticmethod
    def _parse(response: httpx.Response, n: int) -> np.ndarray:
        try:
            labels = response.json()["labels"]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TeacherProtocolError('teacher answered 200 without a JSON {"labels": [...]} body') from None
        if not isinstance(labels, list) or not all(type(label) is int for label in labels):
            raise TeacherProtocolError("teacher answered 200 with labels that are not a list of integers")
        if len(labels) != n:
            raise TeacherProtocolError(f"teacher answered {len(labels)} labels for {n} images")
        array = np.asarray(labels, dtype=np.int64)
        return array

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "_client"}  # sockets do not pickle

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._client = httpx.Client(timeout=self.timeout_s)

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"HttpTeacher(url={self.url!r}, token_env={self.token_env!r}, max_batch={self.max_batch})"
