"""A lean HTTP/1.1 client for the proxy's hot path: pooled keep-alive connections, httptools parsing.

aiohttp's client topped out at about 4,000 proxied requests/s on our 2-core machines (15 % of nginx);
this one does the minimum a reverse proxy needs: write the request in one go (or stream a large body
with chunked encoding and flow control), parse the response with llhttp (httptools), hand body
chunks over as they arrive, and put the connection back in a per-endpoint pool when the response
ended cleanly. Health checks and the merged /v1/models keep using aiohttp.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import httptools

MAX_BUFFER = 1024 * 1024  # response bytes held before reading from the backend pauses
SMALL_BODY = 64 * 1024  # bodies up to this size are written together with the head, in one call
MAX_RESPONSE_HEAD = 64 * 1024  # status line and headers of one response (llhttp itself sets no limit)
POOL_IDLE_SECONDS = 30.0
POOL_SIZE = 256


class UpstreamError(Exception):
    """The backend exchange failed.

    `connect`: no connection could be made; `unsent`: no byte of the request was written (a pooled
    connection found closed); in both cases the backend provably did not see the request. `timeout`:
    a timer expired; `fresh`: no response byte had arrived.
    """

    def __init__(
        self,
        message: str,
        *,
        connect: bool = False,
        fresh: bool = True,
        timeout: bool = False,
        unsent: bool = False,
    ) -> None:
        super().__init__(message)
        self.connect = connect
        self.fresh = fresh
        self.timeout = timeout
        self.unsent = unsent

    @property
    def delivered(self) -> bool:
        """False when the backend provably never received the request."""
        return not (self.connect or self.unsent)


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    conn: Connection

    async def read_chunk(self, idle_timeout: float | None = None) -> bytes:
        """The next body bytes; b"" at the end. Raises UpstreamError if the backend goes away or idles."""
        return await self.conn.read_chunk(idle_timeout)

    def release(self) -> None:
        self.conn.finish()


class Connection(asyncio.Protocol):
    """One keep-alive connection to a backend, used by one request at a time.

    Framing is strict, because a pooled connection that carries a byte too many hands one user's
    answer to the next user: interim (1xx) responses are consumed and never taken as the answer;
    bytes after the final response's framed end, or on the connection while it sits idle in the pool,
    mark it `tainted` and it is closed instead of reused.

    Waiting is done on plain futures created only when needed, and the first-byte, idle and write
    timeouts are loop timers: per request, this costs a fraction of asyncio.timeout() and Events.
    """

    def __init__(self, pool: ConnectionPool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reused = False
        self.idle_since = 0.0
        self.closed = False
        self.active = False  # a request is using the connection (else it is idle in the pool)
        self.tainted = False  # bytes beyond a response's framed end: never reuse
        self.chunks: collections.deque[bytes] = collections.deque()
        self._reset()

    def _reset(self) -> None:
        self.headers_done: asyncio.Future[None] | None = None
        self.headers: list[tuple[str, str]] = []
        self.status = 0
        self.reason = ""
        self.chunks.clear()
        self.buffered = 0
        self.complete = False
        self.error: UpstreamError | None = None
        self.got_bytes = False
        self.until_eof = True
        self.keep_alive = False
        self.head = False
        self.interim = False  # parsing a 1xx interim response
        self.head_bytes = 0  # of the response being parsed, interim ones included
        self.paused_reading = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.active or self.complete or self.tainted:
            # Nothing may arrive on an idle connection or after the final response: whatever it is
            # (a late answer, a stray byte), it must never be read as the next request's response.
            self._taint()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(
                UpstreamError("the backend switched protocols, which the proxy does not support", fresh=False)
            )
            self._close()
        except httptools.HttpParserError as exc:
            if self.complete:  # garbage after a complete response: keep the response, drop the connection
                self._taint()
                return
            self._fail(UpstreamError(f"invalid HTTP response from the backend: {exc}", fresh=False))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.status and not self.complete and self.until_eof and not self.head:
            self.complete = True  # a body delimited by the end of the connection
            self._wake()
            return
        if not self.complete:
            detail = f": {exc}" if exc else ""
            # A reset with no response byte means the backend closed its socket with our request still
            # unread in it (the kernel answers unread data with RST): it did not process the request.
            # A backend that read the request and then hung up closes with FIN instead (exc is None).
            unread = isinstance(exc, ConnectionResetError) and not self.got_bytes
            self._fail(
                UpstreamError(
                    f"backend closed the connection{detail}", fresh=not self.got_bytes, unsent=unread
                )
            )
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:  # a second message after the final response: stray bytes
            self._taint()

    def on_status(self, status: bytes) -> None:
        if self.tainted:
            return
        self.reason = status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.tainted or self.error is not None:
            return
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > MAX_RESPONSE_HEAD:
            self._fail(
                UpstreamError(
                    f"the backend sent response headers larger than {MAX_RESPONSE_HEAD // 1024} KiB",
                    fresh=False,
                )
            )
            self._abort()
            return
        key = name.decode("latin-1")
        lowered = key.lower()
        if lowered == "content-length" or (lowered == "transfer-encoding" and b"chunked" in value.lower()):
            self.until_eof = False
        self.headers.append((key, value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self.tainted:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # 100 Continue, 103 Early Hints...: an interim response, never the answer. Its headers are
            # dropped and the parser goes on with the next message on the connection.
            self.interim = True
            self.headers = []
            self.until_eof = True
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once the message ends
        if self.head or status in (204, 304):
            self.until_eof = False
        if self.headers_done is not None and not self.headers_done.done():
            self.headers_done.set_result(None)
        if self.head:
            self.complete = True

    def on_body(self, body: bytes) -> None:
        if self.tainted or self.interim:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        self._wake()
        if self.buffered > MAX_BUFFER and self.transport is not None and not self.paused_reading:
            self.paused_reading = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.tainted:
            return
        self.complete = True
        self._wake()

    # -- use ----------------------------------------------------------------------------------------
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        if self.headers_done is not None and not self.headers_done.done():
            self.headers_done.set_exception(error)
            self.headers_done.exception()  # retrieved: no "never retrieved" warning if nobody awaits
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)  # a writer waiting for the backend to read learns of it
        self._wake()

    def _timed_out(self, what: str) -> None:
        self._fail(UpstreamError(what, timeout=True, fresh=False))
        self._abort()

    def _abort(self) -> None:
        """Close at once, dropping unsent bytes (a backend that stopped reading would never take them)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _taint(self) -> None:
        self.tainted = True
        self._close()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def discard(self) -> None:
        """Close the connection: it will not be reused."""
        self._close()

    async def send(
        self,
        head: bytes,
        body: bytes | AsyncIterator[bytes] | None,
        method: str,
        chunked: bool,
        first_byte_timeout: float,
        write_timeout: float = 60.0,
    ) -> Response:
        """Write the request; return once the response headers are in (or fail, or time out)."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise UpstreamError(
                "the pooled connection was closed before the request was written", unsent=True
            )
        self.active = True
        self.head = method == "HEAD"
        self.headers_done = self.loop.create_future()
        if body is None or isinstance(body, bytes):
            if body and len(body) > SMALL_BODY:
                transport.write(head)  # no concatenated copy of a large body
                transport.write(body)
            else:
                transport.write(head + body if body else head)
        else:
            transport.write(head)
            await self._stream_body(transport, body, chunked, write_timeout)
        if not self.headers_done.done():
            timer = self.loop.call_later(
                first_byte_timeout,
                self._timed_out,
                f"no response headers within the first-byte timeout ({first_byte_timeout:g}s)",
            )
            try:
                await self.headers_done
            finally:
                timer.cancel()
        elif self.error is not None:
            raise self.error
        return Response(self.status, self.reason, self.headers, self)

    async def _stream_body(
        self, transport: asyncio.Transport, body: AsyncIterator[bytes], chunked: bool, write_timeout: float
    ) -> None:
        async for piece in body:
            if self.error is not None:
                raise self.error
            if piece:
                transport.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
                if self._drain is not None and not self._drain.done():
                    await self._wait_drain(write_timeout)
        if chunked:
            transport.write(b"0\r\n\r\n")

    async def _wait_drain(self, write_timeout: float) -> None:
        """Wait until the backend reads what was written; fail if it stops reading for `write_timeout`."""
        assert self._drain is not None
        timer = self.loop.call_later(
            write_timeout,
            self._timed_out,
            f"the backend read nothing of the request body for {write_timeout:g}s",
        )
        try:
            await self._drain
        finally:
            timer.cancel()
        if self.error is not None:
            raise self.error

    async def read_chunk(self, idle_timeout: float | None = None) -> bytes:
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if self.paused_reading and self.buffered < MAX_BUFFER // 2 and self.transport is not None:
                    self.paused_reading = False
                    self.transport.resume_reading()
                return chunk
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            self._waiter = self.loop.create_future()
            timer = None
            if idle_timeout is not None:
                timer = self.loop.call_later(
                    idle_timeout, self._timed_out, f"no data from the backend for {idle_timeout:g}s"
                )
            try:
                await self._waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()

    def finish(self) -> None:
        """Back to the pool only if the response was read to its exact framed end, nothing else arrived
        and the backend keeps the connection; otherwise closed."""
        self.active = False
        if (
            self.complete
            and not self.chunks
            and self.error is None
            and not self.closed
            and not self.tainted
            and not self.head
            and not self.until_eof
            and self.keep_alive
        ):
            self.parser = httptools.HttpResponseParser(self)
            self._reset()
            self.reused = True
            self.pool.put(self)
        else:
            self._close()


class ConnectionPool:
    """Idle keep-alive connections per (host, port)."""

    def __init__(self, connect_timeout: float, keepalive: bool = True) -> None:
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive  # False: one connection per request, never reused
        self.idle: dict[tuple[str, int], list[Connection]] = {}

    async def acquire(self, host: str, port: int, tls: bool = False) -> Connection:
        key = (host, port)
        idle = self.idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < POOL_IDLE_SECONDS:
                return conn
            conn.discard()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _transport, conn = await loop.create_connection(
                    lambda: Connection(self, key),
                    host,
                    port,
                    ssl=True if tls else None,
                )
        except TimeoutError:
            raise UpstreamError(
                f"connect to {host}:{port} timed out after {self.connect_timeout}s", connect=True
            ) from None
        except OSError as exc:
            raise UpstreamError(
                f"cannot connect to {host}:{port}: {exc.strerror or exc}", connect=True
            ) from None
        return conn

    def put(self, conn: Connection) -> None:
        idle = self.idle.setdefault(conn.key, [])
        if not self.keepalive or len(idle) >= POOL_SIZE:
            conn.discard()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def forget(self, conn: Connection) -> None:
        idle = self.idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def close(self) -> None:
        for idle in self.idle.values():
            for conn in idle:
                conn.discard()
        self.idle.clear()


def request_head(
    method: str, target: str, host: str, headers: Iterable[tuple[str, str]], length: int | None
) -> bytes:
    """The request line and headers; `length` None means a chunked body, -1 no body."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    if length is None:
        lines.append("Transfer-Encoding: chunked")
    elif length >= 0:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True)
