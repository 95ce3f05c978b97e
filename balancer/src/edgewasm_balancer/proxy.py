"""The reverse proxy: pick a backend, send the request, stream the answer back.

Request bodies up to the buffer limit are read whole (within a global budget of buffered bytes), so
the `model` they name can route them and a failed attempt can be sent again to another backend;
larger bodies are streamed to one backend as they arrive. Responses are always streamed chunk by
chunk, with connect, first-byte and idle timeouts and no total timeout.

Deliveries are counted: a request goes to at most 1 + `retries` backends. It is sent again only when
the backend provably did not process it (no connection, nothing written, a reset with the request
unread, or an explicit 502/503/504 answer), or when its method is idempotent; never once a response byte reached the client. A failure
counts against an endpoint only as its own fault, and request-correlated failures can never eject
more than `max_ejection_percent` of the endpoints.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from edgewasm_balancer import upstream
from edgewasm_balancer.bodies import BufferBudget, UnreadableBodyError, requested_model
from edgewasm_balancer.contract import BACKEND_HEADER
from edgewasm_balancer.metrics import Metrics
from edgewasm_balancer.pool import BackendPool, Endpoint, NoBackendError

log = logging.getLogger("edgewasm_balancer.proxy")

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
RETRY_STATUSES = frozenset({502, 503, 504})
# Methods a backend may receive twice without harm (RFC 9110 9.2.2); others need an Idempotency-Key.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
CHUNK = 64 * 1024
BACKEND = web.RequestKey("edgewasm_backend", str)  # the service that answered, for the access log
STARTED = web.RequestKey("edgewasm_started", float)  # perf_counter() when the proxy took the request


def openai_error(
    status: int, message: str, kind: str, code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """An error in the OpenAI API's format."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _connection_tokens(headers: CIMultiDictProxy[str]) -> set[str]:
    return {t.strip().lower() for v in headers.getall("Connection", ()) for t in v.split(",") if t.strip()}


FORWARDED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"})


def upstream_headers(request: web.Request) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop ones (and the framing we set), plus X-Forwarded-* set by the
    gateway itself: a client's own X-Forwarded-* (and Forwarded) never reach a backend, which could take them
    for the gateway's word."""
    headers = request.headers
    # Expect is answered by the proxy itself (aiohttp sends the client its 100 Continue before the
    # body is read): a backend must never see it, or its interim 100 would be a second response.
    drop = HOP_BY_HOP | FORWARDED | {"host", "content-length", "expect"}
    if "Connection" in headers:
        drop = drop | _connection_tokens(headers)
    out = [(k, v) for k, v in headers.items() if k.lower() not in drop]
    out.append(("X-Forwarded-For", request.remote or ""))
    out.append(("X-Forwarded-Proto", request.scheme))
    if request.host:
        out.append(("X-Forwarded-Host", request.host))
    return out


def upstream_target(request: web.Request) -> str | None:
    """The request target for a backend, in origin form (an absolute-form target rewritten to its path and
    query); None when its path has a dot segment ("." or "..", percent-encoded or not), which a backend could
    resolve to a path the gateway never routed."""
    target = (
        request.rel_url.raw_path_qs
        if request.raw_path.startswith(("http://", "https://"))
        else request.raw_path
    )
    if not target.startswith("/"):
        return None
    path = target.split("?", 1)[0]
    if "." not in path and "%2" not in path:  # no dot segment can hide in it (the common case)
        return target
    for segment in path.split("/"):
        if unquote(segment) in (".", ".."):
            return None
    return target


def _unsendable_header(headers: CIMultiDictProxy[str]) -> str | None:
    """The name of a header whose value cannot go on the wire to a backend as HTTP/1.1 text (ISO-8859-1): raw
    UTF-8 such as "X-Title: \u65e5\u672c", or bytes that are not UTF-8 (lone surrogates here)."""
    for name, value in headers.items():
        if value.isascii():
            continue
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return name.encode("latin-1", "backslashreplace").decode("latin-1")
    return None


