"""balancer/Containerfile, built and run with podman.

No registry is reachable here, so the image is built on a STAND-IN for python:3.12-slim-bookworm:
the project's Debian bookworm node image plus python3-venv (CPython 3.11), with this machine's CA
bundle for pip. Everything after `FROM` is the real Containerfile.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from doubles import python_base

REPO = Path(__file__).resolve().parents[2]
BASE = python_base.IMAGE
IMAGE = "localhost/edgewasm-balancer:test"

pytestmark = pytest.mark.slow


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, timeout=600)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory):
    assert shutil.which("podman"), "podman is missing: run scripts/setup.sh"
    python_base.build()
    before = _dangling()
    podman(
        "build",
        "-q",
        "--build-arg",
        f"PYTHON_IMAGE={BASE}",
        "-t",
        IMAGE,
        "-f",
        str(REPO / "balancer" / "Containerfile"),
        str(REPO / "balancer"),
    )
    # The build stage stays behind as an untagged image (hundreds of MB): remove the ones this build
    # left. The stand-in base stays, tagged, for the next run (README: what the suite leaves).
    leftovers = _dangling() - before
    yield IMAGE
    podman("rmi", "-f", IMAGE, *leftovers, check=False)


def _dangling() -> set[str]:
    return set(podman("images", "-q", "--no-trunc", "--filter", "dangling=true").stdout.split())


def size(ref: str) -> int:
    return int(podman("image", "inspect", ref, "--format", "{{.Size}}").stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_image_is_non_root_and_adds_little(image):
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["python", "-m", "edgewasm_balancer"]
    added = size(image) - size(BASE)
    assert added < 100 * 1024 * 1024, f"the balancer adds {added / 2**20:.0f} MiB to its base"
    listing = podman(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        image,
        "-c",
        "ls /opt/balancer/bin; ls /opt/balancer/lib/python3*/site-packages",
    ).stdout.split()
    assert "pip" not in listing and "setuptools" not in listing
    assert "edgewasm_balancer" in listing and "uvloop" in listing


def test_image_serves_and_stops_cleanly(image, tmp_path):
    help_text = podman("run", "--rm", image, "--help").stdout
    assert "--backends-file" in help_text and "EDGEWASM_BALANCER_IDLE_TIMEOUT" in help_text
    port, admin_port = free_port(), free_port()
    backends = tmp_path / "backends.yaml"
    backends.write_text(
        "- name: llama-low-cost\n  url: http://127.0.0.1:9\n  weight: 3\n  models: [llama-3-1b]\n"
    )
    backends.chmod(0o644)
    name = f"edgewasm-balancer-test-{port}"
    podman(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "-v",
        f"{backends}:/etc/balancer/backends.yaml:ro,Z",
        "-e",
        f"EDGEWASM_BALANCER_LISTEN=127.0.0.1:{port}",
        "-e",
        f"EDGEWASM_BALANCER_ADMIN_LISTEN=127.0.0.1:{admin_port}",
        "-e",
        "EDGEWASM_BALANCER_ADMIN_TOKEN=image-test-token",
        image,
        "--backends-file",
        "/etc/balancer/backends.yaml",
        "--health-interval",
        "0",
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, podman("logs", name, check=False).stderr
                time.sleep(0.3)
        # The admin API answers on its own listener, with the token, and never on the public port.
        with pytest.raises(urllib.error.HTTPError) as public:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/services", timeout=5)
        assert public.value.code == 404
        admin = urllib.request.Request(
            f"http://127.0.0.1:{admin_port}/api/services",
            headers={"Authorization": "Bearer image-test-token"},
        )
        with urllib.request.urlopen(admin, timeout=5) as answer:  # noqa: S310 - an http:// URL of ours
            (service,) = json.load(answer)
        assert (service["name"], service["weight"], service["models"]) == (
            "llama-low-cost",
            3,
            ["llama-3-1b"],
        )
        podman("stop", "-t", "20", name)
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0, podman("logs", name, check=False).stderr
    finally:
        podman("rm", "-f", name, check=False)
