"""The wasi_nn_ggml self-test, run for real against this machine with the STAND-IN WasmEdge tree.

The stand-in wasmedge (tests/doubles/wasmedge_runner.py) executes the probe with wasmtime and a stand-in
wasi_ephemeral_nn that fails the ways the real plugin does; every failure message of the self-test is
checked here, and that it changes nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import wasmtime
from doubles import wasmedge_tree
from site_runner import local_inventory

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import wasi_nn_probe

pytestmark = pytest.mark.slow
PLAYBOOK = "tests/functional/playbooks/wasi_nn_ggml_self_test.yml"
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


def run(run_site, prefix: Path, check: bool = False, version: str = VERSION, **variables):
    extra = {
        "wasi_nn_ggml_prefix": str(prefix),
        "wasi_nn_ggml_wasmedge_version": version,
        "wasi_nn_ggml_self_test_env_file": str(prefix / "wasmedge.env"),
        **variables,
    }
    return run_site(local_inventory(["node1"], []), extra, playbook=PLAYBOOK, check=check)


def recap(output: str) -> dict[str, int]:
    found = re.search(r"node1\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", output)
    assert found, output
    return dict(zip(("ok", "changed", "failed"), map(int, found.groups()), strict=True))


def scratch_dirs() -> set[Path]:
    return set(Path("/tmp").glob("edgewasm-self-test.*"))


def test_a_working_node_runs_a_completion_and_changes_nothing(run_site, installed):
    """The random-weight model generates bytes that are not UTF-8 (as llama.cpp's do): the probe prints them
    as hex and the verdict shows them escaped; the task never fails on them (ansible-core 2.19 refuses a
    module result that is not UTF-8, which failed every real converge before)."""
    before = scratch_dirs()
    result = run(run_site, installed)
    assert result.rc == 0, result.output
    found = re.search(
        r"node1: the WASI-NN self-test ran a completion: (\d+) bytes, not valid UTF-8 \(",
        result.output,
    )
    assert found, result.output
    assert int(found.group(1)) > 0
    assert "published: done ok=True" in result.output
    assert recap(result.output)["changed"] == 0
    assert scratch_dirs() == before  # the scratch directory is gone


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


def old_probe(tmp_path: Path) -> Path:
    """The probe as it was before: tensor type 2 (U8 only in the old numbering)."""
    source = (ASSETS / "wasi_nn_probe.wat").read_text()
    assert source.count("(i32.store (i32.const 0x88) (i32.const 3))") == 1
    probe = tmp_path / "old_probe.wasm"
    probe.write_bytes(
        wasmtime.wat2wasm(
            source.replace(
                "(i32.store (i32.const 0x88) (i32.const 3))", "(i32.store (i32.const 0x88) (i32.const 2))"
            )
        )
    )
    return probe


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
    assert ("gguf_init_from_file: invalid magic characters" in result.output) == (version == "0.14.1")


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