def response_headers(headers: list[tuple[str, str]]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    extra: set[str] = set()
    for key, value in headers:
        lowered = key.lower()
        if lowered in HOP_BY_HOP:
            if lowered == "connection":
                extra.update(t.strip().lower() for t in value.split(","))
            continue
        out.add(key, value)
    for name in extra:
        out.popall(name, None)
    return out


class RequestRefusedError(Exception):
    """The proxy answers the request itself (slow client, no buffer space) and closes the connection:
    the rest of the body is not read."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass
class Body:
    """A request body: whole (`data`) or as a stream of which `prefix` was already read (and is still held
    in the buffer budget, `reserved`, until the request is done)."""

    data: bytes | None
    prefix: list[bytes] = field(default_factory=list)  # as read: never copied into one more buffer
    stream: aiohttp.StreamReader | None = None
    deadline: Deadline | None = None
    started: bool = field(default=False)
    reserved: int = 0  # bytes taken from the buffer budget
    client: str | None = None

    @property
    def replayable(self) -> bool:
        return self.stream is None or not self.started

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        for chunk in self.prefix:
            yield chunk
        assert self.stream is not None and self.deadline is not None
        while chunk := await self.deadline.read(self.stream):
            yield chunk


@dataclass
class Deadline:
    """How long a body may take: nothing received for `idle` seconds is a 408, and so is a body slower than
    `min_rate` bytes a second on the whole (after `idle` seconds of grace): a client trickling a byte now and
    then cannot hold a connection, a buffer or a slot for as long as it likes. Only time spent waiting for the
    client counts: a relayed body is not charged for the time its backend takes to read it."""

    idle: float
    min_rate: float
    waited: float = 0.0
    received: int = 0

    def left(self) -> float:
        return self.idle + self.received / self.min_rate - self.waited

    async def read(self, stream: aiohttp.StreamReader) -> bytes:
        chunk = stream.read_nowait(CHUNK)  # already here (a small body usually is): no wait to charge
        if chunk or stream.at_eof():
            self.received += len(chunk)
            return chunk
        began, left = time.monotonic(), self.left()
        try:
            # The rate bound cuts this wait short (left < idle): a 408 then says the body is too slow.
            chunk = await read_some(
                stream, max(min(self.idle, left), 0.0), self.min_rate if left < self.idle else None
            )
        finally:
            self.waited += time.monotonic() - began
        self.received += len(chunk)
        return chunk


async def read_some(stream: aiohttp.StreamReader, timeout: float, slow_rate: float | None = None) -> bytes:
    """Up to CHUNK bytes of the body; a 408 refusal when the client sends nothing for `timeout` (with
    `slow_rate`: the wait the body's minimum rate left it)."""
    chunk = stream.read_nowait(CHUNK)
    if chunk or stream.at_eof():
        return chunk
    try:
        async with asyncio.timeout(timeout):
            return await stream.read(CHUNK)
    except TimeoutError:
        message = (
            f"The request body arrived slower than {slow_rate:g} bytes a second"
            if slow_rate is not None
            else f"The request body did not arrive: nothing received for {timeout:g}s"
        )
        raise RequestRefusedError(
            openai_error(408, message, "invalid_request_error", "body_timeout")
        ) from None


# A body too large to buffer is routed by the model named in its first bytes: this many (joined once, briefly).
ROUTE_PREFIX = 1024 * 1024


def _head(chunks: list[bytes], size: int = ROUTE_PREFIX) -> bytes:
    """The first `size` bytes of a list of chunks, as one bytes object (no larger copy)."""
    head, length = [], 0
    for chunk in chunks:
        head.append(chunk[: size - length])
        length += len(head[-1])
        if length >= size:
            break
    return b"".join(head)


def _busy() -> RequestRefusedError:
    return RequestRefusedError(
        openai_error(
            503,
            "The gateway is buffering too many request bodies; retry shortly",
            "service_unavailable",
            "buffer_full",
            {"Retry-After": "1"},
        )
    )


async def read_body(
    request: web.Request, limit: int, budget: BufferBudget, timeout: float, min_rate: float = 16 * 1024
) -> Body:
    """The body, buffered when it fits `limit`, else its first `limit` bytes and the rest as a stream to relay.

    Every buffered byte is taken from the shared `budget` as it arrives (never the length a client merely
    declares), within the client address's share, and stays there until the request is done: the prefix of a
    streamed body too. The body has a deadline (nothing for `timeout` seconds, or slower than `min_rate`)."""
    if not request.body_exists:
        return Body(data=None)
    content = request.content
    client = request.remote
    body = Body(data=None, deadline=Deadline(timeout, min_rate), client=client)
    chunks: list[bytes] = []  # joined once at the end (a growing bytearray holds up to twice its size)
    try:
        while True:
            chunk = await body.deadline.read(content)
            if not chunk:
                body.data = b"".join(chunks)
                return body
            if not budget.take(len(chunk), client):
                raise _busy()
            body.reserved += len(chunk)
            chunks.append(chunk)
            if body.reserved > limit:
                # Too large to buffer: relay what was read (the routing prefix), then the rest as it comes.
                body.prefix, body.stream = chunks, content
                return body
    except BaseException:
        budget.give(body.reserved, client)
        body.reserved = 0
        raise


class _AttemptFailedError(Exception):
    """The attempt failed before any response byte reached the client: try another backend."""

    def __init__(
        self,
        endpoint: Endpoint,
        kind: str,
        detail: str,
        response: upstream.Response | None = None,
        *,
        delivered: bool = True,
    ) -> None:
        super().__init__(detail)
        self.endpoint = endpoint
        self.kind = kind
        self.detail = detail
        self.response = response
        self.delivered = delivered


class Proxy:
    def __init__(
        self,
        pool: BackendPool,
        metrics: Metrics,
        connections: upstream.ConnectionPool,
        *,
        first_byte_timeout: float,
        idle_timeout: float,
        retries: int,
        buffer_limit: int,
        buffer_total: int | None = None,
        body_timeout: float = 30.0,
        body_min_rate: float = 16 * 1024,
        write_timeout: float = 60.0,
        retry_non_idempotent: bool = False,
        backend_header: bool = False,
        standing_by: Callable[[], bool] | None = None,
    ) -> None:
        self.pool = pool
        # With leader election: whether this replica must not route (it does not hold the Lease).
        self.standing_by = standing_by
        self.metrics = metrics
        self.connections = connections
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self.retries = retries
        self.buffer_limit = buffer_limit
        total = buffer_total if buffer_total is not None else 4 * buffer_limit
        # One client address may hold a quarter of the budget, and at least one whole buffered body.
        self.budget = BufferBudget(total, per_client=min(total, max(buffer_limit + CHUNK, total // 4)))
        self.body_timeout = body_timeout
        self.body_min_rate = body_min_rate
        self.write_timeout = write_timeout
        self.retry_non_idempotent = retry_non_idempotent
        self.backend_header = backend_header
        self.in_flight = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = request[STARTED] = time.perf_counter()
        self.in_flight += 1
        try:
            return await self._handle(request, started)
        finally:
            self.in_flight -= 1

    async def _handle(self, request: web.Request, started: float) -> web.StreamResponse:
        if self.standing_by is not None and self.standing_by():
            # Another replica holds the Lease and its slot counts: routing here would double-book backends.
            self.metrics.rejected.labels("503").inc()
            refused = openai_error(
                503,
                "This balancer replica is standing by (another one routes); retry",
                "service_unavailable",
                "not_leader",
                {"Retry-After": "1"},
            )
            refused.force_close()  # the client's next connection may reach the leader
            return refused
        unsendable = _unsendable_header(request.headers)
        if unsendable is not None:
            self.metrics.rejected.labels("400").inc()
            log.info("request refused: a header value is not ISO-8859-1", extra={"header": unsendable})
            refused = openai_error(
                400,
                f"Request header {unsendable} is not ISO-8859-1 text (encode it, for example as percent-encoded UTF-8)",
                "invalid_request_error",
                "invalid_header",
            )
            refused.force_close()
            return refused
        if upstream_target(request) is None:
            self.metrics.rejected.labels("400").inc()
            refused = openai_error(
                400, "The request path has a '.' or '..' segment", "invalid_request_error", "invalid_path"
            )
            refused.force_close()
            return refused
        body = Body(data=None)
        try:
            body = await read_body(
                request, self.buffer_limit, self.budget, self.body_timeout, self.body_min_rate
            )
            if body.stream is not None:  # routed by its first bytes: the model must be there
                model = await requested_model(_head(body.prefix), request.content_type, complete=False)
            else:
                model = await requested_model(body.data, request.content_type)
            return await self._route(request, body, model, started)
        except RequestRefusedError as refused:
            return self._refuse(refused)
        except UnreadableBodyError as exc:
            self.metrics.rejected.labels("400").inc()
            return openai_error(
                400, f"Cannot read the request body: {exc}", "invalid_request_error", "invalid_body"
            )
        finally:
            if body.reserved:
                self.budget.give(body.reserved, body.client)
                body.reserved = 0

    def _refuse(self, refused: RequestRefusedError) -> web.Response:
        """Raised while reading the body (buffered, or relayed to a backend): answered and closed."""
        self.metrics.rejected.labels(str(refused.response.status)).inc()
        refused.response.force_close()  # the rest of the body is not read: no keep-alive
        return refused.response

    def _may_resend(self, request: web.Request, failure: _AttemptFailedError) -> bool:
        """Whether another backend may get the request after `failure` (already counted as delivered)."""
        if not failure.delivered or failure.response is not None:
            return True  # never reached the backend, or the backend declined it with 502/503/504
        return (
            request.method in IDEMPOTENT or "Idempotency-Key" in request.headers or self.retry_non_idempotent
        )

    async def _route(
        self, request: web.Request, body: Body, model: str | None, started: float
    ) -> web.StreamResponse:
        tried: set[str] = set()
        last: _AttemptFailedError | None = None
        for attempt in range(self.retries + 1):
            try:
                endpoint = await self.pool.take(model, tried, request.remote)
            except NoBackendError as exc:
                if last is not None and last.response is not None:
                    break  # relay the last backend's own error response below
                return self._reject(exc, last)
            if attempt:
                self.metrics.retries.labels(endpoint.label).inc()
            tried.add(endpoint.url)
            try:
                return await self._attempt(request, endpoint, body, started)
            except _AttemptFailedError as exc:
                if last is not None and last.response is not None:
                    last.response.release()
                last = exc
                log.warning(
                    "backend failed",
                    extra={
                        "backend": endpoint.label,
                        "endpoint": endpoint.url,
                        "kind": exc.kind,
                        "detail": exc.detail,
                    },
                )
                if not body.replayable or not self._may_resend(request, exc):
                    break
        assert last is not None
        if last.response is not None:
            return await self._relay(request, last.response, last.endpoint, started)
        return openai_error(502, f"Backend failed: {last.detail}", "upstream_error", "bad_gateway")

    def _reject(self, exc: NoBackendError, last: _AttemptFailedError | None) -> web.Response:
        self.metrics.rejected.labels(str(exc.status)).inc()
        if exc.status == 404:
            return openai_error(404, exc.message, "invalid_request_error", "model_not_found")
        message = exc.message if last is None else f"{exc.message} (last error: {last.detail})"
        headers = {"Retry-After": str(exc.retry_after or 1)}
        if exc.status == 429:  # load shed by the central queue (load-aware routing)
            return openai_error(429, message, "rate_limit_exceeded", "queue_full", headers)
        return openai_error(503, message, "service_unavailable", "no_backend", headers)

    async def _attempt(
        self, request: web.Request, endpoint: Endpoint, body: Body, started: float
    ) -> web.StreamResponse:
        data: bytes | AsyncIterator[bytes] | None = body.data
        length: int | None = -1 if data is None else len(data)
        if body.stream is not None:
            data = body.chunks()
            length = request.content_length  # None: chunked
        # The slot was reserved by BackendPool.take; it is given back when the answer has been relayed.
        held_since = time.perf_counter()
        try:
            try:
                outgoing = upstream.UpstreamRequest(
                    endpoint.host,
                    endpoint.port,
                    request.method,
                    upstream_target(request) or "/",
                    upstream_headers(request),
                    data,
                    length,
                    endpoint.tls,
                )
                response = await upstream.request(
                    self.connections,
                    outgoing,
                    first_byte_timeout=self.first_byte_timeout,
                    write_timeout=self.write_timeout,
                )
            except upstream.UpstreamError as exc:
                kind = "connect" if exc.connect else "timeout" if exc.timeout else "reset"
                raise self._failed(endpoint, kind, str(exc), delivered=exc.delivered) from exc
            if response.status in RETRY_STATUSES:
                raise self._failed(endpoint, "status", f"HTTP {response.status}", response)
            return await self._relay(request, response, endpoint, started)
        finally:
            self.pool.release(endpoint, time.perf_counter() - held_since)

    def _failed(
        self,
        endpoint: Endpoint,
        kind: str,
        detail: str,
        response: upstream.Response | None = None,
        *,
        delivered: bool = True,
    ) -> _AttemptFailedError:
        self.metrics.errors.labels(endpoint.label, kind).inc()
        # No connection at all is the endpoint's fault for sure; anything after the request was
        # written may be the request's own doing, so it can never eject the last endpoints.
        if self.pool.failure(endpoint, proven=not delivered):
            self.metrics.ejections.labels(endpoint.label, endpoint.url).inc()
            log.warning(
                "endpoint ejected",
                extra={
                    "backend": endpoint.label,
                    "endpoint": endpoint.url,
                    "until_s": round(endpoint.ejected_until - self.pool.clock(), 1),
                },
            )
        return _AttemptFailedError(endpoint, kind, detail, response, delivered=delivered)

    async def _relay(
        self, request: web.Request, response: upstream.Response, endpoint: Endpoint, started: float
    ) -> web.StreamResponse:
        label = endpoint.label
        series = self.metrics.backend(label)
        status = response.status
        headers = response_headers(response.headers)
        request[BACKEND] = label  # for the access log, whether or not the client is told
        headers.popall(BACKEND_HEADER, None)  # only the balancer says which backend answered
        if self.backend_header:
            headers[BACKEND_HEADER] = label
        try:
            conn = response.conn
            if conn.complete and conn.error is None:
                # The whole answer is already here (most non-streamed replies): one write.
                body = b"".join(conn.chunks)
                conn.chunks.clear()
                series.ttfb.observe(time.perf_counter() - started)
                headers.popall("Content-Length", None)
                out = web.Response(status=status, reason=response.reason, headers=headers)
                out.body = body
                self._succeeded(endpoint, status)
                return out
            return await self._stream(request, response, endpoint, headers, started)
        finally:
            response.release()
            series.answered(status, time.perf_counter() - started)

    async def _stream(
        self,
        request: web.Request,
        response: upstream.Response,
        endpoint: Endpoint,
        headers: CIMultiDict[str],
        started: float,
    ) -> web.StreamResponse:
        label = endpoint.label
        out = web.StreamResponse(status=response.status, reason=response.reason, headers=headers)
        await out.prepare(request)
        first = True
        while True:
            try:
                chunk = await response.read_chunk(self.idle_timeout)
            except upstream.UpstreamError as exc:
                kind = "idle" if exc.timeout else "stream"
                self.metrics.errors.labels(label, kind).inc()
                log.warning(
                    "backend stream ended early",
                    extra={"backend": label, "endpoint": endpoint.url, "kind": kind, "detail": str(exc)},
                )
                self._abort(request)
                return out
            if first:
                self.metrics.backend(label).ttfb.observe(time.perf_counter() - started)
                first = False
            if not chunk:
                break
            if not await self._write_to_client(request, out, chunk, endpoint):
                return out
        await out.write_eof()
        self._succeeded(endpoint, response.status)
        return out

    async def _write_to_client(
        self, request: web.Request, out: web.StreamResponse, chunk: bytes, endpoint: Endpoint
    ) -> bool:
        """Relay one chunk; a client that reads nothing for --idle-timeout is cut off (False), so it cannot
        hold the backend's slot - and the backend - for as long as it likes."""
        try:
            async with asyncio.timeout(self.idle_timeout):
                await out.write(chunk)
        except TimeoutError:
            self.metrics.errors.labels(endpoint.label, "client_write").inc()
            log.warning(
                "client stopped reading: stream cut",
                extra={"backend": endpoint.label, "endpoint": endpoint.url, "timeout_s": self.idle_timeout},
            )
            self._abort(request)
            return False
        return True

    def _succeeded(self, endpoint: Endpoint, status: int) -> None:
        if status < 500 and (endpoint.failures or endpoint.ejections):
            self.pool.success(endpoint)

    @staticmethod
    def _abort(request: web.Request) -> None:
        """Cut the client connection: the response is incomplete and must not look complete."""
        if request.transport is not None:
            request.transport.close()
