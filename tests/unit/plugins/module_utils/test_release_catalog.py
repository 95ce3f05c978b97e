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


def test_0_14_1_publishes_the_plugin_for_aarch64_and_both_manylinux_dists():
    """0.14.1's matrix-extensions.json: manylinux2014 and manylinux_2_28, x86_64 and aarch64 (every aarch64 node
    on the default version failed preflight before)."""
    out = c.platform("0.14.1", node(machine="aarch64", cpu={}))
    assert out["errors"] == [] and out["dist"] == "ubuntu20.04"
    for dist in ("manylinux2014", "manylinux_2_28"):
        for arch in ("x86_64", "aarch64"):
            assert "cpu" in c.ggml_variants("0.14.1", dist, arch), (dist, arch)
    assert c.platform("0.14.1", node(machine="aarch64", cpu={}, glibc="2.28"))["dist"] == "manylinux_2_28"
    assert c.platform("0.14.1", node(machine="aarch64", cpu={}, glibc="2.17"))["dist"] == "manylinux2014"
    # install.py's table: ubuntu20.04 noavx and cuda-11 on x86_64 only, cuda (12) on both.
    assert c.ggml_variants("0.14.1", "ubuntu20.04", "x86_64") == ["cpu", "noavx", "cuda-12", "cuda-11"]
    assert c.ggml_variants("0.14.1", "ubuntu20.04", "aarch64") == ["cpu", "cuda-12"]


def test_cuda_11_is_not_built_for_aarch64():
    cuda11 = {"driver_present": True, "runtimes": {"12": {"complete": False}, "11": {"complete": True}}}
    errors = c.platform("0.14.1", node(machine="aarch64", cpu={}, cuda=cuda11), variant="cuda-11")["errors"]
    assert errors == [
        "preflight_ggml_variant=cuda-11 exists for x86_64 only; the node is aarch64: use auto or cpu"
    ]
    # auto does not pick it there.
    assert c.platform("0.14.1", node(machine="aarch64", cpu={}, cuda=cuda11))["variant"] == "cpu"


def test_no_noavx_or_cuda_for_0_15_and_later():
    lacking = dict(FULL_CPU, f16c=False)
    errors = c.platform("0.15.0", node(cpu=lacking))["errors"]
    assert len(errors) == 1 and "WasmEdge-plugin-wasi_nn-ggml-noavx-0.15.0-" in errors[0]
    assert "cpu manylinux_2_28_x86_64" in errors[0]  # names what exists
    cuda = {"driver_present": True, "runtimes": {"12": {"complete": True}, "11": {"complete": False}}}
    errors = c.platform("0.16.4", node(cuda=cuda), variant="cuda-12")["errors"]
    assert any("ggml-cuda-0.16.4" in e for e in errors)


def test_auto_falls_back_to_cpu_with_a_warning_where_no_cuda_build_exists():
    """From 0.15.0 no CUDA plugin is published: a GPU node gets the cpu build and a warning, not an error."""
    cuda = {"driver_present": True, "runtimes": {"12": {"complete": True}, "11": {"complete": True}}}
    out = c.platform("0.16.4", node(cuda=cuda))
    assert (out["errors"], out["variant"]) == ([], "cpu")
    assert any(
        "publishes no CUDA build of the GGML plugin (cuda-12, cuda-11): using the cpu build" in w
        for w in out["warnings"]
    )
    assert c.platform("0.14.1", node(cuda=cuda))["variant"] == "cuda-12"


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


@pytest.mark.parametrize(
    ("build", "exists"),
    [
        ("b3651", True),
        ("b4273", True),
        ("b5074", True),
        ("b6301", True),
        ("b6343", True),
        ("b4272", False),
        ("b6344", False),
        ("b4242", False),
        ("b4067", False),
        ("b3650", False),
    ],
)
def test_the_0_14_1_registry_has_b3651_and_b4273_through_b6343(build, exists):
    """The registry README: b3651 and every build from b4273 through b6343 (b6301 and b6343 were refused before)."""
    assert c.registry_build_exists("0.14.1", build) is exists
    assert (c.ggml_plugin("0.14.1", build, "cpu", "ubuntu20.04", "x86_64")["errors"] == []) is exists
    if not exists and build not in c.BAD_BUILDS:
        error = c.ggml_plugin("0.14.1", build, "cpu", "ubuntu20.04", "x86_64")["errors"][0]
        assert "builds for 0.14.1 are b3651, b4273-b6343" in error


