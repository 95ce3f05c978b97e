"""Make the collection importable as ansible_collections.edgewasm.llamaedge.

scripts/setup.sh links the repository into $EDGEWASM_COLLECTIONS (default
.cache/collections) as ansible_collections/edgewasm/llamaedge.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args

# The `system` fixture: the real balancer before stand-in backends (llama_verify's tests).
pytest_plugins = ["balancer_system"]

REPO = Path(__file__).resolve().parents[1]
COLLECTIONS = Path(os.environ.get("EDGEWASM_COLLECTIONS", REPO / ".cache" / "collections"))

if not (COLLECTIONS / "ansible_collections" / "edgewasm" / "llamaedge").exists():
    raise RuntimeError(
        f"{COLLECTIONS}/ansible_collections/edgewasm/llamaedge is missing: run scripts/setup.sh first"
    )
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

from doubles.fake_k8s import FakeDynamicClient  # noqa: E402 - after the collection path is set

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import k8s_apply  # noqa: E402


@pytest.fixture
def run_module(capsys):
    """Run an Ansible module's main() in-process with the given arguments; its result as a dict."""

    def run(main, args: dict, check_mode: bool = False, diff: bool = False) -> dict:
        if check_mode:
            args = dict(args, _ansible_check_mode=True)
        if diff:
            args = dict(args, _ansible_diff=True)
        with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
            main()
        result = json.loads(capsys.readouterr().out)
        result["_exit_code"] = exit_info.value.code
        return result

    return run


@pytest.fixture
def cluster(monkeypatch):
    """The Kubernetes modules connected to a FAKE in-memory API (tests/doubles/fake_k8s.py).

    For what the real control plane cannot produce on demand (tests/cluster has the real one)."""
    fake = FakeDynamicClient()
    monkeypatch.setattr(k8s_apply, "connect", lambda kubeconfig=None, context=None: fake)
    return fake


class TimeLimitExceeded(Exception):  # noqa: N818 - not an OSError: code under test cannot swallow it
    """The code under test ran past the test's time limit (a hang)."""


@pytest.fixture
def time_limit():
    """``with time_limit(seconds):`` fails the test with TimeLimitExceeded when the block runs longer (SIGALRM)."""

    @contextlib.contextmanager
    def limit(seconds: int):
        def expire(_signum, _frame):
            raise TimeLimitExceeded(f"still running after {seconds} s")

        previous = signal.signal(signal.SIGALRM, expire)
        signal.alarm(seconds)
        try:
            yield
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)

    return limit
