"""Connection-level limits: how uvicorn runs the app, and a protocol that bounds what a client may hold.

uvicorn's default parser (httptools) buffers request headers without bound and nothing in uvicorn
times out a client that sends its headers slowly (its keep-alive timer stops at the first byte of a
request), nor bounds the number of open connections. So the server runs uvicorn's h11 protocol with:

- `h11_max_incomplete_event_size = max_header_bytes`: h11 refuses a request line plus headers
  longer than that as soon as it has buffered them, before the request reaches the app (431);
- a header deadline (`LimitedH11Protocol`): a timer armed when the connection opens and again after
  each answer, cancelled only when a whole request head has arrived. A client that has not sent
  its headers by then (slowly or not at all) gets 408 and is closed; one still sending the body of
  an answered request (a 401 or 413 answered before its body was read, which the protocol drains)
  gets `body_timeout_s` more. Bodies themselves are timed by the app (`LabelService.read_body`);
- a connection cap: above `max_connections`, the connection that has waited longest without a
  request in progress is closed, so idle or half-open connections cannot exhaust the process's file
  descriptors nor keep an honest client out; if every connection has a request in progress, the
  new one is answered 503 and closed. `ensure_file_descriptors` makes sure the cap fits the
  process's descriptor limit.
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections import OrderedDict

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from ideal_pipeline.teacher.server.limits import Limits

BACKLOG = 2048  # connections the kernel queues before accept (uvicorn's default)
_SPARE_DESCRIPTORS = 128  # the model file, SQLite and its WAL, worker threads, logs


def _raw_answer(status: int, message: str, *extra: tuple[str, str]) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, for moments h11 cannot answer in (no request yet)."""
    body = json.dumps({"error": message}).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(body))), *extra]
    head = [f"HTTP/1.1 {status} {STATUS_PHRASES[status].decode()}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join([*head, "connection: close", "", ""])).encode() + body


class _Connections:
    """One server's connections: every open one, and those waiting for a request, longest-waiting first."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.open: set[LimitedH11Protocol] = set()
        self.waiting: OrderedDict[LimitedH11Protocol, None] = OrderedDict()


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a connection cap (see the module's docstring)."""

    connections_of_server: _Connections  # set on the subclass `protocol_class` makes for one server

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        book = self.connections_of_server
        book.open.add(self)
        self._await_request(book.limits.header_timeout_s)
        if len(book.open) > book.limits.max_connections:
            oldest = next(iter(book.waiting))
            if oldest is not self:
                oldest._close()
            else:  # every other connection has a request in progress
                answer = _raw_answer(503, "too many connections; retry later", ("retry-after", "1"))
                self._close(answer)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a whole request head arrived: the app times the rest
            self._stop_waiting()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        super().on_response_complete()  # may start a pipelined request
        if self.transport.is_closing() or self.cycle is not cycle:
            return
        limits = self.connections_of_server.limits
        draining = self.conn.their_state is h11.SEND_BODY  # answered before its body was read
        self._await_request(limits.header_timeout_s + (limits.body_timeout_s if draining else 0.0))

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        self.connections_of_server.open.discard(self)
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """h11 refuses a request head over `max_header_bytes` like a malformed one: answer that case 431."""
        too_long = len(self.conn.trailing_data[0]) > self.connections_of_server.limits.max_header_bytes
        if not too_long:
            super().send_400_response(msg)
            return
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
        for event in (
            h11.Response(status_code=431, headers=headers, reason=STATUS_PHRASES[431]),
            h11.Data(data=b"Request header fields too large."),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def _await_request(self, timeout_s: float) -> None:
        self._stop_waiting()
        self._deadline = self.loop.call_later(timeout_s, self._expire, timeout_s)
        self.connections_of_server.waiting[self] = None

    def _stop_waiting(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.connections_of_server.waiting.pop(self, None)

    def _expire(self, timeout_s: float) -> None:
        self._deadline = None
        partial = self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])
        message = f"the request headers did not arrive within {timeout_s:g} s"
        self._close(_raw_answer(408, message) if partial else b"")

    def _close(self, answer: bytes = b"") -> None:
        self._stop_waiting()
        self.connections_of_server.open.discard(self)
        if not self.transport.is_closing():
            if answer:
                self.transport.write(answer)
            self.transport.close()


def protocol_class(limits: Limits) -> type[LimitedH11Protocol]:
    """A `LimitedH11Protocol` for one server: its connections are counted and capped together."""
    return type("LimitedH11Protocol", (LimitedH11Protocol,), {"connections_of_server": _Connections(limits)})


def uvicorn_config(app, limits: Limits | None = None, **options) -> uvicorn.Config:
    """uvicorn settings that enforce `limits` (by default the app's service's); `options` go to `uvicorn.Config`."""
    limits = limits or app.state.service.limits
    settings = {
        "http": protocol_class(limits),
        "h11_max_incomplete_event_size": limits.max_header_bytes,
        "ws": "none",  # an upgrade would hand the connection to a protocol without these limits
        "backlog": BACKLOG,
        # The request log replaces the access log; no Server/Date headers: answers carry labels only.
        "access_log": False,
        "server_header": False,
        "date_header": False,
    }
    return uvicorn.Config(app, **{**settings, **options})


def ensure_file_descriptors(limits: Limits) -> None:
    """Raise the process's soft descriptor limit to what `max_connections` needs, or say why it cannot be."""
    need = limits.max_connections + BACKLOG + _SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        raise ValueError(
            f"--max-connections {limits.max_connections} needs {need} file descriptors (connections, the "
            f"accept backlog of {BACKLOG}, files), but this process may open at most {hard}: lower "
            "--max-connections or raise the hard limit (ulimit -Hn)"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
