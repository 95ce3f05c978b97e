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
    runwasi_source.build(tmp_path / "mirror", "0.6.0")
    release_mirror.build(tmp_path / "mirror", ["0.14.1"])  # the static archive runwasi 0.6.0 builds against
    cargo = runwasi_source.install_cargo(tmp_path / "cargo", tmp_path / "cargo.log")
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
    assert len((tmp_path / "cargo.log").read_text().splitlines()) == 3  # --version + the one build (2 lines)


def test_older_runwasi_gets_its_own_wasi_nn_feature_name(run_site, tmp_path, site):
    """runwasi before 0.6.0 calls the feature wasi_nn (the catalog says so); plugin would fail the build."""
    runwasi_source.build(tmp_path / "mirror", "0.5.0")
    result = run_site(inventory(tmp_path), {**site, "runwasi_version": "0.5.0"}, playbook=PLAYBOOK)
    assert result.rc == 0, result.output
    builds = [line for line in (tmp_path / "cargo.log").read_text().splitlines() if line.startswith("build")]
    assert builds == ["build --release --locked -p containerd-shim-wasmedge --features wasi_nn"]


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
    assert f"runwasi_cargo={tmp_path / 'no-cargo'} does not run" in result.output, result.output
    assert not (tmp_path / "node1" / "bin" / "containerd-shim-wasmedge-v1").exists()
    assert not (tmp_path / "node2" / "bin" / "containerd-shim-wasmedge-v1").exists()
