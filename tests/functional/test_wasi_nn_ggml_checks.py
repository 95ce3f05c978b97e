"""wasi_nn_ggml refuses a plugin that does not exist upstream before anything is downloaded.

Only the refusals run here (they end before the role touches the node); installing runs in molecule.
"""

from __future__ import annotations

import pytest
from site_runner import local_inventory

pytestmark = pytest.mark.slow
PLAYBOOK = "tests/functional/playbooks/wasi_nn_ggml.yml"
PLATFORM = {
    "machine": "x86_64",
    "arch": "x86_64",
    "wasmedge_dist": "ubuntu20.04",
    "ggml_variant": "cpu",
    "cuda": {"driver_present": False, "runtimes": {}},
}


def run(run_site, tmp_path, **variables):
    extra = {
        "edgewasm_platform": PLATFORM,
        "edgewasm_artifact_mirror": str(tmp_path / "mirror"),
        "edgewasm_artifact_cache": str(tmp_path / "cache"),
        "edgewasm_artifact_lock": str(tmp_path / "lock.json"),
        "wasi_nn_ggml_prefix": str(tmp_path / "wasmedge"),
        **variables,
    }
    return run_site(local_inventory(["node1"], []), extra, playbook=PLAYBOOK)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"wasi_nn_ggml_wasmedge_version": "0.15.0", "wasi_nn_ggml_build": "b5640"},
            "the plugin registry has no build b5640 for WasmEdge 0.15.0: builds for 0.15.0 are b6301, b6343",
        ),
        (
            {"wasi_nn_ggml_wasmedge_version": "0.16.0", "wasi_nn_ggml_build": "b6301"},
            "builds for 0.16.0 are none (use wasi_nn_ggml_build=release)",
        ),
        (
            {"wasi_nn_ggml_wasmedge_version": "0.15.0", "wasi_nn_ggml_variant": "noavx"},
            "no evidence that WasmEdge 0.15.0 publishes WasmEdge-plugin-wasi_nn-ggml-noavx-0.15.0-ubuntu20.04_x86_64",
        ),
        (
            {"wasi_nn_ggml_wasmedge_version": "0.14.1", "wasi_nn_ggml_build": "b4242"},
            "marked do-not-use",
        ),
    ],
    ids=["build-of-another-version", "no-registry-builds", "variant-not-published", "do-not-use"],
)
def test_plugin_that_does_not_exist_is_refused_before_any_download(run_site, tmp_path, variables, message):
    result = run(run_site, tmp_path, **variables)
    assert result.rc != 0
    assert message in result.output, result.output
    assert not (tmp_path / "cache").exists()  # nothing was fetched
    assert not (tmp_path / "wasmedge").exists()
