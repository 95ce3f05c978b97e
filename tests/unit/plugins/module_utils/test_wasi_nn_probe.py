"""The self-test's verdict: every failure the probe can show maps to its step, cause and fix."""

from __future__ import annotations

import json
import sys
import time

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.edgewasm.llamaedge.plugins.filter.self_test import wasi_nn_probe_report
from ansible_collections.edgewasm.llamaedge.plugins.module_utils import wasi_nn_probe

PLUGIN = "/opt/wasmedge/0.14.1/plugin/libwasmedgePluginWasiNN.so"
MODEL = "/tmp/edgewasm-self-test.x/self-test.gguf"


def diagnose(rc, stdout="", stderr="", **context):
    return wasi_nn_probe.diagnose(rc, stdout, stderr, PLUGIN, MODEL, **context)


def test_a_completion_is_ok():
    report = diagnose(0, f"edgewasm-wasi-nn-probe: ok: 4 bytes, hex: {b' hi!'.hex()}\n")
    assert report == {
        "ok": True,
        "step": "done",
        "cause": None,
        "output": '4 bytes: " hi!"',
        "output_bytes": 4,
        "needs": [],
    }
    assert (
        wasi_nn_probe.message(report, "n1") == 'n1: the WASI-NN self-test ran a completion: 4 bytes: " hi!"'
    )


def test_generated_bytes_that_are_not_utf8_are_shown_escaped_and_the_report_is_valid_json():
    """What real llama.cpp gave for the random model: arbitrary bytes (before: a result ansible-core refused)."""
    data = bytes([0x8C, 0x20, 0xE6, 0x97, 0xA5, 0xE6, 0x97, 0x5C, 0x0A, 0xFF])
    report = diagnose(0, f"edgewasm-wasi-nn-probe: ok: {len(data)} bytes, hex: {data.hex()}\n")
    assert report["ok"] is True
    assert (
        report["output"]
        == '10 bytes, not valid UTF-8 (\\xNN escapes): "\\x8c \u65e5\\xe6\\x97\\x5c\\x0a\\xff"'
    )
    json.dumps(report).encode("utf-8")  # strict: no lone surrogate anywhere


@pytest.mark.parametrize(
    "line",
    ["ok: 3 bytes, hex: 4142", "ok: 1 bytes, hex: 4", "ok: 2 bytes, hex: zz41", "ok: 2 bytes:  hi"],
    ids=["count-mismatch", "odd-hex", "not-hex", "raw-bytes"],
)
def test_a_malformed_ok_line_is_no_completion(line):
    report = diagnose(0, f"edgewasm-wasi-nn-probe: {line}\n")
    assert (report["ok"], report["step"]) == (False, "output")
    assert "ok line is malformed" in report["cause"]


def test_output_that_is_not_utf8_never_reaches_a_message_raw():
    """Ansible hands undecodable bytes over as lone surrogates; log lines may carry any byte."""
    stdout = "[error] [WASI-NN] GGML backend: Error: unable to init model \udc8c\udcff.\n"
    stderr = b"gguf_init_from_file: invalid magic characters '\x8c\xffGG'\n"
    report = diagnose(10, stdout, stderr)
    text = json.dumps(report, ensure_ascii=False)
    text.encode("utf-8")
    assert "unable to init model \\\\x8c\\\\xff." in text
    assert "invalid magic characters '\\\\x8c\\\\xffGG'" in text


def test_a_plugin_not_loaded_is_found_on_stdout_where_upstream_prints_it():
    """upstream's wasmedge prints option errors and its log on STDOUT; before, only stderr was read."""
    report = diagnose(1, stdout="unknown option: nn-preload\n", stderr="")
    assert (report["step"], report["needs"]) == ("load the WASI-NN plugin", ["plugin_deps"])
    spdlog = "[2026-12-06 10:00:00.000] [error] instantiation failed: unknown import, Code: 0x302\n"
    assert diagnose(1, stdout=spdlog)["step"] == "load the WASI-NN plugin"


