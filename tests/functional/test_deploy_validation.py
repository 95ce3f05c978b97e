"""playbooks/deploy.yml: bad backend lists fail in validation, before any node or cluster is touched.

No Kubernetes API exists here: a run that got past validation would fail with "Cannot reach the
Kubernetes API" instead, so each test also proves the failure happened first.
"""

from __future__ import annotations

import pytest
from doubles import lab_models, wasmedge_tree
from site_runner import local_inventory

pytestmark = pytest.mark.slow


def standin_gguf(path):
    """A tiny STAND-IN GGUF model (llama.cpp's writer), pre-placed like `present: true` says."""
    lab_models.write(path)


MODELS = [{"file": "Llama-3.2-1B-Instruct-Q5_K_M.gguf", "present": True}]
GOOD = {
    "name": "llama-low-cost",
    "model": "Llama-3.2-1B-Instruct-Q5_K_M.gguf",
    "model_name": "llama-3-1b",
    "prompt_template": "llama-3-chat",
    "weight": 3,
    "replicas": 3,
}


def run(run_site, tmp_path, backends, image="registry.example.com/llama-api-server:0.14.1", models=None):
    tree = wasmedge_tree.build(
        tmp_path / "wasmedge" / "0.14.1", runner=False
    )  # STAND-IN WasmEdge + WASI-NN plugin
    (tmp_path / "models").mkdir(exist_ok=True)
    standin_gguf(tmp_path / "models" / MODELS[0]["file"])
    extra = {
        "models_list": MODELS if models is None else models,
        "models_dir": str(tmp_path / "models"),
        "llama_backends_list": backends,
        "llama_backends_image": image,
        "balancer_image": "registry.example.com/balancer:0.1.0",
        "llama_backends_plugin_paths": [str(tree["plugin_dir"])],
        "llama_backends_ld_library_path": [str(tree["lib"])],
    }
    return run_site(local_inventory(["node1"], []), extra, playbook="playbooks/deploy.yml")


@pytest.mark.parametrize(
    ("backends", "message"),
    [
        ([dict(GOOD, weight=0)], "entry llama-low-cost: weight=0 must be an integer from 1 to 10000"),
        ([GOOD, dict(GOOD, model_name="other")], "llama_backends_list names a backend twice: llama-low-cost"),
        (
            [dict(GOOD, model="Unknown-7B.gguf")],
            "model='Unknown-7B.gguf' must be one of the files of models_list",
        ),
        (
            [dict(GOOD, name="Llama_1B")],
            "llama_backends_list entry Llama_1B: name='Llama_1B' must be a DNS-1123 label",
        ),
        ([dict(GOOD, slots="many")], "entry llama-low-cost: slots='many' must be an integer from 1 to 1024"),
        ([dict(GOOD, ctx_size=0)], "entry llama-low-cost: ctx_size=0 must be an integer from 1 to 16777216"),
    ],
)
def test_bad_backends_fail_before_the_cluster(run_site, tmp_path, backends, message):
    result = run(run_site, tmp_path, backends)
    assert result.rc != 0
    assert message in result.output, result.output
    assert "Cannot reach the Kubernetes API" not in result.output


def test_missing_image_fails_naming_the_variable(run_site, tmp_path):
    result = run(run_site, tmp_path, [GOOD], image="")
    assert result.rc != 0
    assert "llama_backends_image must name the OCI image" in result.output, result.output


def test_model_on_no_node_fails(run_site, tmp_path):
    result = run(run_site, tmp_path, [GOOD], models=[dict(MODELS[0], nodes=[])])
    assert result.rc != 0
    assert "no host of this play holds its model Llama-3.2-1B-Instruct-Q5_K_M.gguf" in result.output, (
        result.output
    )


def test_valid_backends_reach_the_cluster_step(run_site, tmp_path):
    """The same input with valid backends passes validation and only then fails: there is no cluster here."""
    result = run(run_site, tmp_path, [GOOD])
    assert result.rc != 0
    assert "Cannot reach the Kubernetes API" in result.output, result.output
