"""The contract between the collection and the balancer service: both sides agree.

Each side declares the contract once (plugins/module_utils/llama_contract.py and
balancer/src/edgewasm_balancer/contract.py). llama_backend writes the label and annotations the
balancer discovers backends by, llama_balancer passes the routing policy and the token variable,
llama_verify reads the header the balancer sets: a name changed on one side only would silently
turn discovery, routing or verification off.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import (
    llama_backend_manifests,
    llama_balancer_manifests,
    llama_contract,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "balancer" / "src"))

from edgewasm_balancer import contract, pool
from edgewasm_balancer.config import Settings

SHARED = (
    "TARGET_LABEL",
    "WEIGHT_ANNOTATION",
    "MODELS_ANNOTATION",
    "SLOTS_ANNOTATION",
    "MIN_WEIGHT",
    "MAX_WEIGHT",
    "MIN_SLOTS",
    "MAX_SLOTS",
    "ROUTING_POLICIES",
    "BACKEND_HEADER",
    "ADMIN_TOKEN_ENV",
)


def test_both_sides_declare_the_same_contract():
    for name in SHARED:
        assert getattr(llama_contract, name) == getattr(contract, name), name
    assert llama_contract.SHUTDOWN_DEFAULTS == {
        "--shutdown-delay": contract.SHUTDOWN_DELAY,
        "--shutdown-timeout": contract.SHUTDOWN_TIMEOUT,
    }


def test_the_balancer_defaults_are_the_contract():
    defaults = Settings()
    assert defaults.label_selector == f"{contract.TARGET_LABEL}=true"
    assert defaults.weight_annotation == contract.WEIGHT_ANNOTATION
    assert defaults.models_annotation == contract.MODELS_ANNOTATION
    assert defaults.slots_annotation == contract.SLOTS_ANNOTATION
    assert (defaults.shutdown_delay, defaults.shutdown_timeout) == (
        contract.SHUTDOWN_DELAY,
        contract.SHUTDOWN_TIMEOUT,
    )
    assert defaults.routing == contract.ROUTING_POLICIES[0] == "swrr"
    # The pool refuses what the contract does not name.
    for policy in contract.ROUTING_POLICIES:
        pool.BackendPool(routing=policy)


def test_manifests_write_the_contract():
    spec = {
        "name": "low-cost",
        "namespace": "llm",
        "weight": 3,
        "slots": 2,
        "model_name": "llama-3-1b",
        "port": 8080,
        "node_groups": [{"nodes": ["n1"]}],
        "replicas": 1,
        "image": "img",
        "image_pull_policy": "IfNotPresent",
        "runtime_class": "wasmedge-nn",
        "models_dir": "/models",
        "model_file": "m.gguf",
        "prompt_template": "llama-3-chat",
        "wasinn_backend": "GGML",
        "wasinn_target": "AUTO",
        "startup_seconds": 60,
    }
    service = llama_backend_manifests.backend_service(spec)
    assert service["metadata"]["labels"][contract.TARGET_LABEL] == "true"
    annotations = service["metadata"]["annotations"]
    assert annotations == {
        contract.WEIGHT_ANNOTATION: "3",
        contract.MODELS_ANNOTATION: "llama-3-1b",
        contract.SLOTS_ANNOTATION: "2",
    }
    balancer = {
        "name": "gw",
        "namespace": "llm",
        "watch_namespaces": ["llm"],
        "image": "gw",
        "image_pull_policy": "IfNotPresent",
        "service_type": "ClusterIP",
        "port": 80,
        "replicas": 1,
        "routing": "load-aware",
        "admin_token_secret": "gw-admin",
        "admin_token_key": "token",
        "admin_token": "t",
        "extra_args": [],
    }
    deployment = next(
        o for o in llama_balancer_manifests.balancer_manifests(balancer) if o["kind"] == "Deployment"
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][container["args"].index("--routing") + 1] == "load-aware"
    assert [e["name"] for e in container["env"]] == [contract.ADMIN_TOKEN_ENV]
