"""testinfra: WasmEdge 0.14.1 and the WASI-NN plugin installed from the stand-in mirror on every node."""

from __future__ import annotations

import json
import os
from pathlib import Path


def test_versioned_install_and_current_link(host):
    current = host.file("/opt/wasmedge/current")
    assert current.is_symlink and current.linked_to == "/opt/wasmedge/0.14.1"
    assert host.file("/opt/wasmedge/0.14.1/bin/wasmedge").mode & 0o111
    assert not host.file("/opt/wasmedge/0.14.1.partial").exists
    assert host.file("/opt/wasmedge/0.14.1").user == "root"


def test_wasmedge_runs_from_the_path(host):
    out = host.check_output("wasmedge --version")
    assert out.startswith("wasmedge version 0.14.1")


def test_linker_knows_libwasmedge(host):
    assert (
        host.file("/etc/ld.so.conf.d/edgewasm-wasmedge.conf")
        .content_string.strip()
        .endswith("/opt/wasmedge/current/lib")
    )
    assert "/opt/wasmedge/current/lib/libwasmedge.so.0" in host.check_output("ldconfig -p")


def test_environment_file(host):
    env = host.file("/etc/default/wasmedge").content_string
    assert "WASMEDGE_PLUGIN_PATH=/opt/wasmedge/current/plugin" in env
    assert "LD_LIBRARY_PATH=/opt/wasmedge/current/lib" in env


def test_plugin_installed_for_this_version(host):
    plugin = host.file("/opt/wasmedge/0.14.1/plugin/libwasmedgePluginWasiNN.so")
    assert plugin.exists and plugin.user == "root"


def test_lock_file_recorded_every_artifact():
    lock = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "edgewasm.lock.json"
    artifacts = json.loads(lock.read_text())["artifacts"]
    # WasmEdge and its plugin are verified against the release's SHA256SUM, which is what gets recorded
    # (trust on first use only where no checksum source exists).
    assert "0.14.1/SHA256SUM" in artifacts
    assert not any(k.startswith("0.14.1/WasmEdge-") for k in artifacts)
    assert all(len(v) == 64 for v in artifacts.values())


def test_runwasi_shim_from_the_sites_glibc_build(host):
    shim = host.file("/usr/local/bin/containerd-shim-wasmedge-v1")
    assert shim.exists and shim.mode == 0o755 and shim.user == "root"
    assert host.check_output("containerd-shim-wasmedge-v1").startswith("containerd-shim-wasmedge-v1 v0.6.0")


def test_crun_built_with_wasmedge_on_the_server_only(host):
    crun = host.file("/usr/local/bin/crun")
    if host.backend.get_hostname() != "server1":
        assert not crun.exists, "crun_wasmedge ran only on the server"
        return
    assert crun.exists and crun.mode == 0o755 and crun.user == "root"
    lines = host.check_output("/usr/local/bin/crun --version").splitlines()
    assert lines[0] == "crun version 1.29.1"
    assert "+WASM:wasmedge" in lines[-1].split()
    assert "stand-in" in lines[1]  # built from tests/doubles/crun_source.py
    assert not host.file("/var/cache/edgewasm/crun-build").exists
