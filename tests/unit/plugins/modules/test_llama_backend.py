"""llama_backend against a FAKE in-memory Kubernetes API (tests/doubles/fake_k8s.py), for what the real
API server of tests/cluster cannot produce on demand: injected API errors, a rollout that completes (there
are no nodes there), objects stuck in deletion, and proof that bad input makes no API call at all. Apply,
dry-run, defaulting, diffs, deletes and left-over node groups run against the real server in
tests/cluster/test_real_llama_backend.py."""

from __future__ import annotations

import copy

import pytest
from ansible.plugins.callback.default import CallbackModule
from doubles.fake_k8s import api_error
from doubles.seed_backends import SEED

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import k8s_apply
from ansible_collections.edgewasm.llamaedge.plugins.modules import llama_backend as module


def args(**overrides):
    params = copy.deepcopy(SEED[0])
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def kinds(result):
    return [(o["kind"], o["name"], o["changed"]) for o in result["objects"]]


def test_wait_reports_rollout_and_times_out_with_the_status(run_module, cluster, monkeypatch):
    done = run_module(module.main, args(wait=True))
    assert [r["ready"] for r in done["rollout"]] == [True, True]
    cluster.rollout_ready = False
    monkeypatch.setattr(k8s_apply.time, "sleep", lambda seconds: None)
    failed = run_module(module.main, args(wait=True, wait_timeout=0, replicas=4))
    assert failed["failed"] is True
    assert "Deployment llm/llama-low-cost-g1 is not ready after 0s: 0/3 ready" in failed["msg"]
    assert "raise wait_timeout" in failed["msg"]


def test_api_errors_become_clear_messages(run_module, cluster):
    cluster.fail["apply-dry-run"] = api_error(403, 'deployments.apps is forbidden: User "ci" cannot patch')
    result = run_module(module.main, args())
    assert result["failed"] is True
    assert "while trying to apply Deployment llm/llama-low-cost-g1" in result["msg"]
    assert "cannot patch" in result["msg"] and "RBAC" in result["msg"]
    assert len(result["manifests"]) == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"weight": 0}, "weight=0 must be an integer from 1 to 10000"),
        ({"name": "Llama_1B"}, "name='Llama_1B' must be a DNS-1123 label"),
        ({"image": None}, "image is required with state=present"),
        ({"model_file": "models/x.gguf"}, "model_file='models/x.gguf' must be a file name"),
        ({"node_groups": []}, "node_groups is empty"),
        ({"weight": 10001}, "weight=10001 must be an integer from 1 to 10000"),
        ({"port": 0}, "port=0 must be an integer from 1 to 65535"),
        ({"port": 70000}, "port=70000 must be an integer from 1 to 65535"),
        ({"port": 99999}, "port=99999 must be an integer from 1 to 65535"),
        ({"ctx_size": -1}, "ctx_size=-1 must be an integer from 1 to"),
        ({"threads": 0}, "threads=0 must be an integer from 1 to 1024"),
        ({"n_predict": -3}, "n_predict=-3 must be an integer from -2 to"),
        ({"model_name": "a,b"}, "model_name='a,b' must be one model id"),
        ({"model_name": "two words"}, "model_name='two words' must be one model id"),
        ({"model_aliases": ["x:y"]}, "model_aliases: 'x:y' must be letters, digits"),
        ({"model_aliases": ["ok", "a,b"]}, "model_aliases: 'a,b' must be letters, digits"),
        ({"wasinn_backend": "GG:ML"}, "wasinn_backend='GG:ML' must be a WASI-NN backend name"),
    ],
)
def test_bad_input_fails_before_any_api_call(run_module, cluster, overrides, message):
    result = run_module(module.main, args(**overrides))
    assert result["failed"] is True
    assert message in result["msg"], result["msg"]
    assert cluster.calls == []


