"""The volumes wasmedge_plugin_deps computed on each node: valid, stable, and true to the node."""

import json
import os
import re
from pathlib import Path

import kubernetes_validate
import pytest

RESULTS = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "plugin_deps"
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@pytest.fixture(scope="module")
def result(host):
    return json.loads((RESULTS / f"{host.backend.get_hostname()}.json").read_text())


def pod(result):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "llama-api-server"},
        "spec": {
            "runtimeClassName": "wasmedge-nn",
            "containers": [
                {
                    "name": "api",
                    "image": "llama-api-server:stand-in",
                    "command": ["llama-api-server.wasm"],
                    "env": result["env"],
                    "volumeMounts": result["volume_mounts"],
                }
            ],
            "volumes": result["volumes"],
        },
    }


@pytest.mark.parametrize("version", ["1.30", "1.31", "1.32", "1.33"])
def test_volumes_validate_against_the_pod_schema(result, version):
    kubernetes_validate.validate(pod(result), version, strict=True)
    assert all(DNS1123.match(v["name"]) for v in result["volumes"])


def test_every_mounted_path_exists_on_the_node_with_its_type(host, result):
    for volume in result["volumes"]:
        f = host.file(volume["hostPath"]["path"])
        assert f.exists, volume
        if volume["hostPath"]["type"] == "Directory":
            assert f.is_directory
        else:
            assert host.file(f.linked_to if f.is_symlink else f.path).is_file


def test_the_plugin_its_libraries_and_the_loader_are_mounted(host, result):
    paths = {v["hostPath"]["path"]: v["hostPath"]["type"] for v in result["volumes"]}
    assert paths["/opt/wasmedge/current/plugin"] == "Directory"
    assert paths["/opt/wasmedge/current/lib"] == "Directory"
    names = {lib["name"] for lib in result["libraries"]}
    assert {"libwasmedge.so.0", "libstdc++.so.6", "libm.so.6", "libgcc_s.so.1", "libc.so.6"} <= names
    for lib in result["libraries"]:
        # libraries outside the collapsed directories get a File mount at the opened path
        if not lib["path"].startswith("/opt/wasmedge/current/"):
            assert paths[lib["path"]] == "File"
        assert host.file(lib["realpath"]).is_file
    assert result["env"] == [
        {"name": "WASMEDGE_PLUGIN_PATH", "value": "/opt/wasmedge/current/plugin"},
        {"name": "LD_LIBRARY_PATH", "value": "/opt/wasmedge/current/lib"},
    ]


def test_volume_names_are_the_same_on_every_node():
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    assert len(results) == 2
    assert results[0]["volumes"] == results[1]["volumes"]
