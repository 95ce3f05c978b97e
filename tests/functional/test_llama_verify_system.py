"""llama_verify against the real balancer and stand-in backends on 127.0.0.1 (the `system` fixture of
tests/balancer_system.py), and a FAKE cluster."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from balancer_system import free_port

from ansible_collections.edgewasm.llamaedge.plugins.modules import llama_verify as module

BACKENDS = [
    {"name": "llama-low-cost", "model_name": "llama-3-1b", "weight": 3, "replicas": 2},
    {"name": "llama-high-cost", "model_name": "llama-3-3b", "weight": 1, "replicas": 1},
]


def pod(name, backend, ready=True, restarts=0):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "llm",
            "labels": {"app.kubernetes.io/component": "backend", "app.kubernetes.io/instance": backend},
        },
        "spec": {"nodeName": "node1"},
        "status": {
            "phase": "Running" if ready else "Pending",
            "containerStatuses": [
                {
                    "name": "llama-api-server",
                    "ready": ready,
                    "restartCount": restarts,
                    "state": {"running": {}} if ready else {"waiting": {"reason": "CreateContainerError"}},
                }
            ],
        },
    }


def endpoint_slice(backend, ready):
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": backend + "-x",
            "namespace": "llm",
            "labels": {"kubernetes.io/service-name": backend},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [f"10.42.0.{i}"], "conditions": {"ready": True}} for i in range(ready)],
    }


@pytest.fixture
def cluster(cluster):
    """The fake API with the pods and EndpointSlices of two healthy backends."""
    fake = cluster
    for obj in (
        pod("low-1", "llama-low-cost"),
        pod("low-2", "llama-low-cost"),
        pod("high-1", "llama-high-cost"),
        endpoint_slice("llama-low-cost", 2),
        endpoint_slice("llama-high-cost", 1),
    ):
        fake.put(obj)
    return fake


def params(url, tmp_path, **overrides):
    base = {
        "namespace": "llm",
        "backends": BACKENDS,
        "balancer_url": url,
        "report_dir": str(tmp_path / "reports"),
        "sequential": 16,
        "concurrent": 24,
        "concurrency": 6,
        "tolerance": 0.1,
    }
    base.update(overrides)
    return base


def test_healthy_system_passes_and_writes_reports(run_module, system, cluster, tmp_path):
    result = run_module(module.main, params(system(), tmp_path))
    assert result["ok"] is True and result["changed"] is False, result.get("problems")
    seq = {r["backend"]: r["count"] for r in result["report"]["distribution"]["sequential"]["rows"]}
    assert seq == {"llm/llama-low-cost": 12, "llm/llama-high-cost": 4}  # smooth WRR: exact for 3:1
    report = json.loads(Path(result["json_path"]).read_text())
    assert report["ok"] is True
    markdown = Path(result["markdown_path"]).read_text()
    assert (
        "Result: **PASS**" in markdown and "| llm/llama-low-cost | 3 | 12 | 0.750 | 0.750 | yes |" in markdown
    )
    assert [c["answered_by"] for c in report["per_backend"]] == ["llm/llama-low-cost", "llm/llama-high-cost"]
    # The balancer's default names no backend: each answer was traced by its model.
    assert {r["identified_by"] for r in report["requests"]["concurrent"] + report["per_backend"]} == {"model"}


def test_the_backend_header_is_used_when_the_balancer_sends_it(run_module, system, cluster, tmp_path):
    result = run_module(module.main, params(system(backend_header=True), tmp_path))
    assert result["ok"] is True, result.get("problems")
    requests = result["report"]["requests"]["sequential"] + result["report"]["per_backend"]
    assert {r["identified_by"] for r in requests} == {"header"}


def test_a_misrouted_request_is_caught_without_the_header(run_module, system, cluster, tmp_path):
    """With no X-Edgewasm-Backend, the answer's model (llama-api-server's own --model-name) says who answered: a
    balancer that sends llama-3-1b's requests to the llama-3-3b backend fails the per-backend check. A stand-in
    that echoed the request's model would hide this."""
    result = run_module(module.main, params(system(misroute=True), tmp_path))
    assert result["failed"] is True
    problems = "\n".join(result["problems"])
    assert (
        "backend llama-low-cost (model llama-3-1b): answered by llm/llama-high-cost, expected llm/llama-low-cost"
        in (problems)
    ), problems


