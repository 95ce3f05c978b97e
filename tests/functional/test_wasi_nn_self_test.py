"""The wasi_nn_ggml self-test, run for real against this machine with the STAND-IN WasmEdge tree.

The stand-in wasmedge (tests/doubles/wasmedge_runner.py) executes the probe with wasmtime and a stand-in
wasi_ephemeral_nn that fails the ways the real plugin does; every failure message of the self-test is
checked here, and that it changes nothing.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from doubles import wasmedge_tree
from site_runner import local_inventory

pytestmark = pytest.mark.slow
PLAYBOOK = "tests/functional/playbooks/wasi_nn_ggml_self_test.yml"
VERSION = "0.14.1"
PLUGIN = "libwasmedgePluginWasiNN.so"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A prefix with one WasmEdge version and the environment file the wasmedge role would write."""
    prefix = tmp_path_factory.mktemp("wasmedge")
    home = prefix / VERSION
    wasmedge_tree.build(home, VERSION)
    (prefix / "wasmedge.env").write_text(
        f"# as roles/wasmedge/templates/wasmedge.env.j2 writes it\nWASMEDGE_HOME={home}\n"
        f"WASMEDGE_PLUGIN_PATH={home}/plugin\nLD_LIBRARY_PATH={home}/lib\n"
    )
    return prefix


def run(run_site, prefix: Path, check: bool = False, **variables):
    extra = {
        "wasi_nn_ggml_prefix": str(prefix),
        "wasi_nn_ggml_wasmedge_version": VERSION,
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
    before = scratch_dirs()
    result = run(run_site, installed)
    assert result.rc == 0, result.output
    assert (
        "node1: the WASI-NN self-test ran a completion: 39 bytes:  hello from the stand-in WASI-NN plugin"
        in (result.output)
    )
    assert "published: done ok=True" in result.output
    assert recap(result.output)["changed"] == 0
    assert scratch_dirs() == before  # the scratch directory is gone


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


def test_a_model_llama_cpp_cannot_load_names_the_model_step(run_site, installed, tmp_path):
    model = tmp_path / "corrupt.gguf"
    shutil.copyfile(wasmedge_tree.ROOT / "roles/wasi_nn_ggml/files/self_test/self-test.gguf", model)
    with model.open("r+b") as handle:
        handle.write(b"GGML")  # the magic of an older format: llama.cpp refuses it
    result = run(run_site, installed, wasi_nn_ggml_self_test_model=str(model))
    assert result.rc != 0
    assert (
        f"failed at load_by_name: the GGML backend could not load the model {model} (wasi-nn errno 1 "
        "(invalid_argument)): [error] [WASI-NN] GGML backend: gguf_init_from_file: invalid magic characters"
        in result.output
    ), result.output
    assert "unable to init model" in result.output


def test_a_model_that_is_not_on_the_node_is_refused_before_running(run_site, installed, tmp_path):
    result = run(run_site, installed, wasi_nn_ggml_self_test_model=str(tmp_path / "absent.gguf"))
    assert result.rc != 0
    assert (
        f"the WASI-NN self-test needs {tmp_path}/absent.gguf, which this node does not have" in result.output
    )
    assert "wasi_nn_ggml_self_test_model must be a GGUF file on the node" in result.output


def test_a_good_model_of_the_nodes_own_loads(run_site, installed, tmp_path):
    model = tmp_path / "served.gguf"
    shutil.copyfile(wasmedge_tree.ROOT / "roles/wasi_nn_ggml/files/self_test/self-test.gguf", model)
    result = run(run_site, installed, wasi_nn_ggml_self_test_model=str(model))
    assert result.rc == 0, result.output
    assert "ran a completion" in result.output
