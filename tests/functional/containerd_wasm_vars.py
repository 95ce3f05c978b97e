"""The containerd_wasm role's variables for the functional tests: k3s mode under a temporary root,
with two runtimes (the WasmEdge shim and crun with pod annotations) whose binaries are empty scripts."""

from __future__ import annotations

from pathlib import Path


def runtime_binaries(root: Path) -> Path:
    """Empty stand-ins of the two runtime binaries under root/bin: the role only checks they exist."""
    bins = root / "bin"
    bins.mkdir()
    for name in ("containerd-shim-wasmedge-v1", "crun"):
        (bins / name).write_text("#!/bin/sh\n")
    return root


def variables(root: Path, **more) -> dict:
    return {
        "containerd_wasm_k3s_data_dir": str(root / "k3s"),
        "containerd_wasm_containerd_config": str(root / "containerd" / "config.toml"),
        "containerd_wasm_restart": False,
        "containerd_wasm_label_nodes": False,
        "containerd_wasm_plugin_path": "",
        "containerd_wasm_runtimes": [
            {
                "name": "wasmedge-nn",
                "runtime_type": "io.containerd.wasmedge.v1",
                "binary": str(root / "bin" / "containerd-shim-wasmedge-v1"),
            },
            {
                "name": "crun-wasm",
                "runtime_type": "io.containerd.runc.v2",
                "binary": str(root / "bin" / "crun"),
                "pod_annotations": ["module.wasm.image/variant", "run.oci.handler"],
            },
        ],
        **more,
    }
