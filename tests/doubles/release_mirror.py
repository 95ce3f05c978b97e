"""STAND-IN release mirror for the runtime roles' tests (not upstream software).

Generated from the collection's release catalog (plugins/module_utils/release_catalog.py), so a stand-in
cannot disagree with what the roles expect: for each WasmEdge version, every dist the catalog lists for it,
in that version's archive layout, every GGML plugin asset the catalog has evidence of (for this machine's
architecture), the static archive runwasi's build uses, and the release's SHA256SUM over all of them.
The binaries are the gcc stand-ins of wasmedge_tree.py (the core archives also carry its stand-in engine,
wasmtime and llama.cpp, under libexec/edgewasm-standin/, so the stand-in wasmedge runs the role's WASI-NN
self-test):

    <mirror>/<V>/WasmEdge-<V>-<dist>_<arch>.tar.gz      WasmEdge-<V>-Linux/{bin,include,lib} (up to 0.14) or
                                                       bin/, include/, lib/ at the root (0.15.0 and later)
    <mirror>/<V>/WasmEdge-plugin-wasi_nn-ggml[<infix>]-<V>-<dist>_<arch>.tar.gz   libwasmedgePluginWasiNN.so
    <mirror>/<V>/WasmEdge-<V>-debian11_<arch>_static.tar.gz   (the runwasi build's static archive)
    <mirror>/<V>/SHA256SUM                              sha256sum format, every asset of <V>
    <mirror>/containerd-shim-wasmedge/v<R>/containerd-shim-wasmedge-<arch>-linux-musl.tar.gz   (upstream's path;
                                                       --wasm-shim: the stand-in runwasi shim, wasmedge_standin)
    <mirror>/runwasi/<R>/containerd-shim-wasmedge-<arch>-linux-gnu.tar.gz      (a site's own glibc build)
    <mirror>/<K>/k3s, k3s-airgap-images-amd64.tar.zst, sha256sum-amd64.txt   stand-in k3s (a zip application of
                                                       k3s.py and its real-node launcher k3s_launcher.py)
    <mirror>/<C>/crun-<C>.tar.gz          a source tarball with crun's configure/make interface (crun_source.py)
    <mirror>/<L>/llama-api-server.wasm, SHA256SUM   a STAND-IN wasm32 module importing what a stock
                                          llama-api-server.wasm imports (WASI, wasi_ephemeral_nn, wasi:logging),
                                          for the serving image's build and import (it serves nothing)

    python tests/doubles/release_mirror.py --mirror DIR [--version 0.14.1 --version 0.15.0]
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
import zipapp
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crun_source
import wasmedge_tree

ROOT = Path(__file__).resolve().parents[2]


catalog = wasmedge_tree.catalog


def _tar(archive: Path, entries: list[tuple[Path, str]], runner: bool = True) -> None:
    """A .tar.gz of the entries; without the stand-in's wasm runner (libexec/) unless runner."""

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if not runner and "/libexec" in f"/{info.name}" else info

    archive.parent.mkdir(parents=True, exist_ok=True)
    # Level 1: the runner's copy of wasmtime is 30 MB, and nothing depends on how well it compresses.
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for path, name in entries:
            tar.add(path, arcname=name, filter=keep)


def write_checksums(release: Path) -> Path:
    """<release>/SHA256SUM over every other file of the release directory, as upstream publishes it."""
    sums = release / catalog.CHECKSUM_FILE
    sums.write_text(
        "".join(
            f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}\n"
            for f in sorted(release.iterdir())
            if f.is_file() and f.name != catalog.CHECKSUM_FILE
        )
    )
    return sums


