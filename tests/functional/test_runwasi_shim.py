"""WebAssembly pods through a runwasi shim under Debian's real containerd (1.6, CRI), as kubelet drives it.

The shim is the STAND-IN containerd-shim-wasmedge-v1 of tests/doubles/wasmedge_standin: runwasi's own shim
library (crate containerd-shim-wasm, youki's libcontainer running each container) with the stand-in engine in
place of WasmEdge, whose GGML backend is real llama.cpp. The wasm images are built by the collection's own
image code (module_utils/wasm_image.py) and imported with ctr. Each pod gets the WASI-NN plugin, the model and
the variables the collection's manifests give (WASMEDGE_PLUGIN_PATH, WASMEDGE_WASINN_PRELOAD) as mounts at
identical paths: the wasm runs inside the container, so what is not mounted is not there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import private_containerd
import pytest
import requests
from cri_api.v1 import api_pb2 as cri
from cri_api.v1.api_pb2_grpc import RuntimeServiceStub
from doubles import cri_runtime, elf_builders, release_mirror, wasmedge_tree

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import wasm_image

pytestmark = pytest.mark.slow
PAUSE = "localhost/edgewasm-standin-pause:1"
PROBE_IMAGE = "localhost/edgewasm-test-probe"
SERVER_IMAGE = "localhost/edgewasm-test-stock-server"
ASSETS = wasmedge_tree.ROOT / "roles/wasi_nn_ggml/files/self_test"
SHIM = "containerd-shim-wasmedge-v1"
PLUGIN = "libwasmedgePluginWasiNN.so"


def config(root: Path, version: int) -> str:
    """private_containerd's config with the CRI plugin's sandbox image, runc and the wasmedge-nn handler:
    version 2 (Debian's containerd 1.6, k3s before v1.31.6) or 3 (containerd 2, the lab's)."""
    base = private_containerd.config(root, version)
    if version == 2:
        # The base ends in the CRI plugin's table: these keys continue it.
        return f"""{base}  sandbox_image = "{PAUSE}"
  restrict_oom_score_adj = true
[plugins."io.containerd.grpc.v1.cri".cni]
  conf_dir = "{root}/cni"
  bin_dir = "{root}/cni-bin"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmedge-nn]
  runtime_type = "io.containerd.wasmedge.v1"
"""
    return f"""{base}[plugins.'io.containerd.grpc.v1.cri']
  stream_server_port = "0"
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "{PAUSE}"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
[plugins.'io.containerd.cri.v1.runtime'.cni]
  conf_dir = "{root}/cni"
  bin_dir = "{root}/cni-bin"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.'runc']
  runtime_type = "io.containerd.runc.v2"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.'wasmedge-nn']
  runtime_type = "io.containerd.wasmedge.v1"
"""


def shim_binary() -> Path:
    """The shim setup.sh built beside the stand-in CLI."""
    return wasmedge_tree.engine_build().with_name(SHIM)


def import_image(ctr: list[str], root: Path, name: str, wasm: bytes, entrypoint: str) -> str:
    image = wasm_image.build(wasm, name, "1", entrypoint=entrypoint)
    archive = root / f"{entrypoint}.tar"
    archive.write_bytes(image["archive"])
    ctr = [*ctr, "images", "import", "--all-platforms"]
    subprocess.run([*ctr, str(archive)], check=True, capture_output=True)
    return image["reference"]


@pytest.fixture(scope="module", params=[2, 3], ids=["containerd-1.6", "containerd-2"])
def shim(request, tmp_path_factory):
    version = request.param
    binary, ctr_binary = ("containerd", "ctr")
    if version == 3:
        binary, ctr_binary = (
            str(private_containerd.CONTAINERD2 / "containerd"),
            str(private_containerd.CONTAINERD2 / "ctr"),
        )
    if os.geteuid() != 0 or shutil.which(binary) is None:
        pytest.fail(
            f"this test needs root and {binary} (scripts/setup.sh installs Debian's and builds containerd 2)"
        )
    root = Path(tmp_path_factory.mktemp("shim", numbered=True))
    (root / "bin").mkdir()
    shutil.copyfile(shim_binary(), root / "bin" / SHIM)
    (root / "bin" / SHIM).chmod(0o755)
    (root / "config.toml").write_text(config(root, version))
    env = dict(os.environ, PATH=f"{root / 'bin'}:{os.environ['PATH']}")
    log = (root / "containerd.log").open("w")
    proc = subprocess.Popen([binary, "--config", str(root / "config.toml")], stdout=log, stderr=log, env=env)
    sock = root / "c.sock"
    for _attempt in range(100):
        if sock.exists():
            break
        time.sleep(0.1)
    ctr = [ctr_binary, "--address", str(sock), "-n", "k8s.io"]
    pause = cri_runtime.build_image(root / "pause", PAUSE)
    subprocess.run([*ctr, "images", "import", str(pause)], check=True, capture_output=True)
    release_mirror.build_llamaedge(root / "mirror", "0.28.1")
    images = {
        "server": import_image(
            ctr,
            root,
            "localhost/edgewasm-test-server",
            wasmedge_tree.guest_build().read_bytes(),
            "llama-api-server.wasm",
        ),
        "probe": import_image(
            ctr, root, PROBE_IMAGE, (ASSETS / "wasi_nn_probe.wasm").read_bytes(), "wasi_nn_probe.wasm"
        ),
        "stock": import_image(
            ctr,
            root,
            SERVER_IMAGE,
            (root / "mirror" / "0.28.1" / "llama-api-server.wasm").read_bytes(),
            "llama-api-server.wasm",
        ),
    }
    channel = grpc.insecure_channel(f"unix://{sock}")
    stub = RuntimeServiceStub(channel)
    pods: list[str] = []
    yield {"stub": stub, "pods": pods, "root": root, "images": images, "log": root / "containerd.log"}
    for pod in pods:
        stub.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod))
        stub.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod))
    channel.close()
    proc.terminate()
    proc.wait(timeout=30)
    log.close()
    private_containerd.unmount_below(root)


@pytest.fixture(scope="module")
def wasmedge(shim) -> dict[str, Path]:
    """WasmEdge 0.14.1 (the version runwasi v0.6.0 embeds) with the plugin, and the role's test model."""
    tree = wasmedge_tree.build(shim["root"] / "wasmedge" / "0.14.1", "0.14.1", runner=False)
    model = shim["root"] / "models" / "self-test.gguf"
    model.parent.mkdir()
    shutil.copyfile(ASSETS / "self-test.gguf", model)
    return {**tree, "model": model}


