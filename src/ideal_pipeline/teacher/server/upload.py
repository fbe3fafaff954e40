"""Reading a `.npy` request body with every check made before the array data is read.

Order: `Content-Length` present and within the body limit; the `.npy` header (at most
`MAX_HEADER_BYTES`) parsed from the first bytes of the stream; its dtype, shape and batch size
checked; `Content-Length` equal to what that header implies. Only then is one buffer of exactly
that size allocated and filled from the stream. The array is a view of that buffer: the body is
held once, and a header claiming 10^9 images costs nothing.

Whatever a client writes in the header is the client's error: every way it can be malformed is a
4xx, never a 500 (which clients retry as a transient failure).
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass

import numpy as np
from starlette.requests import Request

MAX_HEADER_BYTES = 4096  # np.save writes ~128 bytes for a 4-D float32 array
_FLOAT32 = np.dtype(np.float32)


class Reject(Exception):
    """An answer other than 200: `status`, a message for the client, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _not_npy(detail: str) -> Reject:
    return Reject(422, f"body is not a .npy array (application/x-npy, no pickle): {detail}")


@dataclass(frozen=True)
class UploadLimits:
    """What the server accepts: (C, H, W), images per request, body bytes."""

    input_shape: tuple[int, int, int]
    max_batch: int
    max_body_bytes: int

    def check_header(self, shape: tuple, dtype: np.dtype) -> None:
        if dtype.kind != "f" or dtype.itemsize != 4 or dtype.shape or dtype.names is not None:
            raise Reject(422, f"images must be float32, got {dtype}")
        if len(shape) != 4:
            raise Reject(422, f"images must have shape (N, C, H, W), got {shape}")
        # NumPy's header reader takes any int, bool included (True passes as 1): only plain ints are sizes.
        if any(type(size) is not int for size in shape):
            raise Reject(422, f"images must have integer dimensions, got shape {shape}")
        if any(size <= 0 for size in shape):
            raise Reject(422, f"images must not have a zero-size or negative dimension, got shape {shape}")
        if tuple(shape[1:]) != self.input_shape:
            raise Reject(422, f"images must have (C, H, W) = {self.input_shape}, got {tuple(shape[1:])}")
        if shape[0] > self.max_batch:
            raise Reject(413, f"batch of {shape[0]} images exceeds max_batch={self.max_batch}")


@dataclass
class Upload:
    """A checked body: `body` is exactly the bytes received; the images are a view into it."""

    body: np.ndarray  # uint8, one dimension
    shape: tuple[int, int, int, int]
    dtype: np.dtype
    fortran_order: bool
    data_offset: int

    def digest(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    def images(self) -> np.ndarray:
        """The (N, C, H, W) float32 batch after the value checks; a copy only if it is not C-ordered native float32."""
        flat = np.frombuffer(self.body, dtype=self.dtype, count=math.prod(self.shape), offset=self.data_offset)
        array = np.ascontiguousarray(flat.reshape(self.shape, order="F" if self.fortran_order else "C"), _FLOAT32)
        low, high = float(array.min()), float(array.max())  # NaN propagates through min/max: no temporaries
        if not (math.isfinite(low) and math.isfinite(high)):
            raise Reject(422, "images contain NaN or infinite values")
        if low < 0 or high > 1:
            raise Reject(422, "image values must lie in [0, 1]")
        return array


def _header_size(prefix: bytes) -> int | None:
    """Bytes before the array data, from the magic and length fields; None until enough bytes arrived."""
    if len(prefix) < 8:
        if prefix != b"\x93NUMPY"[: len(prefix)]:
            raise _not_npy("no .npy magic string")
        return None
    if prefix[:6] != b"\x93NUMPY":
        raise _not_npy("no .npy magic string")
    major = prefix[6]
    if major not in (1, 2):
        raise _not_npy(f"unsupported .npy format version {major}")
    fixed = 10 if major == 1 else 12
    if len(prefix) < fixed:
        return None
    size = fixed + int.from_bytes(prefix[8:fixed], "little")
    if size > MAX_HEADER_BYTES:
        raise _not_npy(f"a header of {size} bytes (at most {MAX_HEADER_BYTES})")
    return size


def _parse_header(header: bytes) -> tuple[tuple, bool, np.dtype]:
    stream = io.BytesIO(header)
    try:
        major, _ = np.lib.format.read_magic(stream)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read(stream)
    except Exception:  # noqa: BLE001  (NumPy evaluates client text: any failure there is a malformed header)
        raise _not_npy("unreadable header") from None
    if not isinstance(shape, tuple) or not isinstance(dtype, np.dtype):
        raise _not_npy("unreadable header")
    return shape, bool(fortran_order), dtype


def declared_length(request: Request, limits: UploadLimits) -> int:
    """`Content-Length`, required and within the body limit: both are checked before a byte of the body is read."""
    value = request.headers.get("content-length")
    if value is None:
        raise Reject(411, "Content-Length is required (chunked bodies are not accepted)")
    if not value.isascii() or not value.isdigit():
        raise Reject(400, "Content-Length must be a non-negative integer")
    length = int(value)
    if length > limits.max_body_bytes:
        raise Reject(413, f"body of {length} bytes exceeds the limit of {limits.max_body_bytes}")
    return length


async def read_upload(request: Request, limits: UploadLimits, length: int) -> Upload:
    """The checked body of `request` (of `declared_length`); raises `Reject` before reading the array data if anything is off."""
    stream = request.stream().__aiter__()
    prefix, header_size = b"", None
    while header_size is None or len(prefix) < header_size:
        chunk = await anext(stream, None)
        if chunk is None:
            raise _not_npy(f"the body ends after {len(prefix)} bytes, inside the header")
        prefix += chunk
        header_size = _header_size(prefix[:MAX_HEADER_BYTES])
    shape, fortran_order, dtype = _parse_header(prefix[:header_size])
    limits.check_header(shape, dtype)
    expected = header_size + math.prod(shape) * dtype.itemsize
    if length != expected:
        raise Reject(422, f"Content-Length is {length} bytes but the .npy header {shape} {dtype} implies {expected}")
    return Upload(await _fill(stream, prefix, length), shape, dtype, fortran_order, header_size)


async def _fill(stream, prefix: bytes, length: int) -> np.ndarray:
    """The whole body in one buffer of `length` bytes (uvicorn enforces Content-Length; this keeps the buffer exact).

    The buffer is left uninitialised (`np.empty`), so the OS backs only the pages written: an upload
    that stalls holds about the bytes it sent, not the size it declared.
    """
    body, filled = np.empty(length, dtype=np.uint8), 0
    view = memoryview(body)
    chunk: bytes | None = prefix
    while chunk is not None:
        if filled + len(chunk) > length:
            raise Reject(400, f"body is longer than its Content-Length of {length} bytes")
        view[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
        chunk = await anext(stream, None)
    if filled != length:
        raise Reject(400, f"body has {filled} bytes, Content-Length says {length}")
    return body
