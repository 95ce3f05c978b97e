from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hostile import RawServers
from standin_backend import StandinBackend

from edgewasm_balancer.app import Balancer
from edgewasm_balancer.config import Settings

# Test settings: no active health checks unless a test asks, short timeouts.
TEST_SETTINGS = Settings(
    host="127.0.0.1",
    port=0,
    health_interval=0,
    connect_timeout=1.0,
    first_byte_timeout=5.0,
    idle_timeout=5.0,
    reload_interval=0.05,
    shutdown_timeout=5.0,
    admin_listen=("127.0.0.1", 0),
    metrics_listen=("127.0.0.1", 0),
    backend_header=True,  # most tests check which backend answered
)


@pytest.fixture
async def backends() -> AsyncIterator[Callable[..., Awaitable[StandinBackend]]]:
    started: list[StandinBackend] = []

    async def start(name: str, **kwargs: Any) -> StandinBackend:
        backend = await StandinBackend(name=name, **kwargs).start()
        started.append(backend)
        return backend

    yield start
    for backend in started:
        await backend.stop()


def backends_file(tmp_path: Path, entries: list[dict[str, Any]]) -> Path:
    path = tmp_path / "backends.json"
    path.write_text(json.dumps(entries))
    return path


@pytest.fixture
async def balancer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Callable[..., Awaitable[Balancer]]]:
    started: list[Balancer] = []

    async def start(entries: list[dict[str, Any]] | None = None, **overrides: Any) -> Balancer:
        settings = replace(TEST_SETTINGS, **overrides)
        if entries is not None:
            settings = replace(settings, backends_file=backends_file(tmp_path, entries))
        bal = Balancer(settings)
        await bal.start()
        started.append(bal)
        return bal

    yield start
    for bal in started:
        if not bal.draining:
            await bal.stop()
    # A traceback logged by the balancer (a background task or a health round that crashed) is a bug
    # even when the test's own checks passed.
    crashes = [r for r in caplog.records if r.name.startswith("edgewasm_balancer") and r.exc_info]
    assert not crashes, [r.getMessage() for r in crashes]


def base_url(bal: Balancer) -> str:
    assert bal.address is not None
    return f"http://127.0.0.1:{bal.address[1]}"


def metrics_url(bal: Balancer) -> str:
    assert bal.metrics_address is not None
    return f"http://127.0.0.1:{bal.metrics_address[1]}/metrics"


def admin_url(bal: Balancer) -> str:
    assert bal.admin_address is not None
    return f"http://127.0.0.1:{bal.admin_address[1]}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


@pytest.fixture
async def raw() -> AsyncIterator[RawServers]:
    """Raw TCP servers on 127.0.0.1 that misbehave at the framing level (tests/hostile.py)."""
    servers = RawServers()
    yield servers
    await servers.close()


SRC = str(Path(__file__).resolve().parents[1] / "src")


def balancer_process(backends_file: Path, *extra: str) -> tuple[subprocess.Popen[str], int, int]:
    """`python -m edgewasm_balancer` on 127.0.0.1 (no health checks), the port it listens on and its metrics
    port, once it says so. The caller ends it (kill and wait)."""
    argv = [
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--backends-file",
        str(backends_file),
        "--health-interval",
        "0",
        *extra,
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgewasm_balancer", *argv],
        env={**os.environ, "PYTHONPATH": SRC},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    ports = {}
    while "metrics listening" not in ports:
        line = json.loads(proc.stderr.readline())
        ports[line["msg"]] = line.get("port")
    return proc, ports["listening"], ports["metrics listening"]