def _core_tree(tmp: Path, version: str, tree: dict[str, Path]) -> Path:
    """The files of a WasmEdge release archive (bin, include, lib) in a directory of their own."""
    top = tmp / f"core-{version}"
    if not top.exists():
        (top / "include" / "wasmedge").mkdir(parents=True)
        (top / "include" / "wasmedge" / "wasmedge.h").write_text(f"/* {wasmedge_tree.MARKER} */\n")
        shutil.copytree(tree["prefix"] / "bin", top / "bin", symlinks=True)
        shutil.copytree(tree["prefix"] / "lib", top / "lib", symlinks=True)
        shutil.copytree(tree["prefix"] / "libexec", top / "libexec", symlinks=True)
    return top


def core_archive(archive: Path, top: Path, version: str, layout: str, runner: bool = True) -> Path:
    """A WasmEdge archive in the catalog's layout for the version (with the stand-in's wasm runner)."""
    if layout == catalog.TOPDIR:
        _tar(archive, [(top, f"WasmEdge-{version}-Linux")], runner)
    else:
        _tar(archive, [(top / name, name) for name in ("bin", "include", "lib", "libexec")], runner)
    return archive


def build(mirror: Path, versions: list[str]) -> list[Path]:
    arch = catalog.ARCHES[platform.machine()]["wasmedge"]
    static_versions = {catalog.RUNWASI[v]["wasmedge_static"] for v in catalog.RUNWASI}
    made = []
    with tempfile.TemporaryDirectory() as tmp:
        for version in versions:
            release = catalog.wasmedge_release(version)
            if release is None:
                raise SystemExit(f"WasmEdge {version} is not in the release catalog")
            trees = {}
            for variant in catalog.GGML_VARIANTS:
                # The release tarball's plugin is the build-tree copy: RUNPATH $ORIGIN/../../lib/api:
                trees[variant] = wasmedge_tree.build(
                    Path(tmp) / version / variant,
                    version,
                    plugin_runpath="$ORIGIN/../../lib/api:",
                    cuda=catalog.GGML_VARIANTS[variant]["cuda"] is not None,
                    runner=variant == "cpu",
                )
            top = _core_tree(Path(tmp), version, trees["cpu"])
            for dist in release["dists"]:
                made.append(
                    core_archive(
                        mirror / version / catalog.wasmedge_asset(version, dist, arch),
                        top,
                        version,
                        release["layout"],
                    )
                )
                for variant in catalog.ggml_variants(version, dist, arch):
                    plugin = mirror / version / catalog.ggml_asset(version, variant, dist, arch)
                    _tar(plugin, [(trees[variant]["plugin_dir"] / catalog.PLUGIN_FILE, catalog.PLUGIN_FILE)])
                    made.append(plugin)
            if version in static_versions:
                static = mirror / version / catalog.wasmedge_static_asset(version, arch)
                made.append(core_archive(static, top, version, release["layout"], runner=False))
            made.append(write_checksums(mirror / version))
    return made


def build_shim(mirror: Path, version: str, runnable: Path | None = None) -> list[Path]:
    """A STAND-IN containerd-shim-wasmedge-v1 in both layouts: a gcc-built program that only prints its
    version, or (runnable, for the lab's real nodes) the given shim: the stand-in runwasi WasmEdge shim of
    tests/doubles/wasmedge_standin, which runs wasm pods."""
    arch = platform.machine()
    made = []
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "containerd-shim-wasmedge-v1"
        if runnable is not None:
            shutil.copy(runnable, binary)
        else:
            source = Path(tmp) / "shim.c"
            source.write_text(
                f"/* {wasmedge_tree.MARKER} */\n#include <stdio.h>\n"
                f'int main(void) {{ printf("containerd-shim-wasmedge-v1 v{version} ({wasmedge_tree.MARKER})\\n"); return 0; }}\n'
            )
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


FIXTURES = Path(__file__).resolve().parents[1] / "doubles" / "k3s_containerd"


