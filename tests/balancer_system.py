"""The real balancer in front of two stand-in backends on 127.0.0.1, for llama_verify's tests
(tests/unit/plugins/modules/test_llama_verify.py with a FAKE cluster, tests/cluster/test_real_llama_verify.py with
the real API server). A pytest plugin (tests/conftest.py): the `system` fixture."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SYSTEM = textwrap.dedent("""
    import asyncio, json, os, sys
    sys.path[:0] = [sys.argv[1] + "/balancer/src", sys.argv[1] + "/balancer/tests"]
    from standin_backend import StandinBackend
    from edgewasm_balancer.__main__ import main

    async def start():
        low = await StandinBackend(name="low", models=["llama-3-1b"]).start()
        high = await StandinBackend(name="high", models=["llama-3-3b"]).start()
        return low, high

    loop = asyncio.new_event_loop()
    low, high = loop.run_until_complete(start())
    # EDGEWASM_SYSTEM_MISROUTE: the balancer is told each backend serves the other's model (it then misroutes).
    declared = ["llama-3-3b", "llama-3-1b"] if os.environ.get("EDGEWASM_SYSTEM_MISROUTE") else ["llama-3-1b", "llama-3-3b"]
    backends = [{"name": "llm/llama-low-cost", "url": low.url, "weight": int(sys.argv[3]), "models": [declared[0]]},
                {"name": "llm/llama-high-cost", "url": high.url, "weight": 1, "models": [declared[1]]}]
    open(sys.argv[2], "w").write(json.dumps(backends))
    import threading
    threading.Thread(target=loop.run_forever, daemon=True).start()
    sys.exit(main(["--listen", "127.0.0.1:" + sys.argv[4], "--backends-file", sys.argv[2], "--health-interval", "0",
                   "--log-level", "warning", "--metrics-listen", "off", *sys.argv[5:]]))
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def system(tmp_path):
    """The real balancer in front of two stand-in backends; the low-cost one weighted 3 (or what the test asks),
    with the balancer's defaults (no X-Edgewasm-Backend header) unless the test asks for the header."""
    procs = []

    def start(low_weight: int = 3, backend_header: bool = False, misroute: bool = False) -> str:
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SYSTEM,
                str(REPO),
                str(tmp_path / "backends.json"),
                str(low_weight),
                str(port),
                *(["--backend-header"] if backend_header else []),
            ],
            stderr=subprocess.PIPE,
            env={**os.environ, "EDGEWASM_SYSTEM_MISROUTE": "1" if misroute else ""},
        )
        procs.append(proc)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return f"http://127.0.0.1:{port}"
            time.sleep(0.1)
        raise AssertionError(
            proc.stderr.read().decode() if proc.poll() is not None else "balancer did not start"
        )

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)
