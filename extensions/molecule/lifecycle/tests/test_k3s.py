"""testinfra: site.yml brought up k3s (the STAND-IN k3s from tests/doubles/k3s.py) and its WASM runtimes."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import testinfra
import yaml

LAB = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])


def is_server(host):
    return host.backend.get_hostname() == "server1"


def test_config_yaml_per_node(host):
    config = host.file("/etc/rancher/k3s/config.yaml")
    assert config.mode == 0o600 and config.user == "root"
    data = yaml.safe_load(config.content_string)
    name = host.backend.get_hostname()
    assert data["node-name"] == name
    if is_server(host):
        assert "server" not in data and "cluster-init" not in data  # a single server needs no etcd init
        assert data["write-kubeconfig-mode"] == "0600"
        assert data["tls-san"] == ["server1"]
    else:
        assert data["server"] == "https://server1:6443"
    assert "token" not in data and "K3S_TOKEN" not in config.content_string


def test_one_token_everywhere_and_only_in_0600_env_files(host):
    unit = "k3s" if is_server(host) else "k3s-agent"
    env = host.file(f"/etc/systemd/system/{unit}.service.env")
    assert env.mode == 0o600 and env.user == "root"
    token = env.content_string.strip().removeprefix("K3S_TOKEN=")
    assert len(token) == 48 and token.isalnum()
    server = testinfra.get_host("podman://server1")
    assert server.file("/etc/systemd/system/k3s.service.env").content_string.strip() == f"K3S_TOKEN={token}"
    # The agents joined with it: the stand-in server refuses a wrong token (the agent then exits 1).
    assert host.service(unit).is_running


def test_units_and_service_state(host):
    unit = "k3s" if is_server(host) else "k3s-agent"
    text = host.file(f"/etc/systemd/system/{unit}.service").content_string
    assert "Type=notify" in text
    assert f"ExecStart=/usr/local/bin/k3s {'server' if is_server(host) else 'agent'}" in text
    assert host.service(unit).is_enabled and host.service(unit).is_running
    assert host.check_output("k3s --version").startswith("k3s version v1.31.6+k3s1")
    assert host.file("/usr/local/bin/kubectl").linked_to == "/usr/local/bin/k3s"
    images = host.file("/var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst")
    assert images.exists and images.mode == 0o644


def test_containerd_config_k3s_rendered_has_our_runtimes(host):
    # The stand-in k3s completed our config-v3.toml.tmpl with k3s's base and parsed it as TOML.
    assert host.file("/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.tmpl").exists
    config = tomllib.loads(host.file("/var/lib/rancher/k3s/agent/etc/containerd/config.toml").content_string)
    runtimes = config["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]
    assert runtimes["wasmedge-nn"]["runtime_type"] == "io.containerd.wasmedge.v1"
    assert "options" not in runtimes["wasmedge-nn"]  # found as containerd-shim-wasmedge-v1 on k3s's PATH
    # crun with WasmEdge is built on the server only (lab group_vars/server.yml): declared only there.
    assert ("crun-wasm" in runtimes) == is_server(host)
    if is_server(host):
        assert runtimes["crun-wasm"]["options"]["BinaryName"] == "/usr/local/bin/crun"
        assert runtimes["crun-wasm"]["pod_annotations"] == ["module.wasm.image/variant", "run.oci.handler"]
    dropin = host.file(
        "/etc/systemd/system/"
        + ("k3s" if is_server(host) else "k3s-agent")
        + ".service.d/50-edgewasm-wasm.conf"
    )
    assert "WASMEDGE_PLUGIN_PATH=/opt/wasmedge/0.14.1/plugin" in dropin.content_string


def test_nodes_registered_and_labelled_through_the_server(host):
    if not is_server(host):
        return
    nodes = json.loads(host.file("/var/lib/rancher/k3s/standin/nodes.json").content_string)
    assert sorted(nodes) == ["agent1", "agent2", "server1"]
    for name, node in nodes.items():
        assert node["labels"]["runtime.edgewasm.io/wasmedge-nn"] == "true"
        assert ("runtime.edgewasm.io/crun-wasm" in node["labels"]) == (name == "server1")
    manifest = host.file("/var/lib/rancher/k3s/server/manifests/edgewasm-runtimeclasses.yaml")
    docs = [d for d in yaml.safe_load_all(manifest.content_string) if d]
    assert {d["metadata"]["name"] for d in docs} == {"wasmedge-nn", "crun-wasm"}


def test_kubeconfig_on_the_controller():
    path = LAB / "kubeconfig.yaml"
    assert path.stat().st_mode & 0o777 == 0o600
    config = yaml.safe_load(path.read_text())
    assert config["current-context"] == "edgewasm"
    assert config["clusters"][0]["cluster"]["server"] == "https://server1:6443"
