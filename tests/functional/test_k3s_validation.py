"""Bad k3s input fails early with a message naming the variable, before anything is installed."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
from doubles import release_mirror
from site_runner import local_inventory

pytestmark = pytest.mark.slow
PLAYBOOK = "tests/functional/playbooks/k3s.yml"


@pytest.fixture
def site(tmp_path):
    release_mirror.build_k3s(tmp_path / "mirror", "v1.31.6+k3s1")
    return {
        "edgewasm_artifact_mirror": str(tmp_path / "mirror"),
        "edgewasm_artifact_cache": str(tmp_path / "cache"),
        "edgewasm_artifact_lock": str(tmp_path / "lock.json"),
        "k3s_install_dir": str(tmp_path / "bin"),
    }


def nothing_installed(tmp_path: Path) -> bool:
    return not (tmp_path / "bin").exists() and not Path("/etc/systemd/system/k3s.service").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"k3s_version": "1.31.6"}, 'k3s_version="1.31.6" must look like v1.31.6+k3s1'),
        # The newline is shown as \n or, JSON-escaped in older cores' output, \\n: the value up to its backslash.
        ({"k3s_version": "v1.31.6+k3s1\n"}, 'k3s_version="v1.31.6+k3s1\\'),
        ({"k3s_arch": "riscv64"}, 'the architecture resolved to "riscv64" (k3s_arch: amd64 or arm64'),
    ],
    ids=["version-format", "version-trailing-newline", "arch"],
)
def test_bad_settings(run_site, tmp_path, site, extra, message):
    result = run_site(local_inventory(["node1"], []), {**site, **extra}, playbook=PLAYBOOK)
    assert result.rc != 0
    assert message in result.output, result.output
    assert nothing_installed(tmp_path)


def test_even_number_of_servers(run_site, tmp_path, site):
    result = run_site(local_inventory(["s1", "s2"], []), site, playbook=PLAYBOOK)
    assert result.rc != 0
    assert "the server group has 2 hosts: k3s needs one, or an odd number" in result.output, result.output
    assert nothing_installed(tmp_path)


def test_agent_without_a_server_to_join(run_site, tmp_path, site):
    result = run_site(local_inventory([], ["a1"]), site, playbook=PLAYBOOK)
    assert result.rc != 0
    assert 'k3s_api_endpoint is "" and there is no server in the inventory' in result.output, result.output
    assert nothing_installed(tmp_path)


def test_unknown_version_has_no_checksum_source(run_site, tmp_path, site):
    result = run_site(
        local_inventory(["node1"], []), {**site, "k3s_version": "v1.99.0+k3s1"}, playbook=PLAYBOOK
    )
    assert result.rc != 0
    assert "v1.99.0+k3s1/sha256sum-" in result.output, result.output
    assert not (tmp_path / "cache" / "v1.99.0+k3s1" / "k3s").exists()
    assert nothing_installed(tmp_path)


def test_binary_not_matching_the_release_checksum_file(run_site, tmp_path, site):
    binary = (
        tmp_path / "mirror" / "v1.31.6+k3s1" / release_mirror.catalog.ARCHES[platform.machine()]["k3s_binary"]
    )
    binary.write_bytes(binary.read_bytes() + b"# tampered\n")
    result = run_site(local_inventory(["node1"], []), site, playbook=PLAYBOOK)
    assert result.rc != 0
    assert f"checksum mismatch for {binary.name}" in result.output, result.output
    assert nothing_installed(tmp_path)
