"""wasmedge_plugin_deps on a stand-in WasmEdge tree with the upstream plugin's ELF structure."""

from __future__ import annotations

import hashlib
import re
import shutil

import kubernetes_validate
import pytest
from doubles import wasmedge_tree
from doubles.elf_builders import EM_AARCH64, retarget
from fuzzseeds import ld_so_conf_include_loop

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import plugin_deps, plugin_mounts
from ansible_collections.edgewasm.llamaedge.plugins.modules import wasmedge_plugin_deps as module

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
KUBERNETES_VERSIONS = ["1.30", "1.31", "1.32", "1.33"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return wasmedge_tree.build(tmp_path_factory.mktemp("wasmedge") / "0.14.1", runner=False)


def params(**overrides):
    base = {
        "paths": [],
        "ld_library_path": [],
        "root": "/",
        "exclude": [],
        "hwcaps": [],
        "architecture": None,
        "volume_name_prefix": "wasmedge",
        "collapse_directories": True,
        "allow_missing": False,
    }
    base.update(overrides)
    return base


def pod_with(result):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "llama"},
        "spec": {
            "runtimeClassName": "wasmedge-nn",
            "containers": [
                {
                    "name": "api",
                    "image": "llama-api-server:stand-in",
                    "env": result["env"],
                    "volumeMounts": result["volume_mounts"],
                }
            ],
            "volumes": result["volumes"],
        },
    }


def test_plugin_directory_resolves_with_the_wasmedge_lib_dir(tree):
    result = plugin_deps.resolve(params(paths=[str(tree["plugin_dir"])], ld_library_path=[str(tree["lib"])]))
    assert result["missing"] == []
    assert [p["path"] for p in result["plugins"]] == [str(tree["plugin"])]
    names = {lib["name"] for lib in result["libraries"]}
    assert {"libwasmedge.so.0", "libstdc++.so.6", "libm.so.6", "libgcc_s.so.1", "libc.so.6"} <= names
    assert any(lib["name"].startswith("ld-linux") for lib in result["libraries"])
    kinds = {v["hostPath"]["path"]: v["hostPath"]["type"] for v in result["volumes"]}
    # The plugin and WasmEdge lib directories are mounted whole; system libraries one by one.
    assert kinds[str(tree["plugin_dir"])] == "Directory"
    assert kinds[str(tree["lib"])] == "Directory"
    assert not any(p.startswith(str(tree["prefix"]) + "/") and k == "File" for p, k in kinds.items())
    libstdcxx = next(lib for lib in result["libraries"] if lib["name"] == "libstdc++.so.6")
    assert kinds[libstdcxx["path"]] == "File"
    assert result["env"] == [
        {"name": "WASMEDGE_PLUGIN_PATH", "value": str(tree["plugin_dir"])},
        {"name": "LD_LIBRARY_PATH", "value": str(tree["lib"])},
    ]


def test_the_fingerprint_changes_when_a_resolved_file_is_replaced(tmp_path):
    tree = wasmedge_tree.build(tmp_path / "0.14.1", runner=False)
    args = params(paths=[str(tree["plugin_dir"])], ld_library_path=[str(tree["lib"])])
    first = plugin_deps.resolve(args)["fingerprint"]
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert plugin_deps.resolve(args)["fingerprint"] == first  # stable while nothing changes
    library = next(lib for lib in plugin_deps.resolve(args)["libraries"] if lib["name"] == "libwasmedge.so.0")
    replacement = tmp_path / "replacement"
    shutil.copy2(library["realpath"], replacement)
    replacement.replace(library["realpath"])  # same bytes, new file: as a reinstall leaves it
    second = plugin_deps.resolve(args)["fingerprint"]
    assert second != first
    plugin = tree["plugin"]
    plugin.write_bytes(plugin.read_bytes())  # modified in place
    assert plugin_deps.resolve(args)["fingerprint"] not in (first, second)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_volumes_validate_against_the_pod_schema(tree, version):
    result = plugin_deps.resolve(params(paths=[str(tree["plugin_dir"])], ld_library_path=[str(tree["lib"])]))
    kubernetes_validate.validate(pod_with(result), version, strict=True)
    names = [v["name"] for v in result["volumes"]]
    assert all(DNS1123.match(n) for n in names), names
    assert len(names) == len(set(names))
    assert [m["name"] for m in result["volume_mounts"]] == names
    for volume, mount in zip(result["volumes"], result["volume_mounts"], strict=True):
        assert mount["mountPath"] == volume["hostPath"]["path"]
        assert mount["readOnly"] is True


def test_names_are_stable_across_runs_and_nodes(tree):
    first = plugin_deps.resolve(params(paths=[str(tree["plugin_dir"])], ld_library_path=[str(tree["lib"])]))
    second = plugin_deps.resolve(params(paths=[str(tree["plugin_dir"])], ld_library_path=[str(tree["lib"])]))
    assert first["volumes"] == second["volumes"]
    # A name depends on the prefix and the path only (no node, run or process state):
    # readable file part, then 8 hex digits of sha256(path).
    path = "/lib/x86_64-linux-gnu/libstdc++.so.6"
    digest = hashlib.sha256(path.encode()).hexdigest()[:8]
    assert plugin_mounts.volume_name("wasmedge", path) == f"wasmedge-libstdc-so-6-{digest}"
    assert plugin_mounts.volume_name("wasmedge", "/a/libx.so") != plugin_mounts.volume_name(
        "wasmedge", "/b/libx.so"
    )


