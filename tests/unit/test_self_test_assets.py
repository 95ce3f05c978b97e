"""The wasi_nn_ggml self-test's committed assets: reproducible from source, and doing what they claim.

The probe runs here under wasmtime against a scripted wasi_ephemeral_nn (a test double defined below, not the
stand-in runner), so each WASI-NN call it makes, the tensors it passes and each exit code are checked.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
from pathlib import Path

import gguf
import pytest
import wasmtime
import yaml

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import gguf_header
from ansible_collections.edgewasm.llamaedge.plugins.module_utils import release_catalog as catalog

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "roles" / "wasi_nn_ggml" / "files" / "self_test"
_spec = importlib.util.spec_from_file_location(
    "build_self_test_assets", ROOT / "scripts/build_self_test_assets.py"
)
build_assets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_assets)

NN_CALLS = ("load_by_name", "init_execution_context", "set_input", "set_input", "compute", "get_output")
STEP_NAMES = (
    "load_by_name",
    "init_execution_context",
    "set_input (metadata)",
    "set_input (prompt)",
    "compute",
    "get_output",
)


def test_both_assets_rebuild_to_identical_bytes(tmp_path):
    for built in build_assets.build(tmp_path):
        assert built.read_bytes() == (ASSETS / built.name).read_bytes(), (
            f"{built.name} is not what its source builds"
        )


def test_the_roles_fingerprint_names_the_committed_assets():
    """The self-test's record covers the probe and the model by these digests: a stale one would let a new
    probe skip its first run."""
    assets = yaml.safe_load((ROOT / "roles/wasi_nn_ggml/vars/main.yml").read_text())[
        "_wasi_nn_ggml_st_assets"
    ]
    assert assets == {
        "probe": hashlib.sha256((ASSETS / "wasi_nn_probe.wasm").read_bytes()).hexdigest(),
        "model": hashlib.sha256((ASSETS / "self-test.gguf").read_bytes()).hexdigest(),
    }


def test_the_check_mode_of_the_build_script_passes_on_the_committed_assets():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["build_self_test_assets.py", "--check"])
        assert build_assets.main() == 0


def test_the_model_is_a_tiny_llama_our_gguf_info_reads():
    model = ASSETS / build_assets.MODEL
    header = gguf_header.read_header(str(model))
    summary = gguf_header.summary(header)
    assert summary["architecture"] == "llama"
    assert summary["block_count"] == 2
    assert summary["context_length"] == 128
    assert summary["file_type"] == "F32"
    assert summary["tensor_count"] == 2 + 9 * 2 + 1  # embeddings, output norm + output, 9 per layer
    assert model.stat().st_size < 1_000_000
    meta = header["metadata"]
    assert meta["tokenizer.ggml.model"] == "llama"
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (1, 2)


def test_llama_cpps_reader_sees_the_shapes_llama_cpp_expects():
    reader = gguf.GGUFReader(ASSETS / build_assets.MODEL)
    shapes = {t.name: [int(d) for d in t.shape] for t in reader.tensors}
    tokens = reader.fields["tokenizer.ggml.tokens"]
    vocab = len(tokens.data)
    assert 256 < vocab < 400  # the byte tokens and a few pieces
    assert shapes["token_embd.weight"] == [64, vocab]
    assert shapes["output.weight"] == [64, vocab]
    assert shapes["blk.1.attn_q.weight"] == [64, 64]
    assert shapes["blk.1.attn_k.weight"] == [64, 32]  # 2 KV heads of 16
    assert shapes["blk.0.ffn_down.weight"] == [128, 64]
    assert shapes["blk.0.ffn_up.weight"] == [64, 128]
    assert shapes["output_norm.weight"] == [64]
    types = reader.fields["tokenizer.ggml.token_type"]
    kinds = [int(types.parts[i][0]) for i in types.data]
    assert kinds.count(int(gguf.TokenType.BYTE)) == 256


class ScriptedNN:
    """wasi_ephemeral_nn that records what the probe passes and fails at call number fail_at."""

    def __init__(
        self,
        fail_at: int | None = None,
        errno: int = 5,
        output: bytes = b"tok tok",
        written: int | None = None,
    ) -> None:
        self.fail_at, self.errno, self.output = fail_at, errno, output
        self.written = len(output) if written is None else written
        self.calls: list[tuple] = []

    def link(self, linker: wasmtime.Linker, module: wasmtime.Module) -> None:
        """Define each wasi_ephemeral_nn function the probe imports, with the type it imports it with."""
        for item in module.imports:
            if item.module == "wasi_ephemeral_nn":
                linker.define_func(item.module, item.name, item.type, self._call(item.name), True)

    def _call(self, name: str):
        def call(caller, *args):
            memory = caller["memory"]

            def read(ptr: int, size: int) -> bytes:
                return bytes(memory.read(caller, ptr, ptr + size))

            detail = getattr(self, f"_{name}")(caller, memory, read, *args)
            self.calls.append((name, detail))
            return self.errno if len(self.calls) - 1 == self.fail_at else 0

        return call

    @staticmethod
    def _load_by_name(caller, memory, read, name_ptr, name_len, graph_ptr):
        memory.write(caller, struct.pack("<I", 7), graph_ptr)
        return read(name_ptr, name_len)

    @staticmethod
    def _init_execution_context(caller, memory, _read, graph, ctx_ptr):
        memory.write(caller, struct.pack("<I", 3), ctx_ptr)
        return graph

    @staticmethod
    def _set_input(_caller, _memory, read, ctx, index, tensor_ptr):
        dims_ptr, ndims, kind, data_ptr, data_len = struct.unpack("<5I", read(tensor_ptr, 20))
        dims = list(struct.unpack(f"<{ndims}I", read(dims_ptr, 4 * ndims)))
        return ctx, index, dims, kind, read(data_ptr, data_len)

    @staticmethod
    def _compute(_caller, _memory, _read, ctx):
        return ctx

    def _get_output(self, caller, memory, _read, ctx, index, buf, size, written_ptr):
        memory.write(caller, self.output, buf)
        memory.write(caller, struct.pack("<I", self.written), written_ptr)
        return ctx, index, size


def run_probe(nn: ScriptedNN, tmp_path: Path) -> tuple[int, str, str]:
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    wasi = wasmtime.WasiConfig()
    wasi.stdout_file = str(tmp_path / "out")
    wasi.stderr_file = str(tmp_path / "err")
    store.set_wasi(wasi)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    module = wasmtime.Module(engine, (ASSETS / build_assets.PROBE).read_bytes())
    nn.link(linker, module)
    code = 0
    try:
        linker.instantiate(store, module).exports(store)["_start"](store)
    except wasmtime.ExitTrap as exit_:
        code = exit_.code
    return code, (tmp_path / "out").read_text(), (tmp_path / "err").read_text()


def test_the_probe_imports_only_wasi_and_wasi_nn():
    module = wasmtime.Module(wasmtime.Engine(), (ASSETS / build_assets.PROBE).read_bytes())
    imports = {(i.module, i.name) for i in module.imports}
    assert imports == {("wasi_snapshot_preview1", "fd_write"), ("wasi_snapshot_preview1", "proc_exit")} | {
        ("wasi_ephemeral_nn", name) for name in set(NN_CALLS)
    }
    assert {e.name for e in module.exports} == {"_start", "memory"}


def test_the_probe_drives_the_graph_as_llama_api_server_does(tmp_path):
    nn = ScriptedNN(output=b" hi there")
    code, out, err = run_probe(nn, tmp_path)
    assert (code, err) == (0, "")
    assert out == f"edgewasm-wasi-nn-probe: ok: 9 bytes, hex: {b' hi there'.hex()}\n"
    assert [name for name, _detail in nn.calls] == list(NN_CALLS)
    calls = dict(nn.calls[:2])
    assert calls["load_by_name"] == b"default"
    assert calls["init_execution_context"] == 7  # the graph handle load_by_name returned
    metadata, prompt = nn.calls[2][1], nn.calls[3][1]
    # Context 3, index 1 (metadata), dims [1], tensor type 3: U8 in the numbering of 0.15.0+ and the b5074+
    # plugin builds, I32 in the old one; both accepted everywhere (2 is F64 from 0.15.0 on, and refused).
    assert metadata[:4] == (3, 1, [1], catalog.PROBE_TENSOR_TYPE) == (3, 1, [1], 3)
    assert json.loads(metadata[4]) == {"n-predict": 8}
    assert prompt[:4] == (3, 0, [1], 3)
    assert prompt[4] == b"Say hello to the edgewasm self-test."
    assert nn.calls[4][1] == 3
    assert nn.calls[5][1] == (3, 0, 0xF000)


def test_the_type_the_probe_sends_is_accepted_by_every_catalog_version_and_build():
    for version in catalog.wasmedge_versions():
        builds = [
            "release",
            *[
                b
                for b in ("b3651", "b4273", "b5074", "b5640", "b6301")
                if catalog.registry_build_exists(version, b)
            ],
        ]
        for build in builds:
            abi = catalog.wasi_nn_abi(version, build)
            assert catalog.PROBE_TENSOR_TYPE in abi["accepted"], (version, build, abi)
    # The type the probe sent before (2) is F64 in the new numbering: refused by 0.15.0 and by b5640 on 0.14.1.
    assert 2 not in catalog.wasi_nn_abi("0.15.0")["accepted"]
    assert 2 not in catalog.wasi_nn_abi("0.14.1", "b5640")["accepted"]
    assert 2 in catalog.wasi_nn_abi("0.14.1")["accepted"]


def test_generated_bytes_that_are_not_utf8_are_printed_as_hex(tmp_path):
    """A random model's tokens are arbitrary bytes: the probe's stdout stays ASCII whatever they are."""
    generated = bytes([0x8C, 0xE6, 0x97, 0x00, 0xFF, 0x0A, 0x41])
    code, out, _err = run_probe(ScriptedNN(output=generated), tmp_path)
    assert code == 0
    assert out == f"edgewasm-wasi-nn-probe: ok: 7 bytes, hex: {generated.hex()}\n"
    assert out.isascii()


def test_a_written_size_past_the_buffer_is_cut_to_the_buffer(tmp_path):
    code, out, _err = run_probe(ScriptedNN(output=b"ab", written=0x7FFFFFFF), tmp_path)
    assert code == 0
    count, hexed = out.removeprefix("edgewasm-wasi-nn-probe: ok: ").rstrip("\n").split(" bytes, hex: ")
    assert int(count) == 0xF000 and len(hexed) == 2 * 0xF000 and hexed.startswith(b"ab".hex())


@pytest.mark.parametrize("step", range(len(NN_CALLS)), ids=STEP_NAMES)
def test_each_failing_call_has_its_exit_code_and_names_its_errno(tmp_path, step):
    nn = ScriptedNN(fail_at=step, errno=100 + step)
    code, out, err = run_probe(nn, tmp_path)
    assert code == 10 + step
    assert err == f"edgewasm-wasi-nn-probe: {STEP_NAMES[step]} failed: wasi-nn errno {100 + step}\n"
    assert out == ""
    assert len(nn.calls) == step + 1  # nothing after the failed call


def test_an_empty_completion_still_counts_as_a_run(tmp_path):
    code, out, _err = run_probe(ScriptedNN(output=b""), tmp_path)
    assert (code, out) == (0, "edgewasm-wasi-nn-probe: ok: 0 bytes, hex: \n")
