"""STAND-IN llama-api-server.wasm (edgewasm stand-in, not LlamaEdge) for the lab's backend pods.

In the lab, the `wasmedge-nn` runtime class runs containerd's runc shim under the WasmEdge shim's name,
so a backend pod's command `llama-api-server.wasm` runs this program as an ordinary Linux process. It
takes llama-api-server's arguments and answers as it does (balancer/tests/standin_backend.py: /v1/models
with the model name from --model-name, /v1/chat/completions as JSON or SSE, /echo) on 0.0.0.0:--port.

Before it listens it checks what WasmEdge would need, and exits 1 naming what is missing:
- WASMEDGE_WASINN_PRELOAD (alias:backend:target:path) names a readable file (the model);
- WASMEDGE_PLUGIN_PATH's directories hold a readable libwasmedgePluginWasiNN.so;
- every file or directory bind-mounted into the container (the plugin's libraries, from the hostPath
  mounts wasmedge_plugin_deps resolved on the node) is there and readable.
A pod whose mounts do not match its node therefore never becomes ready, as the real one would not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from pathlib import Path

from standin_backend import StandinBackend

PLUGIN = "libwasmedgePluginWasiNN.so"
# Mounts every container has (the runtime's and the kubelet's own), not the pod spec's hostPath volumes.
RUNTIME_MOUNTS = ("/", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/dev/termination-log")
RUNTIME_PREFIXES = ("/proc", "/sys", "/dev", "/run/secrets", "/var/run/secrets")


def readable(path: Path) -> str | None:
    """None when path can be read (a directory listed, a file's first byte read), else why not."""
    try:
        if path.is_dir():
            os.listdir(path)
        else:
            with path.open("rb") as handle:
                handle.read(1)
    except OSError as err:
        return f"{path}: {err.strerror or err}"
    return None


def bind_mounts(mountinfo: str) -> list[Path]:
    """The mount points of the pod's own volumes, from /proc/self/mountinfo."""
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        if point in RUNTIME_MOUNTS or point.startswith(RUNTIME_PREFIXES):
            continue
        points.append(Path(point))
    return points


def problems(env: dict[str, str], mountinfo: str) -> list[str]:
    found = []
    preload = env.get("WASMEDGE_WASINN_PRELOAD", "")
    fields = preload.split(":", 3)
    if len(fields) != 4 or not fields[3]:
        found.append(f"WASMEDGE_WASINN_PRELOAD={preload!r} is not alias:backend:target:path")
    elif problem := readable(Path(fields[3])):
        found.append(f"the model of WASMEDGE_WASINN_PRELOAD: {problem}")
    plugin_dirs = [d for d in env.get("WASMEDGE_PLUGIN_PATH", "").split(":") if d]
    if not plugin_dirs:
        found.append("WASMEDGE_PLUGIN_PATH is not set: WasmEdge would not find the WASI-NN plugin")
    elif not any((Path(d) / PLUGIN).is_file() for d in plugin_dirs):
        found.append(f"no {PLUGIN} in WASMEDGE_PLUGIN_PATH ({':'.join(plugin_dirs)})")
    for point in bind_mounts(mountinfo):
        if problem := readable(point):
            found.append(f"mounted {problem}")
    return found


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llama-api-server.wasm")
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--port", type=int, default=8080)
    known, _rest = parser.parse_known_args(argv)  # --prompt-template, --ctx-size, ... as the real one takes
    return known


async def serve(models: list[str], port: int) -> None:
    backend = StandinBackend(name=socket.gethostname(), models=models)
    await backend.start(port=port, host="0.0.0.0")  # noqa: S104 - a pod's server, as llama-api-server's
    print(f"llama-api-server stand-in: serving {', '.join(models)} on :{port}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str]) -> int:
    args = arguments(argv)
    found = problems(dict(os.environ), Path("/proc/self/mountinfo").read_text())
    if found:
        for problem in found:
            print(f"llama-api-server stand-in: {problem}", file=sys.stderr)
        return 1
    asyncio.run(serve(args.model_name.split(","), args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
