"""llama_balancer against the FAKE in-memory Kubernetes API."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from ansible_collections.edgewasm.llamaedge.plugins.modules import llama_balancer as module

TOKEN = "s3cret-admin-token"


def args(**overrides):
    base = {
        "namespace": "llm",
        "image": "registry.example.com/edgewasm/balancer:0.1.0",
        "watch_namespaces": ["llm", "batch"],
        "admin_token": TOKEN,
    }
    base.update(overrides)
    return base


def test_create_idempotent_and_token_never_shown(run_module, cluster, capsys):
    first = run_module(module.main, dict(args(), _ansible_diff=True))
    assert first["changed"] is True
    assert [(o["kind"], o["namespace"]) for o in first["objects"]] == [
        ("ServiceAccount", "llm"),
        ("Role", "batch"),
        ("RoleBinding", "batch"),
        ("Role", "llm"),
        ("RoleBinding", "llm"),
        ("Secret", "llm"),
        ("Deployment", "llm"),
        ("Service", "llm"),
    ]
    assert TOKEN not in json.dumps(first)
    secret = cluster.objects[("Secret", "llm", "llama-balancer-admin")]
    assert secret["data"] == {"token": "czNjcmV0LWFkbWluLXRva2Vu"}
    deployment = cluster.objects[("Deployment", "llm", "llama-balancer")]
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [
        {
            "name": "EDGEWASM_BALANCER_ADMIN_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "llama-balancer-admin", "key": "token"}},
        }
    ]
    second = run_module(module.main, dict(args(), _ansible_diff=True))
    assert second["changed"] is False
    assert TOKEN not in json.dumps(second)


def test_changing_the_token_changes_only_the_secret(run_module, cluster):
    run_module(module.main, args())
    result = run_module(module.main, dict(args(admin_token="rotated"), _ansible_diff=True))
    assert [(o["kind"], o["changed"]) for o in result["objects"] if o["changed"]] == [("Secret", True)]
    assert "rotated" not in json.dumps(result)
    assert result["diff"]["after"][0]["data"] == {"token": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"}


@pytest.mark.parametrize("version", ["1.30", "1.31", "1.32", "1.33"])
def test_manifests_validate(run_module, cluster, version):
    result = run_module(module.main, args(service_type="NodePort", node_port=30080), check_mode=True)
    assert cluster.objects == {}
    for obj in result["manifests"]:
        kubernetes_validate.validate(obj, version, strict=True)


def test_absent_removes_everything(run_module, cluster):
    run_module(module.main, args())
    result = run_module(
        module.main,
        {
            "namespace": "llm",
            "watch_namespaces": ["llm", "batch"],
            "admin_token_secret": "llama-balancer-admin",
            "state": "absent",
        },
    )
    assert result["changed"] is True
    assert cluster.objects == {}


def test_bad_input_fails_before_any_api_call(run_module, cluster):
    result = run_module(module.main, args(image=None, node_port=31000))
    assert result["failed"] is True
    assert (
        "image is required" in result["msg"]
        and "node_port is only used with service_type=NodePort" in result["msg"]
    )
    assert cluster.calls == []
