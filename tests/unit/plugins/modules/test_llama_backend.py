"""llama_backend against a FAKE in-memory Kubernetes API (tests/k8sfixtures/fake_k8s.py)."""

from __future__ import annotations

import copy

import pytest
from k8sfixtures.fake_k8s import api_error
from k8sfixtures.seed_backends import SEED

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import k8s_apply
from ansible_collections.edgewasm.llamaedge.plugins.modules import llama_backend as module


def args(**overrides):
    params = copy.deepcopy(SEED[0])
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def kinds(result):
    return [(o["kind"], o["name"], o["changed"]) for o in result["objects"]]


def test_create_then_nothing_to_do(run_module, cluster):
    first = run_module(module.main, args())
    assert first["changed"] is True, first
    assert kinds(first) == [
        ("Deployment", "llama-low-cost-g1", True),
        ("Deployment", "llama-low-cost-g2", True),
        ("Service", "llama-low-cost", True),
    ]
    assert set(cluster.objects) == {
        ("Deployment", "llm", "llama-low-cost-g1"),
        ("Deployment", "llm", "llama-low-cost-g2"),
        ("Service", "llm", "llama-low-cost"),
    }
    before = len(cluster.calls)
    second = run_module(module.main, args())
    assert second["changed"] is False, second
    assert {call[0] for call in cluster.calls[before:]} == {"get", "apply-dry-run"}  # nothing written


def test_update_changes_only_what_differs_and_diff_shows_it(run_module, cluster):
    run_module(module.main, args())
    result = run_module(module.main, dict(args(weight=5), _ansible_diff=True))
    assert kinds(result) == [
        ("Deployment", "llama-low-cost-g1", False),
        ("Deployment", "llama-low-cost-g2", False),
        ("Service", "llama-low-cost", True),
    ]
    (before,), (after,) = result["diff"]["before"], result["diff"]["after"]
    assert before["metadata"]["annotations"]["llamaedge/weight"] == "3"
    assert after["metadata"]["annotations"]["llamaedge/weight"] == "5"
    for side in (before, after):  # server-managed fields never show up as changes
        assert "resourceVersion" not in side["metadata"] and "managedFields" not in side["metadata"]
    assert (
        cluster.objects[("Service", "llm", "llama-low-cost")]["metadata"]["annotations"]["llamaedge/weight"]
        == "5"
    )


def test_check_mode_on_an_empty_cluster_changes_nothing(run_module, cluster):
    result = run_module(module.main, args(), check_mode=True)
    assert result["changed"] is True
    assert cluster.objects == {}
    assert {c[0] for c in cluster.calls} == {"get", "apply-dry-run"}


def test_node_group_that_goes_away_is_deleted(run_module, cluster):
    run_module(module.main, args())
    result = run_module(module.main, args(node_groups=SEED[0]["node_groups"][:1], replicas=2))
    assert ("Deployment", "llama-low-cost", True) in kinds(result)
    assert ("Deployment", "llama-low-cost-g1", True) in kinds(result) and (
        "Deployment",
        "llama-low-cost-g2",
        True,
    ) in kinds(result)
    assert {k[2] for k in cluster.objects if k[0] == "Deployment"} == {"llama-low-cost"}


def test_absent_deletes_every_deployment_of_the_backend_and_is_idempotent(run_module, cluster):
    run_module(module.main, args())
    run_module(module.main, args(name="other", model_name="other"))
    result = run_module(module.main, {"name": "llama-low-cost", "namespace": "llm", "state": "absent"})
    assert result["changed"] is True
    assert sorted(k[2] for k in cluster.objects) == ["other", "other-g1", "other-g2"]
    again = run_module(module.main, {"name": "llama-low-cost", "namespace": "llm", "state": "absent"})
    assert again["changed"] is False


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