def test_an_unknown_tensor_type_is_named():
    stdout = "[2026-12-06 10:00:00.000] [error] [WASI-NN] Unknown tensor type 2.\n"
    stderr = "edgewasm-wasi-nn-probe: set_input (metadata) failed: wasi-nn errno 1\n"
    report = diagnose(12, stdout, stderr)
    assert report["step"] == "set_input (metadata)"
    assert report["cause"].startswith(
        "WASI-NN call set_input (metadata) failed with wasi-nn errno 1 (invalid_argument): the plugin refused "
        "tensor type 2 (Unknown tensor type 2)"
    )


def test_run_keeps_the_tail_of_each_stream_and_escapes_bytes(tmp_path):
    script = (
        "import os, sys; os.write(1, b'x' * 300000 + b'\\xff end'); os.write(2, b'err\\x8c'); sys.exit(3)"
    )
    result = wasi_nn_probe.run(
        [sys.executable, "-c", script], {"PATH": "/usr/bin:/bin"}, timeout=30, limit=100
    )
    assert (result["rc"], result["timed_out"]) == (3, False)
    assert result["stdout"].startswith("[... 299905 bytes before this were dropped]\n")
    assert result["stdout"].endswith("x\\xff end")
    assert result["stderr"] == "err\\x8c"


def test_run_kills_the_whole_group_at_the_timeout(tmp_path):
    marker = tmp_path / "survived"
    script = (
        f"import subprocess, time; subprocess.Popen(['sh', '-c', 'sleep 3; touch {marker}']); time.sleep(60)"
    )
    result = wasi_nn_probe.run([sys.executable, "-c", script], {"PATH": "/usr/bin:/bin"}, timeout=1)
    assert (result["rc"], result["timed_out"]) == (124, True)
    time.sleep(3.5)
    assert not marker.exists()


def test_run_passes_exactly_the_environment_given(tmp_path):
    env = wasi_nn_probe.env_from_file(
        b"# comment\nWASMEDGE_PLUGIN_PATH=/opt/p\n  LD_LIBRARY_PATH=/opt/l  \nexport X=1\nnot a line\n"
    )
    assert env == {"WASMEDGE_PLUGIN_PATH": "/opt/p", "LD_LIBRARY_PATH": "/opt/l"}
    env["PATH"] = "/usr/bin:/bin"
    result = wasi_nn_probe.run(["env"], env, timeout=30)
    assert sorted(result["stdout"].splitlines()) == [
        "LD_LIBRARY_PATH=/opt/l",
        "PATH=/usr/bin:/bin",
        "WASMEDGE_PLUGIN_PATH=/opt/p",
    ]


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


def test_an_illegal_instruction_on_a_cpu_with_all_four_flags_is_still_the_verdict():
    """The catalog's flags describe upstream's GGML_NATIVE runner; only running the plugin proves a node."""
    report = diagnose(-4, variant="cpu", cpu={"avx": True, "avx2": True, "fma": True, "f16c": True})
    assert report["step"] == "compute (illegal instruction)"
    assert "although it has AVX/AVX2/FMA/F16C: upstream builds the plugin with GGML_NATIVE" in report["cause"]
    assert report["cause"].endswith(
        "set wasi_nn_ggml_variant: noavx for this host (or let preflight choose with auto)"
    )


def test_an_illegal_instruction_without_cpu_facts_still_gives_the_fix():
    report = diagnose(-4)
    assert "the installed build of the plugin" in report["cause"]
    assert "lacks" not in report["cause"]


def test_a_model_load_failure_names_the_model_and_quotes_llama_cpp():
    """b3651: llama.cpp's line on stderr, the plugin's on stdout (the verdict reads both; stdout first)."""
    stdout = "[info] loading\n[error] [WASI-NN] GGML backend: Error: unable to init model.\n"
    stderr = (
        "gguf_init_from_file: invalid magic characters 'GGML'\n"
        "edgewasm-wasi-nn-probe: load_by_name failed: wasi-nn errno 1\n"
    )
    report = diagnose(10, stdout, stderr)
    assert report["step"] == "load_by_name"
    assert report["cause"].startswith(
        f"the GGML backend could not load the model {MODEL} (wasi-nn errno 1 (invalid_argument)): "
    )
    assert (
        "[error] [WASI-NN] GGML backend: Error: unable to init model. | gguf_init_from_file: invalid magic "
        "characters 'GGML'" in report["cause"]
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