def test_backends_sharing_a_model_name_need_the_header(run_module, system, cluster, tmp_path):
    """Without X-Edgewasm-Backend an answer's model is all verify has: two backends of one model name cannot be
    told apart, and the module says how to fix that instead of reporting a wrong split."""
    shared = [dict(b, model_name="llama-3-1b") for b in BACKENDS]
    result = run_module(module.main, params(system(), tmp_path, backends=shared))
    assert result["failed"] is True
    problems = "\n".join(result["problems"])
    assert "answers name no backend" in problems and "balancer_backend_header: true" in problems, problems
    assert "the answer names no backend" in problems
    # With the header the same backends verify (the split is then checked by name).
    result = run_module(module.main, params(system(backend_header=True), tmp_path, backends=shared))
    assert not any("name no backend" in p for p in result.get("problems", [])), result.get("problems")


def test_wrong_split_unready_pod_and_restarts_fail_with_each_problem(run_module, system, cluster, tmp_path):
    cluster.put(pod("high-1", "llama-high-cost", ready=False))
    cluster.put(endpoint_slice("llama-high-cost", 0))
    result = run_module(
        module.main, params(system(low_weight=1), tmp_path)
    )  # the balancer splits 1:1, not 3:1
    assert result["failed"] is True and result["ok"] is False
    problems = "\n".join(result["problems"])
    assert "pod high-1 is not ready (phase Pending, waiting: CreateContainerError)" in problems
    assert "Service llama-high-cost has 0 ready endpoints, expected 1" in problems
    assert (
        "sequential batch: llm/llama-low-cost got 50.0% of the answers, its weight asks for 75.0%" in problems
    )
    assert "Result: **FAIL**" in Path(result["markdown_path"]).read_text()


def test_unreachable_balancer_fails_every_request(run_module, cluster, tmp_path):
    result = run_module(
        module.main, params(f"http://127.0.0.1:{free_port()}", tmp_path, sequential=2, concurrent=2)
    )
    assert result["failed"] is True
    assert any("backend llama-low-cost (model llama-3-1b): URLError" in p for p in result["problems"])
    assert "sequential batch: 2 of 2 requests failed" in result["problems"]


def test_check_mode_sends_nothing(run_module, cluster, tmp_path):
    result = run_module(module.main, params("http://127.0.0.1:9", tmp_path), check_mode=True)
    assert result["changed"] is False and not os.path.exists(tmp_path / "reports")
    assert cluster.calls == []


@pytest.mark.parametrize(
    ("message", "expected", "not_expected"),
    [
        # runwasi's shim: wasmedge-types' bare "unknown import" (the linking detail goes to the shim's log).
        (
            "failed to create containerd task: failed to create shim task: Other: unknown import",
            'runwasi\'s shim says only "unknown import"',
            "the image's llama-api-server.wasm imports wasi:logging",
        ),
        # crun / the CLI: WasmEdge's own log line, in the FallbackToLogsOnError termination message.
        (
            "[error] instantiation failed: unknown import, Code: 0x302\n"
            '[error]     When linking module: "wasi_ephemeral_nn" , function name: "load_by_name"',
            "the WASI-NN plugin was not loaded inside the container",
            "runwasi's shim says only",
        ),
        (
            "[error] instantiation failed: unknown import, Code: 0x302\n"
            '[error]     When linking module: "wasi:logging/logging" , function name: "log"',
            "imports wasi:logging, which runwasi's WasmEdge shim does not provide",
            "runwasi's shim says only",
        ),
    ],
    ids=["runwasi-unknown-import", "crun-wasi-nn", "crun-wasi-logging"],
)
def test_linking_failures_are_recognised_as_each_runtime_reports_them(
    run_module, system, cluster, tmp_path, message, expected, not_expected
):
    broken = pod("high-1", "llama-high-cost", ready=False)
    broken["status"]["containerStatuses"][0]["state"] = {
        "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}
    }
    broken["status"]["containerStatuses"][0]["lastState"] = {
        "terminated": {"reason": "StartError", "message": message}
    }
    cluster.put(broken)
    result = run_module(module.main, params(system(), tmp_path, sequential=2, concurrent=2))
    assert result["failed"] is True
    problem = next(p for p in result["problems"] if p.startswith("pod high-1 is not ready"))
    assert expected in problem
    assert not_expected not in problem  # only the hint that applies
