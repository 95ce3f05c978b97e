"""Health endpoints, metrics, graceful shutdown and the command line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from conftest import balancer_process, base_url, metrics_url

from edgewasm_balancer import sources
from edgewasm_balancer.config import ENV_PREFIX, Settings, build_parser, parse_settings, program_name
from edgewasm_balancer.sources import parse_backends

SRC = str(Path(__file__).resolve().parents[1] / "src")


async def test_healthz_and_readyz(backends, balancer, http):
    bal = await balancer()  # admin API only, nothing registered yet
    async with http.get(base_url(bal) + "/healthz") as r:
        assert r.status == 200
    async with http.get(base_url(bal) + "/readyz") as r:
        assert r.status == 503
        assert "no backend is available" in (await r.json())["reasons"]
    a = await backends("a")
    bal.pool.replace("static", parse_backends([{"name": "a", "url": a.url}], "test"))
    async with http.get(base_url(bal) + "/readyz") as r:
        assert r.status == 200


async def test_metrics(backends, balancer, http):
    a, bad = await backends("a"), await backends("bad", fail_status=502)
    bal = await balancer([{"name": "a", "url": a.url, "weight": 2}, {"name": "bad", "url": bad.url}])
    for _attempt in range(4):
        async with http.post(base_url(bal) + "/v1/chat/completions", json={"stream": True}) as r:
            await r.read()
    async with http.get(metrics_url(bal)) as r:
        text = await r.text()
    assert r.headers["Content-Type"].startswith("text/plain")

    def value(pattern: str) -> float:
        match = re.search(r"^" + pattern + r" ([0-9.e+-]+)$", text, re.M)
        assert match, pattern
        return float(match.group(1))

    assert value(r'edgewasm_balancer_requests_total\{backend="a",code="200"\}') == 4
    assert value(r'edgewasm_balancer_backend_errors_total\{backend="bad",kind="status"\}') == 1
    assert (
        value(r'edgewasm_balancer_ejections_total\{backend="bad",endpoint="' + re.escape(bad.url) + '"}') == 1
    )
    assert value(r'edgewasm_balancer_retries_total\{backend="a"\}') == 1
    assert value(r'edgewasm_balancer_time_to_first_byte_seconds_count\{backend="a"\}') == 4
    assert value(r'edgewasm_balancer_request_duration_seconds_count\{backend="a"\}') == 4
    assert value(r'edgewasm_balancer_in_flight_requests\{backend="a",source="static"\}') == 0
    assert value(r'edgewasm_balancer_backend_weight\{backend="a",source="static"\}') == 2


async def test_graceful_shutdown_drains_streams(backends, balancer, http):
    gate = asyncio.Event()
    a = await backends("a", stream_gate=gate)
    bal = await balancer([{"name": "a", "url": a.url}], shutdown_delay=0.2)
    url = base_url(bal)
    response = await http.post(url + "/v1/chat/completions", json={"stream": True, "chunks": 3})
    await response.content.readline()
    stopping = asyncio.create_task(bal.stop())
    await asyncio.sleep(0.05)
    async with http.get(url + "/readyz") as r:  # still listening during the delay, but not ready
        assert r.status == 503
        assert "shutting down" in (await r.json())["reasons"]
    await asyncio.sleep(0.3)
    with pytest.raises(aiohttp.ClientConnectionError):  # the listener is closed...
        async with aiohttp.ClientSession() as fresh, fresh.get(url + "/healthz"):
            pass
    gate.set()  # ...while the stream in flight finishes normally
    rest = await response.content.read()
    assert rest.rstrip().endswith(b"data: [DONE]")
    await stopping
    assert a.cancelled == 0


def test_help_documents_every_option():
    parser = build_parser()
    text = parser.format_help()
    options = [a for a in parser._actions if a.option_strings and a.dest not in {"help", "version"}]
    assert len(options) >= 25
    for action in options:
        assert action.help and len(action.help) > 20, action.dest
        env = ENV_PREFIX + action.option_strings[0].lstrip("-").replace("-", "_").upper()
        assert env in text, env
    # every setting is reachable from the command line
    dests = {a.dest for a in options} | {"host", "port", "admin_token"}
    assert set(Settings.__dataclass_fields__) <= dests | {"listen"}


def test_settings_from_flags_and_env(tmp_path, monkeypatch):
    token = tmp_path / "token"
    token.write_text("abc\n")
    monkeypatch.setenv(ENV_PREFIX + "RETRIES", "5")
    monkeypatch.setenv(ENV_PREFIX + "NAMESPACE", "llm,batch")
    monkeypatch.setenv(ENV_PREFIX + "LEAST_BUSY", "true")
    settings = parse_settings(
        [
            "--listen",
            "127.0.0.1:9000",
            "--kubernetes",
            "--admin-token-file",
            str(token),
            "--idle-timeout",
            "30",
        ]
    )
    assert (settings.host, settings.port, settings.retries, settings.namespaces) == (
        "127.0.0.1",
        9000,
        5,
        ("llm", "batch"),
    )
    assert settings.kubernetes and settings.least_busy and settings.admin_token == "abc"
    assert settings.idle_timeout == 30


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--listen", "nowhere"], "expected HOST:PORT"),
        (["--connect-timeout", "0"], "must be > 0"),
        (["--admin-api", "false"], "no backend source"),
        (["--admin-api", "true"], "--admin-api needs a token"),
        (["--kubernetes", "--admin-allow-network", "10.0.0.0/33"], "expected a network"),
        (["--kubernetes", "--max-ejection-percent", "101"], "must be from 0 to 100"),
        (["--admin-token-file", "/nonexistent/token"], "--admin-token-file /nonexistent/token"),
    ],
)
def test_bad_settings_fail_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_settings(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_command_line_runs_static_mode_and_stops_on_sigterm(tmp_path):
    """`python -m edgewasm_balancer --listen HOST:PORT --backends-file FILE`, as a process."""
    backends_file = tmp_path / "backends.yaml"
    backends_file.write_text("- name: a\n  url: http://127.0.0.1:9\n  weight: 2\n")
    proc, _port, metrics_port = balancer_process(backends_file)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
            assert (
                'edgewasm_balancer_backend_weight{backend="a",source="static"} 2.0' in answer.read().decode()
            )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_command_line_rejects_a_bad_backends_file(tmp_path):
    bad = tmp_path / "backends.json"
    bad.write_text('[{"name": "a", "url": "http://127.0.0.1:9", "weight": 0}]')
    result = subprocess.run(
        [sys.executable, "-m", "edgewasm_balancer", "--backends-file", str(bad)],
        check=False,
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "weight must be an integer from 1 to 10000, got 0" in result.stderr


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        ("/opt/balancer/bin/edgewasm-balancer", "edgewasm-balancer"),
        ("/usr/lib/python3/site-packages/edgewasm_balancer/__main__.py", "python -m edgewasm_balancer"),
        ("-c", "python -m edgewasm_balancer"),
    ],
)
def test_help_names_the_command_that_was_run(argv0, expected):
    assert program_name(argv0) == expected


@pytest.mark.parametrize(
    "argv",
    [["--rout", "swrr"], ["--lis", "0.0.0.0:1"], ["--admin-token-f", "/x"], ["--kub"]],
    ids=["routing", "listen", "admin-token-file", "kubernetes"],
)
def test_abbreviated_options_are_refused(argv, capsys):
    """argparse took "--rout" for --routing, which let extra_args past llama_balancer's guard."""
    with pytest.raises(SystemExit) as exc:
        parse_settings(argv)
    assert exc.value.code == 2
    assert f"unrecognized arguments: {argv[0]}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("check", "value"),
    [
        ("registration name", {"name": "evil\n", "ip": "127.0.0.1", "port": 8080}),
        ("registration host", {"name": "ok", "ip": "backend.local\n", "port": 8080}),
        ("backends file name", [{"name": "evil\n", "url": "http://127.0.0.1:8080"}]),
        ("backends file url", [{"name": "ok", "url": "http://127.0.0.1:8080\n"}]),
    ],
)
def test_a_trailing_newline_is_refused_by_every_pattern(check, value):
    """A name "evil\\n" was registered, and every response routed to it killed the client's connection."""
    with pytest.raises(sources.InvalidBackendError):
        if check.startswith("registration"):
            sources.registration(value)
        else:
            sources.parse_backends(value, "backends.json")
    fine = (
        dict(value, name="ok", ip="127.0.0.1")
        if isinstance(value, dict)
        else [dict(value[0], name="ok", url="http://127.0.0.1:8080")]
    )
    assert (
        sources.registration(fine)
        if isinstance(fine, dict)
        else sources.parse_backends(fine, "backends.json")
    )


def test_sighup_reloads_the_backends_file_at_once(tmp_path):
    """Before: SIGHUP (what operators send) killed the process."""
    backends_file = tmp_path / "backends.yaml"
    backends_file.write_text("- name: a\n  url: http://127.0.0.1:9\n  weight: 2\n")
    # A reload interval far longer than the test: only the signal can make the new weight appear.
    proc, _port, metrics_port = balancer_process(backends_file, "--reload-interval", "3600")
    try:
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        backends_file.write_text("- name: a\n  url: http://127.0.0.1:9\n  weight: 5\n")
        proc.send_signal(signal.SIGHUP)
        while json.loads(proc.stderr.readline())["msg"] != "backends file loaded":
            pass
        with urllib.request.urlopen(metrics, timeout=10) as answer:
            assert (
                'edgewasm_balancer_backend_weight{backend="a",source="static"} 5.0' in answer.read().decode()
            )
        assert proc.poll() is None  # still running
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
