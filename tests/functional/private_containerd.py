"""A private containerd daemon under a directory (own root, state and socket), for tests that import images:
Debian's containerd 1.6 (config version 2) or the containerd 2 the lab runs (version 3), built from the Go
module proxy by scripts/setup.sh."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTAINERD2 = REPO / ".cache" / "containerd" / "current"


def config(root: Path, version: int) -> str:
    common = f'root = "{root}/root"\nstate = "{root}/state"\n[grpc]\n  address = "{root}/c.sock"\n'
    common += (
        f'[ttrpc]\n  address = "{root}/c.sock.ttrpc"\n[debug]\n  address = ""\n[metrics]\n  address = ""\n'
    )
    if version == 2:
        return f'version = 2\n{common}[plugins."io.containerd.grpc.v1.cri"]\n  stream_server_port = "0"\n'
    return f"version = 3\n{common}"


@contextlib.contextmanager
def running(root: Path, version: int) -> Iterator[dict]:
    """containerd under ``root``: {"ctr": [its ctr], "address": its socket}; stopped and unmounted after."""
    binary, ctr = ("containerd", "ctr") if version == 2 else (CONTAINERD2 / "containerd", CONTAINERD2 / "ctr")
    if os.geteuid() != 0 or shutil.which(str(binary)) is None or shutil.which(str(ctr)) is None:
        pytest.fail(
            f"this test needs root and {binary} (scripts/setup.sh installs Debian's and builds containerd 2)"
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.toml").write_text(config(root, version))
    log = (root / "containerd.log").open("w")
    proc = subprocess.Popen([str(binary), "--config", str(root / "config.toml")], stdout=log, stderr=log)
    sock = root / "c.sock"
    for _attempt in range(200):
        if sock.exists():
            break
        time.sleep(0.05)
    try:
        yield {"ctr": [str(Path(shutil.which(str(ctr))).resolve())], "address": str(sock)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        unmount_below(root)


def unmount_below(root: Path) -> None:
    """Lazily unmount what containerd left mounted under ``root`` (snapshots, shm), innermost first."""
    for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
        if line.split()[1].startswith(str(root)):
            subprocess.run(["umount", "-l", line.split()[1]], check=False)
