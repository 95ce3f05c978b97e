"""STAND-IN runwasi source archive and cargo (not runwasi, not cargo) for the runwasi role's build path.

- `build(mirror, version)` writes `<mirror>/containerd-shim-wasmedge/v<V>.tar.gz` laid out like
  GitHub's tag archive (top directory `runwasi-containerd-shim-wasmedge-v<V>/`, a workspace
  Cargo.toml with the `containerd-shim-wasmedge` member, Cargo.lock) whose "crate" is a C file;
- `install_cargo(path, log, toolchains)` writes a `cargo` script that behaves as rustup's cargo proxy on a
  machine without network: the toolchain is RUSTUP_TOOLCHAIN, else the channel of a rust-toolchain.toml in the
  working directory (runwasi v0.6.0 pins 1.85.0 and the wasm32-wasip1 target there), else stable; one that is not
  in `toolchains` is downloaded (and that fails: no network) unless RUSTUP_AUTO_INSTALL=0, when rustup refuses
  with "toolchain ... is not installed". It accepts exactly the build command the role runs (`build --release
  --locked -p containerd-shim-wasmedge [--features ...]`), checks it runs in a workspace with that member and a
  lock file and that WASMEDGE_STANDALONE_ARCHIVE names a file (as wasmedge-sys would otherwise download one),
  compiles the C file with gcc into target/release/containerd-shim-wasmedge-v1 and logs each call.
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
# edgewasm stand-in, not cargo: rustup's proxy choosing a toolchain, and the build command of the runwasi role.
echo "$*" >> __LOG__
host=x86_64-unknown-linux-gnu
toolchain=${RUSTUP_TOOLCHAIN:-}
targets=""
if [ -z "$toolchain" ] && [ -f rust-toolchain.toml ]; then
    toolchain=$(sed -n 's/^channel *= *"\\(.*\\)"/\\1/p' rust-toolchain.toml)
    targets=$(sed -n 's/^targets *= *\\[\\(.*\\)\\]/\\1/p' rust-toolchain.toml | tr -d '" ,')
fi
toolchain=${toolchain:-stable}
if ! grep -qx "$toolchain" __TOOLCHAINS__; then
    if [ "${RUSTUP_AUTO_INSTALL:-1}" = 0 ]; then
        echo "error: toolchain '$toolchain-$host' is not installed" >&2; exit 1
    fi
    echo "info: syncing channel updates for '$toolchain-$host'" >&2
    echo "error: could not download the channel manifest of '$toolchain' from the rustup dist server: network unreachable" >&2
    exit 1
fi
for target in $targets; do
    grep -qx "$toolchain:$target" __TOOLCHAINS__ || {
        echo "info: downloading component 'rust-std' for '$target'" >&2
        echo "error: could not download component 'rust-std' for '$target': network unreachable" >&2; exit 1; }
done
echo "toolchain $toolchain" >> __LOG__
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


# What runwasi's rust-toolchain.toml pins per release (the catalog's "toolchain"; v0.6.0: 1.85.0 + wasm32-wasip1).
TOOLCHAIN_FILE = '[toolchain]\nchannel = "{channel}"\ntargets = ["wasm32-wasip1"]\n'


def build(mirror: Path, version: str, toolchain: str = "") -> Path:
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
        if toolchain:
            _add(tar, f"{top}/rust-toolchain.toml", TOOLCHAIN_FILE.format(channel=toolchain))
        source = SHIM_C.replace("__VERSION__", version).replace("__MARKER__", MARKER)
        _add(tar, f"{top}/crates/containerd-shim-wasmedge/src/main.c", source)
    return archive


def install_cargo(path: Path, log: Path, toolchains: tuple[str, ...] = ("stable",)) -> Path:
    """The stand-in cargo; ``toolchains``: what rustup has installed ("1.85.0", "1.85.0:wasm32-wasip1", ...)."""
    installed = path.with_name(path.name + ".toolchains")
    installed.write_text("".join(f"{name}\n" for name in toolchains))
    path.write_text(CARGO.replace("__LOG__", str(log)).replace("__TOOLCHAINS__", str(installed)))
    path.chmod(0o755)
    return path
