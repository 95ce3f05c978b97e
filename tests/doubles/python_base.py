"""STAND-IN for the python:3.12-slim-bookworm image (tests and lab only; no registry is reachable here).

A Debian bookworm minbase root filesystem with python3-venv (CPython 3.11), made with debootstrap from
Debian's archive (the tarball is cached under <cache>/python-base/, keyed by its recipe), imported into
podman, plus this machine's CA bundle for pip: what balancer/Containerfile's PYTHON_IMAGE needs. Used by
tests/functional/test_balancer_image.py and the lab's images (lab_images.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

IMAGE = "localhost/edgewasm-test-python-standin:bookworm"
ROOTFS_IMAGE = "localhost/edgewasm-test-python-rootfs:bookworm"
SUITE = "bookworm"
PACKAGES = "python3-venv,ca-certificates"
CACHE = Path(os.environ.get("EDGEWASM_CACHE", Path(__file__).resolve().parents[2] / ".cache"))

CONTAINERFILE = f"""\
# STAND-IN for python:3.12-slim-bookworm (tests only).
FROM {ROOTFS_IMAGE}
COPY host-ca.crt /etc/ssl/certs/host-ca.crt
ENV PIP_CERT=/etc/ssl/certs/host-ca.crt
RUN ln -sf /usr/bin/python3 /usr/local/bin/python
"""


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, timeout=900)


def recipe() -> str:
    return hashlib.sha256(f"{SUITE} {PACKAGES} {CONTAINERFILE}".encode()).hexdigest()[:16]


def rootfs(cache: Path) -> Path:
    """The debootstrapped root filesystem as a tarball, made unless cached."""
    directory = cache / "python-base"
    tarball = directory / f"python-{SUITE}-{recipe()}.tar"
    if tarball.exists():
        return tarball
    directory.mkdir(parents=True, exist_ok=True)
    mirror = os.environ.get("EDGEWASM_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    with tempfile.TemporaryDirectory(dir=directory) as root:
        made = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, root, mirror],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if made.returncode:
            raise RuntimeError(f"debootstrap failed: {made.stdout[-2000:]}{made.stderr[-2000:]}")
        shutil.rmtree(Path(root, "var/cache/apt/archives"), ignore_errors=True)
        shutil.rmtree(Path(root, "var/lib/apt/lists"), ignore_errors=True)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "--numeric-owner", "-C", root, "-cf", str(partial), "."], check=True)
        partial.rename(tarball)
    for old in directory.glob(f"python-{SUITE}-*.tar"):
        if old != tarball:
            old.unlink()
    return tarball


def build(cache: Path = CACHE) -> str:
    """IMAGE, built unless podman already has it for this recipe; returns its name."""
    label = podman(
        "image", "inspect", "--format", '{{ index .Labels "io.edgewasm.recipe" }}', IMAGE, check=False
    )
    if label.returncode == 0 and label.stdout.strip() == recipe():
        return IMAGE
    podman("import", "--change", 'CMD ["python3"]', str(rootfs(cache)), ROOTFS_IMAGE)
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "Containerfile").write_text(CONTAINERFILE)
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", Path(context) / "host-ca.crt")
        podman("build", "-q", "--label", f"io.edgewasm.recipe={recipe()}", "-t", IMAGE, context)
    return IMAGE
