"""The STAND-IN k3s keeps every node that joins, however many join at once (molecule k3s_ha lost one)."""

from __future__ import annotations

import json
import threading

from doubles import k3s


def test_concurrent_joins_are_all_registered(tmp_path, monkeypatch):
    monkeypatch.setattr(k3s, "STATE", tmp_path / "standin")
    names = [f"node{i}" for i in range(24)]
    start = threading.Barrier(len(names))

    def join(name: str) -> None:
        start.wait()
        k3s.register(name, "server" if name.endswith("0") else "agent")

    threads = [threading.Thread(target=join, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    nodes = k3s.load_nodes()
    assert sorted(nodes) == sorted(names)
    assert {nodes[n]["role"] for n in ("node0", "node10", "node20")} == {"server"}
    assert nodes["node3"]["labels"] == {"kubernetes.io/hostname": "node3"}


def test_a_label_survives_a_join_that_comes_after_it(tmp_path, monkeypatch):
    monkeypatch.setattr(k3s, "STATE", tmp_path / "standin")
    k3s.register("agent1", "agent")
    assert k3s.kubectl(["label", "node", "agent1", "edgewasm/wasm=true"]) == 0
    k3s.register("agent2", "agent")
    assert k3s.load_nodes()["agent1"]["labels"]["edgewasm/wasm"] == "true"


def test_kubectl_answers_the_k3s_role_eviction_reads(tmp_path, monkeypatch, capsys):
    """The k3s role reads a node and its pods as JSON before a restart (tasks/evict.yml): a registered node has
    no `unschedulable`, no node runs a pod (no kubelet behind the stand-in), and an unknown node is NotFound."""
    monkeypatch.setattr(k3s, "STATE", tmp_path / "standin")
    k3s.register("agent1", "agent")
    capsys.readouterr()
    assert k3s.kubectl(["get", "node", "agent1", "-o", "json"]) == 0
    node = json.loads(capsys.readouterr().out)
    assert node["metadata"]["name"] == "agent1" and "unschedulable" not in node["spec"]
    selector = ["--all-namespaces", "--field-selector", "spec.nodeName=agent1", "-o", "json"]
    assert k3s.kubectl(["get", "pods", *selector]) == 0
    assert json.loads(capsys.readouterr().out)["items"] == []
    assert k3s.kubectl(["get", "node", "agent9", "-o", "json"]) == 1
    assert "NotFound" in capsys.readouterr().err
    assert k3s.kubectl(["cordon", "agent1"]) == 1  # never needed here: nothing to evict
