"""The lab as a test subject: real Kubernetes nodes in podman, made by `scripts/lab.sh create`.

They are the verify step of molecule's default scenario (extensions/molecule/default), which makes a lab
of its own (EDGEWASM_LAB_NAME, EDGEWASM_LAB_SUBNET, EDGEWASM_LAB_DIR), checks site.yml on the fresh
nodes, converges it, asserts a second run changes nothing, runs these tests and destroys the lab.
`make lab` then `EDGEWASM_LAB_DIR=.cache/lab pytest tests/lab` runs them against the developer's lab.
Without a lab they fail (never skip): there is nothing to test. The last stories upgrade k3s and reset
the cluster (playbooks/reset.yml): recreate a developer's lab afterwards.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Lab:
    directory: Path
    name: str
    inventory: Path

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig.yaml"

    def container(self, node: str) -> str:
        return f"{self.name}-{node}"

    def node(self, node: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A command on a node (podman exec)."""
        return subprocess.run(
            ["podman", "exec", self.container(node), *argv],
            capture_output=True,
            text=True,
            check=check,
            timeout=300,
        )

    def playbook(self, *args: str) -> subprocess.CompletedProcess[str]:
        """ansible-playbook against the lab's inventory, from the repository (as `make lab` runs it)."""
        env = dict(os.environ, EDGEWASM_LAB_DIR=str(self.directory), ANSIBLE_NOCOLOR="1")
        return subprocess.run(
            ["ansible-playbook", "-i", str(self.inventory), *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=1800,
        )


def wait_for(what: str, check, timeout: float = 180.0, interval: float = 2.0):
    """check()'s first truthy result, or a failure naming what did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout:.0f} s")
        time.sleep(interval)


@pytest.fixture(scope="session")
def lab() -> Lab:
    directory = Path(os.environ.get("EDGEWASM_LAB_DIR", REPO / ".cache" / "lab"))
    inventory = directory / "inventory" / "hosts.yml"
    found = Lab(
        directory=directory,
        name=os.environ.get("EDGEWASM_LAB_NAME", "edgewasm-lab"),
        inventory=inventory if inventory.exists() else REPO / "inventories" / "lab" / "hosts.yml",
    )
    if not found.kubeconfig.exists():
        pytest.fail(f"no lab at {directory} (no kubeconfig.yaml): create one with scripts/lab.sh create")
    return found


@pytest.fixture(scope="session")
def api(lab: Lab) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(config_file=str(lab.kubeconfig))


@pytest.fixture(scope="session")
def core(api) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api)


@pytest.fixture(scope="session")
def apps(api) -> kubernetes.client.AppsV1Api:
    return kubernetes.client.AppsV1Api(api)
