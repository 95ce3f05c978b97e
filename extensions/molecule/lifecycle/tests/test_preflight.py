"""What preflight leaves on every node, checked against the node itself."""

import importlib.util
import json
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "release_catalog", Path(__file__).resolve().parents[4] / "plugins" / "module_utils" / "release_catalog.py"
)
catalog = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(catalog)

FACTS = "/etc/ansible/facts.d/edgewasm.fact"


@pytest.fixture(scope="module")
def facts(host):
    return json.loads(host.file(FACTS).content_string)


def _glibc(host):
    out = host.check_output("getconf GNU_LIBC_VERSION")  # "glibc 2.36"
    return tuple(int(p) for p in out.split()[1].split("."))


def test_facts_file_is_root_owned_and_not_world_writable(host):
    f = host.file(FACTS)
    assert f.is_file
    assert f.user == "root"
    assert f.group == "root"
    assert f.mode == 0o644


def test_arch_matches_the_node(host, facts):
    machine = host.check_output("uname -m")
    assert facts["arch"] == machine
    assert facts["k3s_arch"] == catalog.ARCHES[machine]["k3s"]
    assert facts["machine"] == machine


def test_glibc_and_dist(host, facts):
    glibc = _glibc(host)
    assert facts["glibc_version"] == ".".join(map(str, glibc))
    # WasmEdge 0.14.1's GGML plugin is published for ubuntu20.04 (glibc >= 2.31) x86_64: auto prefers it.
    expected = "ubuntu20.04" if glibc >= (2, 31) else "manylinux_2_28"
    assert facts["wasmedge_version"] == "0.14.1"
    assert facts["wasmedge_dist"] == expected
    assert facts["wasmedge_platform"] == f"{expected}_{facts['arch']}"


def test_ggml_variant_follows_cpu_flags(host, facts):
    flags = set()
    for line in host.file("/proc/cpuinfo").content_string.splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.split(":", 1)[1].split())
            break
    assert facts["cpu"]["avx"] == ("avx" in flags)
    assert facts["cpu"]["avx2"] == ("avx2" in flags)
    assert facts["cpu"]["avx512f"] == ("avx512f" in flags)
    has_driver = host.file("/proc/driver/nvidia/version").exists
    assert facts["cuda_driver_version"] is None or has_driver
    if not has_driver:
        # the cpu build is tuned for AVX, AVX2, FMA and F16C: lacking any of them means noavx
        assert facts["ggml_variant"] == ("cpu" if {"avx", "avx2", "fma", "f16c"} <= flags else "noavx")


def test_kernel_warnings_match_the_kernel(host, facts):
    # The lab runs preflight with preflight_kernel_checks=warn: every missing
    # module must be reported, and nothing that is present.
    warnings = " ".join(facts["warnings"])
    for module in ("br_netfilter", "overlay"):
        present = host.file(f"/sys/module/{module}").is_directory
        assert (f"kernel module {module} " in warnings) is (not present)
    # molecule starts the nodes with net.ipv4.ip_forward=1
    assert host.file("/proc/sys/net/ipv4/ip_forward").content_string.strip() == "1"
    assert "ip_forward" not in warnings
