"""The wasi_nn_ggml self-test, run for real against this machine with the STAND-IN WasmEdge tree.

The stand-in wasmedge (tests/doubles/wasmedge_standin, Rust) executes the probe with wasmtime and a
wasi_ephemeral_nn with the plugin's ABI whose GGML backend is real llama.cpp: the role's self-test.gguf is
loaded and generates tokens, and a model llama.cpp refuses fails with llama.cpp's own error. Every failure
message of the self-test is checked here, and that it changes nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import gguf
import pytest
import wasmtime
from doubles import release_mirror, wasmedge_tree
from site_runner import local_inventory

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import wasi_nn_probe

pytestmark = pytest.mark.slow
PLAYBOOK = "tests/functional/playbooks/wasi_nn_ggml_self_test.yml"
PROBE_PLAYBOOK = "tests/functional/playbooks/wasi_nn_probe_module.yml"
VERSION = "0.14.1"
PLUGIN = "libwasmedgePluginWasiNN.so"


ASSETS = wasmedge_tree.ROOT / "roles/wasi_nn_ggml/files/self_test"


def install(prefix: Path, version: str = VERSION, llama_build: str = "") -> Path:
    """A prefix with one WasmEdge version and the environment file the wasmedge role would write."""
    home = prefix / version
    wasmedge_tree.build(home, version, llama_build=llama_build)
    (prefix / "wasmedge.env").write_text(
        f"# as roles/wasmedge/templates/wasmedge.env.j2 writes it\nWASMEDGE_HOME={home}\n"
        f"WASMEDGE_PLUGIN_PATH={home}/plugin\nLD_LIBRARY_PATH={home}/lib\n"
    )
    return prefix


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    return install(tmp_path_factory.mktemp("wasmedge"))


def run(
    run_site, prefix: Path, check: bool = False, version: str = VERSION, env: dict | None = None, **variables
):
    extra = {
        "wasi_nn_ggml_prefix": str(prefix),
        "wasi_nn_ggml_wasmedge_version": version,
        "wasi_nn_ggml_self_test_env_file": str(prefix / "wasmedge.env"),
        **variables,
    }
    return run_site(local_inventory(["node1"], []), extra, playbook=PLAYBOOK, check=check, env=env)


def recap(output: str) -> dict[str, int]:
    found = re.search(r"node1\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", output)
    assert found, output
    return dict(zip(("ok", "changed", "failed"), map(int, found.groups()), strict=True))


class ScratchWatch:
    """Every entry seen in a private TMPDIR while a playbook runs (the compat stage runs two ansible-cores side by
    side, so /tmp itself is shared with other runs of the same self-test)."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        self.root = root
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self.seen.update(os.listdir(self.root))

    def __enter__(self) -> ScratchWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_a_working_node_runs_a_completion_and_changes_nothing(run_site, installed, tmp_path):
    """The random-weight model generates bytes that are not UTF-8 (as llama.cpp's do): the probe prints them
    as hex and the verdict shows them escaped; the task never fails on them (ansible-core 2.19 refuses a
    module result that is not UTF-8, which failed every real converge before)."""
    with ScratchWatch(tmp_path / "tmp") as scratch:
        result = run(run_site, installed, env={"TMPDIR": str(scratch.root)})
    assert result.rc == 0, result.output
    found = re.search(
        r"node1: the WASI-NN self-test ran a completion: (\d+) bytes, not valid UTF-8 \(",
        result.output,
    )
    assert found, result.output
    assert int(found.group(1)) > 0
    assert "published: done ok=True" in result.output
    assert recap(result.output)["changed"] == 0
    # The probe ran in a scratch directory of its own, which is gone afterwards.
    assert [name for name in scratch.seen if name.startswith("edgewasm-self-test.")], scratch.seen
    assert not [name for name in os.listdir(scratch.root) if name.startswith("edgewasm-self-test.")]


