"""llama_backend against the real kube-apiserver (tests/controlplane): apply, dry-run, defaulting, deletes."""

from __future__ import annotations

import copy
import time

import pytest
import yaml
from doubles.seed_backends import SEED

from ansible_collections.edgewasm.llamaedge.plugins.modules import llama_backend as module


@pytest.fixture
def args(control_plane, namespace):
    def make(**overrides) -> dict:
        params = copy.deepcopy(SEED[0])
        params.update(namespace=namespace, kubeconfig=str(control_plane.kubeconfig), **overrides)
        return {k: v for k, v in params.items() if v is not None}

    return make


def gone(namespace: str, present: dict) -> dict:
    """The arguments that remove the backend."""
    return {
        "name": present["name"],
        "namespace": namespace,
        "state": "absent",
        "kubeconfig": present["kubeconfig"],
    }


def names(items) -> list[str]:
    return sorted(item.metadata.name for item in items)


def test_create_then_rerun_is_unchanged_against_real_defaulting(run_module, args, apps, core, namespace):
    first = run_module(module.main, args(create_namespace=True))
    assert first["changed"] is True, first
    assert [(o["kind"], o["name"], o["changed"]) for o in first["objects"]] == [
        ("Namespace", namespace, True),
        ("Deployment", "llama-low-cost-g1", True),
        ("Deployment", "llama-low-cost-g2", True),
        ("Service", "llama-low-cost", True),
    ]
    assert names(apps.list_namespaced_deployment(namespace).items) == [
        "llama-low-cost-g1",
        "llama-low-cost-g2",
    ]
    live = apps.read_namespaced_deployment("llama-low-cost-g1", namespace)
    # The server defaulted what we left out (strategy, revisionHistoryLimit, terminationGracePeriodSeconds...).
    assert live.spec.strategy.type == "RollingUpdate"
    assert live.spec.template.spec.termination_grace_period_seconds == 30
    assert {m.manager for m in live.metadata.managed_fields} == {"edgewasm.llamaedge"}
    second = run_module(module.main, args(create_namespace=True))
    assert second["changed"] is False, [o for o in second["objects"] if o["changed"]]


def test_the_grace_period_of_kubernetes_default_changes_nothing_and_another_rolls_the_pods(
    run_module, args, apps, namespace
):
    """The role passes llama_backends_termination_grace_period (30) to backends deployed before it existed: the
    API server had defaulted them to 30, so nothing changes; another value changes the pod template."""
    run_module(module.main, args(create_namespace=True))
    same = run_module(module.main, args(create_namespace=True, termination_grace_period=30))
    assert same["changed"] is False, [o for o in same["objects"] if o["changed"]]
    shorter = run_module(module.main, args(create_namespace=True, termination_grace_period=5))
    assert [(o["kind"], o["changed"]) for o in shorter["objects"] if o["changed"]] == [
        ("Deployment", True),
        ("Deployment", True),
    ]
    live = apps.read_namespaced_deployment("llama-low-cost-g1", namespace)
    assert live.spec.template.spec.termination_grace_period_seconds == 5
    again = run_module(module.main, args(create_namespace=True, termination_grace_period=5))
    assert again["changed"] is False


def test_check_mode_on_an_empty_cluster_creates_nothing(run_module, args, core, namespace):
    result = run_module(module.main, args(create_namespace=True), check_mode=True)
    assert result.get("failed") is not True, result.get("msg")
    assert result["changed"] is True
    assert namespace not in names(core.list_namespace().items)


def test_diff_and_update_change_only_the_service(run_module, args, core, namespace):
    run_module(module.main, args(create_namespace=True))
    result = run_module(module.main, args(weight=5), diff=True)
    assert [(o["kind"], o["changed"]) for o in result["objects"]] == [
        ("Deployment", False),
        ("Deployment", False),
        ("Service", True),
    ]
    (entry,) = result["diff"]
    assert entry["before_header"] == entry["after_header"] == f"Service {namespace}/llama-low-cost"
    before, after = yaml.safe_load(entry["before"]), yaml.safe_load(entry["after"])
    assert before["metadata"]["annotations"]["llamaedge/weight"] == "3"
    assert after["metadata"]["annotations"]["llamaedge/weight"] == "5"
    for side in (before, after):
        assert "resourceVersion" not in side["metadata"] and "managedFields" not in side["metadata"]
    service = core.read_namespaced_service("llama-low-cost", namespace)
    assert service.metadata.annotations["llamaedge/weight"] == "5"
    assert run_module(module.main, args(weight=5))["changed"] is False


def test_a_node_group_that_goes_away_is_deleted(run_module, args, apps, namespace, controllers):
    run_module(module.main, args(create_namespace=True))
    result = run_module(module.main, args(node_groups=SEED[0]["node_groups"][:1], replicas=0, wait=True))
    assert result["changed"] is True, result.get("msg")
    changed = [(o["kind"], o["name"]) for o in result["objects"] if o["changed"]]
    assert changed == [
        ("Deployment", "llama-low-cost"),
        ("Deployment", "llama-low-cost-g2"),
        ("Deployment", "llama-low-cost-g1"),
    ]
    # wait=true: the left-overs are gone (the garbage collector removed their ReplicaSets first).
    assert names(apps.list_namespaced_deployment(namespace).items) == ["llama-low-cost"]


def test_absent_deletes_every_deployment_and_the_second_run_is_unchanged(
    run_module, args, apps, core, namespace, controllers
):
    run_module(module.main, args(create_namespace=True))
    absent = {
        "name": "llama-low-cost",
        "namespace": namespace,
        "state": "absent",
        "kubeconfig": args()["kubeconfig"],
    }
    first = run_module(module.main, absent)
    assert first["changed"] is True, first
    # Without wait the Deployments may still be there, being deleted: a second run leaves them be.
    assert run_module(module.main, absent)["changed"] is False
    waited = run_module(module.main, dict(absent, wait=True, wait_timeout=60))
    assert waited["changed"] is False
    for _attempt in range(120):
        if not apps.list_namespaced_deployment(namespace).items:
            break
        time.sleep(0.5)
    assert apps.list_namespaced_deployment(namespace).items == []
    assert core.list_namespaced_service(namespace).items == []
    assert namespace in names(core.list_namespace().items)  # create_namespace never deletes it


def test_absent_with_wait_returns_when_everything_is_gone(run_module, args, apps, namespace, controllers):
    run_module(module.main, args(create_namespace=True, replicas=1))
    absent = gone(namespace, args())
    result = run_module(module.main, dict(absent, wait=True, wait_timeout=60))
    assert result["changed"] is True, result.get("msg")
    assert apps.list_namespaced_deployment(namespace).items == []
    assert apps.list_namespaced_replica_set(namespace).items == []


def test_a_rollout_that_cannot_happen_times_out_naming_the_deployment(
    run_module, args, apps, namespace, controllers
):
    """controller-manager and scheduler run, but there is no node: the pods never become ready."""
    result = run_module(module.main, args(create_namespace=True, replicas=1, wait=True, wait_timeout=6))
    assert result["failed"] is True
    assert f"Deployment {namespace}/llama-low-cost-g1 is not ready after 6s: 0/1 ready" in result["msg"], (
        result["msg"]
    )
    assert "raise wait_timeout" in result["msg"]
    # The controllers did their part: the Deployment has a ReplicaSet.
    assert apps.list_namespaced_replica_set(namespace).items, "kube-controller-manager made no ReplicaSet"
