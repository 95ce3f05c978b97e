"""containerd_wasm renders k3s's containerd template (v2 and v3) and a plain containerd's config.toml block.

The role runs on this machine with every path under tmp_path. The rendered Go template is completed
the way k3s does it, with k3s's base stanzas from tests/doubles/k3s_containerd, and parsed as TOML:
tomllib rejects a table defined twice, as containerd does.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from containerd_wasm_vars import runtime_binaries, variables
from doubles.k3s import render_containerd_template
from site_runner import local_inventory

pytestmark = pytest.mark.slow
PLAYBOOK = "tests/functional/playbooks/containerd_wasm.yml"
FIXTURES = Path(__file__).resolve().parents[1] / "doubles" / "k3s_containerd"


@pytest.fixture
def node(tmp_path):
    return runtime_binaries(tmp_path)


def runtimes(config: dict, version: int) -> dict:
    if version == 3:
        return config["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]
    return config["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]


def k3s_config(root: Path, version: int) -> dict:
    name = "config-v3.toml.tmpl" if version == 3 else "config.toml.tmpl"
    template = (root / "k3s" / "agent" / "etc" / "containerd" / name).read_text()
    base = (FIXTURES / f"base-v{version}.toml").read_text()
    return tomllib.loads(render_containerd_template(template, base, systemd_cgroup=True))


@pytest.mark.parametrize(("k3s_version", "config_version"), [("v1.31.6+k3s1", 3), ("v1.30.4+k3s1", 2)])
def test_k3s_template_extends_base_without_redefining_tables(run_site, node, k3s_version, config_version):
    extra = variables(node, containerd_wasm_k3s_version=k3s_version)
    result = run_site(local_inventory(["node1"], []), extra, playbook=PLAYBOOK)
    assert result.rc == 0, result.output
    tables = runtimes(k3s_config(node, config_version), config_version)
    # k3s's own auto-detected runtimes are still there, unchanged, next to ours.
    assert tables["crun"]["options"]["BinaryName"] == "/usr/local/bin/crun"
    assert tables["wasmedge"]["runtime_type"] == "io.containerd.wasmedge.v1"
    # A non-runc shim gets no options table: containerd would drop BinaryName for it anyway.
    assert tables["wasmedge-nn"] == {"runtime_type": "io.containerd.wasmedge.v1"}
    assert tables["crun-wasm"] == {
        "runtime_type": "io.containerd.runc.v2",
        "pod_annotations": ["module.wasm.image/variant", "run.oci.handler"],
        "options": {"BinaryName": str(node / "bin" / "crun"), "SystemdCgroup": True},
    }
    again = run_site(local_inventory(["node1"], []), extra, playbook=PLAYBOOK)
    assert re.search(r"node1\s+: ok=\d+\s+changed=0 ", again.output), again.output


def test_upgrade_to_containerd_2_replaces_the_v2_template(run_site, node):
    inventory = local_inventory(["node1"], [])
    old = run_site(inventory, variables(node, containerd_wasm_k3s_version="v1.31.5+k3s1"), playbook=PLAYBOOK)
    assert old.rc == 0, old.output
    tmpl_dir = node / "k3s" / "agent" / "etc" / "containerd"
    assert sorted(p.name for p in tmpl_dir.iterdir()) == ["config.toml.tmpl"]
    new = run_site(inventory, variables(node, containerd_wasm_k3s_version="v1.32.2+k3s1"), playbook=PLAYBOOK)
    assert new.rc == 0, new.output
    assert sorted(p.name for p in tmpl_dir.iterdir()) == ["config-v3.toml.tmpl"]


def test_only_runtimes_installed_on_the_node_are_declared(run_site, node):
    (node / "bin" / "crun").unlink()
    result = run_site(local_inventory(["node1"], []), variables(node), playbook=PLAYBOOK)
    assert result.rc == 0, result.output
    assert set(runtimes(k3s_config(node, 3), 3)) == {"runc", "crun", "wasmedge", "wasmedge-nn"}


def test_runtimeclasses_are_valid_and_select_labelled_nodes(run_site, node):
    result = run_site(local_inventory(["node1"], []), variables(node), playbook=PLAYBOOK)
    assert result.rc == 0, result.output
    manifest = node / "k3s" / "server" / "manifests" / "edgewasm-runtimeclasses.yaml"
    assert manifest.stat().st_mode & 0o777 == 0o600
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    assert [d["handler"] for d in docs] == ["wasmedge-nn", "crun-wasm"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33", strict=True)
        assert doc["scheduling"]["nodeSelector"] == {f"runtime.edgewasm.io/{doc['metadata']['name']}": "true"}


@pytest.mark.parametrize("name", ["crun", "wasmedge", "spin"])
def test_runtime_name_colliding_with_k3s_fails_before_writing(run_site, node, name):
    extra = variables(node)
    extra["containerd_wasm_runtimes"][1]["name"] = name
    result = run_site(local_inventory(["node1"], []), extra, playbook=PLAYBOOK)
    assert result.rc != 0
    assert "must not be one of the runtimes k3s declares itself" in result.output, result.output
    assert f'"name": "{name}"' in result.output
    assert not (node / "k3s").exists()


@pytest.mark.parametrize(
    "hostile",
    [
        {"options": {"a]\n[plugins.x": 1}},  # a key that closes the table and opens another
        {"binary": '/usr/local/bin/crun" injected = "1'},  # a quote in a path
        {"options": {"Root": "line\nbreak"}},  # a value that is not printable ASCII
    ],
    ids=["key", "path", "value"],
)
def test_a_runtime_that_could_inject_toml_fails_before_writing(run_site, node, hostile):
    """The same checks tests/unit/test_fuzz_containerd.py fuzzes, evaluated by Ansible itself."""
    extra = variables(node)
    extra["containerd_wasm_runtimes"][1].update(hostile)
    result = run_site(local_inventory(["node1"], []), extra, playbook=PLAYBOOK)
    assert result.rc != 0
    assert "keys are TOML bare keys" in result.output, result.output
    assert not (node / "k3s").exists()


def test_plain_containerd_gets_a_marked_block_in_its_config(run_site, node):
    config = node / "containerd" / "config.toml"
    config.parent.mkdir()
    original = 'version = 2\n\n[plugins."io.containerd.grpc.v1.cri"]\n  restrict_oom_score_adj = true\n'
    config.write_text(original)
    extra = variables(node, containerd_wasm_mode="containerd")
    result = run_site(local_inventory(["node1"], []), extra, playbook=PLAYBOOK)
    assert result.rc == 0, result.output
    main = tomllib.loads(config.read_text())
    assert main["version"] == 2
    assert main["plugins"]["io.containerd.grpc.v1.cri"]["restrict_oom_score_adj"] is True
    assert runtimes(main, 2)["crun-wasm"]["options"] == {
        "BinaryName": str(node / "bin" / "crun"),
        "SystemdCgroup": True,
    }
    # Declaring runtimes replaces containerd's built-in map: the default runc must be declared too.
    assert runtimes(main, 2)["runc"] == {
        "runtime_type": "io.containerd.runc.v2",
        "options": {"SystemdCgroup": True},
    }
    assert not (node / "k3s").exists()
    again = run_site(local_inventory(["node1"], []), extra, playbook=PLAYBOOK)
    assert re.search(r"node1\s+: ok=\d+\s+changed=0 ", again.output), again.output
    removed = run_site(
        local_inventory(["node1"], []), {**extra, "containerd_wasm_state": "absent"}, playbook=PLAYBOOK
    )
    assert removed.rc == 0, removed.output
    assert config.read_text() == original


def test_plain_containerd_declaring_our_runtime_itself_is_refused(run_site, node):
    config = node / "containerd" / "config.toml"
    config.parent.mkdir()
    config.write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun-wasm]\n'
        '  runtime_type = "io.containerd.runc.v2"\n'
    )
    result = run_site(
        local_inventory(["node1"], []), variables(node, containerd_wasm_mode="containerd"), playbook=PLAYBOOK
    )
    assert result.rc != 0
    assert "already declares one of wasmedge-nn, crun-wasm itself" in result.output, result.output


def test_k3s_without_the_base_template_is_refused_naming_the_minimum(run_site, node):
    """{{ template "base" . }} exists from v1.28.1+k3s1 / v1.27.5+k3s1: an older k3s would lose its own config."""
    extra = variables(node, containerd_wasm_k3s_version="v1.27.4+k3s1")
    result = run_site(local_inventory(["node1"], []), extra, playbook=PLAYBOOK)
    assert result.rc != 0
    assert 'containerd_wasm_k3s_version=v1.27.4+k3s1 has no {{ template "base" . }}' in result.output, (
        result.output
    )
    assert "v1.28.1+k3s1" in result.output
    assert not (node / "k3s").exists()


def test_template_goes_under_k3s_data_dir_by_default(run_site, node):
    """containerd_wasm_k3s_data_dir follows the k3s role's k3s_data_dir (a data dir moved elsewhere)."""
    extra = variables(node, k3s_data_dir=str(node / "data"))
    del extra["containerd_wasm_k3s_data_dir"]
    result = run_site(local_inventory(["node1"], []), extra, playbook=PLAYBOOK)
    assert result.rc == 0, result.output
    assert (node / "data" / "agent" / "etc" / "containerd" / "config-v3.toml.tmpl").is_file()