@pytest.mark.parametrize(
    ("version", "build", "numbering", "stderr"),
    [
        ("0.14.1", "release", "old", True),
        ("0.14.1", "b4273", "old", False),
        ("0.14.1", "b5074", "new", False),
        ("0.14.1", "b5640", "new", False),
        ("0.15.0", "release", "new", False),
        ("0.15.1", "release", "new", False),
        ("0.17.1", "release", "new", False),
    ],
)
def test_wasi_nn_abi_per_version_and_build(version, build, numbering, stderr):
    abi = c.wasi_nn_abi(version, build)
    assert (abi["numbering"], abi["llama_log_to_stderr"]) == (numbering, stderr)
    assert abi["accepted"] == ([0, 1, 2, 3] if numbering == "old" else [0, 1, 3, 4])
    assert abi["tensor_types"]["U8"] == (2 if numbering == "old" else 3)


def test_known_vulnerabilities_and_their_fixes():
    assert [v["id"] for v in c.vulnerabilities("0.14.1")] == ["CVE-2025-69261"]
    assert [v["id"] for v in c.vulnerabilities("0.15.0")] == ["CVE-2025-69261"]
    for fixed in ("0.15.1", "0.16.0", "0.16.4", "0.17.1"):
        assert c.vulnerabilities(fixed) == [], fixed
    warning = c.platform("0.14.1", node())["warnings"][0]
    assert warning == (
        "preflight_wasmedge_version=0.14.1 has CVE-2025-69261 (memory-offset overflow), fixed in 0.15.1 and 0.16.0: "
        "choose one of those (or later)"
    )
    assert c.platform(c.DEFAULT_WASMEDGE, node())["warnings"] == []


def test_runwasi_pairing_with_the_plugin_version():
    ok = c.runwasi_pairing("0.6.0", "0.14.1")
    assert ok == {"errors": [], "warnings": [], "embedded": "0.14.1"}
    warn = c.runwasi_pairing("0.6.0", "0.15.1")
    assert warn["errors"] == [] and "embeds WasmEdge 0.14.1" in warn["warnings"][0]
    refused = c.runwasi_pairing("0.6.0", "0.17.1")
    assert (
        "WasmEdge 0.17.1 plugins (plugin API 5) cannot load in the runwasi 0.6.0 shim" in refused["errors"][0]
    )
    for old in ("0.5.0", "0.4.0"):
        out = c.runwasi_pairing(old, "0.14.1")
        assert "never applies WASMEDGE_WASINN_PRELOAD" in out["errors"][0], old
        assert c.runwasi_pairing(old, "0.14.1", wasi_nn=False)["errors"] == []
    assert c.RUNWASI["0.5.0"]["wasmedge_static"] == "0.13.5"  # wasmedge-sys 0.17.5


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
        ("v1.24.17+k3s1", "2", True),
        ("v1.24.16+k3s1", "2", False),
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


def test_llamaedge_server_paths_and_checksum_file():
    server = c.llamaedge_server("0.28.1")
    assert server == {
        "errors": [],
        "path": "0.28.1/llama-api-server.wasm",
        "checksum_file": "0.28.1/SHA256SUM",
        "known": True,
    }
    assert c.llamaedge_server("0.29.0")["known"] is False
    assert "llama_backends_server_version='0.28.1\\n'" in c.llamaedge_server("0.28.1\n")["errors"][0]


def test_llamaedge_and_wasmedge_release_paths_never_meet_in_one_mirror():
    """Both projects publish under the bare version with a SHA256SUM beside: a shared mirror and lock file
    would mix them up if a version existed in both."""
    assert not set(c.LLAMAEDGE_RELEASES) & set(c.WASMEDGE)
