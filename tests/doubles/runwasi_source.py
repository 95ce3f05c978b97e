"""STAND-IN runwasi source archive and cargo (not runwasi, not cargo) for the runwasi role's build path.

- `build(mirror, version)` writes `<mirror>/containerd-shim-wasmedge/v<V>.tar.gz` laid out like
  GitHub's tag archive (top directory `runwasi-containerd-shim-wasmedge-v<V>/`, a workspace
  Cargo.toml with the `containerd-shim-wasmedge` member, Cargo.lock) whose "crate" is a C file;
- `install_cargo(path, log)` writes a `cargo` script that accepts exactly the build command the role
  runs (`build --release --locked -p containerd-shim-wasmedge [--features ...]`), checks it runs in a
  workspace with that member and a lock file and that WASMEDGE_STANDALONE_ARCHIVE names a file (as
  wasmedge-sys would otherwise download one), compiles the C file with gcc into
  target/release/containerd-shim-wasmedge-v1 and logs each call.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

MARKER = "edgewasm stand-in, not runwasi"

SHIM_C = r"""#include <stdio.h>
int main(void) {
    printf("containerd-shim-wasmedge-v1 v__VERSION__ features=%s (__MARKER__)\n", FEATURES);
    return 0;
}
"""

CARGO = """#!/bin/sh
# edgewasm stand-in, not cargo: the build command of the runwasi role, nothing else.
echo "$*" >> __LOG__
if [ "$1" = "--version" ]; then echo "cargo 1.86.0 (edgewasm stand-in, not cargo)"; exit 0; fi
[ "$1 $2 $3 $4 $5" = "build --release --locked -p containerd-shim-wasmedge" ] || { echo "stand-in cargo: unexpected: $*" >&2; exit 2; }
features=""
[ "$6" = "--features" ] && features=$7
# wasmedge-sys (static feature) downloads WasmEdge from GitHub unless given a local archive.
[ -f "$WASMEDGE_STANDALONE_ARCHIVE" ] || {
    echo "stand-in cargo: WASMEDGE_STANDALONE_ARCHIVE is no file: wasmedge-sys would download from GitHub" >&2; exit 3; }
echo "standalone-archive $(basename "$WASMEDGE_STANDALONE_ARCHIVE") $(sha256sum < "$WASMEDGE_STANDALONE_ARCHIVE" | cut -d' ' -f1)" >> __LOG__
grep -q 'crates/containerd-shim-wasmedge' Cargo.toml && [ -f Cargo.lock ] || { echo "stand-in cargo: not the runwasi workspace" >&2; exit 2; }
mkdir -p target/release
exec gcc -DFEATURES="\\"$features\\"" -o target/release/containerd-shim-wasmedge-v1 crates/containerd-shim-wasmedge/src/main.c
"""


def _add(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def build(mirror: Path, version: str) -> Path:
    archive = mirror / "containerd-shim-wasmedge" / f"v{version}.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    top = f"runwasi-containerd-shim-wasmedge-v{version}"
    with tarfile.open(archive, "w:gz") as tar:
        _add(
            tar,
            f"{top}/Cargo.toml",
            f'# {MARKER}\n[workspace]\nmembers = ["crates/containerd-shim-wasmedge"]\n',
        )
        _add(tar, f"{top}/Cargo.lock", f"# {MARKER}\nversion = 3\n")
        source = SHIM_C.replace("__VERSION__", version).replace("__MARKER__", MARKER)
        _add(tar, f"{top}/crates/containerd-shim-wasmedge/src/main.c", source)
    return archive


def install_cargo(path: Path, log: Path) -> Path:
    path.write_text(CARGO.replace("__LOG__", str(log)))
    path.chmod(0o755)
    return path
