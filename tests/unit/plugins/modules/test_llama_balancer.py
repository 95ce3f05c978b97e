"""llama_balancer against the FAKE in-memory Kubernetes API, for what needs no server or what the real one
cannot produce on demand (manifest validation, refusals before any API call, generated tokens, drain
timing). Idempotence, the token kept out of results and diffs, and RBAC run against the real API server in
tests/cluster/test_real_llama_balancer.py."""

from __future__ import annotations

import base64
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


@pytest.mark.parametrize("version", ["1.30", "1.31", "1.32", "1.33"])
def test_manifests_validate(run_module, cluster, version):
    result = run_module(module.main, args(service_type="NodePort", node_port=30080), check_mode=True)
    assert cluster.objects == {}
    for obj in result["manifests"]:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", ["1.30", "1.33"])
def test_leader_election_manifests_validate(run_module, cluster, version):
    result = run_module(module.main, args(replicas=2), check_mode=True)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in result["manifests"]]
    assert ("Role", "llama-balancer-leader-election") in kinds
    assert ("RoleBinding", "llama-balancer-leader-election") in kinds
    assert not [kind for kind, _name in kinds if kind == "PodDisruptionBudget"]
    for obj in result["manifests"]:
        kubernetes_validate.validate(obj, version, strict=True)


def test_two_replicas_elect_a_leader_on_a_lease_of_their_own(run_module, cluster):
    run_module(module.main, args(replicas=2, lease_duration=10, renew_deadline=7.5, retry_period=2))
    container = _deployment_container(cluster)
    flags = container["args"]
    assert flags[flags.index("--leader-election") :][:11] == [
        "--leader-election",
        "--lease-name",
        "llama-balancer",
        "--lease-namespace",
        "llm",
        "--lease-duration",
        "10",
        "--renew-deadline",
        "7.5",
        "--retry-period",
        "2",
    ]
    assert flags[flags.index("--shutdown-delay") + 1] == "10"  # bridges the new leader's start
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in container["env"]}
    assert (env["POD_NAME"], env["POD_NAMESPACE"]) == ("metadata.name", "metadata.namespace")
    assert (
        container["readinessProbe"]["periodSeconds"],
        container["readinessProbe"]["failureThreshold"],
    ) == (1, 1)
    deployment = cluster.objects[("Deployment", "llm", "llama-balancer")]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "100%", "maxUnavailable": "100%"}
    assert deployment["metadata"]["annotations"]["llamaedge/ready-replicas"] == "1"
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 10 + 30 + 15
    role = cluster.objects[("Role", "llm", "llama-balancer-leader-election")]
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["llama-balancer"],
            "verbs": ["get", "update"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]
    # One replica: no election, no Lease permissions (the Role made above is removed), the old probe.
    single = run_module(module.main, args(replicas=1))
    assert single["changed"] is True
    assert ("Role", "llm", "llama-balancer-leader-election") not in cluster.objects
    container = _deployment_container(cluster)
    assert "--leader-election" not in container["args"] and "--shutdown-delay" not in container["args"]
    assert "strategy" not in cluster.objects[("Deployment", "llm", "llama-balancer")]["spec"]
    # Asked for explicitly, a single replica campaigns too (a later scale-up keeps exact accounting).
    run_module(module.main, args(replicas=1, leader_election=True))
    assert "--leader-election" in _deployment_container(cluster)["args"]
    run_module(module.main, args(replicas=3, leader_election=False))
    assert "--leader-election" not in _deployment_container(cluster)["args"]


@pytest.mark.parametrize(
    ("timings", "message"),
    [
        ({"lease_duration": 4, "renew_deadline": 4.0}, "renew_deadline < lease_duration"),
        ({"renew_deadline": 1.0}, "1.2 x retry_period < renew_deadline"),
        ({"lease_duration": 0}, "lease_duration=0 must be a whole number"),
    ],
)
def test_lease_timings_that_cannot_keep_leaders_apart_are_refused(run_module, cluster, timings, message):
    result = run_module(module.main, args(replicas=2, **timings))
    assert result["failed"] is True and message in result["msg"], result["msg"]
    assert cluster.calls == []


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


def _deployment_container(cluster, name="llama-balancer"):
    return cluster.objects[("Deployment", "llm", name)]["spec"]["template"]["spec"]["containers"][0]


def test_admin_api_is_off_by_default(run_module, cluster):
    result = run_module(module.main, args(admin_token=None, service_type="NodePort", node_port=30080))
    assert [o["kind"] for o in result["objects"]].count("Secret") == 0
    container = _deployment_container(cluster)
    assert "env" not in container and "--admin-listen" not in container["args"]
    assert [p["name"] for p in container["ports"]] == ["http", "metrics"]
    assert ("Service", "llm", "llama-balancer-admin") not in cluster.objects


