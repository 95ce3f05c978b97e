"""The sample inventory's backends (the seed's three: weights 3/1/2, replicas 3/2/2) as the role passes them."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from doubles.seed_backends import BASE, GROUPS

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import llama_backend_manifests as m

SAMPLE = Path(__file__).resolve().parents[4] / "inventories" / "sample" / "group_vars" / "all.yml"


def role_params(entry: dict, variables: dict) -> dict:
    """What roles/llama_backends/tasks/apply.yml gives llama_backend for one entry."""
    params = dict(
        BASE,
        node_groups=GROUPS,
        namespace=variables["llama_backends_namespace"],
        # No llama_backends_image: the serving image, pinned by digest (tasks/image.yml).
        image=variables.get("llama_backends_image")
        or "localhost/llamaedge/llama-api-server:0.28.1@sha256:" + "a" * 64,
        image_pull_policy="Never",
        models_dir=variables["models_dir"],
    )
    params.update(
        name=entry["name"],
        model_file=entry["model"],
        model_name=entry["model_name"],
        prompt_template=entry["prompt_template"],
        weight=entry.get("weight", 1),
        replicas=entry.get("replicas", 1),
        ctx_size=entry.get("ctx_size"),
    )
    return params


@pytest.mark.parametrize("version", ["1.30", "1.31", "1.32", "1.33"])
def test_sample_backends_build_valid_manifests(version):
    variables = yaml.safe_load(SAMPLE.read_text())
    entries = variables["llama_backends_list"]
    assert [(e["weight"], e["replicas"]) for e in entries] == [(3, 3), (1, 2), (2, 2)]
    declared = {model["file"] for model in variables["models_list"]}
    for entry in entries:
        assert entry["model"] in declared
        params = role_params(entry, variables)
        assert m.backend_errors(params) == []
        objects = m.backend_manifests(params)
        for obj in objects:
            kubernetes_validate.validate(obj, version, strict=True)
        service = objects[-1]
        assert service["metadata"]["annotations"]["llamaedge/weight"] == str(entry["weight"])
        assert sum(o["spec"]["replicas"] for o in objects if o["kind"] == "Deployment") == entry["replicas"]
