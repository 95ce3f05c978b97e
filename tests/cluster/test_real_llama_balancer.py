"""llama_balancer against the real kube-apiserver: idempotence, the token kept secret, RBAC that works."""

from __future__ import annotations

import json
import time

import kubernetes
import pytest
import yaml
from kubernetes.client.rest import ApiException

from ansible_collections.edgewasm.llamaedge.plugins.modules import llama_balancer as module

TOKEN = "s3cret-admin-token"


@pytest.fixture
def args(control_plane, namespace):
    def make(**overrides) -> dict:
        params = {
            "namespace": namespace,
            "create_namespace": True,
            "image": "registry.example.com/edgewasm/balancer:0.1.0",
            "watch_namespaces": [namespace, f"{namespace}-b"],
            "admin_token": TOKEN,
            "kubeconfig": str(control_plane.kubeconfig),
        }
        params.update(overrides)
        return params

    return make


@pytest.fixture
def other_namespaces(core, namespace):
    for name in (f"{namespace}-b", f"{namespace}-elsewhere"):
        core.create_namespace({"metadata": {"name": name}})


def test_create_rerun_unchanged_and_the_token_never_shown(
    run_module, args, core, namespace, other_namespaces
):
    first = run_module(module.main, args(), diff=True)
    assert first["changed"] is True, first
    assert TOKEN not in json.dumps(first)
    secret = core.read_namespaced_secret("llama-balancer-admin", namespace)
    assert secret.data == {"token": "czNjcmV0LWFkbWluLXRva2Vu"}
    second = run_module(module.main, args(), diff=True)
    assert second["changed"] is False, [o for o in second["objects"] if o["changed"]]
    assert TOKEN not in json.dumps(second)
    rotated = run_module(module.main, args(admin_token="rotated-token"), diff=True)
    assert [(o["kind"], o["changed"]) for o in rotated["objects"] if o["changed"]] == [("Secret", True)]
    assert "rotated-token" not in json.dumps(rotated)
    (entry,) = rotated["diff"]
    assert entry["after_header"] == f"Secret {namespace}/llama-balancer-admin"
    assert yaml.safe_load(entry["after"])["data"] == {"token": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"}
    assert core.read_namespaced_secret("llama-balancer-admin", namespace).data == {
        "token": "cm90YXRlZC10b2tlbg=="
    }
    deployment = kubernetes.client.AppsV1Api(core.api_client).read_namespaced_deployment(
        "llama-balancer", namespace
    )
    (env,) = deployment.spec.template.spec.containers[0].env
    assert (env.name, env.value_from.secret_key_ref.name, env.value_from.secret_key_ref.key) == (
        "EDGEWASM_BALANCER_ADMIN_TOKEN",
        "llama-balancer-admin",
        "token",
    )


def _as_service_account(control_plane, namespace: str) -> kubernetes.client.DiscoveryV1Api:
    """The API as the balancer's ServiceAccount (impersonated by the admin)."""
    api = kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    api.set_default_header("Impersonate-User", f"system:serviceaccount:{namespace}:llama-balancer")
    return kubernetes.client.DiscoveryV1Api(api)


def test_the_service_account_may_read_endpointslices_where_it_watches_and_nowhere_else(
    run_module, args, control_plane, namespace, other_namespaces
):
    result = run_module(module.main, args())
    assert result["changed"] is True, result
    discovery = _as_service_account(control_plane, namespace)
    for allowed in (namespace, f"{namespace}-b"):
        # Allowed (the balancer's own Service has a slice here already: the controllers made it).
        assert isinstance(discovery.list_namespaced_endpoint_slice(allowed).items, list)
    with pytest.raises(ApiException) as refused:
        discovery.list_namespaced_endpoint_slice(f"{namespace}-elsewhere")
    assert refused.value.status == 403
    with pytest.raises(ApiException) as cluster_wide:
        discovery.list_endpoint_slice_for_all_namespaces()
    assert cluster_wide.value.status == 403
    core = kubernetes.client.CoreV1Api(discovery.api_client)
    with pytest.raises(ApiException) as secrets:
        core.read_namespaced_secret("llama-balancer-admin", namespace)
    assert secrets.value.status == 403  # it reads Services and EndpointSlices, not the Secret


def _lease(name: str) -> dict:
    return {"metadata": {"name": name}, "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 6}}


def test_with_two_replicas_the_service_account_may_use_its_one_lease_and_no_other(
    run_module, args, controllers, namespace, other_namespaces
):
    """With the controllers: the removed Role's foreground deletion needs the garbage collector."""
    control_plane = controllers
    result = run_module(module.main, args(replicas=2))
    assert result["changed"] is True, result
    leases = kubernetes.client.CoordinationV1Api(_as_service_account(control_plane, namespace).api_client)
    created = leases.create_namespaced_lease(namespace, _lease("llama-balancer"))
    created.spec.holder_identity = "pod-b"
    leases.replace_namespaced_lease("llama-balancer", namespace, created)
    assert leases.read_namespaced_lease("llama-balancer", namespace).spec.holder_identity == "pod-b"
    # Create cannot be limited to a name (RBAC), but any other Lease is out of reach once it exists.
    leases.create_namespaced_lease(namespace, _lease("someone-elses"))
    for action in (
        lambda: leases.read_namespaced_lease("someone-elses", namespace),
        lambda: leases.replace_namespaced_lease("someone-elses", namespace, _lease("someone-elses")),
        lambda: leases.delete_namespaced_lease("llama-balancer", namespace),
        lambda: leases.list_namespaced_lease(namespace),
        lambda: leases.create_namespaced_lease(f"{namespace}-b", _lease("llama-balancer")),
    ):
        with pytest.raises(ApiException) as refused:
            action()
        assert refused.value.status == 403
    # One replica again: the Lease permissions go with the election.
    single = run_module(module.main, args(replicas=1))
    assert single["changed"] is True, single
    assert ("Role", f"{namespace}", "llama-balancer-leader-election") not in [
        (o["kind"], o["namespace"], o["name"]) for o in single["objects"] if not o["changed"]
    ]
    for _attempt in range(100):  # the garbage collector ends the deletion, the RBAC cache follows
        try:
            leases.read_namespaced_lease("llama-balancer", namespace)
        except ApiException as gone:
            assert gone.status == 403
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the Lease is still readable 10 s after the election Role was removed")


def test_check_mode_creates_nothing(run_module, args, core, namespace):
    result = run_module(module.main, args(watch_namespaces=[namespace]), check_mode=True)
    assert result.get("failed") is not True, result.get("msg")
    assert result["changed"] is True
    assert namespace not in [n.metadata.name for n in core.list_namespace().items]


def test_a_watched_namespace_that_does_not_exist_is_named(run_module, args, namespace):
    """create_namespace makes the balancer's own namespace only; a missing watched one fails clearly."""
    for check_mode in (True, False):
        result = run_module(module.main, args(), check_mode=check_mode)
        assert result["failed"] is True
        assert (
            f'while trying to apply Role {namespace}-b/llama-balancer: namespaces "{namespace}-b" not found'
            in result["msg"]
        ), result["msg"]
