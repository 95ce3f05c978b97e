"""Helpers to run the collection's playbooks for real against this machine."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# The ansible-playbook to run: this venv's, or another ansible-core's (scripts/test.sh's compat stage sets it to
# the oldest and the newest ansible-core). The modules still run with this venv's Python.
ANSIBLE_PLAYBOOK = os.environ.get("EDGEWASM_ANSIBLE_PLAYBOOK") or str(
    Path(sys.executable).with_name("ansible-playbook")
)


@dataclass
class PlaybookRun:
    rc: int
    output: str


def _runner(tmp_path: Path):
    """Run playbooks/site.yml (or another playbook) with an inventory built from a dict, locally."""

    def run(
        inventory: dict,
        extra_vars: dict | None = None,
        playbook: str = "playbooks/site.yml",
        check: bool = False,
        tags: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> PlaybookRun:
        inv = tmp_path / "hosts.yml"
        inv.write_text(yaml.safe_dump(inventory))
        extra = {"preflight_local_facts_dir": str(tmp_path / "facts"), **(extra_vars or {})}
        if os.environ.get("EDGEWASM_ANSIBLE_PLAYBOOK"):
            # Another ansible-core's venv has no kubernetes: tasks delegated to localhost use this venv's Python.
            extra.setdefault("ansible_python_interpreter", sys.executable)
        environ = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="default", **(env or {}))
        proc = subprocess.run(
            [
                ANSIBLE_PLAYBOOK,
                "-i",
                str(inv),
                "-e",
                yaml.safe_dump(extra, default_flow_style=True).strip(),
                str(REPO / playbook),
                *(["--check"] if check else []),
                *(["--tags", ",".join(tags)] if tags else []),
            ],
            capture_output=True,
            text=True,
            env=environ,
            cwd=REPO,
            timeout=300,
            check=False,
        )
        # Messages are compared as text: ansible-core 2.16 prints a result's quotes JSON-escaped, 2.19 does not.
        output = (proc.stdout + proc.stderr).replace('\\"', '"')
        # Bad input must end in a module's msg, never in a Python traceback, in every run of every test.
        assert "Traceback (most recent call last)" not in output, output
        return PlaybookRun(proc.returncode, output)

    return run


def _in_share(nodeid: str, share: str) -> bool:
    """Whether a test is in share "i/n" (a fixed split by test id, the same on every run and machine)."""
    index, count = (int(x) for x in share.split("/"))
    return int(hashlib.sha256(nodeid.encode()).hexdigest(), 16) % count == index


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under another ansible-core (EDGEWASM_ANSIBLE_PLAYBOOK), only the tests that run playbooks; with
    EDGEWASM_COMPAT_SHARE=i/n, only that share of them (scripts/test.sh gives the newest core half of them)."""
    if not os.environ.get("EDGEWASM_ANSIBLE_PLAYBOOK"):
        return
    runs = {"run_site", "run_site_module"}
    share = os.environ.get("EDGEWASM_COMPAT_SHARE")
    keep = [
        item
        for item in items
        if runs & set(getattr(item, "fixturenames", ())) and (not share or _in_share(item.nodeid, share))
    ]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


@pytest.fixture
def run_site(tmp_path: Path):
    return _runner(tmp_path)


@pytest.fixture(scope="module")
def run_site_module(tmp_path_factory):
    return _runner(tmp_path_factory.mktemp("site"))
