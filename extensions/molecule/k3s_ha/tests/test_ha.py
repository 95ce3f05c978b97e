"""testinfra: three k3s servers (STAND-IN k3s): cluster-init on the first, the others joined it with its token."""

from __future__ import annotations

import json

import testinfra
import yaml


def test_first_server_initialises_etcd_and_the_others_join_it(host):
    config = yaml.safe_load(host.file("/etc/rancher/k3s/config.yaml").content_string)
    if host.backend.get_hostname() == "ha1":
        assert config["cluster-init"] is True
        assert "server" not in config
    else:
        assert "cluster-init" not in config
        assert config["server"] == "https://ha1:6443"
    assert config["tls-san"] == ["ha1"]
    assert host.service("k3s").is_running


def test_same_token_on_every_server(host):
    first = testinfra.get_host("podman://ha1")
    assert (
        host.file("/etc/systemd/system/k3s.service.env").content_string
        == first.file("/etc/systemd/system/k3s.service.env").content_string
    )


def test_the_first_server_registered_every_server():
    first = testinfra.get_host("podman://ha1")
    nodes = json.loads(first.file("/var/lib/rancher/k3s/standin/nodes.json").content_string)
    assert {name: node["role"] for name, node in nodes.items()} == {
        "ha1": "server",
        "ha2": "server",
        "ha3": "server",
    }
