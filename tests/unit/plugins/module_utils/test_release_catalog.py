"""The release catalog: each upstream fact the roles rely on, and the decisions derived from it."""

from __future__ import annotations

import pytest

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import release_catalog as c

FULL_CPU = {"avx": True, "avx2": True, "fma": True, "f16c": True}
NO_CUDA = {"driver_present": False, "runtimes": {"12": {"complete": False}, "11": {"complete": False}}}


def node(machine="x86_64", glibc="2.36", cpu=None, cuda=None):
    return {
        "machine": machine,
        "glibc_version": glibc,
        "cpu": FULL_CPU if cpu is None else cpu,
        "cuda": cuda or NO_CUDA,
    }


def test_layouts_per_version():
    assert c.wasmedge_release("0.14.1")["layout"] == c.TOPDIR
    assert all(c.wasmedge_release(v)["layout"] == c.FLAT for v in c.wasmedge_versions() if v != "0.14.1")


def test_flat_and_topdir_archives_are_told_apart_by_their_listing():
    flat = c.archive_root(["bin/", "bin/wasmedge", "lib/libwasmedge.so.0"], "0.15.0")
    assert (flat["strip"], flat["layout"], flat["error"]) == (0, c.FLAT, "")
    dotted = c.archive_root(["./", "./bin/wasmedge"], "0.15.0")
    assert dotted["strip"] == 0
    top = c.archive_root(["WasmEdge-0.14.1-Linux/", "WasmEdge-0.14.1-Linux/bin/wasmedge"], "0.14.1")
    assert (top["strip"], top["layout"]) == (1, c.TOPDIR)
    # The listing decides, not the version: a 0.15.0 archive repackaged with a top directory still works.
    assert c.archive_root(["WasmEdge-0.15.0-Linux/bin/wasmedge"], "0.15.0")["strip"] == 1
    assert "neither bin/wasmedge" in c.archive_root(["README.md", "evil/bin/wasmedge"], "0.15.0")["error"]


def test_dists_per_version_include_manylinux_2_28_for_0_14_1():
    assert "manylinux_2_28" in c.wasmedge_release("0.14.1")["dists"]
    assert "manylinux2014" not in c.wasmedge_release("0.15.0")["dists"]


def test_cpu_variant_needs_avx_avx2_fma_and_f16c():
    for missing in ("avx", "avx2", "fma", "f16c"):
        cpu = dict(FULL_CPU, **{missing: False})
        assert c.auto_variant("x86_64", cpu, NO_CUDA) == "noavx", missing
        errors = c.platform("0.14.1", node(cpu=cpu), variant="cpu")["errors"]
        assert any("needs AVX/AVX2/FMA/F16C" in e and missing in e for e in errors), errors
    assert c.auto_variant("x86_64", FULL_CPU, NO_CUDA) == "cpu"
    assert c.auto_variant("aarch64", {}, NO_CUDA) == "cpu"


def test_auto_platform_on_a_modern_x86_node():
    out = c.platform("0.15.0", node())
    assert out["errors"] == []
    assert (out["dist"], out["variant"], out["arch"], out["k3s_arch"], out["layout"]) == (
        "ubuntu20.04",
        "cpu",
        "x86_64",
        "amd64",
        c.FLAT,
    )


def test_aarch64_on_0_15_gets_the_dist_that_has_a_plugin():
    out = c.platform("0.15.0", node(machine="aarch64", cpu={}))
    assert out["errors"] == [] and out["dist"] == "manylinux_2_28"


def test_0_14_1_has_no_evidence_of_an_aarch64_plugin_and_says_how_to_vouch():
    out = c.platform("0.14.1", node(machine="aarch64", cpu={}))
    assert len(out["errors"]) == 1
    assert "edgewasm_vouched_assets" in out["errors"][0]
    path = "0.14.1/WasmEdge-plugin-wasi_nn-ggml-0.14.1-ubuntu20.04_aarch64.tar.gz"
    assert path in out["errors"][0]
    assert c.platform("0.14.1", node(machine="aarch64", cpu={}), vouched=[path])["errors"] == []


def test_no_noavx_or_cuda_for_0_15_and_later():
    lacking = dict(FULL_CPU, f16c=False)
    errors = c.platform("0.15.0", node(cpu=lacking))["errors"]
    assert len(errors) == 1 and "WasmEdge-plugin-wasi_nn-ggml-noavx-0.15.0-" in errors[0]
    assert "cpu manylinux_2_28_x86_64" in errors[0]  # names what exists
    cuda = {"driver_present": True, "runtimes": {"12": {"complete": True}, "11": {"complete": False}}}
    errors = c.platform("0.16.4", node(cuda=cuda))["errors"]
    assert any("ggml-cuda-0.16.4" in e for e in errors)


