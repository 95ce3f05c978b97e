"""Debian's real containerd (1.6, config version 2) runs pods through the runtimes containerd_wasm declares.

The role declares its runtimes for a plain containerd (mode containerd) in a temporary containerd
configuration; a private containerd (own root, state and sockets under tmp_path) is started with it
and driven through CRI, as a kubelet would. The runtimes behind the handlers are stand-ins
(tests/doubles/cri_runtime.py): a crun that logs and runs runc, and runc's v2 shim installed under
the WasmEdge shim's name. This proves the handler names, BinaryName and the pod annotations reach
the runtime; it does not run WebAssembly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import private_containerd
import pytest
from containerd_wasm_vars import runtime_binaries, variables
from cri_api.v1 import api_pb2 as cri
from cri_api.v1.api_pb2_grpc import RuntimeServiceStub
from doubles import cri_runtime
from doubles.k3s import render_containerd_template
from site_runner import local_inventory

pytestmark = pytest.mark.slow
PLAYBOOK = "tests/functional/playbooks/containerd_wasm.yml"
IMAGE = "localhost/edgewasm-standin-pause:1"
NODE = cri.NamespaceOption(network=cri.NODE, pid=cri.CONTAINER, ipc=cri.POD)


def base_config(root: Path) -> str:
    return f"""version = 2
root = "{root}/root"
state = "{root}/state"

[grpc]
  address = "{root}/c.sock"

[ttrpc]
  address = "{root}/c.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".cni]
  conf_dir = "{root}/cni"
  bin_dir = "{root}/cni-bin"
