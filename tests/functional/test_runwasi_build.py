"""runwasi_source=build on this machine: one builder per architecture, the binary cached on the
controller and copied to the other nodes. Two inventory hosts are this machine with their own
install directories; the runwasi source and cargo are STAND-INS (tests/doubles/runwasi_source.py):
no runwasi source and no Rust toolchain recent enough for it can be obtained here."""

from __future__ import annotations

import hashlib
import platform
import re
import subprocess
import sys

import pytest
from doubles import release_mirror, runwasi_source

pytestmark = pytest.mark.slow
PLAYBOOK = "tests/functional/playbooks/runwasi.yml"


def inventory(tmp_path) -> dict:
    hosts = {name: {"runwasi_bin_dir": str(tmp_path / name / "bin")} for name in ("node1", "node2")}
    for name in hosts:
        (tmp_path / name / "bin").mkdir(parents=True, exist_ok=True)
    return {
        "k3s_cluster": {
            "children": {
                "server": {"hosts": {"node1": hosts["node1"]}},
                "agent": {"hosts": {"node2": hosts["node2"]}},
            },
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        }
    }


@pytest.fixture
def site(tmp_path):
    # runwasi 0.6.0 pins Rust 1.85.0 and the wasm32-wasip1 target in its rust-toolchain.toml (the catalog says so).
    runwasi_source.build(tmp_path / "mirror", "0.6.0", toolchain="1.85.0")
    release_mirror.build(tmp_path / "mirror", ["0.14.1"])  # the static archive runwasi 0.6.0 builds against
    # The builder has 1.85.0 but not its wasm32-wasip1 target, and no network: rustup must download nothing.
    cargo = runwasi_source.install_cargo(tmp_path / "cargo", tmp_path / "cargo.log", ("stable", "1.85.0"))
    return {
        "edgewasm_artifact_mirror": str(tmp_path / "mirror"),
        "edgewasm_artifact_cache": str(tmp_path / "cache"),
        "edgewasm_artifact_lock": str(tmp_path / "lock.json"),
        "runwasi_source": "build",
        "runwasi_cargo": str(cargo),
        "runwasi_build_packages": [],
        "runwasi_build_dir": str(tmp_path / "build"),
    }


