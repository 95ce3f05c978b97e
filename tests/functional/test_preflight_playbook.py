"""playbooks/site.yml's preflight stage, run for real against this machine.

Good inventories pass; bad ones fail before anything is installed, with a
message that names what to fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from site_runner import local_inventory

pytestmark = pytest.mark.slow

# This machine is a test host, not a k3s node: its kernel may lack br_netfilter.
LENIENT = {"preflight_kernel_checks": "warn"}


@pytest.fixture
def run_preflight(run_site):
    """site.yml's inventory check and preflight plays only (tag preflight): the later stages would
    install software on this machine."""

    def run(inventory: dict, extra_vars: dict | None = None):
        return run_site(inventory, extra_vars, tags=["preflight"])

    return run


def test_single_server_passes_and_writes_local_facts(run_preflight, tmp_path):
    result = run_preflight(local_inventory(["node1"], []), LENIENT)
    assert result.rc == 0, result.output
    facts = json.loads((tmp_path / "facts" / "edgewasm.fact").read_text())
    assert facts["arch"] in ("x86_64", "aarch64")
    assert facts["wasmedge_platform"].endswith("_" + facts["arch"])


@pytest.mark.parametrize(
    ("servers", "agents", "message"),
    [
        (["s1", "s2"], ["a1"], "Group server has 2 hosts (s1, s2): embedded etcd"),
        ([], ["a1"], "Group server is empty"),
        (["s1", "s2", "s3", "s4"], [], "needs an odd number of servers"),
    ],
    ids=["two-servers", "no-server", "four-servers"],
)
def test_bad_server_counts_are_rejected(run_preflight, servers, agents, message):
    result = run_preflight(local_inventory(servers, agents), LENIENT)
    assert result.rc != 0
    assert message in result.output


def test_host_in_both_groups_is_rejected(run_preflight):
    inventory = local_inventory(["s1"], ["a1"])
    inventory["k3s_cluster"]["children"]["agent"]["hosts"]["s1"] = {}
    result = run_preflight(inventory, LENIENT)
    assert result.rc != 0
    assert "Hosts s1 are in both server and agent" in result.output


def test_missing_groups_are_rejected(run_preflight):
    inventory = {"nodes": {"hosts": {"n1": {"ansible_connection": "local"}}}}
    result = run_preflight(inventory, LENIENT)
    assert result.rc != 0
    assert "must define group k3s_cluster with the child groups server and" in result.output
    assert "Groups found: nodes" in result.output


def test_unknown_variant_is_rejected_by_the_argument_spec(run_preflight):
    result = run_preflight(local_inventory(["s1"], []), {**LENIENT, "preflight_ggml_variant": "vulkan"})
    assert result.rc != 0
    assert "preflight_ggml_variant" in result.output
    assert "vulkan" in result.output


@pytest.mark.skipif(
    Path("/proc/driver/nvidia/version").exists(),
    reason="this machine has an NVIDIA driver: nothing to reject",
)
def test_cuda_variant_without_driver_is_rejected(run_preflight, tmp_path):
    result = run_preflight(local_inventory(["s1"], []), {**LENIENT, "preflight_ggml_variant": "cuda-12"})
    assert result.rc != 0
    assert "preflight_ggml_variant=cuda-12 needs the NVIDIA driver" in result.output
    assert not (tmp_path / "facts" / "edgewasm.fact").exists()


def test_dist_no_longer_released_is_rejected(run_preflight):
    result = run_preflight(
        local_inventory(["s1"], []),
        {**LENIENT, "preflight_wasmedge_version": "0.15.0", "preflight_wasmedge_dist": "manylinux2014"},
    )
    assert result.rc != 0
    assert "preflight_wasmedge_dist=manylinux2014 is not released for WasmEdge 0.15.0" in result.output


def test_variant_without_upstream_evidence_is_rejected_naming_what_exists(run_preflight, tmp_path):
    """0.15.0 publishes no noavx plugin: preflight fails before anything is fetched, and says how to vouch."""
    extra = {**LENIENT, "preflight_wasmedge_version": "0.15.0", "preflight_ggml_variant": "noavx"}
    result = run_preflight(local_inventory(["s1"], []), extra)
    assert result.rc != 0
    assert (
        "no evidence that WasmEdge 0.15.0 publishes WasmEdge-plugin-wasi_nn-ggml-noavx-0.15.0-"
        in result.output
    )
    assert "cpu manylinux_2_28_x86_64" in result.output or "cpu manylinux_2_28_aarch64" in result.output
    assert "edgewasm_vouched_assets" in result.output
    assert not (tmp_path / "facts" / "edgewasm.fact").exists()


def test_vouched_asset_is_accepted(run_preflight, tmp_path):
    """0.15.1 publishes no noavx plugin (and no ubuntu20.04 one for aarch64): vouching for it lets preflight choose
    it; without the vouch it is refused (checked first)."""
    arch = os.uname().machine
    if arch == "x86_64":
        extra = {**LENIENT, "preflight_wasmedge_version": "0.15.1", "preflight_ggml_variant": "noavx"}
        vouched = ["0.15.1/WasmEdge-plugin-wasi_nn-ggml-noavx-0.15.1-ubuntu20.04_x86_64.tar.gz"]
    else:
        extra = {**LENIENT, "preflight_wasmedge_version": "0.15.1", "preflight_wasmedge_dist": "ubuntu20.04"}
        vouched = [f"0.15.1/WasmEdge-plugin-wasi_nn-ggml-0.15.1-ubuntu20.04_{arch}.tar.gz"]
    refused = run_preflight(local_inventory(["s1"], []), extra)
    assert refused.rc != 0 and "edgewasm_vouched_assets" in refused.output, refused.output
    result = run_preflight(local_inventory(["s1"], []), {**extra, "edgewasm_vouched_assets": vouched})
    assert result.rc == 0, result.output


def test_unsupported_os_is_rejected(run_preflight):
    result = run_preflight(
        local_inventory(["s1"], []), {**LENIENT, "preflight_supported_os": {"Ubuntu": ["24.04"]}}
    )
    assert result.rc != 0
    assert "which is not in preflight_supported_os" in result.output


def test_kernel_problems_fail_by_default_when_present(run_preflight):
    # Ask for a module no kernel has: the default (fail) must stop the play.
    result = run_preflight(
        local_inventory(["s1"], []), {"preflight_kernel_modules": ["edgewasm_no_such_module"]}
    )
    assert result.rc != 0
    assert "kernel module edgewasm_no_such_module is neither loaded nor built in" in result.output
    assert "preflight_kernel_checks" in result.output


def test_disk_requirement_too_large_is_rejected(run_preflight):
    huge = [{"path": "/var/lib/llamaedge/models", "min_free_mb": 10**12}]
    result = run_preflight(local_inventory(["s1"], []), {**LENIENT, "preflight_disk_requirements": huge})
    assert result.rc != 0
    assert "preflight_disk_requirements asks for 1000000000000 MiB" in result.output


def test_a_known_vulnerability_is_a_warning_naming_the_fix(run_preflight):
    result = run_preflight(local_inventory(["s1"], []), {**LENIENT, "preflight_wasmedge_version": "0.14.1"})
    assert result.rc == 0, result.output
    assert (
        "WARNING s1: preflight_wasmedge_version=0.14.1 has CVE-2025-69261 (memory-offset overflow), fixed in 0.15.1 "
        "and 0.16.0" in result.output
    ), result.output
    default = run_preflight(local_inventory(["s1"], []), LENIENT)
    assert default.rc == 0 and "CVE-" not in default.output


def test_the_runwasi_shim_and_the_plugin_are_checked_as_a_pair(run_preflight):
    """v0.6.0 embeds WasmEdge 0.14.1 (plugin API 4): a 0.17.x plugin (API 5) would never load in it."""
    shim = {**LENIENT, "runwasi_enabled": True}
    refused = run_preflight(local_inventory(["s1"], []), {**shim, "preflight_wasmedge_version": "0.17.1"})
    assert refused.rc != 0
    assert "WasmEdge 0.17.1 plugins (plugin API 5) cannot load in the runwasi 0.6.0 shim" in refused.output
    warned = run_preflight(local_inventory(["s1"], []), {**shim, "preflight_wasmedge_version": "0.15.1"})
    assert warned.rc == 0, warned.output
    assert "WARNING s1: the runwasi 0.6.0 shim embeds WasmEdge 0.14.1" in warned.output
    old = run_preflight(local_inventory(["s1"], []), {**shim, "runwasi_version": "0.5.0"})
    assert old.rc != 0 and "runwasi_version=0.5.0 cannot serve WASI-NN models" in old.output
    # Without the shim (the default) there is nothing to pair.
    assert (
        run_preflight(local_inventory(["s1"], []), {**LENIENT, "preflight_wasmedge_version": "0.17.1"}).rc
        == 0
    )
