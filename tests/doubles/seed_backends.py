"""The seed demo's three backends (weights 3/1/2, replicas 3/2/2) as llama_backend parameters.

The plugin mounts are what wasmedge_plugin_deps returns on two kinds of node: an x86_64 Debian node
and an aarch64 one, whose library paths differ - so each backend gets one Deployment per kind.
"""

from __future__ import annotations

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import plugin_mounts

WASMEDGE = "/opt/wasmedge/0.14.1"


def node_group(nodes: list[str], multiarch: str) -> dict:
    libraries = [
        {"path": f"/usr/lib/{multiarch}/libstdc++.so.6"},
        {"path": f"/lib/{multiarch}/libgcc_s.so.1"},
        {"path": f"/lib/{multiarch}/libgomp.so.1"},
    ]
    volumes, mounts = plugin_mounts.build_mounts(
        [f"{WASMEDGE}/plugin/libwasmedgePluginWasiNN.so"],
        libraries,
        [f"{WASMEDGE}/plugin", f"{WASMEDGE}/lib"],
        "wasmedge",
    )
    env = plugin_mounts.build_env([f"{WASMEDGE}/plugin"], [f"{WASMEDGE}/lib"])
    return {"nodes": nodes, "volumes": volumes, "volume_mounts": mounts, "env": env}


GROUPS = [node_group(["amd1", "amd2"], "x86_64-linux-gnu"), node_group(["arm1"], "aarch64-linux-gnu")]

BASE = {
    "namespace": "llm",
    "state": "present",
    "image": "registry.example.com/llamaedge/llama-api-server:0.14.1",
    "image_pull_policy": "IfNotPresent",
    # The seed's image is built with its wasi_logger setup removed: the shim's RuntimeClass runs it.
    "image_wasi_logging": False,
    "runtime_class": "wasmedge-nn",
    "models_dir": "/var/lib/llamaedge/models",
    "model_aliases": ["default"],
    "ctx_size": 4096,
    "batch_size": None,
    "n_predict": None,
    "threads": None,
    "n_gpu_layers": None,
    "port": 8080,
    "wasinn_backend": "GGML",
    "wasinn_target": "AUTO",
    "node_groups": GROUPS,
    "extra_env": [],
    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
    "startup_seconds": 300,
    "kubeconfig": None,
    "context": None,
    "wait": False,
    "wait_timeout": 600,
}

SEED = [
    dict(
        BASE,
        name="llama-low-cost",
        model_file="Llama-3.2-1B-Instruct-Q5_K_M.gguf",
        model_name="llama-3-1b",
        prompt_template="llama-3-chat",
        weight=3,
        replicas=3,
    ),
    dict(
        BASE,
        name="llama-high-cost",
        model_file="Llama-3.2-3B-Instruct-Q5_K_M.gguf",
        model_name="llama-3-3b",
        prompt_template="llama-3-chat",
        weight=1,
        replicas=2,
    ),
    dict(
        BASE,
        name="qwen-mid",
        model_file="Qwen2.5-1.5B-Instruct-Q5_K_M.gguf",
        model_name="qwen-2.5-1.5b",
        prompt_template="chatml",
        weight=2,
        replicas=2,
    ),
]
