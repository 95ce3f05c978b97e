"""The self-test's verdict: every failure the probe can show maps to its step, cause and fix."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.edgewasm.llamaedge.plugins.filter.self_test import wasi_nn_probe_report
from ansible_collections.edgewasm.llamaedge.plugins.module_utils import wasi_nn_probe

PLUGIN = "/opt/wasmedge/0.14.1/plugin/libwasmedgePluginWasiNN.so"
MODEL = "/tmp/edgewasm-self-test.x/self-test.gguf"


def diagnose(rc, stdout="", stderr="", **context):
    return wasi_nn_probe.diagnose(rc, stdout, stderr, PLUGIN, MODEL, **context)


def test_a_completion_is_ok():
    report = diagnose(0, "edgewasm-wasi-nn-probe: ok: 4 bytes:  hi!\n")
    assert report == {"ok": True, "step": "done", "cause": None, "output": "4 bytes:  hi!", "needs": []}
    assert wasi_nn_probe.message(report, "n1") == "n1: the WASI-NN self-test ran a completion: 4 bytes:  hi!"


def test_exit_0_without_the_ok_line_is_not_ok():
    report = diagnose(0, "something else\n")
    assert (report["ok"], report["step"]) == (False, "output")
    assert "without its ok line: something else" in report["cause"]


@pytest.mark.parametrize(
    "stderr",
    [
        "unknown option: nn-preload\n",
        "[error] instantiation failed: unknown import, Code: 0x302\n",
        "[2024-04-23] [error] instantiation failed: unknown import, Code: 0x62\n",
    ],
    ids=["cli-option", "unknown-import-0x302", "unknown-import-0x62"],
)
def test_a_plugin_not_loaded_asks_for_the_plugin_file_and_its_libraries(stderr):
    report = diagnose(1, stderr=stderr)
    assert (report["step"], report["needs"]) == ("load the WASI-NN plugin", ["plugin_deps"])


def test_an_absent_plugin_file_is_named_with_the_fix():
    report = diagnose(1, stderr="unknown option: nn-preload\n", plugin_exists=False)
    assert (
        report["cause"] == f"{PLUGIN} does not exist: run the wasi_nn_ggml role (state=present) on this node"
    )


def test_missing_libraries_are_named_with_their_chain():
    missing = [
        {"name": "libcudart.so.12", "chain": ["libwasmedgePluginWasiNN.so", "libcudart.so.12"]},
        {
            "name": "libcublasLt.so.12",
            "chain": ["libwasmedgePluginWasiNN.so", "libcublas.so.12", "libcublasLt.so.12"],
        },
        "libcuda.so.1",
    ]
    report = diagnose(1, stderr="unknown option: nn-preload\n", plugin_exists=True, missing_libraries=missing)
    assert report["cause"] == (
        f"{PLUGIN} is there, but libraries it needs are missing on this node: libcudart.so.12 "
        "(libwasmedgePluginWasiNN.so -> libcudart.so.12); libcublasLt.so.12 (libwasmedgePluginWasiNN.so -> "
        "libcublas.so.12 -> libcublasLt.so.12); libcuda.so.1"
    )


def test_a_plugin_that_is_there_and_complete_points_at_the_plugin_path():
    report = diagnose(
        1,
        stderr="unknown option: nn-preload\n",
        plugin_exists=True,
        missing_libraries=[],
        env_file="/etc/default/w",
    )
    assert (
        "so WasmEdge did not look for it there: check WASMEDGE_PLUGIN_PATH in /etc/default/w"
        in report["cause"]
    )


@pytest.mark.parametrize("rc", [-4, 132])
def test_an_illegal_instruction_names_the_flags_the_cpu_lacks(rc):
    cpu = {"avx": True, "avx2": False, "avx512f": False, "fma": False, "f16c": True}
    report = diagnose(rc, variant="cpu", cpu=cpu)
    assert (report["step"], report["needs"]) == ("compute (illegal instruction)", ["cpu_flags"])
    assert report["cause"] == (
        "the cpu build of the plugin executes instructions this CPU does not have (it lacks avx2, fma): set "
        "wasi_nn_ggml_variant: noavx for this host (or let preflight choose with auto)"
    )


def test_an_illegal_instruction_without_cpu_facts_still_gives_the_fix():
    report = diagnose(-4)
    assert "the installed build of the plugin" in report["cause"]
    assert "lacks" not in report["cause"]


def test_a_model_load_failure_names_the_model_and_quotes_llama_cpp():
    stderr = (
        "[info] loading\n"
        "[error] [WASI-NN] GGML backend: gguf_init_from_file: invalid magic characters 'GGML'\n"
        "[error] [WASI-NN] GGML backend: Error: unable to init model.\n"
        "edgewasm-wasi-nn-probe: load_by_name failed: wasi-nn errno 1\n"
    )
    report = diagnose(10, stderr=stderr)
    assert report["step"] == "load_by_name"
    assert report["cause"].startswith(
        f"the GGML backend could not load the model {MODEL} (wasi-nn errno 1 (invalid_argument)): "
    )
    assert (
        "invalid magic characters 'GGML' | [error] [WASI-NN] GGML backend: Error: unable to init model."
        in report["cause"]
    )
    assert "[info] loading" not in report["cause"]
    assert "gguf_info reads its header" in report["cause"]


@pytest.mark.parametrize(
    ("rc", "step", "errno", "name"),
    [
        (11, "init_execution_context", 5, "runtime_error"),
        (12, "set_input (metadata)", 1, "invalid_argument"),
        (13, "set_input (prompt)", 102, "prompt_too_long"),
        (14, "compute", 101, "context_full"),
        (15, "get_output", 7, "too_large"),
        (14, "compute", 999, "unknown"),
    ],
)
def test_each_later_step_is_named_with_its_errno(rc, step, errno, name):
    stderr = f"edgewasm-wasi-nn-probe: {step} failed: wasi-nn errno {errno}\n"
    report = diagnose(rc, stderr=stderr)
    assert report["step"] == step
    assert report["cause"].startswith(f"WASI-NN call {step} failed with wasi-nn errno {errno} ({name}): ")


def test_a_timeout_says_how_long_it_waited():
    report = diagnose(124, stderr="", timeout=120)
    assert (report["step"], report["cause"]) == (
        "run wasmedge",
        "the probe did not finish within 120 seconds (no output)",
    )


def test_any_other_exit_quotes_the_last_lines_of_stderr():
    stderr = "\n".join(f"line {i}" for i in range(20))
    report = diagnose(127, stderr=stderr)
    assert report["cause"] == "wasmedge exited with 127: " + " | ".join(f"line {i}" for i in range(12, 20))


def test_the_filter_adds_the_message_and_refuses_what_is_not_a_command_result():
    report = wasi_nn_probe_report(
        {"rc": 1, "stdout": "", "stderr": "unknown option: nn-preload"},
        host="agent1",
        plugin=PLUGIN,
        model=MODEL,
        plugin_exists=False,
    )
    assert report["message"] == (
        f"agent1: the WASI-NN self-test failed at load the WASI-NN plugin: {PLUGIN} does not exist: run the "
        "wasi_nn_ggml role (state=present) on this node."
    )
    with pytest.raises(AnsibleFilterError, match="registered result of the probe's command"):
        wasi_nn_probe_report("not a result", host="h", plugin=PLUGIN, model=MODEL)


def test_the_filter_names_an_option_it_does_not_know():
    with pytest.raises(AnsibleFilterError, match="unexpected keyword argument 'plugn'"):
        wasi_nn_probe_report({"rc": 0}, host="h", plugn=PLUGIN, model=MODEL)
