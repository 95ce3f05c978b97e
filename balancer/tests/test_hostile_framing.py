"""Hostile backends at the framing level: one client's answer must never reach another client.

Each backend here is a raw TCP server that tags every answer with the request's X-Marker header, so
a response carrying another request's marker is a cross-user leak.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
from collections import Counter

import aiohttp
import pytest
from conftest import base_url
from hostile import exchange, read_head, read_request, response

TIMEOUT = aiohttp.ClientTimeout(total=5)


async def _marked(http, bal, marker: str, **kwargs) -> tuple[int, bytes, dict[str, str]]:
    async with http.post(
        base_url(bal) + "/v1/chat/completions",
        data=kwargs.pop("data", b'{"messages": []}'),
        headers={"X-Marker": marker, "Content-Type": "application/json"},
        timeout=TIMEOUT,
        **kwargs,
    ) as r:
        return r.status, await r.read(), dict(r.headers)


async def test_interim_100_from_the_backend_is_not_the_answer(raw, balancer, http):
    async def backend(reader, writer):
        while True:
            _unused, headers, _unused = await read_request(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)  # the interim response arrives on its own
            writer.write(response(headers["x-marker"].encode()))

    port = await raw.start(backend)
    bal = await balancer([{"name": "raw", "url": f"http://127.0.0.1:{port}"}])
    for i in range(5):  # the same pooled connection, request after request
        status, body, _unused = await _marked(http, bal, f"m{i}")
        assert (status, body) == (200, f"m{i}".encode())


async def test_103_early_hints_are_consumed_with_their_headers(raw, balancer, http):
    async def backend(reader, writer):
        while True:
            _unused, headers, _unused = await read_request(reader)
            hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
            writer.write(hints + hints + response(headers["x-marker"].encode(), chunked=True))

    port = await raw.start(backend)
    bal = await balancer([{"name": "raw", "url": f"http://127.0.0.1:{port}"}])
    for i in range(3):
        status, body, headers = await _marked(http, bal, f"h{i}")
        assert (status, body) == (200, f"h{i}".encode())
        assert "Link" not in headers


async def test_client_expect_100_continue_is_answered_by_the_gateway_not_forwarded(backends, balancer):
    a = await backends("a")
    bal = await balancer([{"name": "a", "url": a.url}])
    port = bal.address[1]
    for _attempt in range(3):  # the interim answer never lingers on the upstream connection
        body = b'{"messages": [], "model": "standin-model"}'
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        await writer.drain()
        async with asyncio.timeout(5):
            interim = await reader.readuntil(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100")
        writer.write(body)
        async with asyncio.timeout(5):
            head, headers = await read_head(reader)
            answer = await reader.readexactly(int(headers["content-length"]))
        writer.close()
        assert head.startswith(b"HTTP/1.1 200")
        assert b'"choices"' in answer
    assert all("Expect" not in r["headers"] for r in a.received)


async def test_bytes_after_the_framed_end_discard_the_connection(raw, balancer, http):
    connections = 0

    async def backend(reader, writer):
        nonlocal connections
        connections += 1
        while True:
            _unused, headers, _unused = await read_request(reader)
            marker = headers["x-marker"].encode()
            # The answer and, in the same write, a second "response" that must never be delivered.
            writer.write(response(marker) + response(b"LEAK " + marker))

    port = await raw.start(backend)
    bal = await balancer([{"name": "raw", "url": f"http://127.0.0.1:{port}"}])
    for i in range(20):
        status, body, _unused = await _marked(http, bal, f"t{i}")
        assert (status, body) == (200, f"t{i}".encode())
    assert connections == 20  # every tainted connection was closed, none reused


async def test_bytes_on_an_idle_pooled_connection_discard_it(raw, balancer, http):
    async def backend(reader, writer):
        while True:
            _unused, headers, _unused = await read_request(reader)
            marker = headers["x-marker"].encode()
            writer.write(response(marker))
            await writer.drain()
            await asyncio.sleep(0.02)  # then, while the connection idles in the pool:
            writer.write(response(b"LEAK " + marker))

    port = await raw.start(backend)
    bal = await balancer([{"name": "raw", "url": f"http://127.0.0.1:{port}"}])
    for i in range(5):
        status, body, _unused = await _marked(http, bal, f"i{i}")
        assert (status, body) == (200, f"i{i}".encode())
        await asyncio.sleep(0.06)  # long enough for the stray answer to land on the idle connection


def _fuzz_backend(rng: random.Random, actions: Counter[str]):
    async def backend(reader, writer):
        while True:
            _unused, headers, _unused = await read_request(reader)
            marker = headers["x-marker"].encode()
            action = rng.choice(
                ["plain", "chunked", "interim", "hints", "stray", "late", "close", "cut", "plain", "interim"]
            )
            actions[action] += 1
            if action == "close":  # hang up without answering
                return
            if action == "cut":  # a truncated answer
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + marker[:3])
                await writer.drain()
                return
            out = b""
            if action == "interim":
                out += b"HTTP/1.1 100 Continue\r\n\r\n"
            if action == "hints":
                out += b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            out += response(marker, chunked=action == "chunked")
            if action == "stray":
                out += response(b"LEAK " + marker)
            writer.write(out)
            await writer.drain()
            if action == "late":
                # A stray answer a little later, then the backend hangs up: arriving on the idle
                # connection it must discard it; racing a reuse, that request gets "JUNK" (no other
                # user's data) and nothing after it. (A backend that goes on answering after an
                # unsolicited response shifts every answer on that connection; no HTTP/1.1 proxy can
                # tell: --upstream-keepalive false is the defence, tested below.)
                await asyncio.sleep(0.002)
                writer.write(response(b"JUNK"))
                await writer.drain()
                return

    return backend


async def test_interleaved_clients_never_see_each_others_answers(raw, balancer, http):
    rng = random.Random(20261130)  # noqa: S311 - a reproducible test sequence, not a secret
    actions: Counter[str] = Counter()
    port = await raw.start(_fuzz_backend(rng, actions))
    bal = await balancer([{"name": "raw", "url": f"http://127.0.0.1:{port}"}], retries=0)
    outcomes: Counter[str] = Counter()
    all_markers = {f"c{c}-{i}-" for c in range(2) for i in range(1000)}

    async def client(c: int) -> None:
        for i in range(1000):
            marker = f"c{c}-{i}-"
            try:
                status, body, _unused = await _marked(http, bal, marker, expect100=rng.random() < 0.3)
            except aiohttp.ClientPayloadError:
                outcomes["truncated"] += 1
                continue
            text = body.decode("latin-1")
            foreign = [m for m in all_markers if m in text and m != marker]
            assert not foreign, (marker, status, text)
            if status == 200 and body != b"JUNK":
                assert body == marker.encode(), (marker, body)
                outcomes["own answer"] += 1
            else:
                outcomes[f"{status} {body[:4]!r}"] += 1

    await asyncio.gather(client(0), client(1))
    assert sum(outcomes.values()) == 2000
    assert outcomes["own answer"] > 1000, outcomes
    assert min(actions.values()) > 50, actions  # every misbehaviour was exercised many times


async def test_a_written_request_reaches_one_backend_and_cannot_empty_the_pool(raw, backends, balancer, http):
    deliveries: Counter[int] = Counter()

    def closer(index: int):
        async def handler(reader, writer):
            while True:
                await read_request(reader)
                deliveries[index] += 1
                writer.close()  # read the request, then hang up without a word
                return

        return handler

    ports = [await raw.start(closer(i)) for i in range(3)]
    good = await backends("good")
    entries = [{"name": f"closer{i}", "url": f"http://127.0.0.1:{p}"} for i, p in enumerate(ports)]
    bal = await balancer([*entries, {"name": "good", "url": good.url}], retries=2)
    status, body, _unused = await _marked(http, bal, "post-1")
    assert status == 502 and b"closed the connection" in body
    assert sum(deliveries.values()) == 1  # a POST that reached a backend is never sent again
    statuses = Counter()
    for i in range(8):
        statuses[(await _marked(http, bal, f"post-{i + 2}"))[0]] += 1
    # At most half of the endpoints can be ejected by failures the request may have caused: the pool is
    # never emptied, and the good backend gets every other request.
    assert statuses[503] == 0 and statuses[200] >= 3, statuses
    assert bal.pool.ready()
    deliveries.clear()
    async with http.get(base_url(bal) + "/v1/models/x", timeout=TIMEOUT) as r:
        await r.read()
    assert sum(deliveries.values()) <= 1 + 2  # an idempotent request: at most 1 + retries deliveries


async def test_without_upstream_keepalive_an_unsolicited_answer_cannot_shift_answers(raw, balancer, http):
    """A backend that answers every request, then sends one more answer a little later, and goes on.

    With keep-alive that late answer can meet the next request written on the same connection; with
    --upstream-keepalive false every request has a connection of its own, so it never can."""
    connections = 0

    async def backend(reader, writer):
        nonlocal connections
        connections += 1
        while True:
            _unused, headers, _unused = await read_request(reader)
            marker = headers["x-marker"].encode()
            writer.write(response(marker))
            await writer.drain()
            await asyncio.sleep(0.001)
            writer.write(response(b"LATE " + marker))

    port = await raw.start(backend)
    bal = await balancer([{"name": "raw", "url": f"http://127.0.0.1:{port}"}], upstream_keepalive=False)

    async def client(c: int) -> None:
        for i in range(200):
            status, body, _unused = await _marked(http, bal, f"k{c}-{i}")
            assert (status, body) == (200, f"k{c}-{i}".encode())

    await asyncio.gather(client(0), client(1))
    assert connections == 400


async def test_a_request_left_unread_by_a_reset_goes_to_another_backend(backends, balancer, http):
    """A backend that closes with the request unread in its socket makes the kernel answer RST: the
    request provably was not processed, so even a POST goes to another backend."""
    listener = socket.create_server(("127.0.0.1", 0))
    resets = 0

    def resetter() -> None:  # plain sockets: unread bytes stay in the kernel, so close() sends RST
        nonlocal resets
        listener.settimeout(5)
        with contextlib.suppress(OSError):
            while True:
                conn, _unused = listener.accept()
                time.sleep(0.05)  # the whole request has arrived
                conn.recv(8)
                conn.close()
                resets += 1

    thread = threading.Thread(target=resetter, daemon=True)
    thread.start()
    good = await backends("good")
    port = listener.getsockname()[1]
    bal = await balancer(
        [{"name": "rst", "url": f"http://127.0.0.1:{port}"}, {"name": "good", "url": good.url}]
    )
    try:
        status, _unused, headers = await _marked(http, bal, "r1")
    finally:
        listener.close()
    assert status == 200 and headers["X-Edgewasm-Backend"] == "good"
    assert resets >= 1 and good.hits == 1


async def test_a_streamed_body_is_never_sent_twice_even_after_a_reset(balancer, http):
    """A reset proves the backend did not process the request, but a streamed body was consumed on the
    way: sending "it" again would send the head with a truncated body. One connection, one answer."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = 0

    def resetter() -> None:
        nonlocal accepted
        listener.settimeout(5)
        with contextlib.suppress(OSError):
            while True:
                conn, _unused = listener.accept()
                accepted += 1
                time.sleep(0.2)  # the whole streamed body is in the socket buffer by now
                conn.recv(8)
                conn.close()  # unread bytes: the kernel answers RST

    threading.Thread(target=resetter, daemon=True).start()
    port = listener.getsockname()[1]
    bal = await balancer([{"name": "rst", "url": f"http://127.0.0.1:{port}"}], buffer_limit=1024)
    try:
        status, _unused, _unused = await _marked(http, bal, "s1", data=b"x" * 65536)
    finally:
        listener.close()
    assert status == 502
    assert accepted == 1


