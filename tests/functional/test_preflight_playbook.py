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
    """0.14.1 has no evidence of a manylinux_2_28 plugin: vouching for it (either variant auto may pick on this
    machine) lets preflight choose it; without the vouch it is refused (checked first)."""
    arch = os.uname().machine
    extra = {**LENIENT, "preflight_wasmedge_version": "0.14.1", "preflight_wasmedge_dist": "manylinux_2_28"}
    refused = run_preflight(local_inventory(["s1"], []), extra)
    assert refused.rc != 0 and "edgewasm_vouched_assets" in refused.output, refused.output
    vouched = [
        f"0.14.1/WasmEdge-plugin-wasi_nn-ggml{infix}-0.14.1-manylinux_2_28_{arch}.tar.gz"
        for infix in ("", "-noavx")
    ]
    result = run_preflight(local_inventory(["s1"], []), {**extra, "edgewasm_vouched_assets": vouched})
    assert result.rc == 0, result.output
    facts = json.loads((tmp_path / "facts" / "edgewasm.fact").read_text())
    assert facts["wasmedge_dist"] == "manylinux_2_28"
    assert facts["ggml_variant"] in ("cpu", "noavx")


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