@pytest.mark.parametrize(
    ("version", "llama_build"),
    [("0.15.0", ""), ("0.14.1", "b5640"), ("0.17.1", "")],
    ids=["0.15.0-new-tensor-types", "0.14.1-b5640-new-tensor-types", "0.17.1"],
)
def test_every_abi_runs_the_probe(run_site, tmp_path, version, llama_build):
    """0.15.0+ and the 0.14.1 builds from b5074 number tensor types anew (2 is F64, refused): the probe's 3 works."""
    prefix = install(tmp_path / "we", version, llama_build)
    result = run(run_site, prefix, version=version)
    assert result.rc == 0, result.output
    assert "node1: the WASI-NN self-test ran a completion" in result.output


def probe_variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """The role's probe with one instruction replaced (which must be there once)."""
    source = (ASSETS / "wasi_nn_probe.wat").read_text()
    assert source.count(old) == 1
    probe = tmp_path / f"{name}.wasm"
    probe.write_bytes(wasmtime.wat2wasm(source.replace(old, new)))
    return probe


def old_probe(tmp_path: Path) -> Path:
    """The probe as it was before: tensor type 2 (U8 only in the old numbering)."""
    return probe_variant(
        tmp_path,
        "old_probe",
        "(i32.store (i32.const 0x88) (i32.const 3))",
        "(i32.store (i32.const 0x88) (i32.const 2))",
    )


def raw_probe(tmp_path: Path) -> Path:
    """A probe that prints the model's output as it is, instead of as hex."""
    return probe_variant(
        tmp_path,
        "raw_probe",
        "(call $put_hex (i32.const 1) (global.get $output) (i32.load (i32.const 0x28)))",
        "(call $write (i32.const 1) (global.get $output) (i32.load (i32.const 0x28)))",
    )


def probe_run(prefix: Path, version: str, probe: Path, model: Path) -> dict:
    env = wasi_nn_probe.env_from_file((prefix / "wasmedge.env").read_text())
    env["PATH"] = "/usr/bin:/bin"
    argv = [str(prefix / version / "bin/wasmedge"), "--nn-preload", f"default:GGML:AUTO:{model}", str(probe)]
    return wasi_nn_probe.run(argv, env, timeout=60)


def test_tensor_type_2_is_refused_by_the_new_abi_as_upstream_refuses_it(tmp_path):
    """On 0.15.0 the old probe fails at set_input; upstream logs why on STDOUT, which the verdict now reads."""
    prefix = install(tmp_path / "we", "0.15.0")
    result = probe_run(prefix, "0.15.0", old_probe(tmp_path), ASSETS / "self-test.gguf")
    assert result["rc"] == 12, result
    assert "[error] [WASI-NN] Unknown tensor type 2." in result["stdout"]
    assert "edgewasm-wasi-nn-probe: set_input (metadata) failed: wasi-nn errno 1" in result["stderr"]
    report = wasi_nn_probe.diagnose(result["rc"], result["stdout"], result["stderr"], "plugin", "model")
    assert report["step"] == "set_input (metadata)"
    assert "the plugin refused tensor type 2" in report["cause"]
    # The old numbering accepts it (2 is U8 there): 0.14.1's release build b3651.
    old = install(tmp_path / "old", "0.14.1")
    assert probe_run(old, "0.14.1", old_probe(tmp_path), ASSETS / "self-test.gguf")["rc"] == 0


