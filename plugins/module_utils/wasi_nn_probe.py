# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running the WASI-NN self-test probe (roles/wasi_nn_ggml/files/self_test/wasi_nn_probe.wat), and what it says.

The probe runs under ``wasmedge --nn-preload default:GGML:AUTO:<model>`` (``run``: the pods' environment only,
a timeout, bounded output, every byte that is not UTF-8 escaped); ``diagnose`` turns its exit status and
output into the failed step, the likely cause and the fix, from upstream's failure modes: a plugin WasmEdge did
not load ("unknown option: nn-preload" on the command line, "unknown import" for a module that imports
wasi_ephemeral_nn), a CPU without the instructions the plugin variant was built for (SIGILL), llama.cpp unable
to load the model, a WASI-NN call refusing its arguments ("Unknown tensor type").

Upstream's ``wasmedge`` writes its option errors and every log line (spdlog) to stdout, not stderr; llama.cpp's
own loader errors reach stderr on old builds only. So both streams are read. What they hold is untrusted
bytes: a model generates arbitrary bytes, and logs quote model metadata.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import contextlib
import os
import re
import selectors
import signal
import subprocess
import time

from ansible_collections.edgewasm.llamaedge.plugins.module_utils.release_catalog import CPU_VARIANT_X86_FLAGS

OK_PREFIX = "edgewasm-wasi-nn-probe: ok: "
_OK_LINE = re.compile(r"^([0-9]+) bytes, hex: ([0-9a-f]*)\Z")
# Bytes of each stream kept by ``run`` (the last ones: the verdict and the errors come at the end).
OUTPUT_LIMIT = 65536
# How much of a line or a tail goes into a message.
LINE_CHARS = 300
_ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
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
_UNKNOWN_TENSOR_TYPE = re.compile(r"Unknown tensor type ([0-9]+)")
TAIL_LINES = 8


def readable(data):
    """Text that is always valid UTF-8 from untrusted output: bytes, or text that may carry lone surrogates
    (how Python and Ansible decode bytes that are not UTF-8). Valid UTF-8 stays as it is; every other byte
    becomes a \\xNN escape."""
    if data is None:
        return ""
    if not isinstance(data, bytes):
        try:
            data = data.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            data = data.encode("utf-8", "backslashreplace")
    return data.decode("utf-8", "backslashreplace")


def _line(text):
    text = text.rstrip()
    return text if len(text) <= LINE_CHARS else text[:LINE_CHARS] + "... (%d characters)" % len(text)


def _tail(text, lines=TAIL_LINES):
    kept = [_line(line) for line in readable(text).splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def generated(ok_line):
    """The bytes the probe's ok line reports (``<n> bytes, hex: <hex>``), or None when it is malformed."""
    found = _OK_LINE.match(ok_line.strip())
    if not found or len(found.group(2)) % 2:
        return None
    data = binascii.unhexlify(found.group(2))
    return data if len(data) == int(found.group(1)) else None


def _quoted(data):
    """Bytes in double quotes: valid UTF-8 as text, control characters, backslashes and every byte that is not
    UTF-8 as \\xNN escapes."""
    out = []
    for char in data.decode("utf-8", "surrogateescape"):
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append("\\x%02x" % (code - 0xDC00))
        elif code < 0x20 or code == 0x7F or char == "\\":
            out.append("\\x%02x" % code)
        else:
            out.append(char)
    return '"%s"' % _line("".join(out))


def shown(data):
    """What a completion's bytes look like in a message: the text where it is valid UTF-8, else escaped."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "%d bytes, not valid UTF-8 (\\xNN escapes): %s" % (len(data), _quoted(data))
    return "%d bytes: %s" % (len(data), _quoted(data))


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
    elif cpu:
        # Upstream builds the cpu plugin with GGML_NATIVE on its CI runner: the four flags are a description of
        # that runner, not a list; the crash on this node is the proof.
        cause += (
            " although it has %s: upstream builds the plugin with GGML_NATIVE (-march=native) on its CI runner, "
            "which had more" % "/".join(f.upper() for f in CPU_VARIANT_X86_FLAGS)
        )
    return cause + ": set wasi_nn_ggml_variant: noavx for this host (or let preflight choose with auto)"


def _step_cause(code, errno, model, output):
    """``output``: both streams (the probe names its errno on stderr; WasmEdge logs on stdout)."""
    step = STEPS[code]
    errno_text = (
        "wasi-nn errno %s (%s)" % (errno, ERRNOS.get(errno, "unknown")) if errno is not None else "no errno"
    )
    if code == 10:
        log = " | ".join(_line(line.strip()) for line in output.splitlines() if _MODEL_LOG.search(line))
        return (
            "the GGML backend could not load the model %s (%s)%s: check that it is a complete GGUF file "
            "(edgewasm.llamaedge.gguf_info reads its header)"
        ) % (model, errno_text, ": " + log if log else "")
    kind = _UNKNOWN_TENSOR_TYPE.search(output)
    if kind:
        return (
            "WASI-NN call %s failed with %s: the plugin refused tensor type %s (%s): this WasmEdge and plugin "
            "build number tensor types differently from what the caller was built for (WasmEdge PR #4069); "
            "use the collection's probe, which sends a type every version accepts"
        ) % (step, errno_text, kind.group(1), _line(kind.group(0)))
    return "WASI-NN call %s failed with %s: %s" % (step, errno_text, _tail(output) or "no output")


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
    exists and which libraries it lacks; ``cpu_flags``: the CPU's flags). stdout and stderr are untrusted:
    bytes or text, any content."""
    report = {"ok": False, "step": None, "cause": None, "output": None, "output_bytes": None, "needs": []}
    stdout, stderr = readable(stdout), readable(stderr)
    both = stdout + "\n" + stderr
    ok_lines = [line for line in stdout.splitlines() if line.startswith(OK_PREFIX)]
    data = generated(ok_lines[-1][len(OK_PREFIX) :]) if ok_lines else None
    if rc == 0 and data is not None:
        report.update(ok=True, step="done", output=shown(data), output_bytes=len(data))
    elif rc == 0 and ok_lines:
        report.update(step="output", cause="the probe's ok line is malformed: %s" % _line(ok_lines[-1]))
    elif any(marker in both for marker in PLUGIN_NOT_LOADED):
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
            step=STEPS[rc], cause=_step_cause(rc, int(found.group(1)) if found else None, model, both)
        )
    elif rc == TIMED_OUT:
        report.update(
            step="run wasmedge",
            cause="the probe did not finish within %s seconds (%s)" % (timeout, _tail(both) or "no output"),
        )
    elif rc == 0:
        report.update(
            step="output", cause="the probe exited 0 without its ok line: %s" % (_tail(stdout) or "no output")
        )
    else:
        report.update(
            step="run wasmedge", cause="wasmedge exited with %s: %s" % (rc, _tail(both) or "no output")
        )
    return report