def test_long_and_odd_paths_still_give_valid_names():
    name = plugin_mounts.volume_name("wasmedge-nn-backend", "/opt/" + "x" * 200 + "/libstdc++.so.6")
    assert DNS1123.match(name)
    assert len(name) <= 63
    assert DNS1123.match(plugin_mounts.volume_name("p", "/"))


def test_several_plugins_share_library_mounts(tree, tmp_path):
    other_dir = tmp_path / "plugins2"
    other_dir.mkdir()
    shutil.copy(tree["plugin"], other_dir / "libwasmedgePluginOther.so")
    result = plugin_deps.resolve(
        params(paths=[str(tree["plugin"]), str(other_dir)], ld_library_path=[str(tree["lib"])])
    )
    paths = [v["hostPath"]["path"] for v in result["volumes"]]
    assert len(paths) == len(set(paths))
    libc = next(lib for lib in result["libraries"] if lib["name"] == "libc.so.6")
    assert len(libc["plugins"]) == 2
    assert result["env"][0]["value"] == f"{tree['plugin_dir']}:{other_dir}"


def test_without_collapsing_every_file_is_mounted(tree):
    result = plugin_deps.resolve(
        params(paths=[str(tree["plugin"])], ld_library_path=[str(tree["lib"])], collapse_directories=False)
    )
    assert {v["hostPath"]["type"] for v in result["volumes"]} == {"File"}
    assert str(tree["lib"] / "libwasmedge.so.0") in [v["hostPath"]["path"] for v in result["volumes"]]


def test_missing_library_fails_naming_it_and_its_chain(tree, run_module):
    result = run_module(module.main, {"paths": [str(tree["plugin"])]})
    assert result["failed"] is True
    assert result["changed"] is False
    assert "Missing shared libraries: libwasmedge.so.0" in result["msg"]
    assert "libwasmedgePluginWasiNN.so -> libwasmedge.so.0" in result["msg"]
    assert "ld_library_path" in result["msg"]


def test_allow_missing_and_exclude(tree, run_module):
    allowed = run_module(module.main, {"paths": [str(tree["plugin"])], "allow_missing": True})
    assert allowed.get("failed") is not True
    assert [m["name"] for m in allowed["missing"]] == ["libwasmedge.so.0"]
    excluded = run_module(module.main, {"paths": [str(tree["plugin"])], "exclude": ["libwasmedge.so.0"]})
    assert excluded.get("failed") is not True
    assert excluded["missing"] == []


def test_an_ld_so_conf_include_loop_ends_and_a_budget_is_an_option(tmp_path, run_module, time_limit):
    """Before: still running after 60 s (6,547 reads in 8 s, doubling per level)."""
    root = tmp_path / "root"
    tree = wasmedge_tree.build(root / "opt" / "wasmedge", "0.14.1", runner=False)
    ld_so_conf_include_loop(root, "/opt/wasmedge/lib")
    inside = "/" + str(tree["plugin"].relative_to(root))
    with time_limit(60):
        result = run_module(module.main, {"paths": [inside], "root": str(root), "allow_missing": True})
    assert result.get("failed") is not True, result
    assert "libwasmedge.so.0" in [lib["name"] for lib in result["libraries"]]
    refused = run_module(module.main, {"paths": [inside], "root": str(root), "max_ld_so_conf_files": 1})
    assert refused["failed"] is True
    assert "/etc/ld.so.conf includes more than 1 configuration files" in refused["msg"]
    assert "max_ld_so_conf_files" in refused["msg"]


def test_check_mode_reports_unchanged(tree, run_module):
    result = run_module(
        module.main,
        {"paths": [str(tree["plugin_dir"])], "ld_library_path": [str(tree["lib"])]},
        check_mode=True,
    )
    assert result["changed"] is False
    assert result["volumes"]


def test_cuda_build_without_cuda_runtime_names_libcudart(tmp_path, run_module):
    cuda = wasmedge_tree.build(tmp_path / "cuda", cuda=True, runner=False)
    result = run_module(module.main, {"paths": [str(cuda["plugin"])], "ld_library_path": [str(cuda["lib"])]})
    assert result["failed"] is True
    assert "libcudart.so.12 (needed by" in result["msg"]


@pytest.mark.parametrize(
    ("make_path", "message"),
    [
        (lambda t, p: str(p / "absent"), "does not exist (option paths)"),
        (lambda t, p: str(p), "contains no .so plugin file"),
        (lambda t, p: _text(p / "libfake.so"), "is not an ELF file"),
        (
            lambda t, p: str(
                retarget(t["plugin"], p / "arm" / "libwasmedgePluginWasiNN.so", machine=EM_AARCH64)
            ),
            "is built for aarch64, this node needs x86_64",
        ),
    ],
    ids=["missing-path", "empty-dir", "not-elf", "foreign-arch"],
)
def test_bad_input_fails_cleanly(tree, tmp_path, run_module, make_path, message):
    result = run_module(module.main, {"paths": [make_path(tree, tmp_path)]})
    assert result["failed"] is True
    assert message in result["msg"]
    assert "Traceback" not in result["msg"]


def test_bad_prefix_fails(tree, run_module):
    result = run_module(module.main, {"paths": [str(tree["plugin"])], "volume_name_prefix": "Bad_Prefix"})
    assert result["failed"] is True
    assert "volume_name_prefix 'Bad_Prefix' must be a DNS-1123 label" in result["msg"]


def _text(path):
    path.write_text("#!/bin/sh\n")
    return str(path)
