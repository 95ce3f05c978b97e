"""STAND-IN `wasmedge` command line (not upstream software): runs WASI modules for real, with wasmtime.

wasmedge_tree.py installs this file as <prefix>/libexec/edgewasm-standin/wasmedge.py, next to a copy of the
PyPI wasmtime package and of the collection's GGUF header parser; the gcc-built <prefix>/bin/wasmedge execs it.
It imitates what the collection relies on in upstream's CLI (../shared/reference/upstream-facts.md):

- plugins are searched in WASMEDGE_PLUGIN_PATH (colon-separated), then <prefix>/plugin; a plugin is loaded
  with dlopen after libwasmedge.so.0, so a plugin whose libraries are missing is not loaded, as upstream;
- `--version` prints the version and one line per loaded plugin;
- output streams as upstream's: the CLI parses options with stdout as its output, and WasmEdge's logger
  (spdlog) writes to stdout too, so "unknown option: nn-preload" and every "[error] ..." line go to STDOUT;
  llama.cpp's own loader errors ("gguf_init_from_file: invalid magic characters") reach stderr only from
  builds older than the log callback (b3651), and are dropped by newer ones;
- `--nn-preload alias:BACKEND:TARGET:path` is an option of the WASI-NN plugin: without the plugin it is
  "unknown option: nn-preload" (exit 1); a module importing wasi_ephemeral_nn without the plugin fails to
  instantiate with "unknown import, Code: 0x302";
- the stand-in wasi_ephemeral_nn (load_by_name, init_execution_context, set_input, compute, get_output)
  has the ABI of the plugin's WasmEdge version and llama.cpp build (the gcc-built plugin carries its build in
  the symbol edgewasm_standin_llama_build), from the release catalog copied beside this file: tensor types
  numbered before or after WasmEdge PR #4069, anything but F16/F32/U8/I32 refused with "[WASI-NN] Unknown
  tensor type N." and errno 1. It checks the preloaded model's GGUF header and fails the way the GGML backend
  fails for a file that is not a GGUF model; it "generates" what a random-weight model does: arbitrary bytes
  (mostly byte tokens, seeded by the model and the prompt), which are not valid UTF-8;
- a file `edgewasm-standin-cpu-lacks` in the plugin's directory simulates a CPU without the instructions
  the plugin was built for: the process dies of SIGILL at compute, as the real plugin does.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import resource
import signal
import struct
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PREFIX = HERE.parents[1]
sys.path.insert(0, str(HERE))

import gguf_header  # noqa: E402 - the collection's parser, copied beside this file
import release_catalog  # noqa: E402 - the collection's release catalog, copied beside this file
import wasmtime  # noqa: E402 - the PyPI package, copied beside this file

VERSION = (HERE / "VERSION").read_text().strip()
MARKER = "edgewasm stand-in, not WasmEdge"
NN_PLUGIN = "libwasmedgePluginWasiNN.so"
CPU_MARKER = "edgewasm-standin-cpu-lacks"
TARGETS = ("CPU", "GPU", "TPU", "AUTO")
BUILD_SYMBOL = "edgewasm_standin_llama_build"
# WasmEdge's WASI-NN errno values.
SUCCESS, INVALID_ARGUMENT, RUNTIME_ERROR, TOO_LARGE, NOT_FOUND = 0, 1, 5, 7, 8
# What the random-weight model's non-byte tokens decode to (its vocabulary's pieces).
PIECES = (b" the", b" hello", b" say", b" to", b" edge", b" wasm", b" self", b" test", b"e", b"s")


def log(message: str, level: str = "error") -> None:
    """A line of WasmEdge's logger: spdlog's default pattern, on stdout (as upstream's CLI has it)."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
    sys.stdout.write(f"[{stamp}] [{level}] {message}\n")
    sys.stdout.flush()


def llama_log(message: str, abi: dict) -> None:
    """llama.cpp's own loader error: on stderr for builds before its log callback, dropped by later ones."""
    if abi["llama_log_to_stderr"]:
        sys.stderr.write(f"{message}\n")
        sys.stderr.flush()


def plugin_build(plugin: Path) -> str:
    """The llama.cpp build the (stand-in) plugin was built with: "release" when it does not say."""
    try:
        value = ctypes.c_char_p.in_dll(ctypes.CDLL(str(plugin)), BUILD_SYMBOL).value
    except (OSError, ValueError):
        return "release"
    return value.decode() if value else "release"


def load_plugins() -> list[Path]:
    """dlopen each plugin found, after libwasmedge.so.0 (as the real process has it loaded already)."""
    lib = PREFIX / ("lib64" if (PREFIX / "lib64").is_dir() else "lib")
    ctypes.CDLL(str(lib / "libwasmedge.so.0"), mode=ctypes.RTLD_GLOBAL)
    dirs = [d for d in os.environ.get("WASMEDGE_PLUGIN_PATH", "").split(":") if d] + [str(PREFIX / "plugin")]
    loaded = []
    for directory in dirs:
        for candidate in sorted(Path(directory).glob("*.so")) if Path(directory).is_dir() else []:
            try:
                handle = ctypes.CDLL(str(candidate))
            except OSError:
                continue  # upstream skips a plugin it cannot load; the symptom comes later
            if hasattr(handle, "WasmEdge_Plugin_GetDescriptor"):
                loaded.append(candidate)
    return loaded


class StandInNN:
    """wasi_ephemeral_nn over the preloaded models, with the GGML backend's checks and failures."""

    def __init__(self, plugin: Path, preloads: dict[str, tuple[str, str, str]]) -> None:
        self.plugin = plugin
        self.preloads = preloads
        self.abi = release_catalog.wasi_nn_abi(VERSION, plugin_build(plugin))
        self.graphs: list[str] = []
        self.contexts: list[dict] = []

    def define(self, linker: wasmtime.Linker) -> None:
        i32 = wasmtime.ValType.i32()
        for name, arity in (
            ("load_by_name", 3),
            ("init_execution_context", 2),
            ("set_input", 3),
            ("compute", 1),
            ("get_output", 5),
        ):
            linker.define_func(
                "wasi_ephemeral_nn", name, wasmtime.FuncType([i32] * arity, [i32]), getattr(self, name), True
            )

    @staticmethod
    def _read(caller, ptr: int, size: int) -> bytes:
        memory = caller["memory"]
        if ptr < 0 or size < 0 or ptr + size > memory.data_len(caller):
            raise IndexError
        return bytes(memory.read(caller, ptr, ptr + size))

    @staticmethod
    def _write_u32(caller, ptr: int, value: int) -> None:
        caller["memory"].write(caller, struct.pack("<I", value), ptr)

    def load_by_name(self, caller, name_ptr: int, name_len: int, graph_ptr: int) -> int:
        name = self._read(caller, name_ptr, name_len).decode(errors="replace")
        if name not in self.preloads:
            log(f"[WASI-NN] GGML backend: load_by_name: model {name} not found")
            return NOT_FOUND
        _backend, _target, path = self.preloads[name]
        try:
            header = gguf_header.read_header(path)
        except (OSError, gguf_header.NotGGUF) as err:
            llama_log(f"gguf_init_from_file: invalid magic characters or unreadable file: {err}", self.abi)
            log("[WASI-NN] GGML backend: Error: unable to init model.")
            return INVALID_ARGUMENT
        if not header["metadata"].get("general.architecture"):
            llama_log("llama_model_load: error loading model: no general.architecture", self.abi)
            log("[WASI-NN] GGML backend: Error: unable to init model.")
            return INVALID_ARGUMENT
        self.graphs.append(path)
        self._write_u32(caller, graph_ptr, len(self.graphs) - 1)
        return SUCCESS

    def init_execution_context(self, caller, graph: int, ctx_ptr: int) -> int:
        if not 0 <= graph < len(self.graphs):
            return INVALID_ARGUMENT
        self.contexts.append({"graph": graph, "prompt": None, "n_predict": 8})
        self._write_u32(caller, ctx_ptr, len(self.contexts) - 1)
        return SUCCESS

    def set_input(self, caller, ctx: int, index: int, tensor_ptr: int) -> int:
        if not 0 <= ctx < len(self.contexts):
            return INVALID_ARGUMENT
        try:
            _dims, _ndims, kind, data_ptr, data_len = struct.unpack("<5I", self._read(caller, tensor_ptr, 20))
            data = self._read(caller, data_ptr, data_len)
        except IndexError:
            log("[WASI-NN] Failed when accessing the Tensor memory.")
            return INVALID_ARGUMENT
        if kind not in self.abi["accepted"]:
            log(f"[WASI-NN] Unknown tensor type {kind}.")
            return INVALID_ARGUMENT
        if index not in (0, 1):
            return INVALID_ARGUMENT
        return self._prompt(ctx, data) if index == 0 else self._metadata(ctx, data)

    def _prompt(self, ctx: int, data: bytes) -> int:
        self.contexts[ctx]["prompt"] = data
        return SUCCESS

    def _metadata(self, ctx: int, data: bytes) -> int:
        try:
            metadata = json.loads(data)
            n_predict = int(metadata.get("n-predict", 8))
        except (ValueError, TypeError, AttributeError):
            log("[WASI-NN] GGML backend: Error: Unable to parse the metadata json.")
            return INVALID_ARGUMENT
        self.contexts[ctx]["n_predict"] = min(n_predict, 4096)
        return SUCCESS

    def compute(self, caller, ctx: int) -> int:
        del caller
        if not 0 <= ctx < len(self.contexts) or self.contexts[ctx]["prompt"] is None:
            log("[WASI-NN] GGML backend: Error: no prompt set.")
            return INVALID_ARGUMENT
        if (self.plugin.parent / CPU_MARKER).exists():
            # The real plugin executes an instruction this CPU lacks: the kernel kills the process.
            sys.stdout.flush()
            sys.stderr.flush()
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            signal.signal(signal.SIGILL, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGILL)
        self.contexts[ctx]["output"] = self._generate(ctx)
        return SUCCESS

    def _generate(self, ctx: int) -> bytes:
        """n_predict tokens of a random-weight model: mostly byte tokens (256 of its vocabulary), decoded to
        the raw bytes they stand for, so the output is arbitrary bytes; seeded by the model and the prompt."""
        context = self.contexts[ctx]
        with open(self.graphs[context["graph"]], "rb") as model:
            seed = hashlib.sha256(model.read(1 << 16) + context["prompt"]).digest()
        out = b""
        for index in range(max(context["n_predict"], 0)):
            draw = hashlib.sha256(seed + index.to_bytes(4, "little")).digest()
            out += draw[1:2] if draw[0] < 220 else PIECES[draw[1] % len(PIECES)]
        return out

    def get_output(self, caller, ctx: int, index: int, buf: int, size: int, written_ptr: int) -> int:
        if not 0 <= ctx < len(self.contexts) or index != 0 or "output" not in self.contexts[ctx]:
            return INVALID_ARGUMENT
        output = self.contexts[ctx]["output"]
        if len(output) > size:
            return TOO_LARGE
        caller["memory"].write(caller, output, buf)
        self._write_u32(caller, written_ptr, len(output))
        return SUCCESS


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    options: dict = {"version": False, "nn_preload": [], "dir": [], "env": []}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        if arg in ("-v", "--version"):
            options["version"] = True
        elif arg in ("--nn-preload", "--dir", "--env"):
            if i + 1 >= len(argv):
                raise SystemExit(f"missing value of option: {arg[2:]}")
            options[arg[2:].replace("-", "_")].append(argv[i + 1])
            i += 1
        elif arg == "--":
            i += 1
            break
        else:
            raise SystemExit(f"unknown option: {arg.lstrip('-')}")
        i += 1
    return options, argv[i:]


def preloads_of(values: list[str]) -> dict[str, tuple[str, str, str]]:
    models = {}
    for value in values:
        parts = value.split(":", 3)
        if len(parts) != 4 or parts[1] != "GGML" or parts[2].upper() not in TARGETS:
            log("[WASI-NN] Preload Model's Backend or Device is Not Support.")
            continue
        models[parts[0]] = (parts[1], parts[2].upper(), parts[3])
    return models


def run(options: dict, rest: list[str], plugins: list[Path]) -> int:
    nn = next((p for p in plugins if p.name == NN_PLUGIN), None)
    if options["nn_preload"] and nn is None:
        sys.stdout.write("unknown option: nn-preload\n")
        return 1
    if not rest:
        sys.stdout.write("wasmedge: a WASM file is required\n")
        return 1
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    wasi = wasmtime.WasiConfig()
    wasi.argv = [Path(rest[0]).name, *rest[1:]]
    wasi.env = [tuple(item.split("=", 1)) for item in options["env"] if "=" in item]
    for mapping in options["dir"]:
        guest, _sep, host = mapping.partition(":")
        wasi.preopen_dir(host or guest, guest)
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    store.set_wasi(wasi)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    if nn is not None:
        StandInNN(nn, preloads_of(options["nn_preload"])).define(linker)
    return execute(engine, linker, store, rest[0], nn is not None)


def execute(
    engine: wasmtime.Engine, linker: wasmtime.Linker, store: wasmtime.Store, path: str, with_nn: bool
) -> int:
    try:
        module = wasmtime.Module.from_file(engine, path)
    except (OSError, wasmtime.WasmtimeError) as err:
        log(f"loading failed: {err}")
        return 1
    for item in module.imports:
        if item.module == "wasi_ephemeral_nn" and not with_nn:
            log("instantiation failed: unknown import, Code: 0x302")
            log(f'    When linking module: "wasi_ephemeral_nn" , function name: "{item.name}"')
            return 1
    try:
        instance = linker.instantiate(store, module)
        instance.exports(store)["_start"](store)
    except wasmtime.ExitTrap as exit_:
        return exit_.code
    except (wasmtime.Trap, wasmtime.WasmtimeError) as err:
        log(f"execution failed: {err}")
        return 1
    return 0


def main(argv: list[str]) -> int:
    try:
        options, rest = parse(argv)
    except SystemExit as err:
        sys.stdout.write(f"{err}\n")
        return 1
    plugins = load_plugins()
    if options["version"]:
        sys.stdout.write(f"wasmedge version {VERSION} ({MARKER})\n")
        for plugin in plugins:
            if plugin.name == NN_PLUGIN:
                sys.stdout.write(f'{plugin} (plugin "wasi_nn") version 0.10.1.0\n')
        return 0
    return run(options, rest, plugins)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
