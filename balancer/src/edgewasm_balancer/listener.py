"""Listening sockets with the limits aiohttp does not have: a connection cap and a header timeout.

Each accepted connection gets a `Guard` that wraps aiohttp's per-connection protocol (a
`JsonErrorHandler`, made by `handler_factory`) and forwards every event to it. Over `max_connections`, a new connection is answered 503 and closed
before aiohttp sees it. A new connection must deliver its first request's headers (the blank line
that ends them) within `header_timeout`, or it is answered 408 and closed; later requests on a
kept-alive connection are bounded by aiohttp's keep-alive timeout, which it arms whenever a
connection waits for a request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_END_OF_HEAD = b"\r\n\r\n"


def _canned(status: int, reason: str, message: str, kind: str, code: str) -> bytes:
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


TOO_MANY = _canned(
    503,
    "Service Unavailable",
    "Too many connections to the gateway",
    "service_unavailable",
    "too_many_connections",
)
HEADER_TIMEOUT = _canned(
    408,
    "Request Timeout",
    "The request headers did not arrive in time",
    "invalid_request_error",
    "header_timeout",
)


@dataclass
class Limits:
    max_connections: int
    header_timeout: float
    on_refused: Callable[[str], None] = lambda _reason: None
    active: int = field(default=0)


class Guard(asyncio.Protocol):
    def __init__(self, inner_factory: Callable[[], asyncio.Protocol], limits: Limits) -> None:
        self.inner_factory = inner_factory
        self.limits = limits
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.tail = b""  # the last bytes seen while waiting for the end of the first head

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.limits.active >= self.limits.max_connections:
            self.limits.on_refused("too_many_connections")
            self.transport.write(TOO_MANY)  # type: ignore[union-attr]
            transport.close()
            return
        self.limits.active += 1
        self.timer = asyncio.get_running_loop().call_later(self.limits.header_timeout, self._too_slow)
        self.inner = self.inner_factory()
        self.inner.connection_made(transport)

    def _too_slow(self) -> None:
        self.timer = None
        self.limits.on_refused("header_timeout")
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(HEADER_TIMEOUT)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        if self.timer is not None:
            seen = self.tail + data
            if _END_OF_HEAD in seen:
                self.timer.cancel()
                self.timer = None
                self.tail = b""
            else:
                self.tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.inner is not None:
            self.limits.active -= 1
            inner, self.inner = self.inner, None
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class JsonErrorHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, answering what it refuses itself (a malformed request line or
    header, a header over the size limits) in the OpenAI error format, and logging a client's malformed
    request as one warning line: a traceback in the log is reserved for the balancer's own bugs."""

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)  # a bug of ours: keep the traceback
        logging.getLogger("edgewasm_balancer.listener").warning(
            "malformed request refused",
            extra={
                "remote": request.remote,
                "status": status,
                "detail": str(getattr(exc, "message", exc))[:200],
            },
        )
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent: the connection is closed")
        detail = str(getattr(exc, "message", None) or message or "malformed request").splitlines()[0][:200]
        body = {
            "error": {
                "message": f"Malformed HTTP request: {detail}",
                "type": "invalid_request_error",
                "param": None,
                "code": "bad_request",
            }
        }
        response = web.json_response(body, status=status)
        response.force_close()
        return response


def handler_factory(server: web.Server, **kwargs: Any) -> Callable[[], asyncio.Protocol]:
    """A factory of JsonErrorHandler for `server` (what `server()` makes, with the JSON errors)."""
    loop = asyncio.get_running_loop()
    return lambda: JsonErrorHandler(server, loop=loop, **kwargs)


async def listen(
    inner_factory: Callable[[], asyncio.Protocol], host: str, port: int, limits: Limits
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: Guard(inner_factory, limits), host or None, port, backlog=1024, reuse_address=True
    )
