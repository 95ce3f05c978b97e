"""Proxying over real sockets on 127.0.0.1, against stand-in OpenAI-compatible backends."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections import Counter

import pytest
from aiohttp import web
from conftest import base_url

from edgewasm_balancer.health import HealthChecker


async def _chat(http, url, payload, **kwargs):
    async with http.post(url + "/v1/chat/completions", json=payload, **kwargs) as r:
        return r.status, await r.json(), r.headers


async def test_weighted_shares_over_10000_requests(backends, balancer, http):
    a, b, c = await backends("a"), await backends("b"), await backends("c")
    bal = await balancer(
        [
            {"name": "a", "url": a.url, "weight": 5},
            {"name": "b", "url": b.url, "weight": 1},
            {"name": "c", "url": c.url, "weight": 1},
        ]
    )
    url = base_url(bal) + "/v1/embeddings"
    counts: Counter[str] = Counter()
    # Sequential requests follow nginx's smooth sequence exactly.
    sequence = []
    for _attempt in range(7):
        async with http.post(url, data=b'{"input":"x"}') as r:
            assert r.status == 200
            sequence.append(r.headers["X-Edgewasm-Backend"])
    assert "".join(sequence) == "aabacaa"
    counts.update(sequence)
    sem = asyncio.Semaphore(32)

    async def one() -> str:
        async with sem, http.post(url, data=b'{"input":"x"}') as r:
            assert r.status == 200
            return r.headers["X-Edgewasm-Backend"]

    counts.update(await asyncio.gather(*(one() for _attempt in range(10_000 - 7))))
    shares = {k: v / 10_000 for k, v in counts.items()}
    assert abs(shares["a"] - 5 / 7) < 0.01
    assert abs(shares["b"] - 1 / 7) < 0.01
    assert abs(shares["c"] - 1 / 7) < 0.01
    assert a.hits + b.hits + c.hits == 10_000


@pytest.mark.parametrize("size", [1, 64 * 1024, 8 * 1024 * 1024])
@pytest.mark.parametrize("buffer_limit", [16 * 1024 * 1024, 4096], ids=["buffered", "streamed"])
async def test_bodies_arrive_intact(backends, balancer, http, size, buffer_limit):
    a = await backends("a")
    bal = await balancer([{"name": "a", "url": a.url}], buffer_limit=buffer_limit)
    body = os.urandom(size)
    async with http.post(
        base_url(bal) + "/v1/completions", data=body, headers={"Content-Type": "application/octet-stream"}
    ) as r:
        answer = await r.json()
    assert r.status == 200
    assert answer["size"] == size
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()


async def test_chunked_request_body(backends, balancer, http):
    a = await backends("a", models=["m1"])
    bal = await balancer([{"name": "a", "url": a.url, "models": ["m1"]}])
    payload = json.dumps({"model": "m1", "messages": [{"role": "user", "content": "x" * 200_000}]}).encode()

    async def pieces():
        for i in range(0, len(payload), 7000):
            yield payload[i : i + 7000]

    async with http.post(
        base_url(bal) + "/v1/chat/completions", data=pieces(), headers={"Content-Type": "application/json"}
    ) as r:
        answer = await r.json()
    assert r.status == 200
    assert answer["sha256"] == hashlib.sha256(payload).hexdigest()
    assert answer["model"] == "m1"


async def test_sse_chunks_arrive_before_the_backend_finishes(backends, balancer, http):
    gate = asyncio.Event()
    a = await backends("a", stream_gate=gate)
    bal = await balancer([{"name": "a", "url": a.url}])
    async with http.post(
        base_url(bal) + "/v1/chat/completions", json={"model": "standin-model", "stream": True, "chunks": 3}
    ) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        # The backend holds its second chunk until the first has reached us: no buffering on the way.
        first = await asyncio.wait_for(r.content.readline(), timeout=5)
        assert json.loads(first.removeprefix(b"data: "))["index"] == 0
        gate.set()
        rest = (await r.content.read()).decode()
    events = [line.removeprefix("data: ") for line in rest.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert [json.loads(e)["index"] for e in events[:-1]] == [1, 2]


async def test_client_disconnect_cancels_the_backend_request(backends, balancer, http):
    gate = asyncio.Event()
    a = await backends("a", stream_gate=gate)
    bal = await balancer([{"name": "a", "url": a.url}])
    r = await http.post(base_url(bal) + "/v1/chat/completions", json={"stream": True, "chunks": 3})
    await r.content.readline()
    r.close()  # the client goes away mid-stream
    for _attempt in range(100):
        if a.cancelled:
            break
        await asyncio.sleep(0.02)
    assert a.cancelled == 1
    for _attempt in range(100):
        if bal.proxy.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert bal.proxy.in_flight == 0


async def test_hop_by_hop_headers_and_forwarded_for(backends, balancer, http):
    a = await backends("a")
    bal = await balancer([{"name": "a", "url": a.url}])
    headers = {
        "Connection": "keep-alive, X-Private",
        "X-Private": "secret",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic eA==",
        "X-Forwarded-For": "10.9.8.7",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https",
        "Forwarded": "for=10.9.8.7;proto=https",
        "Authorization": "Bearer k",
        "X-Custom": "kept",
    }
    status, answer, _unused = await _chat(http, base_url(bal), {"model": "standin-model"}, headers=headers)
    seen = {k.lower(): v for k, v in answer["headers"].items()}
    assert status == 200
    for dropped in ("x-private", "keep-alive", "proxy-authorization"):
        assert dropped not in seen
    # Set by the gateway, never a client's own (before: appended to, or passed on as sent).
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == base_url(bal).removeprefix("http://")
    assert "forwarded" not in seen
    assert seen["authorization"] == "Bearer k"
    assert seen["x-custom"] == "kept"
    assert seen["host"] == a.url.removeprefix("http://")


async def test_model_routing(backends, balancer, http):
    one, two = (
        await backends("one", models=["llama-3-1b"]),
        await backends("two", models=["llama-3-3b", "big"]),
    )
    bal = await balancer(
        [
            {"name": "one", "url": one.url, "weight": 3, "models": ["llama-3-1b"]},
            {"name": "two", "url": two.url, "weight": 1, "models": ["llama-3-3b", "big"]},
        ]
    )
    url = base_url(bal)
    for _attempt in range(6):
        status, answer, _unused = await _chat(http, url, {"model": "big", "messages": []})
        assert (status, answer["backend"]) == (200, "two")
    status, answer, _unused = await _chat(http, url, {"model": "llama-3-1b"})
    assert (status, answer["backend"]) == (200, "one")
    status, answer, _unused = await _chat(http, url, {"model": "gpt-4"})
    assert status == 404
    assert answer["error"]["code"] == "model_not_found"
    assert answer["error"]["type"] == "invalid_request_error"
    assert "gpt-4" in answer["error"]["message"]
    names = {(await _chat(http, url, {"messages": []}))[1]["backend"] for _attempt in range(4)}
    assert names == {"one", "two"}  # no model: every backend


async def test_models_are_merged(backends, balancer, http):
    one, two = await backends("one", models=["m1", "shared"]), await backends("two", models=["m2", "shared"])
    bal = await balancer([{"name": "one", "url": one.url}, {"name": "two", "url": two.url}])
    async with http.get(base_url(bal) + "/v1/models") as r:
        body = await r.json()
    assert r.status == 200
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["m1", "m2", "shared"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/completions"),
        ("POST", "/v1/embeddings"),
        ("GET", "/v1/info"),
        ("DELETE", "/v1/files/f-1?x=1"),
    ],
)
async def test_every_v1_endpoint_is_proxied(backends, balancer, http, method, path):
    a = await backends("a")
    bal = await balancer([{"name": "a", "url": a.url}])
    async with http.request(method, base_url(bal) + path) as r:
        answer = await r.json()
    assert r.status == 200
    assert (answer["method"], answer["path"]) == (method, path)


async def test_other_paths_are_not_proxied(backends, balancer, http):
    a = await backends("a")
    bal = await balancer([{"name": "a", "url": a.url}])
    async with http.get(base_url(bal) + "/admin/secret") as r:
        assert r.status == 404
    assert a.hits == 0


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def test_a_backends_model_list_is_never_fetched_through_a_redirect_nor_read_unbounded(balancer, http):
    """Before: a backend answering /v1/models with a 302 to an internal address made the balancer fetch that
    address (every health round, and for every public GET /v1/models) and serve its content; a streaming
    /v1/models grew the balancer's memory without bound."""

    async def secret(_request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "internal-secret"}]})

    internal = web.Application()
    internal.router.add_get("/v1/models", secret)
    internal_runner, internal_url = await _serve(internal)

    async def redirect(_request: web.Request) -> web.Response:
        raise web.HTTPFound(internal_url + "/v1/models")

    async def endless(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse()
        await out.prepare(request)
        await out.write(b'{"data": [' + b'{"id": "x"},' * 10)
        with contextlib.suppress(ConnectionError):
            for _chunk in range(64):  # 64 MiB, then the test server stops by itself
                await out.write(b" " * (1 << 20))
        return out

    redirecting = web.Application()
    redirecting.router.add_get("/v1/models", redirect)
    streaming = web.Application()
    streaming.router.add_get("/v1/models", endless)
    runners = [internal_runner]
    urls = []
    for app in (redirecting, streaming):
        runner, url = await _serve(app)
        runners.append(runner)
        urls.append(url)
    try:
        bal = await balancer(
            [
                {"name": "r", "url": urls[0], "models": ["m-r"]},
                {"name": "s", "url": urls[1], "models": ["m-s"]},
            ]
        )
        async with http.get(base_url(bal) + "/v1/models") as r:
            body = await r.json()
        assert [m["id"] for m in body["data"]] == [
            "m-r",
            "m-s",
        ]  # what they declared; nothing fetched elsewhere
        checker = HealthChecker(bal.pool, bal.metrics, bal.session, path="/v1/models", interval=1, timeout=10)
        for endpoint in bal.pool.endpoints():
            assert await checker.check(endpoint) is None, (
                endpoint.url
            )  # a redirect, an oversized answer: failures
    finally:
        for runner in runners:
            await runner.cleanup()