def test_built_once_on_the_builder_and_copied_to_the_other_node(run_site, tmp_path, site):
    first = run_site(inventory(tmp_path), site, playbook=PLAYBOOK)
    assert first.rc == 0, first.output
    builds = [line for line in (tmp_path / "cargo.log").read_text().splitlines() if line.startswith("build")]
    assert builds == ["build --release --locked -p containerd-shim-wasmedge --features plugin"]
    # The build got the verified static archive from the mirror instead of downloading one.
    static = (
        tmp_path
        / "mirror"
        / "0.14.1"
        / release_mirror.catalog.wasmedge_static_asset(
            "0.14.1", release_mirror.catalog.ARCHES[platform.machine()]["wasmedge"]
        )
    )
    digest = hashlib.sha256(static.read_bytes()).hexdigest()
    assert f"standalone-archive {static.name} {digest}" in (tmp_path / "cargo.log").read_text()
    outputs = {
        name: subprocess.run(
            [str(tmp_path / name / "bin" / "containerd-shim-wasmedge-v1")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for name in ("node1", "node2")
    }
    assert outputs["node1"] == outputs["node2"]
    assert outputs["node1"].startswith("containerd-shim-wasmedge-v1 v0.6.0 features=plugin")
    assert (
        tmp_path / "cache" / "runwasi" / "0.6.0" / "build-x86_64" / "containerd-shim-wasmedge-v1"
    ).exists() or (
        tmp_path / "cache" / "runwasi" / "0.6.0" / "build-aarch64" / "containerd-shim-wasmedge-v1"
    ).exists()
    assert not (tmp_path / "build").exists()
    again = run_site(inventory(tmp_path), site, playbook=PLAYBOOK)
    assert re.search(r"node1\s+: ok=\d+\s+changed=0 ", again.output), again.output
    assert re.search(r"node2\s+: ok=\d+\s+changed=0 ", again.output), again.output
    log = (tmp_path / "cargo.log").read_text().splitlines()
    # --version and the one build (with its standalone-archive line), each on the release's pinned toolchain.
    assert [line for line in log if line.startswith("toolchain")] == ["toolchain 1.85.0"] * 2, log
    assert len(log) == 5, log


@pytest.mark.parametrize("version", ["0.5.0", "0.4.0"])
def test_older_runwasi_is_refused_for_wasi_nn_before_anything_is_fetched(run_site, tmp_path, site, version):
    """runwasi before 0.6.0 never applies WASMEDGE_WASINN_PRELOAD: its pods can never load_by_name("default")."""
    runwasi_source.build(tmp_path / "mirror", version)
    result = run_site(inventory(tmp_path), {**site, "runwasi_version": version}, playbook=PLAYBOOK)
    assert result.rc != 0
    assert (
        f"runwasi_version={version} cannot serve WASI-NN models: its shim never applies WASMEDGE_WASINN_PRELOAD"
        in (result.output)
    ), result.output
    assert not (tmp_path / "cargo.log").exists()


def test_a_plugin_the_shim_cannot_load_is_refused(run_site, tmp_path, site):
    result = run_site(inventory(tmp_path), {**site, "runwasi_wasmedge_version": "0.17.1"}, playbook=PLAYBOOK)
    assert result.rc != 0
    assert "WasmEdge 0.17.1 plugins (plugin API 5) cannot load in the runwasi 0.6.0 shim" in result.output


def test_a_toolchain_the_builder_lacks_fails_naming_it_and_downloads_nothing(run_site, tmp_path, site):
    """Air-gapped: before, cargo ran in the source tree and rustup tried to download the pinned 1.85.0."""
    cargo = runwasi_source.install_cargo(tmp_path / "cargo", tmp_path / "cargo.log", ("stable",))
    result = run_site(inventory(tmp_path), {**site, "runwasi_cargo": str(cargo)}, playbook=PLAYBOOK)
    assert result.rc != 0
    assert "with the Rust toolchain 1.85.0 (runwasi_rust_toolchain; runwasi 0.6.0 pins it" in result.output, (
        result.output
    )
    assert "toolchain '1.85.0-x86_64-unknown-linux-gnu' is not installed" in result.output
    assert "network unreachable" not in result.output
    # A toolchain the builder has, named: the build runs on it.
    again = run_site(
        inventory(tmp_path),
        {**site, "runwasi_cargo": str(cargo), "runwasi_rust_toolchain": "stable"},
        playbook=PLAYBOOK,
    )
    assert again.rc == 0, again.output
    assert "toolchain stable" in (tmp_path / "cargo.log").read_text()


def test_tampered_static_archive_stops_the_build(run_site, tmp_path, site):
    arch = release_mirror.catalog.ARCHES[platform.machine()]["wasmedge"]
    static = tmp_path / "mirror" / "0.14.1" / release_mirror.catalog.wasmedge_static_asset("0.14.1", arch)
    static.write_bytes(static.read_bytes() + b"x")
    result = run_site(inventory(tmp_path), site, playbook=PLAYBOOK)
    assert result.rc != 0
    assert f"checksum mismatch for {static.name}" in result.output, result.output
    log = tmp_path / "cargo.log"
    assert not log.exists() or "build" not in log.read_text()  # fetch failed before the build
    assert not (tmp_path / "node1" / "bin" / "containerd-shim-wasmedge-v1").exists()


def test_missing_cargo_fails_naming_the_variable(run_site, tmp_path, site):
    result = run_site(
        inventory(tmp_path), {**site, "runwasi_cargo": str(tmp_path / "no-cargo")}, playbook=PLAYBOOK
    )
    assert result.rc != 0
    assert f"runwasi_cargo={tmp_path / 'no-cargo'} with the Rust toolchain 1.85.0" in result.output, (
        result.output
    )
    assert "does not run" in result.output
    assert not (tmp_path / "node1" / "bin" / "containerd-shim-wasmedge-v1").exists()
    assert not (tmp_path / "node2" / "bin" / "containerd-shim-wasmedge-v1").exists()