async def test_endless_response_headers_are_cut_off(raw, balancer, http):
    """llhttp sets no limit on header size: the client must, or a backend could fill the gateway's memory."""

    async def endless(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for index in range(100_000):  # 4 MB of headers, never ending them
            writer.write(b"X-Filler-%d: %s\r\n" % (index, b"y" * 24))
            if index % 1000 == 0:
                await writer.drain()
        await asyncio.sleep(5)

    port = await raw.start(endless)
    bal = await balancer([{"name": "endless", "url": f"http://127.0.0.1:{port}"}])
    status, body, _unused = await _marked(http, bal, "h1")
    assert status == 502 and b"response headers larger than" in body


@pytest.mark.parametrize(
    "header",
    ["X-Title: \u65e5\u672c".encode(), b"X-Title: \xff\xfe broken"],
    ids=["utf-8", "not-utf-8"],
)
async def test_a_header_that_is_not_latin1_is_a_400_not_a_500(backends, balancer, header):
    """Before: a UTF-8 header value made the proxy answer 500 with a traceback (latin-1 encode)."""
    a = await backends("a")
    bal = await balancer([{"name": "a", "url": a.url}])
    answer = await exchange(
        bal.address[1],
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + header
        + b"\r\nContent-Length: 2\r\n\r\n{}",
    )
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"Request header X-Title is not ISO-8859-1 text" in answer
    assert a.hits == 0  # nothing reached the backend


@pytest.mark.parametrize(
    "target",
    [b"/v1/../metrics", b"/v1/%2e%2e/metrics", b"/v1/%2E%2e/%2e/x", b"/v1/./chat/completions"],
)
async def test_dot_segments_never_reach_a_backend(backends, balancer, target):
    """Before: /v1/../metrics and /v1/%2e%2e/... reached backends as sent."""
    a = await backends("a")
    bal = await balancer([{"name": "a", "url": a.url}])
    answer = await exchange(
        bal.address[1], b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert a.hits == 0, answer[:200]
    assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 404 ")), answer[:200]


async def test_an_absolute_form_target_is_rewritten_to_its_path(backends, balancer):
    a = await backends("a")
    bal = await balancer([{"name": "a", "url": a.url}])
    body = b'{"model": "standin-model", "messages": []}'
    answer = await exchange(
        bal.address[1],
        b"POST http://elsewhere.example/v1/chat/completions?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert a.received[-1]["raw_path"] == "/v1/chat/completions?x=1", a.received[-1]
