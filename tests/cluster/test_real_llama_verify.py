"""llama_verify's pod and endpoint reporting from real API objects: Pods whose status the test writes (there
is no kubelet), EndpointSlices, Warning events; the requests go to the real balancer before stand-in backends."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from ansible_collections.edgewasm.llamaedge.plugins.modules import llama_verify as module

BACKENDS = [
    {"name": "llama-low-cost", "model_name": "llama-3-1b", "weight": 3, "replicas": 2},
    {"name": "llama-high-cost", "model_name": "llama-3-3b", "weight": 1, "replicas": 1},
]


def pod(name: str, backend: str) -> dict:
    return {
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/component": "backend", "app.kubernetes.io/instance": backend},
        },
        "spec": {
            "nodeName": "node1",  # bound already: no scheduler involved
            "containers": [{"name": "llama-api-server", "image": "example.invalid/llama-api-server:test"}],
        },
    }


def status(ready: bool, restarts: int = 0) -> dict:
    state = (
        {"running": {"startedAt": "2026-11-30T10:00:00Z"}}
        if ready
        else {"waiting": {"reason": "CrashLoopBackOff"}}
    )
    return {
        "status": {
            "phase": "Running" if ready else "Pending",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {
                    "name": "llama-api-server",
                    "image": "example.invalid/llama-api-server:test",
                    "imageID": "",
                    "ready": ready,
                    "restartCount": restarts,
                    "state": state,
                }
            ],
        }
    }


def endpoint_slice(backend: str, ready: int) -> dict:
    return {
        "metadata": {"name": f"{backend}-x", "labels": {"kubernetes.io/service-name": backend}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [
            {"addresses": [f"10.42.0.{i + 1}"], "conditions": {"ready": True}} for i in range(ready)
        ],
    }


@pytest.fixture
def deployed(api, core, namespace):
    """What the backends look like in the API: pods (status written here), EndpointSlices, an event."""
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        core.create_namespaced_service_account(namespace, {"metadata": {"name": "default"}})
    except ApiException as err:  # the serviceaccount controller may have made it already
        if err.status != 409:
            raise
    discovery = client.DiscoveryV1Api(api)

    def make(low_ready: bool = True, restarts: int = 0) -> None:
        for name, backend in (
            ("low-1", "llama-low-cost"),
            ("low-2", "llama-low-cost"),
            ("high-1", "llama-high-cost"),
        ):
            core.create_namespaced_pod(namespace, pod(name, backend))
        core.patch_namespaced_pod_status("low-1", namespace, status(True))
        core.patch_namespaced_pod_status("low-2", namespace, status(low_ready, restarts))
        core.patch_namespaced_pod_status("high-1", namespace, status(True))
        discovery.create_namespaced_endpoint_slice(
            namespace, endpoint_slice("llama-low-cost", 2 if low_ready else 1)
        )
        discovery.create_namespaced_endpoint_slice(namespace, endpoint_slice("llama-high-cost", 1))
        core.create_namespaced_event(
            namespace,
            {
                "metadata": {"name": "low-2.crash"},
                "involvedObject": {"kind": "Pod", "name": "low-2", "namespace": namespace},
                "type": "Warning" if not low_ready else "Normal",
                "reason": "BackOff",
                "message": "Back-off restarting failed container llama-api-server",
            },
        )

    return make


def params(control_plane, namespace, url, tmp_path) -> dict:
    return {
        "namespace": namespace,
        "backends": BACKENDS,
        "balancer_url": url,
        "report_dir": str(tmp_path / "reports"),
        "sequential": 8,
        "concurrent": 8,
        "concurrency": 4,
        "tolerance": 0.2,
        "kubeconfig": str(control_plane.kubeconfig),
        # The stand-in balancer system names its backends as a balancer watching namespace llm would.
        "backend_label": "llm/{name}",
    }


def test_healthy_pods_and_endpoints_pass(run_module, control_plane, deployed, system, namespace, tmp_path):
    deployed()
    result = run_module(module.main, params(control_plane, namespace, system(), tmp_path))
    assert result["ok"] is True, result.get("problems")
    assert result["changed"] is False
    backends = {b["backend"]: b for b in result["report"]["pods_after"]}
    assert {name: b["ready_endpoints"] for name, b in backends.items()} == {
        "llama-low-cost": 2,
        "llama-high-cost": 1,
    }
    pods = {p["name"]: p for b in result["report"]["pods_after"] for p in b["pods"]}
    assert sorted(pods) == ["high-1", "low-1", "low-2"]
    assert all(p["ready"] and p["phase"] == "Running" and p["node"] == "node1" for p in pods.values())


def test_an_unready_restarting_pod_fails_with_its_reason_and_warning_event(
    run_module, control_plane, deployed, system, namespace, tmp_path
):
    deployed(low_ready=False, restarts=4)
    result = run_module(module.main, params(control_plane, namespace, system(), tmp_path))
    assert result["failed"] is True
    problems = "\n".join(result["problems"])
    assert "low-2" in problems and "CrashLoopBackOff" in problems, problems
    pods = {p["name"]: p for b in result["report"]["pods_after"] for p in b["pods"]}
    assert pods["low-2"]["restarts"] == 4
    assert pods["low-2"]["warnings"] == ["BackOff: Back-off restarting failed container llama-api-server"]
    assert pods["low-1"]["warnings"] == []  # the field selector picks the pod's own Warning events only