def test_upstreams_streams_no_plugin_is_on_stdout(tmp_path):
    prefix = install(tmp_path / "we", "0.15.0")
    (prefix / "0.15.0/plugin" / PLUGIN).unlink()
    result = probe_run(prefix, "0.15.0", ASSETS / "wasi_nn_probe.wasm", ASSETS / "self-test.gguf")
    assert (result["rc"], result["stdout"], result["stderr"]) == (1, "unknown option: nn-preload\n", "")
    direct = subprocess.run(
        [str(prefix / "0.15.0/bin/wasmedge"), str(ASSETS / "wasi_nn_probe.wasm")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert direct.returncode == 1 and direct.stderr == ""
    assert "[error] instantiation failed: unknown import, Code: 0x302" in direct.stdout


def test_check_mode_runs_the_probe_too(run_site, installed):
    result = run(run_site, installed, check=True)
    assert result.rc == 0, result.output
    assert "ran a completion" in result.output


def test_check_mode_on_a_fresh_node_has_nothing_to_test(run_site, tmp_path):
    result = run(
        run_site, tmp_path / "nothing", check=True, wasi_nn_ggml_self_test_env_file=str(tmp_path / "none")
    )
    assert result.rc == 0, result.output
    assert "ran a completion" not in result.output
    assert recap(result.output)["failed"] == 0


def test_nothing_installed_names_what_is_missing(run_site, tmp_path):
    result = run(run_site, tmp_path / "nothing", wasi_nn_ggml_self_test_env_file=str(tmp_path / "none.env"))
    assert result.rc != 0
    assert (
        f"the WASI-NN self-test needs {tmp_path}/nothing/{VERSION}/bin/wasmedge and {tmp_path}/none.env"
        in (result.output)
    )
    assert "Run the wasmedge role first" in result.output


def test_a_missing_plugin_file_is_named(run_site, installed):
    plugin = installed / VERSION / "plugin" / PLUGIN
    aside = installed / PLUGIN
    plugin.rename(aside)
    try:
        result = run(run_site, installed)
    finally:
        aside.rename(plugin)
    assert result.rc != 0
    assert (
        f"node1: the WASI-NN self-test failed at load the WASI-NN plugin: {plugin} does not exist: run the "
        "wasi_nn_ggml role (state=present) on this node." in result.output
    ), result.output


def test_a_library_the_plugin_lacks_is_named(run_site, tmp_path):
    """A CUDA build on a node without the CUDA runtime: WasmEdge cannot load it; the resolver says why."""
    prefix = tmp_path / "cuda"
    wasmedge_tree.build(prefix / VERSION, VERSION, cuda=True)
    (prefix / "wasmedge.env").write_text(f"WASMEDGE_PLUGIN_PATH={prefix}/{VERSION}/plugin\n")
    result = run(run_site, prefix)
    assert result.rc != 0
    assert (
        f"failed at load the WASI-NN plugin: {prefix}/{VERSION}/plugin/{PLUGIN} is there, but libraries it needs "
        f"are missing on this node: libcudart.so.12 ({PLUGIN} -> libcudart.so.12)." in result.output
    ), result.output


def test_an_illegal_instruction_suggests_the_noavx_variant(run_site, installed):
    marker = installed / VERSION / "plugin" / "edgewasm-standin-cpu-lacks"
    marker.write_text("avx2\n")
    try:
        result = run(run_site, installed, wasi_nn_ggml_variant="cpu")
    finally:
        marker.unlink()
    assert result.rc != 0
    assert (
        "failed at compute (illegal instruction): the cpu build of the plugin executes instructions this CPU does "
        "not have" in result.output
    ), result.output
    assert "set wasi_nn_ggml_variant: noavx for this host" in result.output


@pytest.mark.parametrize("version", ["0.14.1", "0.15.0"])
def test_a_model_llama_cpp_cannot_load_names_the_model_step(run_site, tmp_path, version):
    """b3651 (0.14.1) writes llama.cpp's own error to stderr; newer builds drop it: the plugin's line on stdout
    is what names the failure there."""
    prefix = install(tmp_path / "we", version)
    model = tmp_path / "corrupt.gguf"
    shutil.copyfile(ASSETS / "self-test.gguf", model)
    with model.open("r+b") as handle:
        handle.write(b"GGML")  # the magic of an older format: llama.cpp refuses it
    result = run(run_site, prefix, version=version, wasi_nn_ggml_self_test_model=str(model))
    assert result.rc != 0
    assert (
        f"failed at load_by_name: the GGML backend could not load the model {model} (wasi-nn errno 1 "
        "(invalid_argument)): " in result.output
    ), result.output
    assert "[error] [WASI-NN] GGML backend: Error: unable to init model." in result.output
    # llama.cpp's own message (gguf.cpp), on stderr from b3651's plugin only.
    own = re.search(r"gguf_init_from_\w+: invalid magic characters: 'GGML', expected 'GGUF'", result.output)
    assert bool(own) == (version == "0.14.1"), result.output


def test_a_model_that_is_not_on_the_node_is_refused_before_running(run_site, installed, tmp_path):
    result = run(run_site, installed, wasi_nn_ggml_self_test_model=str(tmp_path / "absent.gguf"))
    assert result.rc != 0
    assert (
        f"the WASI-NN self-test needs {tmp_path}/absent.gguf, which this node does not have" in result.output
    )
    assert "wasi_nn_ggml_self_test_model must be a GGUF file on the node" in result.output


def test_a_good_model_of_the_nodes_own_loads(run_site, installed, tmp_path):
    model = tmp_path / "served.gguf"
    shutil.copyfile(ASSETS / "self-test.gguf", model)
    result = run(run_site, installed, wasi_nn_ggml_self_test_model=str(model))
    assert result.rc == 0, result.output
    assert "ran a completion" in result.output


def probe_module_run(run_site, prefix: Path, probe: Path, model: Path = ASSETS / "self-test.gguf"):
    return run_site(
        local_inventory(["node1"], []),
        {
            "probe_wasmedge": str(prefix / VERSION / "bin/wasmedge"),
            "probe_wasm": str(probe),
            "probe_model": str(model),
            "probe_env_file": str(prefix / "wasmedge.env"),
            "probe_plugin": str(prefix / VERSION / "plugin" / PLUGIN),
        },
        playbook=PROBE_PLAYBOOK,
    )


def test_a_probe_printing_the_models_raw_bytes_fails_the_self_test(run_site, installed, tmp_path):
    """llama.cpp's tokens from a random-weight model are arbitrary bytes: printed raw they are not UTF-8, and
    the verdict refuses the line (escaped, never a traceback); the role's probe, which prints hex, passes."""
    raw = probe_run(installed, VERSION, raw_probe(tmp_path), ASSETS / "self-test.gguf")
    assert raw["rc"] == 0, raw
    assert "\\x" in raw["stdout"], raw  # run() escapes what is not UTF-8: llama.cpp's bytes were not
    result = probe_module_run(run_site, installed, raw_probe(tmp_path))
    assert result.rc != 0
    assert (
        "node1: the WASI-NN self-test failed at output: the probe's ok line is malformed: " in result.output
    )
    assert probe_module_run(run_site, installed, ASSETS / "wasi_nn_probe.wasm").rc == 0


def completion(prefix: Path, model: Path) -> bytes:
    result = probe_run(prefix, VERSION, ASSETS / "wasi_nn_probe.wasm", model)
    assert result["rc"] == 0, result
    data = wasi_nn_probe.generated(result["stdout"].splitlines()[-1][len(wasi_nn_probe.OK_PREFIX) :])
    assert data is not None, result
    return data


def test_the_completion_comes_from_the_models_weights(installed, tmp_path):
    """llama.cpp runs the model: the same model and prompt give the same bytes (a fixed seed), and other
    weights in the same file layout give other bytes."""
    model = ASSETS / "self-test.gguf"
    first = completion(installed, model)
    assert first and completion(installed, model) == first
    changed = tmp_path / "other-weights.gguf"
    shutil.copyfile(model, changed)
    tensor = next(t for t in gguf.GGUFReader(model).tensors if t.name == "output.weight")
    with changed.open("r+b") as handle:
        handle.seek(tensor.data_offset)
        handle.write(tensor.data[::-1].tobytes())  # the output projection reversed: other logits
    assert completion(installed, changed) != first


def test_a_module_importing_wasi_logging_runs_under_the_cli(installed, tmp_path):
    """WasmEdge's CLI registers wasi:logging (runwasi's shim does not): the mirror's stand-in
    llama-api-server.wasm, which imports it as a stock build does, instantiates and runs; an import nothing
    provides fails as upstream's does, naming it."""
    release_mirror.build_llamaedge(tmp_path / "mirror", "0.28.1")
    server = tmp_path / "mirror" / "0.28.1" / "llama-api-server.wasm"
    env = wasi_nn_probe.env_from_file((installed / "wasmedge.env").read_text())
    wasmedge = str(installed / VERSION / "bin/wasmedge")
    ran = subprocess.run([wasmedge, str(server)], env=env, capture_output=True, text=True, check=False)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "", "")
    unknown = tmp_path / "unknown.wasm"
    unknown.write_bytes(
        wasmtime.wat2wasm(
            '(module (import "wasi:keyvalue/store" "open" (func (param i32))) (func (export "_start")))'
        )
    )
    failed = subprocess.run([wasmedge, str(unknown)], env=env, capture_output=True, text=True, check=False)
    assert failed.returncode == 1 and failed.stderr == ""
    assert "[error] instantiation failed: unknown import, Code: 0x302" in failed.stdout
    assert 'When linking module: "wasi:keyvalue/store" , function name: "open"' in failed.stdout


@pytest.mark.parametrize(
    ("name", "old", "new", "rc", "logged"),
    [
        (
            "prompt-out-of-memory",
            "(call $text_tensor (i32.const 0x110))",
            "(i32.const 0x7ffffff0)",
            13,
            "[error] [WASI-NN] Failed when accessing the Tensor memory.",
        ),
        (
            "metadata-not-json",
            '(data (i32.const 0x140) "{\\"n-predict\\":8}\\00")',
            '(data (i32.const 0x140) "{\\"n-predict\\":\\"8\\"}\\00")',
            12,
            "[error] [WASI-NN] GGML backend: Error: Unable to parse the metadata json.",
        ),
        (
            "unknown-alias",
            '(data (i32.const 0x100) "default\\00")',
            '(data (i32.const 0x100) "missing\\00")',
            10,
            "[error] [WASI-NN] GGML backend: load_by_name: model missing not found",
        ),
    ],
)
def test_a_guest_passing_bad_arguments_gets_an_errno(installed, tmp_path, name, old, new, rc, logged):
    """Pointers out of the guest's memory, metadata of the wrong type, an alias nothing preloaded: the call
    returns WasmEdge's errno and the plugin's log line, and the engine goes on (no crash, no trap)."""
    result = probe_run(installed, VERSION, probe_variant(tmp_path, name, old, new), ASSETS / "self-test.gguf")
    assert result["rc"] == rc, result
    assert logged in result["stdout"], result
    errno = 8 if name == "unknown-alias" else 1
    assert f"failed: wasi-nn errno {errno}" in result["stderr"], result


def test_a_truncated_model_is_refused_by_llama_cpp(installed, tmp_path):
    """A GGUF whose header is whole but whose tensor data is cut (an interrupted copy): llama.cpp refuses it at
    load_by_name, and the plugin says it could not init the model."""
    model = tmp_path / "truncated.gguf"
    data = (ASSETS / "self-test.gguf").read_bytes()
    model.write_bytes(data[: len(data) // 2])
    result = probe_run(installed, VERSION, ASSETS / "wasi_nn_probe.wasm", model)
    assert result["rc"] == 10, result
    assert "[error] [WASI-NN] GGML backend: Error: unable to init model." in result["stdout"]
    assert "failed: wasi-nn errno 1" in result["stderr"]
