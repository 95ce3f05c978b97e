"""The balancer's Kubernetes discovery against the real kube-apiserver: list, watch, and a watch that
breaks when the API server restarts (relist: nothing lost, nothing duplicated)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import pytest
import pytest_asyncio
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import config as aconfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "balancer" / "src"))

from edgewasm_balancer.kube import KubeDiscovery, KubeSettings
from edgewasm_balancer.pool import BackendPool


def service(name: str, weight: str, models: str) -> dict:
    """A backend Service as llama_backend labels and annotates it (no selector: the test owns its slices)."""
    return {
        "metadata": {
            "name": name,
            "labels": {"llamaedge/target": "true"},
            "annotations": {"llamaedge/weight": weight, "llamaedge/models": models},
        },
        "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": 8080}]},
    }


def endpoint_slice(service_name: str, suffix: str, ready: list[str], not_ready: tuple[str, ...] = ()) -> dict:
    endpoints = [{"addresses": [ip], "conditions": {"ready": True}} for ip in ready]
    endpoints += [{"addresses": [ip], "conditions": {"ready": False}} for ip in not_ready]
    return {
        "metadata": {
            "name": f"{service_name}-{suffix}",
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def state(pool: BackendPool) -> dict[str, tuple[int, list[str], list[str]]]:
    return {s.name: (s.weight, sorted(s.endpoints), sorted(s.models)) for s in pool.services.values()}


async def eventually(check, what: str, timeout: float = 20.0) -> None:
    for _attempt in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout:g} s: {what}")


@pytest_asyncio.fixture
async def kube_api(control_plane):
    api = await aconfig.new_client_from_config(config_file=str(control_plane.kubeconfig))
    yield api
    await api.close()


@pytest.mark.asyncio
async def test_discovery_follows_the_cluster_across_an_api_server_restart(control_plane, kube_api, namespace):
    core, discovery = aclient.CoreV1Api(kube_api), aclient.DiscoveryV1Api(kube_api)
    await core.create_namespace({"metadata": {"name": namespace}})
    await core.create_namespaced_service(namespace, service("low-cost", "3", "llama-3-1b"))
    await core.create_namespaced_service(namespace, service("high-cost", "1", '["llama-3-3b", "big"]'))
    await discovery.create_namespaced_endpoint_slice(
        namespace, endpoint_slice("low-cost", "a", ["10.42.0.5", "10.42.1.7"], ("10.42.2.9",))
    )
    await discovery.create_namespaced_endpoint_slice(
        namespace, endpoint_slice("high-cost", "a", ["10.42.3.1"])
    )
    pool = BackendPool()
    settings = KubeSettings(
        namespaces=(namespace,),
        label_selector="llamaedge/target=true",
        weight_annotation="llamaedge/weight",
        models_annotation="llamaedge/models",
        backoff_initial=0.05,
        backoff_max=0.5,
    )
    watcher = KubeDiscovery(pool, settings, kube_api)
    task = asyncio.create_task(watcher.run())
    low, high = f"{namespace}/low-cost", f"{namespace}/high-cost"
    try:
        await eventually(lambda: watcher.synced, "discovery synced")
        assert state(pool) == {
            low: (3, ["http://10.42.0.5:8080", "http://10.42.1.7:8080"], ["llama-3-1b"]),
            high: (1, ["http://10.42.3.1:8080"], ["big", "llama-3-3b"]),
        }
        # Changes arrive through the watch: an endpoint leaves, a slice is added, a weight changes.
        await discovery.replace_namespaced_endpoint_slice(
            "low-cost-a", namespace, endpoint_slice("low-cost", "a", ["10.42.0.5"])
        )
        await discovery.create_namespaced_endpoint_slice(
            namespace, endpoint_slice("high-cost", "b", ["10.42.3.2"])
        )
        await core.patch_namespaced_service(
            "low-cost", namespace, {"metadata": {"annotations": {"llamaedge/weight": "5"}}}
        )
        expected = {
            low: (5, ["http://10.42.0.5:8080"], ["llama-3-1b"]),
            high: (1, ["http://10.42.3.1:8080", "http://10.42.3.2:8080"], ["big", "llama-3-3b"]),
        }
        await eventually(lambda: state(pool) == expected, f"watched changes: {state(pool)}")
        # The API server goes away and comes back: the watch breaks, discovery lists again.
        control_plane.restart_apiserver()
        await core.delete_namespaced_service("high-cost", namespace)
        await core.create_namespaced_service(namespace, service("mid-cost", "2", "llama-3-2b"))
        await discovery.create_namespaced_endpoint_slice(
            namespace, endpoint_slice("mid-cost", "a", ["10.42.4.1"])
        )
        expected = {
            low: (5, ["http://10.42.0.5:8080"], ["llama-3-1b"]),
            f"{namespace}/mid-cost": (2, ["http://10.42.4.1:8080"], ["llama-3-2b"]),
        }
        await eventually(lambda: state(pool) == expected, f"after the restart: {state(pool)}")
        assert len(pool.endpoints()) == 2  # nothing duplicated
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
