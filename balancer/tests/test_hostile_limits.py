"""Hostile clients and bad configuration: bounded memory, closed admin API, a pool that is validated
before it changes, scrapeable metrics, one shutdown deadline, and limits on slow peers."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import aiohttp.web
import pytest
from conftest import admin_url, balancer_process, base_url, metrics_url
from hostile import exchange, read_head
from prometheus_client.parser import text_string_to_metric_families

from edgewasm_balancer import bodies, sources
from edgewasm_balancer.config import parse_settings
from edgewasm_balancer.pool import ServiceSpec
from edgewasm_balancer.sources import registration

SRC = str(Path(__file__).resolve().parents[1] / "src")
MIB = 1024 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=10)


# -- 2. memory and the event loop -------------------------------------------------------------------
async def test_buffered_request_bytes_have_a_global_cap(backends, balancer, http):
    slow = await backends("slow", first_byte_delay=0.5)
    bal = await balancer([{"name": "slow", "url": slow.url}], buffer_total=40 * MIB)
    peak = 0
    budget = bal.proxy.budget
    take = budget.take

    def watched(size: int, client: str | None = None) -> bool:
        nonlocal peak
        granted = take(size, client)
        peak = max(peak, budget.used)
        return granted

    budget.take = watched
    body = b'{"model": "standin-model", "pad": "' + b"x" * (15 * MIB) + b'"}'

    async def send(index: int) -> tuple[int, dict]:
        # Each from an address of its own (a client's share of the budget is tested on its own).
        connector = aiohttp.TCPConnector(local_addr=(f"127.0.0.{index + 2}", 0))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(base_url(bal) + "/v1/chat/completions", data=body, timeout=TIMEOUT) as r,
        ):
            return r.status, (await r.json()) | {"retry": r.headers.get("Retry-After")}

    results = await asyncio.gather(*(send(index) for index in range(10)))
    statuses = Counter(status for status, _unused in results)
    assert statuses[200] >= 2 and statuses[503] >= 1, statuses
    assert statuses[200] + statuses[503] == 10
    refused = next(answer for status, answer in results if status == 503)
    assert refused["error"]["code"] == "buffer_full" and refused["retry"] == "1"
    assert peak <= 40 * MIB
    assert budget.used == 0  # every reservation was given back


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),  # small: the json module's own limit
        (b'{"model": "m", "x": [1, 2', "not valid JSON"),
        (b'{"messages": "' + b"x" * 100_000, "unterminated string"),  # large: the scanner
        (b'{"a": [' + b" " * 100_000 + b"]]}", "data after its end"),  # a bracket too many
        (b'{"a": [' + b" " * 100_000, "ends before its last bracket"),
        (b'{"a": 1' + b" " * 100_000 + b"} x", "data after its end"),
        (b'{"model": "\\ud800\xff"' + b" " * 100_000 + b"}", "not a valid string"),
    ],
)
async def test_unreadable_json_bodies_get_an_openai_400(backends, balancer, http, body, message):
    a = await backends("a")
    bal = await balancer([{"name": "a", "url": a.url}])
    async with http.post(
        base_url(bal) + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"
    assert a.hits == 0


async def test_a_body_not_declared_json_is_never_refused_for_its_bytes(backends, balancer, http):
    a = await backends("a")
    bal = await balancer([{"name": "a", "url": a.url}])
    for body in (b"{not json at all", b"{" + b"\xff" * 100_000):
        async with http.post(
            base_url(bal) + "/v1/completions", data=body, headers={"Content-Type": "application/octet-stream"}
        ) as r:
            assert r.status == 200 and (await r.json())["size"] == len(body)


async def test_deep_large_bodies_route_by_a_late_model_without_recursion(backends, balancer, http):
    a = await backends("a", models=["m-a"])
    b = await backends("b", models=["m-b"])
    bal = await balancer(
        [{"name": "a", "url": a.url, "models": ["m-a"]}, {"name": "b", "url": b.url, "models": ["m-b"]}]
    )
    deep = b"[" * 200_000 + b"]" * 200_000
    body = b'{"messages": ' + deep + b', "model": "m-b"}'
    for _attempt in range(2):
        async with http.post(base_url(bal) + "/v1/chat/completions", data=body, timeout=TIMEOUT) as r:
            assert r.status == 200 and r.headers["X-Edgewasm-Backend"] == "b"


async def test_a_body_of_more_than_a_million_tokens_is_refused():
    """The whole object is walked now (a second model key is refused), so the bound holds wherever the model is."""
    body = b'{"messages": [' + b'"a",' * 1_100_000 + b'"z"]}'
    for placed in (body[:-1] + b', "model": "late"}', b'{"model": "first", ' + body[1:]):
        with pytest.raises(bodies.UnreadableBodyError, match="more than 1000000 strings and brackets"):
            await bodies.requested_model(placed, "application/json")


@pytest.mark.parametrize("large", [False, True], ids=["json-module", "scanner"])
async def test_a_duplicate_model_key_is_refused_on_both_paths(large):
    """Before: bodies up to 64 KiB were routed by the last "model", larger ones by the first."""
    pad = ', "pad": "' + "x" * bodies.SMALL + '"' if large else ""
    body = ('{"model": "a", "messages": [{"model": "inner"}]' + pad + ', "model": "b"}').encode()
    with pytest.raises(bodies.UnreadableBodyError, match="names its model twice"):
        await bodies.requested_model(body, "application/json")
    nested_only = ('{"model": "a", "messages": [{"model": "inner"}]' + pad + "}").encode()
    assert await bodies.requested_model(nested_only, "application/json") == "a"


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "a", "mod\\u0065l": "b"}',  # the second key spelled with an escape
        '{"model": "a", "model": "b"}'.encode("utf-16"),  # json.loads reads UTF-16 and UTF-32 too
        '{"model": "a", "model": "b"}'.encode("utf-32-le"),
    ],
    ids=["escaped-key", "utf-16", "utf-32"],
)
async def test_a_duplicate_model_key_is_refused_however_it_is_spelled(body):
    """The small-body parser looks for duplicates only where the text can have them: these are such texts."""
    with pytest.raises(bodies.UnreadableBodyError, match="names its model twice"):
        await bodies.requested_model(body, "application/json")


async def test_the_model_scan_yields_to_other_requests():
    """Scanning a body with many tokens lets the event loop run other work in between."""
    body = b'{"messages": [' + b'"a",' * 200_000 + b'"z"], "model": "late"}'
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    assert await bodies.requested_model(body, "application/json") == "late"
    done = True
    await task
    assert ticks >= 50  # 200,000 tokens, a yield every 2,048


# -- 3. the admin API --------------------------------------------------------------------------------
async def test_admin_api_is_off_by_default_and_never_on_the_public_port(backends, balancer, http, tmp_path):
    assert not parse_settings(["--kubernetes"]).admin_api
    bal = await balancer()
    reg = {"name": "evil", "weight": 10000, "ip": "10.0.0.9", "port": 80}
    async with http.post(base_url(bal) + "/api/register", json=reg) as r:
        assert r.status == 404
    assert bal.admin_address is None
    on = await balancer(admin_api=True, admin_token="t")
    async with http.post(
        base_url(on) + "/api/register", json=reg, headers={"Authorization": "Bearer t"}
    ) as r:
        assert r.status == 404  # the public port has no admin routes even when the API is on
    assert on.pool.services == {}
    # A token turns it on, by default on a loopback-only listener of its own.
    token = tmp_path / "token"
    token.write_text("t\n")
    settings = parse_settings(["--kubernetes", "--admin-token-file", str(token)])
    assert settings.admin_api and settings.admin_listen == ("127.0.0.1", 8081)


@pytest.mark.parametrize(
    "ip",
    [
        "169.254.169.254",
        "127.0.0.1",
        "127.8.8.8",
        "::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "fe80::1",
        "localhost",
    ],
)
async def test_registrations_to_forbidden_addresses_are_refused(balancer, http, ip):
    bal = await balancer(admin_api=True, admin_token="t", health_interval=0.05)
    async with http.post(
        admin_url(bal) + "/api/register",
        json={"name": "meta", "weight": 1, "ip": ip, "port": 80},
        headers={"Authorization": "Bearer t"},
    ) as r:
        assert r.status == 400
        assert "not an allowed backend address" in (await r.json())["error"]
    await asyncio.sleep(0.15)
    assert bal.pool.services == {}  # never registered, so never health-checked nor proxied to


async def test_an_allow_list_restricts_registrations_to_its_networks(balancer, http):
    bal = await balancer(
        admin_api=True, admin_token="t", admin_allow_networks=(ipaddress.ip_network("10.42.0.0/16"),)
    )
    auth = {"Authorization": "Bearer t"}
    for ip, status in (("10.42.3.4", 200), ("10.43.0.1", 400), ("192.168.1.1", 400)):
        async with http.post(
            admin_url(bal) + "/api/register",
            json={"name": f"n{status}", "ip": ip, "port": 8080},
            headers=auth,
        ) as r:
            assert r.status == status, ip
    assert [s.name for s in bal.pool.services.values()] == ["n200"]


def test_weights_are_bounded_everywhere():
    from edgewasm_balancer.kube import parse_weight  # noqa: PLC0415
    from edgewasm_balancer.sources import InvalidBackendError, parse_backends  # noqa: PLC0415

    for weight in (0, 10_001, 10**400, True, 1.5):
        with pytest.raises(InvalidBackendError, match="from 1 to 10000"):
            parse_backends([{"name": "a", "url": "http://a:1", "weight": weight}], "f")
        with pytest.raises(InvalidBackendError):
            registration({"name": "a", "ip": "10.0.0.1", "port": 1, "weight": weight})
    for raw in ("0", "10001", "1" + "0" * 400):
        with pytest.raises(ValueError):
            parse_weight(raw)
    assert parse_weight("10000") == 10_000


# -- 5. the backends file ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url", ["http://10.0.0.1:99999", "http://10.0.0.1:abc", "http://10.0.0.1:0", "http://:80"]
)
def test_a_bad_backend_url_at_start_is_exit_2_naming_the_entry(tmp_path, url):
    path = tmp_path / "backends.json"
    path.write_text(json.dumps([{"name": "ok", "url": "http://10.0.0.1:80"}, {"name": "bad", "url": url}]))
    result = subprocess.run(
        [sys.executable, "-m", "edgewasm_balancer", "--backends-file", str(path), "--listen", "127.0.0.1:0"],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert (
        f"backends.json[1]: url must look like http://HOST:PORT with a port from 1 to 65535, got '{url}'"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


async def test_a_bad_reload_changes_nothing_and_later_edits_still_apply(tmp_path, balancer, backends):
    a, b = await backends("a"), await backends("b")
    bal = await balancer([{"name": "a", "url": a.url}, {"name": "b", "url": b.url}])
    path = bal.settings.backends_file
    before = {name: list(svc.endpoints) for (_unused, name), svc in bal.pool.services.items()}

    async def settle() -> None:
        await asyncio.sleep(0.3)  # several reload intervals (0.05 s)

    for bad in (
        [{"name": "a", "url": "http://127.0.0.1:1"}, {"name": "b", "url": "http://127.0.0.1:99999"}],
        [{"name": "z", "url": "http://127.0.0.1:2"}, {"name": "b", "url": "http://127.0.0.1:abc"}],
        "[" * 50_000,
        "\udcff",
    ):
        text = bad if isinstance(bad, str) else json.dumps(bad)
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        await settle()
        assert {name: list(svc.endpoints) for (_unused, name), svc in bal.pool.services.items()} == before
    path.write_text(json.dumps([{"name": "a", "url": a.url, "weight": 7}]))
    await settle()
    assert [(s.name, s.weight) for s in bal.pool.services.values()] == [("a", 7)]  # the loop survived


# -- 6. metrics --------------------------------------------------------------------------------------
def _series(text: str) -> list[tuple[str, tuple]]:
    return [
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


async def test_metrics_series_are_unique_across_sources_and_values_finite(backends, balancer, http):
    a = await backends("a")
    bal = await balancer(
        [{"name": "same", "url": a.url}],
        admin_api=True,
        admin_token="t",
        admin_allow_networks=(ipaddress.ip_network("127.0.0.0/8"),),
    )
    async with http.post(
        admin_url(bal) + "/api/register",
        json={"name": "same", "ip": "127.0.0.1", "port": a.port, "weight": 10000},
        headers={"Authorization": "Bearer t"},
    ) as r:
        assert r.status == 200
    for _attempt in range(4):
        async with http.post(base_url(bal) + "/v1/chat/completions", json={}) as r:
            assert r.status == 200
    bal.pool.upsert("static", ServiceSpec("huge", 10**400, ("http://10.0.0.1:1",)))  # past every check
    async with http.get(metrics_url(bal)) as r:
        assert r.status == 200
        text = await r.text()
    series = _series(text)
    duplicates = [key for key, count in Counter(series).items() if count > 1]
    assert not duplicates
    weights = {
        dict(labels)["source"]: v
        for name, labels, v in (
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for f in text_string_to_metric_families(text)
            for s in f.samples
        )
        if name == "edgewasm_balancer_backend_weight" and dict(labels)["backend"] == "same"
    }
    assert weights == {"static": 1.0, "admin": 10000.0}
    assert 'edgewasm_balancer_backend_weight{backend="huge",source="static"} 10000.0' in text


def answering(response: bytes):
    """A raw backend that reads a request head and sends ``response`` as is."""

    async def handler(reader, writer):
        await read_head(reader)
        writer.write(response)
        await writer.drain()
        writer.close()

    return handler


SPOOFED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Edgewasm-Backend: %s\r\nContent-Length: 2\r\n\r\n{}"


async def test_metrics_and_backend_names_stay_off_the_public_port(raw, balancer, http, caplog):
    """Item 12. Before: /metrics (backend names, pod addresses) was served on the public port (the NodePort)
    and every answer named its backend in X-Edgewasm-Backend. Now the series have their own listener, the
    header is opt-in, and a backend cannot set it either."""

    port = await raw.start(answering(SPOOFED % b"kube-system/secret"))
    defaults = parse_settings(["--backends-file", "x"])
    assert (defaults.backend_header, defaults.metrics_listen) == (False, ("127.0.0.1", 8082))
    bal = await balancer(
        [{"name": "internal-name", "url": f"http://127.0.0.1:{port}"}],
        backend_header=defaults.backend_header,
    )
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    async with http.post(base_url(bal) + "/v1/chat/completions", json={}) as r:
        assert r.status == 200
        assert "X-Edgewasm-Backend" not in r.headers
    async with http.get(base_url(bal) + "/metrics") as r:
        assert r.status == 404
        assert "internal-name" not in await r.text()
    async with http.get(metrics_url(bal)) as r:
        assert r.status == 200
        assert 'backend="internal-name"' in await r.text()
    # The operator still learns it: the access log names the backend.
    assert [rec.backend for rec in caplog.records if rec.getMessage() == "request"] == ["internal-name"]


async def test_the_backend_header_when_asked_is_the_balancers_own(raw, balancer, http):
    port = await raw.start(answering(SPOOFED % b"spoofed"))
    bal = await balancer([{"name": "real", "url": f"http://127.0.0.1:{port}"}], backend_header=True)
    async with http.post(base_url(bal) + "/v1/chat/completions", json={}) as r:
        assert r.headers.getall("X-Edgewasm-Backend") == ["real"]


def test_metrics_listener_is_configurable_and_can_be_turned_off():
    base = ["--backends-file", "x"]
    assert parse_settings([*base, "--metrics-listen", "0.0.0.0:9100"]).metrics_listen == ("0.0.0.0", 9100)
    assert parse_settings([*base, "--metrics-listen", "off"]).metrics_listen is None
    assert parse_settings([*base, "--backend-header"]).backend_header is True


async def test_no_metrics_listener_when_off(backends, balancer):
    a = await backends("a")
    bal = await balancer([{"name": "a", "url": a.url}], metrics_listen=None)
    assert bal.metrics_address is None and bal.metrics_runner is None


# -- 7. shutdown -------------------------------------------------------------------------------------
async def test_shutdown_has_one_deadline(backends, balancer, http):
    gate = asyncio.Event()  # never set: the stream would go on forever
    a = await backends("a", stream_gate=gate)
    bal = await balancer([{"name": "a", "url": a.url}], shutdown_delay=0.2, shutdown_timeout=1.0)
    response = await http.post(base_url(bal) + "/v1/chat/completions", json={"stream": True, "chunks": 3})
    await response.content.readline()
    started = time.monotonic()
    await bal.stop()
    took = time.monotonic() - started
    # delay + timeout, plus the final grace aiohttp gets twice to cancel what still runs (0.25 s each)
    assert 1.2 <= took < 1.2 + 0.6, took
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.content.read()


# -- 8. slow peers -----------------------------------------------------------------------------------
async def test_a_silent_connection_is_closed_after_the_header_timeout(balancer):
    bal = await balancer(client_header_timeout=0.3)
    answer = await exchange(bal.address[1], b"", timeout=5)
    assert answer.startswith(b"HTTP/1.1 408")
    assert bal.metrics.connections_refused.labels("header_timeout")._value.get() == 1


async def test_headers_sent_byte_by_byte_are_cut_off(balancer):
    bal = await balancer(client_header_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", bal.address[1])
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    answered = asyncio.create_task(reader.read(1))  # the gateway's first byte, whenever it comes
    sent = 0
    for byte in head:
        if answered.done():
            break  # stop writing once the gateway has answered
        writer.write(bytes([byte]))
        sent += 1
        await asyncio.sleep(0.02)
    answer = await asyncio.wait_for(answered, 5) + await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408") and sent < len(head)


async def test_an_idle_keepalive_connection_is_closed(balancer):
    bal = await balancer(client_keepalive_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", bal.address[1])
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    _unused, headers = await asyncio.wait_for(read_head(reader), 5)
    await reader.readexactly(int(headers["content-length"]))
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the gateway, not by us
    writer.close()


async def test_a_stalled_request_body_gets_408(backends, balancer):
    a = await backends("a")
    bal = await balancer([{"name": "a", "url": a.url}], client_body_timeout=0.3)
    answer = await exchange(
        bal.address[1],
        b'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"model"',
        timeout=5,
    )
    assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout" in answer
    assert a.hits == 0


async def test_the_connection_limit_answers_503(balancer):
    bal = await balancer(max_connections=3)
    held = [await asyncio.open_connection("127.0.0.1", bal.address[1]) for _attempt in range(3)]
    await asyncio.sleep(0.05)
    answer = await exchange(bal.address[1], b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer
    for _unused, writer in held:
        writer.close()
    await asyncio.sleep(0.05)
    answer = await exchange(bal.address[1], b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")


async def test_a_backend_that_stops_reading_an_upload_is_timed_out(raw, balancer):
    async def never_reads(reader, writer):
        await read_head(reader)
        await asyncio.sleep(30)

    port = await raw.start(never_reads)
    bal = await balancer(
        [{"name": "stuck", "url": f"http://127.0.0.1:{port}"}], backend_write_timeout=0.5, buffer_limit=MIB
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", bal.address[1])
    size = 64 * MIB  # far more than the socket buffers on the way can hold
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    answered = asyncio.create_task(reader.read(1))
    chunk = b"x" * (256 * 1024)
    for _attempt in range(size // len(chunk)):
        if answered.done():
            break
        writer.write(chunk)
        await asyncio.sleep(0.001)  # let the gateway read; the socket buffers absorb what it does not
    head = await asyncio.wait_for(answered, 10) + await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 502")
    assert bal.metrics.errors.labels("stuck", "timeout")._value.get() == 1


@pytest.mark.parametrize(
    "raw_request",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    ],
    ids=["method", "header-too-long", "content-length"],
)
async def test_malformed_requests_get_an_openai_error_and_no_traceback(balancer, caplog, raw_request):
    bal = await balancer()
    answer = await exchange(bal.address[1], raw_request)
    head, _unused, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400") or head.startswith(b"HTTP/1.1 400")
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "bad_request"
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


async def test_a_fifo_at_the_backends_file_freezes_nothing(tmp_path, balancer, backends, http):
    """Before: the file was read on the event loop, and a FIFO at its path froze everything, /healthz too."""
    a = await backends("a")
    bal = await balancer([{"name": "a", "url": a.url}])
    path = bal.settings.backends_file
    path.unlink()
    os.mkfifo(path)
    await asyncio.sleep(0.3)  # several reload intervals
    async with asyncio.timeout(5), http.get(base_url(bal) + "/healthz") as answer:
        assert answer.status == 200
    assert [s.name for s in bal.pool.services.values()] == ["a"]


async def test_an_oversized_file_is_refused_unread_and_a_failed_version_is_not_parsed_again(
    tmp_path, balancer, backends, monkeypatch, caplog
):
    """Before: a 3.8 MB file with one bad entry blocked the loop ~30 s, again at every reload interval."""
    a = await backends("a")
    bal = await balancer([{"name": "a", "url": a.url}])
    path = bal.settings.backends_file
    parsed = []
    real = sources.load_backends_file
    monkeypatch.setattr(sources, "load_backends_file", lambda p: parsed.append(p) or real(p))
    entries = [{"name": f"n{i}", "url": f"http://127.0.0.1:{1000 + i % 60000}"} for i in range(60000)]
    path.write_text(json.dumps([*entries, {"name": "bad", "url": "nope"}]))
    await asyncio.sleep(0.4)
    assert len(parsed) == 1  # tried once, remembered as failed
    details = [
        getattr(r, "detail", "") for r in caplog.records if r.msg.startswith("backends file not reloaded")
    ]
    assert len(details) == 1 and "larger than 1048576 bytes" in details[0], details
    path.write_text(json.dumps([{"name": "b", "url": a.url}]))
    await asyncio.sleep(0.3)
    assert [s.name for s in bal.pool.services.values()] == ["b"]


async def test_a_file_that_is_not_a_backends_list_is_never_echoed(tmp_path, balancer, backends, caplog):
    """A symlink to a secret put a line of it in the log (YAML's error quoted the text)."""
    a = await backends("a")
    path = tmp_path / "backends.yaml"
    path.write_text(f"- name: a\n  url: {a.url}\n")
    bal = await balancer(None, backends_file=path)
    secret = tmp_path / "token"
    secret.write_text("apiVersion: v1\nkey: [hunter2-secret\n")
    path.unlink()
    path.symlink_to(secret)
    await asyncio.sleep(0.3)
    logged = " ".join(f"{r.getMessage()} {getattr(r, 'detail', '')}" for r in caplog.records)
    assert (
        "backends file not reloaded" in logged
        and "not valid YAML" in logged
        and "at line 3, column 1" in logged
    ), logged
    assert "hunter2" not in logged
    assert [s.name for s in bal.pool.services.values()] == ["a"]


async def test_an_authorization_header_that_is_not_utf8_is_a_401_not_a_500(balancer, http):
    bal = await balancer(admin_api=True, admin_token="t")
    port = bal.admin_address[1]
    answer = await exchange(
        port,
        b"GET /api/services HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]


async def test_a_client_that_stops_reading_a_stream_releases_the_backend(balancer):
    """Before: a streaming client that stopped reading (4 KB receive buffer) held the only slot of its backend
    (and the backend) past --idle-timeout: there was no write timeout towards the client."""

    async def endless_sse(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        out = aiohttp.web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _chunk in range(256):  # 64 MiB at most: the test's backend stops by itself
                await out.write(b"data: " + b"x" * (256 * 1024) + b"\n\n")
        return out

    app = aiohttp.web.Application()
    app.router.add_post("/v1/chat/completions", endless_sse)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        bal = await balancer([{"name": "a", "url": url, "slots": 1}], routing="load-aware", idle_timeout=1.0)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", bal.address[1]))
        body = b'{"model": "m", "stream": true}'
        sock.send(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        (endpoint,) = bal.pool.endpoints()
        for _tick in range(100):  # the slot is taken, then given back once the stalled client is cut
            await asyncio.sleep(0.1)
            if endpoint.in_flight == 0 and bal.proxy.in_flight == 0:
                break
        assert endpoint.in_flight == 0 and bal.proxy.in_flight == 0
        sock.close()
    finally:
        await runner.cleanup()


async def test_idle_uploads_hold_no_budget_and_end_at_their_deadline(backends, balancer, http):
    """Before: 4 connections declaring 16 MiB, sending "{" and then a space every few seconds held the whole
    --buffer-total (the declared length was reserved up front, the idle timer restarted with every byte, and
    there was no total deadline): every normal POST got 503 buffer_full for as long as they liked."""
    a = await backends("a")
    bal = await balancer(
        [{"name": "a", "url": a.url}],
        buffer_total=64 * MIB,
        client_body_timeout=1.0,
        client_body_min_rate=1024,
    )
    trickles = []
    for _conn in range(4):
        reader, writer = await asyncio.open_connection("127.0.0.1", bal.address[1])
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 16777216\r\n\r\n{"
        )
        trickles.append((reader, writer))
    for _round in range(3):  # a space every 0.3 s: never idle for --client-body-timeout
        await asyncio.sleep(0.3)
        for _reader, writer in trickles:
            writer.write(b" ")
            await writer.drain()
    async with http.post(
        base_url(bal) + "/v1/chat/completions", json={"model": "standin-model"}, timeout=TIMEOUT
    ) as r:
        assert r.status == 200
    assert bal.proxy.budget.used <= 4 * 8  # a few bytes each, not 4 x 16 MiB
    for reader, writer in trickles:  # slower than 1024 bytes a second: cut after the grace period
        answer = b""
        for _round in range(50):  # a space every 0.2 s until the gateway answers (10 s at most)
            try:
                answer = await asyncio.wait_for(reader.read(65536), 0.2)
                break
            except TimeoutError:
                writer.write(b" ")
        assert answer.startswith(b"HTTP/1.1 408") and b"slower than 1024 bytes a second" in answer, answer[
            :200
        ]
        writer.close()
    assert bal.proxy.budget.used == 0


async def test_an_upload_too_large_to_buffer_takes_a_slot_only_once_its_model_is_known(balancer, backends):
    """Before: a trickled upload over --buffer-limit took a slot before its body arrived, and ignored its
    model (another model's slot was taken)."""
    a, b = await backends("a", models=["m-a"]), await backends("b", models=["m-b"])
    bal = await balancer(
        [
            {"name": "a", "url": a.url, "models": ["m-a"], "slots": 1},
            {"name": "b", "url": b.url, "models": ["m-b"], "slots": 1},
        ],
        routing="load-aware",
        buffer_limit=64 * 1024,
    )
    body = b'{"model": "m-b", "messages": [], "pad": "' + b"x" * (200 * 1024) + b'"}'
    reader, writer = await asyncio.open_connection("127.0.0.1", bal.address[1])
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body[:1000]
    )
    await asyncio.sleep(0.3)
    assert [e.in_flight for e in bal.pool.endpoints()] == [0, 0]  # nothing taken before the routing prefix
    writer.write(body[1000:])
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert (a.hits, b.hits) == (0, 1)
    late = b'{"messages": [], "pad": "' + b"x" * (200 * 1024) + b'", "model": "m-b"}'
    answer = await exchange(
        bal.address[1],
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(late), late),
    )
    assert answer.startswith(b"HTTP/1.1 400") and b"must name its model within its first" in answer


async def test_peak_rss_under_chunked_uploads_stays_far_below_the_pod_limit(tmp_path):
    """Before: 40 connections each sending 17 x 1 MiB chunks then idling took the balancer from 82 MB to 768 MB
    and kept it; the manifests' limit is 256Mi. Every buffered byte now stays inside --buffer-total (64 MiB)."""
    stall = await asyncio.start_server(lambda _r, _w: asyncio.sleep(3600), "127.0.0.1", 0)
    port = stall.sockets[0].getsockname()[1]
    backends_file = tmp_path / "backends.json"
    backends_file.write_text(json.dumps([{"name": "a", "url": f"http://127.0.0.1:{port}"}]))
    proc, listen, _metrics = balancer_process(backends_file)
    try:

        async def attack(index: int) -> None:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", listen, local_addr=(f"127.0.1.{index + 1}", 0)
            )
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            chunk = b"x" * MIB
            with contextlib.suppress(ConnectionError):
                for _chunk in range(17):
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await writer.drain()
            return reader, writer

        connections = await asyncio.gather(*(attack(i) for i in range(40)), return_exceptions=True)
        await asyncio.sleep(5.0)  # the connections idle: what the balancer holds now, it keeps
        status = Path(f"/proc/{proc.pid}/status").read_text()
        peak_mib = int(status.split("VmHWM:")[1].split()[0]) / 1024
        print(f"balancer peak RSS under 40 chunked uploads of 17 MiB: {peak_mib:.0f} MiB (pod limit 256 MiB)")
        assert peak_mib < 224, peak_mib  # the process alone is about 82 MiB; --buffer-total 64 MiB
        for item in connections:
            if isinstance(item, tuple):
                item[1].close()
    finally:
        proc.kill()
        proc.wait()
        stall.close()


async def test_a_fast_client_is_not_charged_for_a_backend_that_reads_slowly(balancer):
    """The minimum rate counts only time spent waiting for the client: a body relayed to a backend that reads
    it slowly is not a slow client (with wall time, this 24 MiB body - more than the sockets buffer - got a 408
    half-way)."""
    size = 24 * MIB

    async def slow_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while length > 0:  # 512 KiB every 0.1 s: about 5 s for the body
            length -= len(await reader.read(min(length, 512 * 1024)))
            await asyncio.sleep(0.1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(slow_reader, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        bal = await balancer(
            [{"name": "a", "url": f"http://127.0.0.1:{port}"}],
            buffer_limit=64 * 1024,
            client_body_timeout=0.5,
            client_body_min_rate=10_000_000,  # 24 MiB in 0.5 + 2.5 s of wall time would be too slow
        )
        body = b'{"model": "m", "pad": "' + b"x" * (size - 25) + b'"}'
        answer = await exchange(
            bal.address[1],
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
            timeout=30,
        )
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    finally:
        server.close()