def test_node_mounts_are_grouped_by_identical_libraries(run_module, cluster):
    amd, arm = SEED[0]["node_groups"]
    plugin = {n: dict(amd, libraries=["ignored"]) for n in ("amd2", "amd1")} | {"arm1": dict(arm)}
    for result in plugin.values():
        result.pop("nodes", None)
    result = run_module(module.main, args(node_groups=None, node_mounts=plugin))
    assert result["changed"] is True, result
    deployments = {o["metadata"]["name"]: o for o in result["manifests"] if o["kind"] == "Deployment"}
    assert sorted(deployments) == ["llama-low-cost-g1", "llama-low-cost-g2"]
    hosts = [
        d["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
        for d in deployments.values()
    ]
    assert hosts == [["amd1", "amd2"], ["arm1"]]
    uniform = run_module(
        module.main, args(name="uniform", node_groups=None, node_mounts={"a": amd, "b": amd})
    )
    both = run_module(module.main, args(node_mounts={"a": amd}))
    assert both["failed"] is True and "mutually exclusive" in both["msg"]
    assert [o["metadata"]["name"] for o in uniform["manifests"] if o["kind"] == "Deployment"] == ["uniform"]


def test_create_namespace_first_and_never_deleted(run_module, cluster):
    result = run_module(module.main, args(create_namespace=True))
    assert kinds(result)[0] == ("Namespace", "llm", True)
    assert ("Namespace", None, "llm") in cluster.objects
    run_module(
        module.main,
        {"name": "llama-low-cost", "namespace": "llm", "state": "absent", "create_namespace": True},
    )
    assert list(cluster.objects) == [("Namespace", None, "llm")]


def test_an_object_already_being_deleted_is_left_alone(run_module, cluster):
    terminating = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "llama-low-cost-g1",
            "namespace": "llm",
            "deletionTimestamp": "2026-11-30T10:00:00Z",
        },
    }
    cluster.put(terminating)
    result = run_module(module.main, {"name": "llama-low-cost", "namespace": "llm", "state": "absent"})
    assert result["changed"] is False
    assert not [c for c in cluster.calls if c[0] == "delete"]


def test_wait_for_a_deletion_that_never_ends_names_the_object_and_its_finalizers(
    run_module, cluster, monkeypatch
):
    run_module(module.main, args())
    stuck = cluster.objects[("Deployment", "llm", "llama-low-cost-g1")]
    real_delete = cluster.delete

    def delete(resource, name=None, namespace=None, body=None, **kwargs):
        if name == "llama-low-cost-g1":  # a finalizer nobody removes: the object stays, being deleted
            cluster.calls.append(("delete", resource.kind, namespace, name))
            stuck["metadata"].update(
                deletionTimestamp="2026-11-30T10:00:00Z", finalizers=["example.com/hold"]
            )
            return None
        return real_delete(resource, name=name, namespace=namespace, body=body, **kwargs)

    monkeypatch.setattr(cluster, "delete", delete)
    monkeypatch.setattr(k8s_apply.time, "sleep", lambda seconds: None)
    result = run_module(
        module.main,
        {"name": "llama-low-cost", "namespace": "llm", "state": "absent", "wait": True, "wait_timeout": 0},
    )
    assert result["failed"] is True
    assert (
        "Deployment llm/llama-low-cost-g1 is still being deleted after 0s (finalizers: example.com/hold)"
        in (result["msg"])
    )


def test_the_diff_is_one_yaml_pair_per_object_that_ansibles_callback_renders(run_module, cluster):
    """Before: before/after were lists of objects, and the default callback's v2_on_file_diff failed with
    "'list' object has no attribute 'splitlines'" - a warning instead of what would change."""
    run_module(module.main, args())
    result = run_module(module.main, args(weight=5), check_mode=True, diff=True)
    assert result["changed"] is True
    (entry,) = result["diff"]
    assert entry["before_header"] == entry["after_header"] == "Service llm/llama-low-cost"
    assert "llamaedge/weight: '3'" in entry["before"] and "llamaedge/weight: '5'" in entry["after"]
    rendered = CallbackModule()._get_diff(result["diff"])
    assert "-    llamaedge/weight: '3'" in rendered and "+    llamaedge/weight: '5'" in rendered
    assert "--- before: Service llm/llama-low-cost" in rendered
