"""playbooks/deploy.yml: bad backend lists fail in validation, before any node or cluster is touched.

No Kubernetes API exists here: a run that got past validation would fail with "Cannot reach the
Kubernetes API" instead, so each test also proves the failure happened first.
"""

from __future__ import annotations

import subprocess

import private_containerd
import pytest
from doubles import lab_models, release_mirror, wasmedge_tree
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


def run(
    run_site,
    tmp_path,
    backends,
    image="registry.example.com/llama-api-server:0.14.1",
    models=None,
    check=False,
    **overrides,
):
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
        **overrides,
    }
    return run_site(local_inventory(["node1"], []), extra, playbook="playbooks/deploy.yml", check=check)


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


def serving_image(tmp_path, daemon=None, **overrides):
    """The variables that build the serving image from a STAND-IN LlamaEdge release on a local mirror."""
    release_mirror.build_llamaedge(tmp_path / "mirror", "0.28.1")
    variables = {
        "edgewasm_artifact_mirror": str(tmp_path / "mirror"),
        "edgewasm_artifact_cache": str(tmp_path / "cache"),
        "edgewasm_artifact_lock": str(tmp_path / "edgewasm.lock.json"),
        "llama_backends_server_image_dir": str(tmp_path / "node-images"),
        **overrides,
    }
    if daemon is not None:
        variables.update(
            llama_backends_containerd_ctr=daemon["ctr"], llama_backends_containerd_address=daemon["address"]
        )
    return variables


def images(daemon) -> dict[str, str]:
    listing = subprocess.run(
        [*daemon["ctr"], "--address", daemon["address"], "-n", "k8s.io", "images", "ls"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {f[0]: f[2] for f in (line.split() for line in listing.splitlines()[1:]) if len(f) > 2}


def test_no_image_means_the_serving_image_built_and_imported_before_the_cluster(run_site, tmp_path):
    """Before: an empty llama_backends_image was an error, leaving users to build and distribute an image by hand."""
    with private_containerd.running(tmp_path / "ctrd", 2) as daemon:
        first = run(run_site, tmp_path, [GOOD], image="", **serving_image(tmp_path, daemon))
        found = images(daemon)
        again = run(run_site, tmp_path, [GOOD], image="", **serving_image(tmp_path, daemon))
    assert "Cannot reach the Kubernetes API" in first.output, first.output  # the import came first
    digest = found["localhost/llamaedge/llama-api-server:0.28.1"]
    assert found["localhost/llamaedge/llama-api-server@" + digest] == digest
    assert "edgewasm.lock.json" in first.output or (tmp_path / "edgewasm.lock.json").is_file()
    assert "0.28.1/SHA256SUM" in (tmp_path / "edgewasm.lock.json").read_text()
    # The rerun imports nothing: the image is there by digest.
    assert "Import the image into k3s's containerd" in again.output
    assert (
        "changed: [node1] => "
        not in again.output.split("Import the image into k3s's containerd")[1].split("TASK [")[0]
    ), again.output


def test_a_tampered_release_wasm_fails_before_any_node(run_site, tmp_path):
    variables = serving_image(tmp_path)
    wasm = tmp_path / "mirror" / "0.28.1" / "llama-api-server.wasm"
    wasm.write_bytes(wasm.read_bytes() + b"\0")  # no longer what SHA256SUM says
    result = run(run_site, tmp_path, [GOOD], image="", **variables)
    assert result.rc != 0
    assert "0.28.1/llama-api-server.wasm" in result.output and "sha256" in result.output, result.output
    assert not (tmp_path / "node-images").exists()
    assert "Cannot reach the Kubernetes API" not in result.output


def test_your_own_wasm_is_checked_against_its_sha256_before_it_is_used(run_site, tmp_path):
    own = tmp_path / "mirror" / "0.28.1" / "llama-api-server.wasm"
    variables = serving_image(
        tmp_path, llama_backends_server_wasm=str(own), llama_backends_server_sha256="0" * 64
    )
    result = run(run_site, tmp_path, [GOOD], image="", **variables)
    assert result.rc != 0
    assert f"llama_backends_server_wasm {own} has sha256" in result.output, result.output
    assert "rebuild it or update the checksum" in result.output
    assert not (tmp_path / "cache" / "images").exists() and not (tmp_path / "node-images").exists()


def test_bad_serving_image_settings_fail_naming_the_variable(run_site, tmp_path):
    result = run(
        run_site,
        tmp_path,
        [GOOD],
        image="",
        **serving_image(
            tmp_path, llama_backends_server_version="latest", llama_backends_server_wasm="http://x/y.wasm"
        ),
    )
    assert result.rc != 0
    assert "llama_backends_server_version='latest' must be a LlamaEdge release" in result.output, (
        result.output
    )
    assert "a URL needs llama_backends_server_sha256" in result.output
    assert "Cannot reach the Kubernetes API" not in result.output


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


@pytest.mark.parametrize("plugin_installed", [True, False])
def test_check_on_a_fresh_cluster_says_what_it_cannot_predict(run_site, tmp_path, plugin_installed):
    """site.yml --check before the first converge: the kubeconfig the k3s role would fetch is not there yet,
    nor (on a fresh node) the plugin the runtime roles would install. The deploy roles say so and pass."""
    kubeconfig = tmp_path / "not-yet" / "kubeconfig.yaml"
    overrides = {"edgewasm_kubeconfig": str(kubeconfig)}
    if not plugin_installed:
        overrides["llama_backends_plugin_paths"] = [str(tmp_path / "no-wasmedge" / "plugin")]
    result = run(run_site, tmp_path, [GOOD], check=True, **overrides)
    assert result.rc == 0, result.output
    reasons = f"the kubeconfig {kubeconfig} does not exist yet"
    if not plugin_installed:
        reasons += "; no WASI-NN plugin yet on node1"
    assert f"Check mode: the backends are not predicted, {reasons}." in result.output, result.output
    assert f"Check mode: the balancer is not predicted, the kubeconfig {kubeconfig} does not exist yet" in (
        result.output
    )
    assert "Cannot reach the Kubernetes API" not in result.output


def test_check_with_a_kubeconfig_still_asks_the_cluster(run_site, tmp_path):
    """Only a kubeconfig that is not there yet skips the prediction: one that exists but points nowhere
    fails as a real run does, so a check run against a broken cluster is never reported clean."""
    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n"
    )
    result = run(run_site, tmp_path, [GOOD], check=True, edgewasm_kubeconfig=str(kubeconfig))
    assert result.rc != 0
    assert "Cannot reach the Kubernetes API" in result.output, result.output
    assert "Check mode: the backends are not predicted" not in result.output
