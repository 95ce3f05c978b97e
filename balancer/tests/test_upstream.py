"""The pooled upstream client against raw TCP servers that misbehave in precise ways."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable

import pytest
from conftest import base_url

from edgewasm_balancer import upstream

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_server():
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


async def body_of(response: upstream.Response) -> bytes:
    parts = []
    while chunk := await response.read_chunk(5):
        parts.append(chunk)
    return b"".join(parts)


async def test_keep_alive_reuse_and_a_connection_closed_while_idle(raw_server):
    connections = 0

    async def once_per_connection(reader, writer):
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)  # a second request on the same connection...
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok2")
        await writer.drain()
        writer.close()  # ...then the backend drops it while it sits idle in our pool

    port = await raw_server(once_per_connection)
    pool = upstream.ConnectionPool(connect_timeout=1)
    answers = []
    for _attempt in range(3):
        response = await upstream.request(
            pool, upstream.UpstreamRequest("127.0.0.1", port, "GET", "/v1/x", [], None)
        )
        answers.append(await body_of(response))
        response.release()
        await asyncio.sleep(0.05)
    assert answers == [b"ok", b"ok2", b"ok"]
    assert connections == 2  # reused once; the dead idle connection was replaced, not reported


async def test_body_until_eof_head_and_204(raw_server):
    async def handler(reader, writer):
        head = await read_request(reader)
        if head.startswith(b"HEAD"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        elif b"/empty" in head:
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            await writer.drain()
            writer.close()
            return
        await writer.drain()

    port = await raw_server(handler)
    pool = upstream.ConnectionPool(connect_timeout=1)
    response = await upstream.request(
        pool, upstream.UpstreamRequest("127.0.0.1", port, "GET", "/eof", [], None)
    )
    assert await body_of(response) == b"until the end"
    response.release()
    response = await upstream.request(
        pool, upstream.UpstreamRequest("127.0.0.1", port, "HEAD", "/h", [], None)
    )
    assert (response.status, await body_of(response)) == (200, b"")
    response.release()
    response = await upstream.request(
        pool, upstream.UpstreamRequest("127.0.0.1", port, "GET", "/empty", [], None)
    )
    assert (response.status, await body_of(response)) == (204, b"")
    response.release()


async def test_garbage_and_early_close_are_errors(raw_server):
    async def garbage(reader, writer):
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    async def truncated(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        writer.close()

    pool = upstream.ConnectionPool(connect_timeout=1)
    with pytest.raises(upstream.UpstreamError, match="invalid HTTP response"):
        await upstream.request(
            pool, upstream.UpstreamRequest("127.0.0.1", await raw_server(garbage), "GET", "/", [], None)
        )
    response = await upstream.request(
        pool, upstream.UpstreamRequest("127.0.0.1", await raw_server(truncated), "GET", "/", [], None)
    )
    with pytest.raises(upstream.UpstreamError, match="closed the connection"):
        await body_of(response)
    with pytest.raises(upstream.UpstreamError, match="cannot connect") as err:
        await upstream.request(pool, upstream.UpstreamRequest("127.0.0.1", 9, "GET", "/", [], None))
    assert err.value.connect


async def test_first_byte_and_idle_timeouts(raw_server):
    async def silent(reader, writer):
        await read_request(reader)
        await asyncio.sleep(5)

    async def stalls(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    pool = upstream.ConnectionPool(connect_timeout=1)
    with pytest.raises(upstream.UpstreamError, match="first-byte timeout") as err:
        await upstream.request(
            pool,
            upstream.UpstreamRequest("127.0.0.1", await raw_server(silent), "GET", "/", [], None),
            first_byte_timeout=0.2,
        )
    assert err.value.timeout
    response = await upstream.request(
        pool, upstream.UpstreamRequest("127.0.0.1", await raw_server(stalls), "GET", "/", [], None)
    )
    assert await response.read_chunk(0.2) == b"abc"
    with pytest.raises(upstream.UpstreamError, match="no data from the backend") as err:
        await response.read_chunk(0.2)
    assert err.value.timeout


async def test_large_response_is_relayed_intact_with_flow_control(balancer, http, raw_server):
    payload = os.urandom(8 * 1024 * 1024)

    async def big(reader, writer):
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\n\r\n" % len(payload)
        )
        for i in range(0, len(payload), 256 * 1024):
            writer.write(payload[i : i + 256 * 1024])
            await writer.drain()

    port = await raw_server(big)
    bal = await balancer([{"name": "big", "url": f"http://127.0.0.1:{port}"}])
    async with http.get(base_url(bal) + "/v1/files/blob") as r:
        received = hashlib.sha256()
        async for chunk in r.content.iter_chunked(65536):
            received.update(chunk)
            await asyncio.sleep(0)  # a slower reader than the backend: the proxy must pause, not buffer all
    assert r.status == 200
    assert received.hexdigest() == hashlib.sha256(payload).hexdigest()


async def test_hop_by_hop_response_headers_are_dropped(balancer, http, raw_server):
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal\r\nX-Internal: 1\r\n"
            b"Keep-Alive: timeout=5\r\nX-Request-Id: r-1\r\nContent-Length: 2\r\n\r\nok"
        )
        await writer.drain()

    port = await raw_server(handler)
    bal = await balancer([{"name": "h", "url": f"http://127.0.0.1:{port}"}])
    async with http.get(base_url(bal) + "/v1/info") as r:
        assert await r.read() == b"ok"
        assert "X-Internal" not in r.headers and "Keep-Alive" not in r.headers
        assert r.headers["X-Request-Id"] == "r-1"


async def test_a_written_request_is_never_resent_by_the_client(raw_server):
    """A reused connection closed after the request reached the backend: the backend may have processed
    it, so the client reports it (delivered, no response byte) instead of silently sending it again."""
    connections = 0

    async def one_answer_per_connection(reader, writer):
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)  # the next request on this connection is read, then dropped
        writer.close()

    port = await raw_server(one_answer_per_connection)
    pool = upstream.ConnectionPool(connect_timeout=1)
    response = await upstream.request(
        pool, upstream.UpstreamRequest("127.0.0.1", port, "POST", "/v1/x", [], b"{}")
    )
    assert await body_of(response) == b"ok"
    response.release()
    with pytest.raises(upstream.UpstreamError) as failure:
        await upstream.request(pool, upstream.UpstreamRequest("127.0.0.1", port, "POST", "/v1/x", [], b"{}"))
    assert failure.value.delivered and failure.value.fresh
    assert connections == 1
