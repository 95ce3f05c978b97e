"""STAND-IN release mirror for the runtime roles' tests (not upstream software).

Lays out, under a directory, the WasmEdge and WASI-NN GGML plugin release assets the roles fetch,
with upstream's file names and archive layouts, built from the gcc stand-ins of wasmedge_tree.py:

    <mirror>/<V>/WasmEdge-<V>-<dist>_<arch>.tar.gz                      WasmEdge-<V>-Linux/{bin,include,lib}
    <mirror>/<V>/WasmEdge-plugin-wasi_nn-ggml[<infix>]-<V>-<dist>_<arch>.tar.gz   libwasmedgePluginWasiNN.so
    <mirror>/containerd-shim-wasmedge/v<R>/containerd-shim-wasmedge-<arch>-linux-musl.tar.gz   (upstream's path)
    <mirror>/runwasi/<R>/containerd-shim-wasmedge-<arch>-linux-gnu.tar.gz      (a site's own glibc build)
    <mirror>/<K>/k3s, k3s-airgap-images-amd64.tar.zst, sha256sum-amd64.txt   stand-in k3s (k3s.py)
    <mirror>/<C>/crun-<C>.tar.gz          a source tarball with crun's configure/make interface (crun_source.py)

    python tests/standins/release_mirror.py --mirror DIR [--version 0.14.1 --version 0.15.0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crun_source
import wasmedge_tree

DISTS = ("ubuntu20.04", "manylinux_2_28", "manylinux2014")
# variant infix -> build with a CUDA runtime dependency
VARIANTS = {"": False, "-noavx": False, "-cuda": True}


def _tar(archive: Path, entries: list[tuple[Path, str]]) -> None:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for path, name in entries:
            tar.add(path, arcname=name)


def build(mirror: Path, versions: list[str]) -> list[Path]:
    arch = platform.machine()
    made = []
    with tempfile.TemporaryDirectory() as tmp:
        for version in versions:
            for infix, cuda in VARIANTS.items():
                # The release tarball's plugin is the build-tree copy: RUNPATH $ORIGIN/../../lib/api:
                tree = wasmedge_tree.build(
                    Path(tmp) / version / (infix or "cpu"),
                    version,
                    plugin_runpath="$ORIGIN/../../lib/api:",
                    cuda=cuda,
                )
                for dist in DISTS:
                    plugin = (
                        mirror
                        / version
                        / f"WasmEdge-plugin-wasi_nn-ggml{infix}-{version}-{dist}_{arch}.tar.gz"
                    )
                    _tar(
                        plugin,
                        [(tree["plugin_dir"] / "libwasmedgePluginWasiNN.so", "libwasmedgePluginWasiNN.so")],
                    )
                    made.append(plugin)
                    if infix:
                        continue
                    top = Path(tmp) / f"WasmEdge-{version}-Linux"
                    if not top.exists():
                        (top / "include" / "wasmedge").mkdir(parents=True)
                        (top / "include" / "wasmedge" / "wasmedge.h").write_text(
                            f"/* {wasmedge_tree.MARKER} */\n"
                        )
                        shutil.copytree(tree["prefix"] / "bin", top / "bin", symlinks=True)
                        shutil.copytree(tree["prefix"] / "lib", top / "lib", symlinks=True)
                    core = mirror / version / f"WasmEdge-{version}-{dist}_{arch}.tar.gz"
                    _tar(core, [(top, top.name)])
                    made.append(core)
            shutil.rmtree(Path(tmp) / f"WasmEdge-{version}-Linux", ignore_errors=True)
    return made


def build_shim(mirror: Path, version: str) -> list[Path]:
    """A gcc-built STAND-IN containerd-shim-wasmedge-v1 that only prints its version, in both layouts."""
    arch = platform.machine()
    made = []
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "shim.c"
        source.write_text(
            f"/* {wasmedge_tree.MARKER} */\n#include <stdio.h>\n"
            f'int main(void) {{ printf("containerd-shim-wasmedge-v1 v{version} ({wasmedge_tree.MARKER})\\n"); return 0; }}\n'
        )
        binary = Path(tmp) / "containerd-shim-wasmedge-v1"
        wasmedge_tree._gcc(["-o", str(binary), str(source)])
        for archive in (
            mirror
            / "containerd-shim-wasmedge"
            / f"v{version}"
            / f"containerd-shim-wasmedge-{arch}-linux-musl.tar.gz",
            mirror / "runwasi" / version / f"containerd-shim-wasmedge-{arch}-linux-gnu.tar.gz",
        ):
            _tar(archive, [(binary, binary.name)])
            made.append(archive)
    return made


K3S_ARCH = {"x86_64": ("amd64", "k3s"), "aarch64": ("arm64", "k3s-arm64")}
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "k3s_containerd"


def build_k3s(mirror: Path, version: str) -> list[Path]:
    """The STAND-IN k3s script as a release: binary, air-gap images file and sha256sum file."""
    arch, binary = K3S_ARCH[platform.machine()]
    release = mirror / version
    release.mkdir(parents=True, exist_ok=True)
    script = "#!/usr/bin/env python3\n" + Path(__file__).with_name("k3s.py").read_text()
    script = script.replace("__K3S_VERSION__", version)
    for config_version in ("2", "3"):
        base = (FIXTURES / f"base-v{config_version}.toml").read_text()
        script = script.replace(f'"__BASE_V{config_version}__"', json.dumps(base))
    (release / binary).write_text(script)
    images = release / f"k3s-airgap-images-{arch}.tar.zst"
    images.write_bytes(f"{wasmedge_tree.MARKER}: air-gap images of k3s {version}\n".encode())
    sums = release / f"sha256sum-{arch}.txt"
    sums.write_text(
        "".join(
            f"{hashlib.sha256((release / name).read_bytes()).hexdigest()}  {name}\n"
            for name in (binary, images.name)
        )
    )
    return [release / binary, images, sums]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mirror", type=Path, required=True)
    parser.add_argument("--version", action="append", dest="versions")
    parser.add_argument("--runwasi-version", default="0.6.0")
    parser.add_argument("--crun-version", action="append", dest="crun_versions")
    parser.add_argument("--k3s-version", action="append", dest="k3s_versions", default=[])
    args = parser.parse_args()
    made = build(args.mirror, args.versions or ["0.14.1"])
    made += build_shim(args.mirror, args.runwasi_version)
    made += [crun_source.build(args.mirror, v) for v in args.crun_versions or ["1.29.1"]]
    for k3s_version in args.k3s_versions:
        made += build_k3s(args.mirror, k3s_version)
    for path in made:
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
