"""Bounds on what the study server reads from a connection, so that a client cannot hold it up or fill its memory.

* `BoundedRequests` (ASGI middleware, around the whole app): a body whose ``Content-Length`` is over the limit is
  refused (413) before any of it is read; any other body is read in the chunks the server receives and refused
  (413) as soon as it passes the limit, so at most the limit plus one chunk is ever held; a body not complete
  within the timeout (counted from the end of the headers) is refused with 408. Refusals close the connection.
  The app sees the body only once it is complete. Every response, refusals included, gets `headers` (the
  security headers of `study/app.py`).
* `header_deadline_protocol`: uvicorn's HTTP/1.1 protocol (h11) with a deadline for the request line and headers.
  uvicorn bounds their size (h11's 16 KiB) and the idle time between requests (``timeout_keep_alive``), but not how
  long a client may take to send them: a client sending a header byte every few seconds would hold its connection
  forever. With the deadline, a connection is closed when a request's headers are not complete within the timeout
  of its first byte (of the connection's opening for the first request).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BoundedRequests:
    """ASGI middleware: request bodies bounded in size (`max_body` bytes) and time (`timeout` seconds after the
    headers), `headers` added to every response."""

    def __init__(self, app: ASGIApp, max_body: int, timeout: float, headers: list[tuple[str, str]]):
        if max_body < 0 or timeout <= 0:
            raise ValueError(f"expected max_body >= 0 and timeout > 0, got {max_body} and {timeout}")
        self.app, self.max_body, self.timeout = app, max_body, timeout
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await _refuse(send_with_headers, 413, f"body of {declared} bytes is larger than the limit of "
                          f"{self.max_body} bytes")
            return
        body = await self._read_body(receive, send_with_headers)
        if body is None:
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: waits for the client's disconnect, as the server would

        await self.app(scope, replay, send_with_headers)

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None once a refusal is sent (or the client has gone)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                await _refuse(send, 408, f"request body not complete within {self.timeout:g} s")
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _refuse(send, 413, f"body larger than the limit of {self.max_body} bytes")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _content_length(scope: Scope) -> int | None:
    """The request's declared body size; None without the header (h11 has refused malformed values already)."""
    for key, value in scope.get("headers", []):
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, status: int, message: str) -> None:
    """A JSON ``{"error": ...}`` reply that closes the connection (the rest of the request stays unread)."""
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol; a request whose headers are not complete `header_timeout` seconds after its first
    byte (the connection's opening, for the first request) has its connection closed."""

    header_timeout: float = 15.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of a new request after an idle keep-alive connection (no-op if armed)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # headers complete: the body's deadline is BoundedRequests'

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def header_deadline_protocol(seconds: float) -> type[asyncio.Protocol]:
    """The protocol class to pass as uvicorn's ``http``: h11 with a `seconds` deadline for each request's headers."""
    if seconds <= 0:
        raise ValueError(f"expected a header timeout > 0 seconds, got {seconds}")
    return type("HeaderDeadlineProtocol", (_HeaderDeadline,), {"header_timeout": float(seconds)})
