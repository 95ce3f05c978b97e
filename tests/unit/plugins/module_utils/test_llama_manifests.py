"""Manifest builders: the seed's backends and the balancer, validated against the Kubernetes schemas."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
from doubles.seed_backends import GROUPS, SEED

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import k8s_apply
from ansible_collections.edgewasm.llamaedge.plugins.module_utils import llama_backend_manifests as m
from ansible_collections.edgewasm.llamaedge.plugins.module_utils import llama_balancer_manifests as b

KUBERNETES_VERSIONS = ["1.30", "1.31", "1.32", "1.33"]
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

BALANCER = {
    "name": "llama-balancer",
    "namespace": "llm",
    "image": "registry.example.com/edgewasm/balancer:0.1.0",
    "image_pull_policy": "IfNotPresent",
    "watch_namespaces": ["llm", "batch"],
    "service_type": "NodePort",
    "node_port": 30080,
    "port": 80,
    "replicas": 2,
    "leader_election": False,  # the election objects: tests/unit/plugins/modules/test_llama_balancer.py
    "admin_token_secret": "balancer-admin",
    "admin_token_key": "token",
    "extra_args": ["--least-busy"],
    "resources": None,
}


def all_objects():
    objects = [obj for spec in SEED for obj in m.backend_manifests(spec)]
    return objects + b.balancer_manifests(BALANCER)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_strictly(version):
    objects = all_objects()
    # 2 Deployments + Service per backend; SA, 2x(Role, Binding), Deploy, Svc, admin Svc
    assert len(objects) == 3 * 3 + 1 + 4 + 2 + 1
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_names_are_dns_labels_and_unique():
    objects = all_objects()
    for obj in objects:
        assert DNS1123.match(obj["metadata"]["name"]), obj["metadata"]["name"]
        for volume in obj.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []):
            assert DNS1123.match(volume["name"]), volume["name"]
    keys = [(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys))


def test_seed_backends_carry_weights_models_and_per_node_mounts():
    low = m.backend_manifests(SEED[0])
    amd, arm, service = low
    assert service["metadata"]["labels"]["llamaedge/target"] == "true"
    assert service["metadata"]["annotations"] == {
        "llamaedge/weight": "3",
        "llamaedge/models": "llama-3-1b",  # the preload alias "default" is no API model id
        "llamaedge/slots": "1",  # llama-api-server serves one request at a time
    }
    *_pods, parallel = m.backend_manifests(dict(SEED[0], slots=4))
    assert parallel["metadata"]["annotations"]["llamaedge/slots"] == "4"
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/instance": "llama-low-cost",
        "app.kubernetes.io/component": "backend",
    }
    # 3 replicas over node groups of 2 and 1 nodes
    assert (amd["metadata"]["name"], amd["spec"]["replicas"]) == ("llama-low-cost-g1", 2)
    assert (arm["metadata"]["name"], arm["spec"]["replicas"]) == ("llama-low-cost-g2", 1)
    for deployment, group in ((amd, GROUPS[0]), (arm, GROUPS[1])):
        pod = deployment["spec"]["template"]["spec"]
        hosts = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ][0]["matchExpressions"][0]["values"]
        assert hosts == sorted(group["nodes"])
        paths = {v["hostPath"]["path"] for v in pod["volumes"]}
        assert {v["hostPath"]["path"] for v in group["volumes"]} < paths
        assert "/var/lib/llamaedge/models/Llama-3.2-1B-Instruct-Q5_K_M.gguf" in paths
        assert pod["runtimeClassName"] == "wasmedge-nn"
        # every pod template matches the Service's selector, so the Service spreads over both groups
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    amd_paths = {v["hostPath"]["path"] for v in amd["spec"]["template"]["spec"]["volumes"]}
    assert "/usr/lib/x86_64-linux-gnu/libstdc++.so.6" in amd_paths
    assert not any("aarch64" in p for p in amd_paths)


def test_container_args_env_and_probes():
    deployment = m.backend_manifests(SEED[1])[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["llama-api-server.wasm"]
    assert container["args"] == [
        "--model-name",
        "llama-3-3b",
        "--model-alias",
        "default",
        "--prompt-template",
        "llama-3-chat",
        "--ctx-size",
        "4096",
        "--port",
        "8080",
    ]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["WASMEDGE_WASINN_PRELOAD"] == "default:GGML:AUTO:/models/Llama-3.2-3B-Instruct-Q5_K_M.gguf"
    assert env["WASMEDGE_PLUGIN_PATH"] == "/opt/wasmedge/0.14.1/plugin"
    assert env["LD_LIBRARY_PATH"] == "/opt/wasmedge/0.14.1/lib"
    model_mount = container["volumeMounts"][-1]
    assert model_mount == {
        "name": "model",
        "mountPath": "/models/Llama-3.2-3B-Instruct-Q5_K_M.gguf",
        "readOnly": True,
    }
    assert container["startupProbe"]["httpGet"] == {"path": "/v1/models", "port": 8080}
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] == 300
    assert container["livenessProbe"]["httpGet"]["path"] == "/echo"


@pytest.mark.parametrize(
    ("total", "nodes", "expected"),
    [(3, [2, 1], [2, 1]), (2, [1, 1, 1], [1, 1, 0]), (7, [3], [7]), (0, [2, 2], [0, 0]), (5, [1, 3], [1, 4])],
)
def test_split_replicas(total, nodes, expected):
    groups = [{"nodes": ["n"] * count} for count in nodes]
    assert m.split_replicas(total, groups) == expected


def test_backend_errors_name_each_bad_option():
    bad = dict(
        SEED[0],
        name="Llama_Low",
        weight=0,
        model_file="../x.gguf",
        node_groups=[{"nodes": []}],
        namespace="LLM",
        models_dir="relative",
    )
    errors = m.backend_errors(dict(bad, slots=0))
    for option in (
        "name=",
        "namespace=",
        "weight=0",
        "slots=0",
        "model_file=",
        "models_dir=",
        "node_groups[0].nodes",
    ):
        assert any(e.startswith(option) for e in errors), (option, errors)
    assert any(e.startswith("slots=1025") for e in m.backend_errors(dict(SEED[0], slots=1025)))
    assert m.backend_errors(SEED[0]) == []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_grace_period_goes_to_every_pod_template_and_is_left_to_kubernetes_when_unset(version):
    """The server ignores SIGTERM: terminationGracePeriodSeconds is how long a deleted pod stays."""
    for seconds in (0, 5, 86400):
        objects = m.backend_manifests(dict(SEED[0], termination_grace_period=seconds))
        deployments = [o for o in objects if o["kind"] == "Deployment"]
        assert len(deployments) == 2  # one per node group
        for deployment in deployments:
            kubernetes_validate.validate(deployment, version, strict=True)
            assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == seconds
    unset = [o for o in m.backend_manifests(SEED[0]) if o["kind"] == "Deployment"]
    assert all("terminationGracePeriodSeconds" not in o["spec"]["template"]["spec"] for o in unset)


@pytest.mark.parametrize("seconds", [-1, 86401, True, "5"])
def test_a_grace_period_out_of_range_is_named(seconds):
    errors = m.backend_errors(dict(SEED[0], termination_grace_period=seconds))
    assert errors == [
        f"termination_grace_period={seconds!r} must be an integer from 0 to 86400 (seconds a deleted pod keeps "
        "its requests before it is killed)"
    ]


def test_balancer_rbac_is_least_privilege_per_watched_namespace():
    objects = b.balancer_manifests(BALANCER)
    roles = [o for o in objects if o["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["batch", "llm"]
    for role in roles:
        granted = {
            (g, r, v)
            for rule in role["rules"]
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }
        assert granted == {
            (g, r, v)
            for g, r in (("", "services"), ("discovery.k8s.io", "endpointslices"))
            for v in ("get", "list", "watch")
        }
    assert not any(o["kind"].startswith("Cluster") for o in objects)
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert all(
        b["subjects"] == [{"kind": "ServiceAccount", "name": "llama-balancer", "namespace": "llm"}]
        for b in bindings
    )


def test_balancer_deployment_and_service():
    objects = {(o["kind"], o["metadata"]["name"]): o for o in b.balancer_manifests(BALANCER)}
    objects["Deployment"] = objects[("Deployment", "llama-balancer")]
    objects["Service"] = objects[("Service", "llama-balancer")]
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [
        "--kubernetes",
        "--listen",
        "0.0.0.0:8080",
        "--routing",
        "swrr",
        "--namespace",
        "llm",
        "--namespace",
        "batch",
        "--admin-listen",
        "0.0.0.0:8081",
        "--metrics-listen",
        "0.0.0.0:8082",
        "--least-busy",
    ]
    # The admin API (a token Secret is named) has its own port and a ClusterIP Service of its own; the metrics a
    # port in no Service. The public Service (a NodePort here) carries neither.
    assert [p["name"] for p in container["ports"]] == ["http", "metrics", "admin"]
    admin = objects[("Service", "llama-balancer-admin")]["spec"]
    assert admin["type"] == "ClusterIP" and admin["ports"][0]["port"] == 8081
    assert container["env"] == [
        {
            "name": "EDGEWASM_BALANCER_ADMIN_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "balancer-admin", "key": "token"}},
        }
    ]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["runAsNonRoot"] is True
    assert objects["Service"]["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "nodePort": 30080}
    ]
    assert objects["Deployment"]["spec"]["template"]["spec"]["serviceAccountName"] == "llama-balancer"


def test_balancer_errors():
    errors = b.balancer_errors(
        dict(
            BALANCER,
            service_type="ClusterIP",
            node_port=30080,
            image="",
            replicas=0,
            watch_namespaces=["Bad_NS"],
        )
    )
    for text in ("node_port is only used", "image is required", "replicas=0", "watch_namespaces[]="):
        assert any(text in e for e in errors), (text, errors)
    assert b.balancer_errors(dict(BALANCER, node_port=80))[0].startswith("node_port=80 must be in")
    assert b.balancer_errors(dict(BALANCER, routing="fastest")) == [
        "routing='fastest' must be one of swrr, weighted-random, load-aware"
    ]
    (refused,) = b.balancer_errors(dict(BALANCER, extra_args=["--routing=load-aware"]))
    assert refused.startswith("extra_args must not set --routing")


def test_balancer_routing_goes_to_the_command_line():
    (deployment,) = [
        o for o in b.balancer_manifests(dict(BALANCER, routing="load-aware")) if o["kind"] == "Deployment"
    ]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--routing") + 1] == "load-aware"


def test_pods_on_crun_carry_the_wasm_handler_annotation_and_runwasi_pods_none():
    """crun runs a container as WASM only with module.wasm.image/variant (or run.oci.handler)."""
    runwasi = m.backend_manifests(SEED[0])[0]["spec"]["template"]["metadata"]
    assert "annotations" not in runwasi
    crun = m.backend_manifests(dict(SEED[0], runtime_class="crun-wasm"))[0]["spec"]["template"]["metadata"]
    assert crun["annotations"] == {"module.wasm.image/variant": "compat"}
    explicit = m.backend_manifests(dict(SEED[0], runtime_class="wasm", runtime="crun"))[0]
    assert explicit["spec"]["template"]["metadata"]["annotations"] == {"module.wasm.image/variant": "compat"}
    forced = m.backend_manifests(dict(SEED[0], runtime_class="crun-wasm", runtime="runwasi"))[0]
    assert "annotations" not in forced["spec"]["template"]["metadata"]


@pytest.mark.parametrize(
    ("wasi_logging", "runtime", "expected_class", "annotated"),
    [
        (True, "auto", "crun-wasm", True),
        (False, "auto", "wasmedge-nn", False),
        (True, "crun", "crun-wasm", True),
        (False, "runwasi", "wasmedge-nn", False),
    ],
)
def test_runtime_class_auto_runs_a_stock_wasm_on_crun(wasi_logging, runtime, expected_class, annotated):
    """A stock llama-api-server.wasm imports wasi:logging, which runwasi's shim lacks: auto serves it with crun."""
    spec = dict(SEED[0], runtime_class="auto", runtime=runtime, image_wasi_logging=wasi_logging)
    assert m.backend_errors(spec) == []
    pod = m.backend_manifests(spec)[0]["spec"]["template"]
    assert pod["spec"]["runtimeClassName"] == expected_class
    assert ("annotations" in pod["metadata"]) is annotated
    container = pod["spec"]["containers"][0]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_a_stock_wasm_on_the_shim_is_refused_before_any_api_call():
    errors = m.backend_errors(dict(SEED[0], runtime_class="wasmedge-nn", image_wasi_logging=True))
    assert len(errors) == 1
    assert errors[0].startswith("runtime_class=wasmedge-nn is runwasi's WasmEdge shim")
    assert "use runtime_class crun-wasm (or auto)" in errors[0]
    role = m.role_errors(
        [{"name": "a", "model": "m.gguf", "model_name": "a", "prompt_template": "chatml"}],
        [{"file": "m.gguf"}],
        "img",
        "present",
        "llm",
        {"runtime_class": "wasmedge-nn", "image_wasi_logging": True},
    )
    assert role and role[0].startswith("llama_backends_list entry a: runtime_class=wasmedge-nn is runwasi's")
    # An entry's own runtime_class wins over the role's.
    entry = {
        "name": "a",
        "model": "m.gguf",
        "model_name": "a",
        "prompt_template": "chatml",
        "runtime_class": "crun-wasm",
    }
    ok = m.role_errors(
        [entry], [{"file": "m.gguf"}], "img", "present", "llm", {"runtime_class": "wasmedge-nn"}
    )
    assert ok == []