def message(report, host):
    """One line for a self-test result, naming the host and, for a failure, the step and the cause."""
    if report["ok"]:
        return "%s: the WASI-NN self-test ran a completion: %s" % (host, report["output"])
    return "%s: the WASI-NN self-test failed at %s: %s." % (host, report["step"], report["cause"])


def env_from_file(text):
    """The VAR=value lines of an environment file (as the wasmedge role writes it), in order; others ignored."""
    env = {}
    for raw in readable(text).splitlines():
        line = raw.strip()
        if _ENV_LINE.match(line):
            name, value = line.split("=", 1)
            env[name] = value
    return env


class _Tail(object):
    """The last ``limit`` bytes of a stream, and how many were dropped before them."""

    def __init__(self, limit):
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk):
        self.data += chunk
        extra = len(self.data) - self.limit
        if extra > 0:
            del self.data[:extra]
            self.dropped += extra

    def text(self):
        prefix = "[... %d bytes before this were dropped]\n" % self.dropped if self.dropped else ""
        return prefix + readable(bytes(self.data))


def _kill(process):
    with contextlib.suppress(OSError):
        os.killpg(process.pid, signal.SIGKILL)


def run(argv, env, cwd=None, timeout=120, limit=OUTPUT_LIMIT):
    """Run ``argv`` with exactly ``env``, in its own process group, killed after ``timeout`` seconds.

    Returns {"rc", "stdout", "stderr", "timed_out"}: rc 124 on a timeout (as coreutils' timeout), the
    negative signal number when a signal ended it; of each stream its last ``limit`` bytes as text that is
    always valid UTF-8. Raises OSError when argv[0] cannot be started.
    """
    process = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    streams = {process.stdout: _Tail(limit), process.stderr: _Tail(limit)}
    deadline = time.monotonic() + timeout
    timed_out = False
    with selectors.DefaultSelector() as selector:
        for stream in streams:
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                _kill(process)
                break
            for key, _events in selector.select(min(left, 1.0)):
                chunk = os.read(key.fileobj.fileno(), 65536)
                if chunk:
                    streams[key.fileobj].add(chunk)
                else:
                    selector.unregister(key.fileobj)
    try:
        rc = process.wait(timeout=max(deadline - time.monotonic(), 0) + 5)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(process)
        rc = process.wait()
    _kill(process)  # what it left behind in its group
    for stream in streams:
        stream.close()
    return {
        "rc": TIMED_OUT if timed_out else rc,
        "stdout": streams[process.stdout].text(),
        "stderr": streams[process.stderr].text(),
        "timed_out": timed_out,
    }
