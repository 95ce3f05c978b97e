"""STAND-IN runtimes for the real-containerd CRI test (tests/functional/test_containerd_cri.py).

- crun: a shell script that records each call and the bundle's config.json, then runs runc
  (`exec runc "$@"`), so containerd's `BinaryName` and the annotations it passes can be observed;
- containerd-shim-wasmedge-v1: a copy of Debian's containerd-shim-runc-v2 under the WasmEdge shim's
  name, so the `io.containerd.wasmedge.v1` runtime type resolves to a binary that can run a container;
- a sandbox/container image whose only file is a static C program that sleeps until SIGTERM.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

MARKER = "edgewasm stand-in, not crun"

CRUN = """#!/bin/sh
# __MARKER__: records the call, keeps the bundle's config.json, runs runc.
log=__LOG__
echo "$*" >> "$log/calls"
bundle=""
prev=""
for arg in "$@"; do
  if [ "$prev" = "--bundle" ] || [ "$prev" = "-b" ]; then bundle=$arg; fi
  prev=$arg
done
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
  cp "$bundle/config.json" "$log/$(basename "$bundle").json"
fi
exec runc "$@"
"""

PAUSE_C = r"""
#include <signal.h>
#include <unistd.h>
static volatile sig_atomic_t done;
static void stop(int sig) { (void)sig; done = 1; }
int main(void) {
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    while (!done) pause();
    return 0;
}
"""


def install(bin_dir: Path, log_dir: Path) -> dict[str, Path]:
    bin_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    crun = bin_dir / "crun"
    crun.write_text(CRUN.replace("__MARKER__", MARKER).replace("__LOG__", str(log_dir)))
    crun.chmod(0o755)
    shim = bin_dir / "containerd-shim-wasmedge-v1"
    shutil.copy2(shutil.which("containerd-shim-runc-v2") or "/usr/bin/containerd-shim-runc-v2", shim)
    return {"crun": crun, "shim": shim}


def build_image(work: Path, name: str) -> Path:
    """A docker-archive of a FROM-scratch image holding the static pause program."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "pause.c").write_text(PAUSE_C)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(work / "pause"), str(work / "pause.c")], check=True)
    (work / "Containerfile").write_text('FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n')
    subprocess.run(["podman", "build", "-q", "-t", name, str(work)], check=True, capture_output=True)
    archive = work / "image.tar"
    subprocess.run(
        ["podman", "save", "--format", "docker-archive", "-o", str(archive), name],
        check=True,
        capture_output=True,
    )
    return archive