def build_k3s(mirror: Path, version: str, images_archive: Path | None = None) -> list[Path]:
    """The STAND-IN k3s (k3s.py + k3s_launcher.py) as a release: binary, air-gap images file and sha256sum file."""
    names = catalog.ARCHES[platform.machine()]
    arch, binary = names["k3s"], names["k3s_binary"]
    release = mirror / version
    release.mkdir(parents=True, exist_ok=True)
    script = Path(__file__).with_name("k3s.py").read_text().replace("__K3S_VERSION__", version)
    for config_version in ("2", "3"):
        base = (FIXTURES / f"base-v{config_version}.toml").read_text()
        script = script.replace(f'"__BASE_V{config_version}__"', json.dumps(base))
    # One executable file, as k3s is: a Python zip application of the stand-in and its real-node launcher.
    with tempfile.TemporaryDirectory() as source:
        Path(source, "__main__.py").write_text(script)
        shutil.copy(Path(__file__).with_name("k3s_launcher.py"), source)
        zipapp.create_archive(source, release / binary, interpreter="/usr/bin/env python3")
    images = release / f"k3s-airgap-images-{arch}.tar.zst"
    if images_archive is None:  # a placeholder: only the lab's nodes import images (lab_images.py)
        images.write_bytes(f"{wasmedge_tree.MARKER}: air-gap images of k3s {version}\n".encode())
    else:
        shutil.copyfile(images_archive, images)
    sums = release / f"sha256sum-{arch}.txt"
    sums.write_text(
        "".join(
            f"{hashlib.sha256((release / name).read_bytes()).hexdigest()}  {name}\n"
            for name in (binary, images.name)
        )
    )
    return [release / binary, images, sums]


# What a stock llama-api-server.wasm imports; the export names it a stand-in.
STANDIN_SERVER_WAT = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
  (import "wasi_ephemeral_nn" "load_by_name" (func (param i32 i32 i32) (result i32)))
  (import "wasi:logging/logging" "log" (func (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "_start"))
  (func (export "edgewasm_standin_llama_api_server")))"""


def build_llamaedge(mirror: Path, version: str) -> list[Path]:
    """<mirror>/<version>/llama-api-server.wasm (STAND-IN) and the release's SHA256SUM over its .wasm files."""
    import wasmtime  # noqa: PLC0415 - PyPI wasmtime (requirements/): only this release needs it

    release = mirror / version
    release.mkdir(parents=True, exist_ok=True)
    wasm = release / catalog.LLAMAEDGE_SERVER_ASSET
    wasm.write_bytes(wasmtime.wat2wasm(STANDIN_SERVER_WAT))
    sums = release / catalog.LLAMAEDGE_CHECKSUM_FILE
    sums.write_text(f"{hashlib.sha256(wasm.read_bytes()).hexdigest()}  {wasm.name}\n")
    return [wasm, sums]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mirror", type=Path, required=True)
    parser.add_argument("--version", action="append", dest="versions")
    parser.add_argument("--runwasi-version", default="0.6.0")
    parser.add_argument("--crun-version", action="append", dest="crun_versions")
    parser.add_argument("--k3s-version", action="append", dest="k3s_versions", default=[])
    parser.add_argument("--k3s-images", type=Path, help="air-gap images archive to publish (lab_images.py)")
    parser.add_argument("--llamaedge-version", action="append", dest="llamaedge_versions", default=[])
    parser.add_argument(
        "--wasm-shim",
        type=Path,
        help="a runnable shim to publish as the WasmEdge shim (the lab: wasmedge_standin's containerd-shim-wasmedge-v1)",
    )
    args = parser.parse_args()
    made = build(args.mirror, args.versions or ["0.14.1"])
    made += build_shim(args.mirror, args.runwasi_version, args.wasm_shim)
    made += [crun_source.build(args.mirror, v) for v in args.crun_versions or ["1.29.1"]]
    for llamaedge_version in args.llamaedge_versions:
        made += build_llamaedge(args.mirror, llamaedge_version)
    for k3s_version in args.k3s_versions:
        made += build_k3s(args.mirror, k3s_version, args.k3s_images)
    for path in made:
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
