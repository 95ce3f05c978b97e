"""STAND-IN WasmEdge install tree for tests (not upstream software).

Upstream release binaries cannot be downloaded on our machines. This builds,
with gcc, files that have the same names, sonames, DT_NEEDED lists, RUNPATHs
and symlink chains as an installed WasmEdge 0.14.1 with the WASI-NN GGML plugin
(see ../shared/reference/upstream-facts.md), so that the resolver and the roles
meet the same ELF structure as on a real node. They contain no WasmEdge code.

bin/wasmedge runs wasm for real all the same: it execs the stand-in engine (tests/doubles/wasmedge_standin, Rust:
wasmtime, and a wasi_ephemeral_nn whose GGML backend is real llama.cpp), which setup.sh builds into
.cache/wasmedge-standin/current/ and this installs as libexec/edgewasm-standin/wasmedge-standin. The stand-in
libwasmedge.so.0 carries the version it stands for, and the plugin the WASI-NN ABI of its version and llama.cpp
build, from the release catalog (symbols edgewasm_standin_version and edgewasm_standin_wasi_nn_abi): the engine
reads both, so no version fact is a constant of the engine.

    python tests/doubles/wasmedge_tree.py --prefix DIR [--plugin-runpath '$ORIGIN'] [--no-runner]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_catalog():
    """The collection's release catalog, loaded from its file (standard library only; no collection path)."""
    path = ROOT / "plugins" / "module_utils" / "release_catalog.py"
    spec = importlib.util.spec_from_file_location("edgewasm_release_catalog", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


catalog = load_catalog()
RUNNER_DIR = "libexec/edgewasm-standin"
ENGINE = "wasmedge-standin"
INTERPRETERS = {"x86_64": "/lib64/ld-linux-x86-64.so.2", "aarch64": "/lib/ld-linux-aarch64.so.1"}
# The real plugin's DT_NEEDED after libwasmedge.so.0 (ggml/llama are linked in statically).
PLUGIN_SYSTEM_LIBS = ["-lstdc++", "-lm", "-lgcc_s", "-lc"]
MARKER = "edgewasm stand-in, not WasmEdge"


# bin/wasmedge: linked against libwasmedge.so.0 like the real one, it execs the engine installed beside it.
LAUNCHER = r"""#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char exe[PATH_MAX], engine[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0) { perror("wasmedge (stand-in): /proc/self/exe"); return 127; }
    exe[n] = 0;
    snprintf(engine, sizeof engine, "%%s/../%(runner)s/%(engine)s", dirname(exe));
    (void)argc;
    argv[0] = engine;
    execv(engine, argv);
    perror("wasmedge (stand-in): %(engine)s");
    return 127;
}"""


def c_string(text: str) -> str:
    """text as a C string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def engine_build() -> Path:
    """The engine binary scripts/setup.sh built into $EDGEWASM_CACHE (or the one EDGEWASM_WASMEDGE_STANDIN names):
    a clear error when there is none."""
    cache = Path(os.environ.get("EDGEWASM_CACHE") or ROOT / ".cache")
    path = Path(
        os.environ.get("EDGEWASM_WASMEDGE_STANDIN") or cache / "wasmedge-standin" / "current" / ENGINE
    )
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the stand-in wasmedge engine is not built: run scripts/setup.sh (cold: a few minutes)"
        )
    return path


def _gcc(args: list[str]) -> None:
    subprocess.run(["gcc", *args], check=True, capture_output=True)


def _source(path: Path, body: str) -> Path:
    path.write_text(f'/* {MARKER} */\nconst char *edgewasm_standin = "{MARKER}";\n{body}\n')
    return path


def guest_build() -> Path:
    """The stand-in llama-api-server.wasm setup.sh built beside the engine (tests/doubles/llama_api_server_wasm)."""
    path = engine_build().with_name("llama-api-server.wasm")
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the stand-in llama-api-server.wasm is not built: run scripts/setup.sh"
        )
    return path


def install_runner(prefix: Path) -> Path:
    """<prefix>/libexec/edgewasm-standin/wasmedge-standin: the engine bin/wasmedge execs."""
    target = prefix / RUNNER_DIR
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(engine_build(), target / ENGINE)
    (target / ENGINE).chmod(0o755)
    return target


def build(
    prefix: Path,
    version: str = "0.14.1",
    plugin_runpath: str = "$ORIGIN",
    cuda: bool = False,
    runner: bool = True,
    llama_build: str = "",
) -> dict[str, Path]:
    """Build <prefix>/{bin,lib,plugin} (and the runner bin/wasmedge execs, unless runner is false).

    The plugin carries the llama.cpp build it stands for (the release's, from the catalog, unless llama_build
    names a registry build): the runner's WASI-NN ABI follows it."""
    build_tag = llama_build or catalog.plugin_build(version)
    interp = INTERPRETERS[platform.machine()]
    lib = prefix / "lib"
    plugin_dir = prefix / "plugin"
    bindir = prefix / "bin"
    work = prefix / ".build"
    for d in (lib, plugin_dir, bindir, work):
        d.mkdir(parents=True, exist_ok=True)

    real = lib / "libwasmedge.so.0.1.0"
    src = _source(
        work / "libwasmedge.c",
        "int WasmEdge_VersionGetMajor(void) { return 0; }\n"
        f"const char *edgewasm_standin_version = {c_string(version)};",
    )
    _gcc(
        [
            "-shared",
            "-fPIC",
            "-o",
            str(real),
            str(src),
            "-Wl,--no-as-needed",
            "-Wl,-soname,libwasmedge.so.0",
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,$ORIGIN",
            *PLUGIN_SYSTEM_LIBS,
            interp,
        ]
    )
    for link, target in (("libwasmedge.so.0", real.name), ("libwasmedge.so", "libwasmedge.so.0")):
        (lib / link).unlink(missing_ok=True)
        (lib / link).symlink_to(target)

    plugin = plugin_dir / "libwasmedgePluginWasiNN.so"
    src = _source(
        work / "plugin.c",
        "int WasmEdge_Plugin_GetDescriptor(void) { return 1; }\n"
        f"const char *edgewasm_standin_llama_build = {c_string(build_tag)};\n"
        f"const char *edgewasm_standin_wasi_nn_abi = {c_string(json.dumps(catalog.wasi_nn_abi(version, build_tag)))};",
    )
    extra = []
    if cuda:
        # A CUDA build also needs the CUDA runtime, which a CPU node does not have.
        stub = work / "libcudart.so.12"
        _gcc(
            [
                "-shared",
                "-fPIC",
                "-o",
                str(stub),
                str(_source(work / "cudart.c", "int cudaInit(void){return 0;}")),
                "-Wl,-soname,libcudart.so.12",
            ]
        )
        extra = [str(stub)]
    _gcc(
        [
            "-shared",
            "-fPIC",
            "-o",
            str(plugin),
            str(src),
            "-Wl,--no-as-needed",
            "-Wl,-soname,libwasmedgePluginWasiNN.so",
            "-Wl,--enable-new-dtags",
            f"-Wl,-rpath,{plugin_runpath}",
            str(lib / "libwasmedge.so.0"),
            *extra,
            *PLUGIN_SYSTEM_LIBS,
            interp,
        ]
    )

    wasmedge = bindir / "wasmedge"
    src = _source(work / "wasmedge.c", LAUNCHER % {"runner": RUNNER_DIR, "engine": ENGINE})
    _gcc(
        [
            "-o",
            str(wasmedge),
            str(src),
            "-Wl,--no-as-needed",
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,$ORIGIN/../lib",
            str(lib / "libwasmedge.so.0"),
        ]
    )
    if runner:
        install_runner(prefix)
    for leftover in work.iterdir():
        leftover.unlink()
    work.rmdir()
    return {
        "prefix": prefix,
        "lib": lib,
        "plugin_dir": plugin_dir,
        "plugin": plugin,
        "libwasmedge": real,
        "wasmedge": wasmedge,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prefix", type=Path, required=True)
    parser.add_argument("--version", default="0.14.1")
    parser.add_argument("--plugin-runpath", default="$ORIGIN")
    parser.add_argument(
        "--llama-build", default="", help="the plugin's llama.cpp build (default: the release's)"
    )
    parser.add_argument(
        "--cuda", action="store_true", help="also link a stand-in libcudart.so.12 (left out of the tree)"
    )
    parser.add_argument(
        "--no-runner",
        action="store_true",
        help="leave out the wasm runner (bin/wasmedge then cannot run wasm)",
    )
    args = parser.parse_args()
    paths = build(
        args.prefix,
        args.version,
        args.plugin_runpath,
        args.cuda,
        runner=not args.no_runner,
        llama_build=args.llama_build,
    )
    print(paths["plugin"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