def start_pod(shim, image: str, env: dict[str, str], mounts: list[Path], args: list[str] = ()) -> dict:
    """A pod with one container of ``image`` (``args`` after its entrypoint) through the wasmedge-nn handler,
    on the node's network, ``mounts`` read-only at identical paths; started."""
    stub = shim["stub"]
    name = f"wasm-{uuid.uuid4().hex[:8]}"
    logs = shim["root"] / "logs" / name
    logs.mkdir(parents=True)
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, uid=str(uuid.uuid4()), namespace="edgewasm-test"),
        log_directory=str(logs),
        linux=cri.LinuxPodSandboxConfig(
            security_context=cri.LinuxSandboxSecurityContext(
                namespace_options=cri.NamespaceOption(network=cri.NODE, pid=cri.CONTAINER, ipc=cri.POD)
            )
        ),
    )
    pod = stub.RunPodSandbox(
        cri.RunPodSandboxRequest(config=config, runtime_handler="wasmedge-nn")
    ).pod_sandbox_id
    shim["pods"].append(pod)
    container = stub.CreateContainer(
        cri.CreateContainerRequest(
            pod_sandbox_id=pod,
            sandbox_config=config,
            config=cri.ContainerConfig(
                metadata=cri.ContainerMetadata(name="wasm"),
                image=cri.ImageSpec(image=image),
                args=list(args),
                envs=[cri.KeyValue(key=key, value=value) for key, value in env.items()],
                mounts=[cri.Mount(container_path=str(p), host_path=str(p), readonly=True) for p in mounts],
                log_path="wasm.log",
            ),
        )
    ).container_id
    stub.StartContainer(cri.StartContainerRequest(container_id=container))
    return {"pod": pod, "container": container, "logs": logs}


def wait_exit(shim, started: dict, timeout: float = 120) -> dict:
    """Wait for the container to exit: its exit code, reason and log lines (CRI log format)."""
    stub = shim["stub"]
    deadline = time.monotonic() + timeout
    while True:
        request = cri.ContainerStatusRequest(container_id=started["container"])
        status = stub.ContainerStatus(request).status
        if status.state == cri.CONTAINER_EXITED or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status.state == cri.CONTAINER_EXITED, shim["log"].read_text()[-3000:]
    log = started["logs"] / "wasm.log"
    lines = log.read_text(errors="backslashreplace").splitlines() if log.exists() else []
    # CRI log lines: "<time> <stream> <tag> <text>".
    parsed = [line.split(" ", 3) for line in lines]
    return {
        "exit_code": status.exit_code,
        "reason": status.reason,
        "stdout": [p[3] for p in parsed if len(p) == 4 and p[1] == "stdout"],
        "stderr": [p[3] for p in parsed if len(p) == 4 and p[1] == "stderr"],
    }


def run_pod(shim, image: str, env: dict[str, str], mounts: list[Path]) -> dict:
    """start_pod, then wait_exit."""
    return wait_exit(shim, start_pod(shim, image, env, mounts))


def probe_env(wasmedge) -> dict[str, str]:
    return {
        "WASMEDGE_PLUGIN_PATH": str(wasmedge["plugin_dir"]),
        "WASMEDGE_WASINN_PRELOAD": f"default:GGML:AUTO:{wasmedge['model']}",
    }