def test_metrics_on_their_own_port_and_no_backend_header_by_default(run_module, cluster):
    """#31 item 12: the series (backend names, pod addresses) never reach the public Service or node port."""
    run_module(module.main, args(admin_token=None, service_type="NodePort", node_port=30080))
    container = _deployment_container(cluster)
    assert container["args"][container["args"].index("--metrics-listen") + 1] == "0.0.0.0:8082"
    assert "--backend-header" not in container["args"]
    assert {"name": "metrics", "containerPort": 8082, "protocol": "TCP"} in container["ports"]
    template = cluster.objects[("Deployment", "llm", "llama-balancer")]["spec"]["template"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "8082"
    public = cluster.objects[("Service", "llm", "llama-balancer")]["spec"]
    assert [p["targetPort"] for p in public["ports"]] == ["http"]
    run_module(
        module.main,
        args(admin_token=None, service_type="NodePort", node_port=30080, metrics=False, backend_header=True),
    )
    container = _deployment_container(cluster)
    assert container["args"][container["args"].index("--metrics-listen") + 1] == "off"
    assert "--backend-header" in container["args"]
    assert [p["name"] for p in container["ports"]] == ["http"]
    template = cluster.objects[("Deployment", "llm", "llama-balancer")]["spec"]["template"]
    assert "annotations" not in template["metadata"]


def test_admin_api_with_a_generated_token_kept_across_runs(run_module, cluster):
    wanted = args(admin_token=None, admin_api=True, service_type="NodePort", node_port=30080)
    first = run_module(module.main, dict(wanted, _ansible_diff=True))
    secret = cluster.objects[("Secret", "llm", "llama-balancer-admin")]
    token = secret["data"]["token"]
    assert len(base64.b64decode(token)) >= 32
    assert token not in json.dumps(first)
    second = run_module(module.main, dict(wanted, _ansible_diff=True))
    assert second["changed"] is False
    assert cluster.objects[("Secret", "llm", "llama-balancer-admin")]["data"]["token"] == token
    container = _deployment_container(cluster)
    assert container["args"][container["args"].index("--admin-listen") + 1] == "0.0.0.0:8081"
    assert {"name": "admin", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    public = cluster.objects[("Service", "llm", "llama-balancer")]["spec"]
    admin = cluster.objects[("Service", "llm", "llama-balancer-admin")]["spec"]
    assert public["type"] == "NodePort" and [p["name"] for p in public["ports"]] == ["http"]
    assert admin["type"] == "ClusterIP" and [p["port"] for p in admin["ports"]] == [8081]
    # Turning it off removes the Secret and the admin Service (found by their labels).
    off = run_module(module.main, args(admin_token=None, service_type="NodePort", node_port=30080))
    assert off["changed"] is True
    assert ("Secret", "llm", "llama-balancer-admin") not in cluster.objects
    assert ("Service", "llm", "llama-balancer-admin") not in cluster.objects


def test_a_generated_token_in_check_mode_creates_nothing(run_module, cluster):
    result = run_module(module.main, args(admin_token=None, admin_api=True), check_mode=True)
    assert result["changed"] is True and cluster.objects == {}


@pytest.mark.parametrize(
    ("extra_args", "grace"),
    [([], 45), (["--shutdown-delay", "5", "--shutdown-timeout=60"], 80), (["--shutdown-timeout", "0.5"], 16)],
)
def test_grace_period_exceeds_the_balancers_drain(run_module, cluster, extra_args, grace):
    run_module(module.main, args(extra_args=extra_args))
    spec = cluster.objects[("Deployment", "llm", "llama-balancer")]["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == grace


@pytest.mark.parametrize(
    ("extra_args", "message"),
    [
        (["--listen", "0.0.0.0:1"], "must not set --listen"),
        (["--admin-listen=0.0.0.0:9"], "must not set --admin-listen"),
        # argparse's abbreviations (the balancer now refuses them too, but only when the pod starts).
        (["--rout", "swrr"], "must not set --routing"),
        (["--lis=0.0.0.0:1"], "must not set --listen"),
        (["--admin-token-f", "/x"], "must not set --admin-token-file"),
        (["--kub"], "must not set --kubernetes"),
        (["--metrics-listen", "0.0.0.0:80"], "must not set --metrics-listen"),
        (["--backend-header"], "must not set --backend-header"),
        (["--leader-election"], "must not set --leader-election"),
        (["--lease-name=x"], "must not set --lease-name"),
        (["--identity", "me"], "must not set --identity"),
        (["--shutdown-timeout", "soon"], "--shutdown-delay + --shutdown-timeout"),
        (["--shutdown-timeout", "7200"], "--shutdown-delay + --shutdown-timeout"),
    ],
)
def test_extra_args_the_module_owns_are_refused(run_module, cluster, extra_args, message):
    result = run_module(module.main, args(extra_args=extra_args))
    assert result["failed"] is True and message in result["msg"]
    assert cluster.calls == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"port": 0}, "port=0 must be an integer from 1 to 65535"),
        ({"port": 99999}, "port=99999 must be an integer from 1 to 65535"),
        ({"admin_token_key": ""}, "admin_token_key='' must be a Secret key"),
        ({"admin_token_key": "a/b"}, "admin_token_key='a/b' must be a Secret key"),
    ],
)
def test_out_of_range_options_fail_before_any_api_call(run_module, cluster, overrides, message):
    result = run_module(module.main, args(**overrides))
    assert result["failed"] is True and message in result["msg"]
    assert cluster.calls == []