"""


@pytest.fixture(scope="module")
def containerd(tmp_path_factory):
    if os.geteuid() != 0 or shutil.which("containerd") is None:
        pytest.fail("this test needs root and Debian's containerd (scripts/setup.sh installs it)")
    root = Path(tmp_path_factory.mktemp("ctrd", numbered=True))
    standins = cri_runtime.install(root / "bin", root / "log")
    (root / "containerd").mkdir()
    config = root / "containerd" / "config.toml"
    config.write_text(base_config(root))
    yield {"root": root, "config": config, **standins}
    private_containerd.unmount_below(root)


@pytest.fixture(scope="module")
def runtime(containerd, run_site_module):
    root = containerd["root"]
    extra = {
        "containerd_wasm_mode": "containerd",
        "containerd_wasm_containerd_config": str(containerd["config"]),
        "containerd_wasm_systemd_cgroup": False,
        "containerd_wasm_restart": False,
        "containerd_wasm_plugin_path": "",
        "containerd_wasm_runtimes": [
            {
                "name": "wasmedge-nn",
                "runtime_type": "io.containerd.wasmedge.v1",
                "binary": str(containerd["shim"]),
            },
            {
                "name": "crun-wasm",
                "runtime_type": "io.containerd.runc.v2",
                "binary": str(containerd["crun"]),
                "pod_annotations": ["module.wasm.image/variant", "run.oci.handler"],
            },
        ],
    }
    result = run_site_module(local_inventory(["node1"], []), extra, playbook=PLAYBOOK)
    assert result.rc == 0, result.output
    env = dict(os.environ, PATH=f"{root / 'bin'}:{os.environ['PATH']}")
    log = (root / "containerd.log").open("w")
    proc = subprocess.Popen(
        ["containerd", "--config", str(containerd["config"])], stdout=log, stderr=log, env=env
    )
    sock = root / "c.sock"
    for _attempt in range(100):
        if sock.exists():
            break
        time.sleep(0.1)
    archive = cri_runtime.build_image(root / "image", IMAGE)
    subprocess.run(
        ["ctr", "--address", str(sock), "-n", "k8s.io", "images", "import", str(archive)],
        check=True,
        capture_output=True,
    )
    channel = grpc.insecure_channel(f"unix://{sock}")
    stub = RuntimeServiceStub(channel)
    pods: list[str] = []
    yield {"stub": stub, "pods": pods, "root": root, "log": root / "containerd.log"}
    for pod in pods:
        stub.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod))
        stub.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod))
    channel.close()
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def sandbox_config(name: str, annotations: dict[str, str]) -> cri.PodSandboxConfig:
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, uid=str(uuid.uuid4()), namespace="edgewasm-test"),
        annotations=annotations,
        linux=cri.LinuxPodSandboxConfig(
            security_context=cri.LinuxSandboxSecurityContext(namespace_options=NODE)
        ),
    )


def run_pod(runtime, name: str, handler: str, annotations: dict[str, str]) -> tuple[str, str]:
    stub = runtime["stub"]
    config = sandbox_config(name, annotations)
    pod = stub.RunPodSandbox(cri.RunPodSandboxRequest(config=config, runtime_handler=handler)).pod_sandbox_id
    runtime["pods"].append(pod)
    container = stub.CreateContainer(
        cri.CreateContainerRequest(
            pod_sandbox_id=pod,
            sandbox_config=config,
            config=cri.ContainerConfig(
                metadata=cri.ContainerMetadata(name="app"),
                image=cri.ImageSpec(image=IMAGE),
                linux=cri.LinuxContainerConfig(
                    security_context=cri.LinuxContainerSecurityContext(namespace_options=NODE)
                ),
            ),
        )
    ).container_id
    stub.StartContainer(cri.StartContainerRequest(container_id=container))
    return pod, container


def test_crun_wasm_handler_uses_binaryname_and_passes_listed_annotations(runtime):
    annotations = {"module.wasm.image/variant": "compat-smart", "other.example/unlisted": "dropped"}
    pod, container = run_pod(runtime, "crun", "crun-wasm", annotations)
    status = runtime["stub"].ContainerStatus(cri.ContainerStatusRequest(container_id=container)).status
    assert status.state == cri.CONTAINER_RUNNING, runtime["log"].read_text()[-3000:]
    log = runtime["root"] / "log"
    calls = (log / "calls").read_text()
    # containerd's runc v2 shim ran our BinaryName for the sandbox and the container.
    assert "--bundle" in calls and pod in calls and container in calls
    spec = json.loads((log / f"{container}.json").read_text())
    assert spec["annotations"]["module.wasm.image/variant"] == "compat-smart"
    assert "other.example/unlisted" not in spec["annotations"]  # pod_annotations is a filter
    sandbox_spec = json.loads((log / f"{pod}.json").read_text())
    assert sandbox_spec["annotations"]["module.wasm.image/variant"] == "compat-smart"


def test_wasmedge_nn_handler_starts_the_wasmedge_shim(runtime):
    pod, container = run_pod(runtime, "wasmedge", "wasmedge-nn", {})
    stub = runtime["stub"]
    assert (
        stub.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id=pod)).status.state
        == cri.SANDBOX_READY
    )
    status = stub.ContainerStatus(cri.ContainerStatusRequest(container_id=container)).status
    assert status.state == cri.CONTAINER_RUNNING, runtime["log"].read_text()[-3000:]
    # containerd started our binary for runtime_type io.containerd.wasmedge.v1, for this pod.
    shim = str(runtime["root"] / "bin" / "containerd-shim-wasmedge-v1")
    assert [args for args in command_lines() if args[0] == shim and pod in args], command_lines()


def command_lines() -> list[list[str]]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0]:
            found.append([a.decode(errors="replace") for a in args if a])
    return found


def test_undeclared_handler_is_refused(runtime):
    with pytest.raises(grpc.RpcError) as err:
        runtime["stub"].RunPodSandbox(
            cri.RunPodSandboxRequest(config=sandbox_config("nope", {}), runtime_handler="wasmedge-undeclared")
        )
    assert 'no runtime for "wasmedge-undeclared" is configured' in err.value.details()


K3S_BASE_V2 = Path(__file__).resolve().parents[1] / "doubles" / "k3s_containerd" / "base-v2.toml"


def test_containerd_1_6_loads_the_k3s_v2_template_with_our_runtimes(run_site, tmp_path):
    """k3s mode, config version 2 (k3s < 1.31.6): the template the role writes under k3s's data dir,
    completed with k3s's own base as k3s does, is loaded by Debian's real containerd 1.6, whose CRI
    status then lists our runtimes next to k3s's."""
    if os.geteuid() != 0 or shutil.which("containerd") is None:
        pytest.fail("this test needs root and Debian's containerd (scripts/setup.sh installs it)")
    runtime_binaries(tmp_path)
    extra = variables(tmp_path, containerd_wasm_k3s_version="v1.30.4+k3s1")
    result = run_site(local_inventory(["node1"], []), extra, playbook=PLAYBOOK)
    assert result.rc == 0, result.output
    template = (tmp_path / "k3s" / "agent" / "etc" / "containerd" / "config.toml.tmpl").read_text()
    # k3s's base, moved under tmp_path: its own root, state, socket, CNI directories (containerd creates
    # the conf dir) and no fixed stream port.
    base = (
        K3S_BASE_V2.read_text()
        .replace("/var/lib/rancher/k3s/agent/containerd", str(tmp_path / "root"))
        .replace("/var/lib/rancher/k3s", str(tmp_path / "k3s"))
        .replace("/run/k3s/containerd", str(tmp_path / "state"))
        .replace('stream_server_port = "10010"', 'stream_server_port = "0"')
    )
    config = tmp_path / "config.toml"
    config.write_text(render_containerd_template(template, base, systemd_cgroup=True))
    sock = tmp_path / "state" / "containerd.sock"
    with (tmp_path / "containerd.log").open("w") as log:
        proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=log)
    try:
        for _attempt in range(100):
            if sock.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert sock.exists(), (tmp_path / "containerd.log").read_text()[-3000:]
        with grpc.insecure_channel(f"unix://{sock}") as channel:
            status = RuntimeServiceStub(channel).Status(cri.StatusRequest(verbose=True), timeout=30)
        loaded = json.loads(status.info["config"])["containerd"]["runtimes"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert loaded["runc"]["runtimeType"] == "io.containerd.runc.v2"  # k3s's own, kept
    assert loaded["wasmedge-nn"]["runtimeType"] == "io.containerd.wasmedge.v1"
    assert loaded["crun-wasm"]["runtimeType"] == "io.containerd.runc.v2"
    assert loaded["crun-wasm"]["options"]["BinaryName"] == str(tmp_path / "bin" / "crun")
    assert loaded["crun-wasm"]["PodAnnotations"] == ["module.wasm.image/variant", "run.oci.handler"]
    assert "/var/lib/rancher" not in config.read_text()