class UpstreamRequest:
    """One request to a backend: where, what, and its body (bytes, a stream of chunks, or None)."""

    host: str
    port: int
    method: str
    target: str
    headers: Iterable[tuple[str, str]] = ()
    body: bytes | AsyncIterator[bytes] | None = None
    length: int | None = -1  # a streamed body's length; None: chunked
    tls: bool = False


async def request(
    pool: ConnectionPool,
    req: UpstreamRequest,
    *,
    first_byte_timeout: float = 300.0,
    write_timeout: float = 60.0,
) -> Response:
    """Send one request. It is sent again here only when the backend provably did not process it (a pooled
    connection found closed before anything was written, or a reset with the request unread) and the body
    can be sent again; every other failure is the caller's to judge."""
    body, length = req.body, req.length
    streamed = body is not None and not isinstance(body, bytes)
    if not streamed:
        length = len(body) if body is not None else -1
    head = request_head(req.method, req.target, f"{req.host}:{req.port}", req.headers, length)
    for _attempt in range(3):
        conn = await pool.acquire(req.host.strip("[]"), req.port, req.tls)
        try:
            return await conn.send(
                head, body, req.method, streamed and length is None, first_byte_timeout, write_timeout
            )
        except UpstreamError as exc:
            conn.discard()
            # Unsent: the backend did not process it. Sending it again is possible only when the body can
            # be sent again: bytes, or a stream of which nothing was taken yet (the connection was found
            # closed before the first write, so `active` was never set).
            if exc.unsent and (not streamed or not conn.active):
                continue
            raise
        except BaseException:
            conn.discard()
            raise
    raise UpstreamError("no usable connection to the backend", unsent=True)