def test_registry_builds_exist_per_version():
    ok = c.ggml_plugin("0.14.1", "b5640", "cpu", "ubuntu20.04", "x86_64")
    assert ok["errors"] == [] and ok["source"] == "registry" and ok["path"].startswith("b5640/")
    assert ok["checksum_file"] == ""  # the registry publishes none: trust on first use
    wrong = c.ggml_plugin("0.15.0", "b5640", "cpu", "ubuntu20.04", "x86_64")
    assert "no build b5640 for WasmEdge 0.15.0: builds for 0.15.0 are b6301, b6343" in wrong["errors"][0]
    none = c.ggml_plugin("0.16.0", "b6301", "cpu", "ubuntu20.04", "x86_64")
    assert "none (use wasi_nn_ggml_build=release)" in none["errors"][0]
    bad = c.ggml_plugin("0.14.1", "b4067", "cpu", "ubuntu20.04", "x86_64")
    assert "do-not-use" in bad["errors"][0]


def test_release_plugins_are_verified_against_the_release_sha256sum():
    rel = c.ggml_plugin("0.15.0", "release", "cpu", "manylinux_2_28", "aarch64")
    assert rel["errors"] == [] and rel["checksum_file"] == "0.15.0/SHA256SUM"
    assert c.wasmedge_core("0.15.0", "manylinux_2_28", "x86_64")["checksum_file"] == "0.15.0/SHA256SUM"
    assert "not in the release catalog" in c.wasmedge_core("0.13.0", "ubuntu20.04", "x86_64")["errors"][0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("%s  WasmEdge-0.15.0-ubuntu20.04_x86_64.tar.gz\n" % ("a" * 64), "a" * 64),
        ("%s *WasmEdge-0.15.0-ubuntu20.04_x86_64.tar.gz\n" % ("B" * 64), "b" * 64),
        ("%s  ./WasmEdge-0.15.0-ubuntu20.04_x86_64.tar.gz" % ("c" * 64), "c" * 64),
        ("%s  WasmEdge-0.15.0-ubuntu20.04_x86_64.tar.gz.sig\n" % ("d" * 64), ""),
        ("zz  WasmEdge-0.15.0-ubuntu20.04_x86_64.tar.gz\n", ""),
        ("", ""),
    ],
)
def test_checksum_files(text, expected):
    assert c.parse_checksums(text, "WasmEdge-0.15.0-ubuntu20.04_x86_64.tar.gz") == expected


@pytest.mark.parametrize(
    ("version", "config", "base"),
    [
        ("v1.31.6+k3s1", "3", True),
        ("v1.31.5+k3s1", "2", True),
        ("v1.32.2+k3s1", "3", True),
        ("v1.32.1+k3s1", "2", True),
        ("v1.33.0+k3s1", "3", True),
        ("v1.28.1+k3s1", "2", True),
        ("v1.28.0+k3s1", "2", False),
        ("v1.27.5+k3s1", "2", True),
        ("v1.27.4+k3s1", "2", False),
        ("v1.24.17+k3s1", "2", False),
        ("v2.0.0+k3s1", "3", True),
    ],
)
def test_k3s_template_support(version, config, base):
    out = c.k3s_containerd(version)
    assert (out["config_version"], out["base"]) == (config, base)


def test_runwasi_feature_names_and_static_archive():
    assert c.runwasi_build("0.6.0", "x86_64")["nn_feature"] == "plugin"
    assert c.runwasi_build("0.5.0", "x86_64")["nn_feature"] == "wasi_nn"
    out = c.runwasi_build("0.6.0", "aarch64")
    assert out["static_path"] == "0.14.1/WasmEdge-0.14.1-debian11_aarch64_static.tar.gz"
    assert out["checksum_file"] == "0.14.1/SHA256SUM"
    assert "not in the release catalog" in c.runwasi_build("9.9.9", "x86_64")["errors"][0]


def test_crun_json_library_by_version():
    assert c.crun_json_package("1.29.1") == "libjson-c-dev"
    assert c.crun_json_package("1.28") == "libjson-c-dev"
    assert c.crun_json_package("1.27.2") == "libyajl-dev"


def test_glibc_and_dist_errors_name_the_variable():
    old = c.platform("0.15.0", node(glibc="2.27"))
    assert any("older than every dist" in e for e in old["errors"])
    assert (
        "preflight_wasmedge_dist=manylinux2014 is not released for WasmEdge 0.15.0"
        in c.platform("0.15.0", node(), dist="manylinux2014")["errors"][0]
    )
    assert "is not in the release catalog" in c.platform("0.13.0", node())["errors"][0]
    assert "upstream releases are used for" in c.platform("0.14.1", node(machine="riscv64"))["errors"][0]


def test_an_unknown_variant_is_an_error_not_a_crash():
    out = c.platform("0.15.0", node(), variant="vulkan")
    assert out["errors"] == ["preflight_ggml_variant=vulkan is not one of auto, cpu, noavx, cuda-12, cuda-11"]
