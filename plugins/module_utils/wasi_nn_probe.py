# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a run of the WASI-NN self-test probe (roles/wasi_nn_ggml/files/self_test/wasi_nn_probe.wat) says.

The probe runs under ``wasmedge --nn-preload default:GGML:AUTO:<model>``; ``diagnose`` turns its exit
status and output into the failed step, the likely cause and the fix, from upstream's failure modes
(../shared/reference/upstream-facts.md): a plugin WasmEdge did not load ("unknown option: nn-preload" on
the command line, "unknown import" for a module that imports wasi_ephemeral_nn), a CPU without the
instructions the plugin variant was built for (SIGILL), llama.cpp unable to load the model.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.edgewasm.llamaedge.plugins.module_utils.release_catalog import CPU_VARIANT_X86_FLAGS

OK_PREFIX = "edgewasm-wasi-nn-probe: ok: "
# The probe's exit code for each WASI-NN call it makes.
STEPS = {
    10: "load_by_name",
    11: "init_execution_context",
    12: "set_input (metadata)",
    13: "set_input (prompt)",
    14: "compute",
    15: "get_output",
}
# WasmEdge's WASI-NN errno values.
ERRNOS = {
    1: "invalid_argument",
    2: "invalid_encoding",
    3: "missing_memory",
    4: "busy",
    5: "runtime_error",
    6: "unsupported_operation",
    7: "too_large",
    8: "not_found",
    100: "end_of_sequence",
    101: "context_full",
    102: "prompt_too_long",
    103: "model_not_found",
}
PLUGIN_NOT_LOADED = ("unknown option: nn-preload", "unknown import")
SIGILL = 4
TIMED_OUT = 124  # coreutils timeout
_ERRNO = re.compile(r"failed: wasi-nn errno (\d+)")
_MODEL_LOG = re.compile(r"gguf|llama_model_load|unable to init model|not a GGUF|No such file", re.IGNORECASE)
TAIL_LINES = 8


def _tail(text, lines=TAIL_LINES):
    kept = [line.rstrip() for line in (text or "").splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def _library(missing):
    """A missing library as the resolver reports it (name and chain), or as a plain name."""
    if isinstance(missing, dict):
        chain = missing.get("chain") or []
        return "%s (%s)" % (missing.get("name"), " -> ".join(chain)) if chain else str(missing.get("name"))
    return str(missing)


def _plugin_cause(plugin, plugin_exists, missing_libraries, env_file):
    if plugin_exists is False:
        return "%s does not exist: run the wasi_nn_ggml role (state=present) on this node" % plugin
    if missing_libraries:
        return "%s is there, but libraries it needs are missing on this node: %s" % (
            plugin,
            "; ".join(_library(item) for item in missing_libraries),
        )
    return (
        "%s is there and its libraries resolve, so WasmEdge did not look for it there: check "
        "WASMEDGE_PLUGIN_PATH in %s, and that the plugin was built for this WasmEdge version"
    ) % (plugin, env_file or "the environment file")


def _sigill_cause(variant, cpu):
    lacking = [flag for flag in CPU_VARIANT_X86_FLAGS if cpu and cpu.get(flag) is False]
    cause = "the %s build of the plugin executes instructions this CPU does not have" % (
        variant or "installed"
    )
    if lacking:
        cause += " (it lacks %s)" % ", ".join(lacking)
    return cause + ": set wasi_nn_ggml_variant: noavx for this host (or let preflight choose with auto)"


def _step_cause(code, errno, model, stderr):
    step = STEPS[code]
    errno_text = (
        "wasi-nn errno %s (%s)" % (errno, ERRNOS.get(errno, "unknown")) if errno is not None else "no errno"
    )
    if code == 10:
        log = " | ".join(line.strip() for line in (stderr or "").splitlines() if _MODEL_LOG.search(line))
        return (
            "the GGML backend could not load the model %s (%s)%s: check that it is a complete GGUF file "
            "(edgewasm.llamaedge.gguf_info reads its header)"
        ) % (model, errno_text, ": " + log if log else "")
    return "WASI-NN call %s failed with %s: %s" % (step, errno_text, _tail(stderr) or "no output")


def diagnose(
    rc,
    stdout,
    stderr,
    plugin,
    model,
    variant=None,
    plugin_exists=None,
    missing_libraries=None,
    cpu=None,
    env_file=None,
    timeout=None,
):
    """A report for the probe's run: ok, the failed step, the likely cause with its fix, the output, and
    ``needs``: what else to look at on the node to name the cause (``plugin_deps``: whether the plugin file
    exists and which libraries it lacks; ``cpu_flags``: the CPU's flags)."""
    report = {"ok": False, "step": None, "cause": None, "output": None, "needs": []}
    stdout, stderr = stdout or "", stderr or ""
    ok_lines = [line for line in stdout.splitlines() if line.startswith(OK_PREFIX)]
    if rc == 0 and ok_lines:
        report.update(ok=True, step="done", output=ok_lines[-1][len(OK_PREFIX) :])
    elif any(marker in stderr for marker in PLUGIN_NOT_LOADED):
        report.update(
            step="load the WASI-NN plugin",
            needs=["plugin_deps"],
            cause=_plugin_cause(plugin, plugin_exists, missing_libraries, env_file),
        )
    elif rc in (-SIGILL, 128 + SIGILL):
        report.update(
            step="compute (illegal instruction)", needs=["cpu_flags"], cause=_sigill_cause(variant, cpu)
        )
    elif rc in STEPS:
        found = _ERRNO.search(stderr)
        report.update(
            step=STEPS[rc], cause=_step_cause(rc, int(found.group(1)) if found else None, model, stderr)
        )
    elif rc == TIMED_OUT:
        report.update(
            step="run wasmedge",
            cause="the probe did not finish within %s seconds (%s)" % (timeout, _tail(stderr) or "no output"),
        )
    elif rc == 0:
        report.update(
            step="output", cause="the probe exited 0 without its ok line: %s" % (_tail(stdout) or "no output")
        )
    else:
        report.update(
            step="run wasmedge", cause="wasmedge exited with %s: %s" % (rc, _tail(stderr) or "no output")
        )
    return report


def message(report, host):
    """One line for a self-test result, naming the host and, for a failure, the step and the cause."""
    if report["ok"]:
        return "%s: the WASI-NN self-test ran a completion: %s" % (host, report["output"])
    return "%s: the WASI-NN self-test failed at %s: %s." % (host, report["step"], report["cause"])