def test_crun_gets_exactly_one_plugin_directory():
    """crun 1.29.1 passes WASMEDGE_PLUGIN_PATH to WasmEdge whole (no ':' split)."""
    group = dict(GROUPS[0], env=[{"name": "WASMEDGE_PLUGIN_PATH", "value": "/opt/a/plugin:/opt/b/plugin"}])
    errors = m.backend_errors(dict(SEED[0], runtime_class="crun-wasm", node_groups=[group]))
    assert errors == [
        "node_groups[0] (amd1, amd2): WASMEDGE_PLUGIN_PATH=/opt/a/plugin:/opt/b/plugin names several directories, "
        "and crun passes it to WasmEdge whole (no ':' split): give crun one plugin directory "
        "(llama_backends_plugin_paths)"
    ]
    assert m.backend_errors(dict(SEED[0], node_groups=[group])) == []  # runwasi splits it


def _deployment(replicas, status, annotations=None):
    meta = {"name": "b", "namespace": "llm", "generation": 2}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": {"replicas": replicas}, "status": dict(status, observedGeneration=2)}


def test_a_rollout_with_leader_election_is_done_with_every_pod_updated_and_one_ready():
    """Only the leader is ready: waiting for both would never end; an old leader still running is not done."""
    annotated = {k8s_apply.READY_REPLICAS_ANNOTATION: "1"}
    one_ready = {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1}
    assert k8s_apply.rollout_state(_deployment(2, one_ready, annotated))["ready"] is True
    assert k8s_apply.rollout_state(_deployment(2, one_ready))["ready"] is False  # without election: both
    old_leader = {"replicas": 3, "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1}
    assert k8s_apply.rollout_state(_deployment(2, old_leader, annotated))["ready"] is False
    nobody = {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 0, "availableReplicas": 0}
    state = k8s_apply.rollout_state(_deployment(2, nobody, annotated))
    assert state["ready"] is False and state["summary"].startswith("0/1 ready, 2 updated")