def test_the_probe_runs_llama_cpp_in_a_wasm_pod(shim, wasmedge):
    """The plugin directory and the model mounted: the shim loads the plugin inside the container, preloads
    the model from WASMEDGE_WASINN_PRELOAD, and llama.cpp generates tokens (printed as hex)."""
    result = run_pod(
        shim, shim["images"]["probe"], probe_env(wasmedge), [wasmedge["plugin_dir"], wasmedge["model"]]
    )
    assert result["exit_code"] == 0, result
    ok = [line for line in result["stdout"] if line.startswith("edgewasm-wasi-nn-probe: ok: ")]
    assert ok and " bytes, hex: " in ok[0], result


def test_a_plugin_whose_library_is_not_mounted_is_an_unknown_import(shim, tmp_path):
    """A CUDA build of the plugin needs libcudart.so.12: without it in the container, dlopen fails there, the
    plugin is not loaded, and the module's wasi_ephemeral_nn imports stay unresolved (upstream's message);
    with the library beside the plugin (its RUNPATH is $ORIGIN) the same pod runs."""
    tree = wasmedge_tree.build(shim["root"] / "cuda" / "0.14.1", "0.14.1", cuda=True, runner=False)
    model = shim["root"] / "models" / "cuda.gguf"
    model.parent.mkdir(exist_ok=True)
    shutil.copyfile(ASSETS / "self-test.gguf", model)
    env = {
        "WASMEDGE_PLUGIN_PATH": str(tree["plugin_dir"]),
        "WASMEDGE_WASINN_PRELOAD": f"default:GGML:AUTO:{model}",
    }
    failed = run_pod(shim, shim["images"]["probe"], env, [tree["plugin_dir"], model])
    assert failed["exit_code"] == 137, failed
    assert any(
        "[error] instantiation failed: unknown import, Code: 0x302" in line for line in failed["stdout"]
    ), failed
    assert any('When linking module: "wasi_ephemeral_nn"' in line for line in failed["stdout"]), failed
    elf_builders.shared_lib(tree["plugin_dir"] / "libcudart.so.12", soname="libcudart.so.12")
    ran = run_pod(shim, shim["images"]["probe"], env, [tree["plugin_dir"], model])
    assert ran["exit_code"] == 0, ran


def test_a_module_importing_wasi_logging_fails_under_the_shim(shim, wasmedge):
    """runwasi's shim registers WASI and wasi_nn, not wasi:logging: a stock llama-api-server.wasm (the
    mirror's stand-in has its imports) fails to instantiate, as on a real node; the CLI runs it
    (tests/functional/test_wasi_nn_self_test.py)."""
    result = run_pod(
        shim, shim["images"]["stock"], probe_env(wasmedge), [wasmedge["plugin_dir"], wasmedge["model"]]
    )
    assert result["exit_code"] == 137, result
    assert any(
        "[error] instantiation failed: unknown import, Code: 0x302" in line for line in result["stdout"]
    ), result
    assert any('When linking module: "wasi:logging/logging"' in line for line in result["stdout"]), result


def test_a_model_that_is_not_mounted_fails_with_llama_cpps_own_error(shim, wasmedge):
    """WASMEDGE_WASINN_PRELOAD names a path the container cannot see: llama.cpp cannot open it there (its own
    message, on stderr from 0.14.1's b3651 plugin) and the plugin cannot init the model."""
    result = run_pod(shim, shim["images"]["probe"], probe_env(wasmedge), [wasmedge["plugin_dir"]])
    assert result["exit_code"] == 10, result  # the probe's load_by_name step
    assert any(
        "[error] [WASI-NN] GGML backend: Error: unable to init model." in line for line in result["stdout"]
    )
    opened = f"failed to open GGUF file '{wasmedge['model']}' (No such file or directory)"
    assert any(line.startswith("gguf_init_from_file") and opened in line for line in result["stderr"]), result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_stand_in_server_serves_completions_from_a_wasm_pod_and_its_death_is_seen(shim, wasmedge):
    """The stand-in llama-api-server.wasm (no wasi:logging import, as a site's runwasi build must be) listens
    through the shim's socket functions inside the container and answers with llama.cpp's tokens; its
    process killed, the runtime reports the container exited (what kubelet then restarts)."""
    port = free_port()
    started = start_pod(
        shim,
        shim["images"]["server"],
        probe_env(wasmedge),
        [wasmedge["plugin_dir"], wasmedge["model"]],
        ["--model-name", "tiny", "--port", str(port)],
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            break
        time.sleep(0.2)
    chat = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
    answer = requests.post(f"{url}/v1/chat/completions", json=chat, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]
    status = shim["stub"].ContainerStatus(
        cri.ContainerStatusRequest(container_id=started["container"], verbose=True)
    )
    assert status.status.state == cri.CONTAINER_RUNNING
    pid = json.loads(status.info["info"])["pid"]
    os.kill(pid, signal.SIGKILL)
    exited = wait_exit(shim, started, timeout=30)
    assert exited["exit_code"] == 137, exited
    assert any("serving tiny on 0.0.0.0:" in line for line in exited["stdout"]), exited
