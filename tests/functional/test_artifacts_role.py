"""The artifacts role on this machine, with a local-directory mirror (read through file://, no network)."""

from __future__ import annotations

import hashlib
import json

import pytest
from site_runner import local_inventory

pytestmark = pytest.mark.slow
PLAYBOOK = "tests/functional/playbooks/artifacts.yml"
ITEM = "0.16.0/WasmEdge-0.16.0-ubuntu20.04_x86_64.tar.gz"


@pytest.fixture
def mirror(tmp_path):
    path = tmp_path / "mirror" / ITEM
    path.parent.mkdir(parents=True)
    path.write_bytes(b"stand-in archive " * 100)
    return tmp_path / "mirror"


def variables(tmp_path, mirror, **more):
    return {
        "artifacts_items": [ITEM],
        "edgewasm_artifact_mirror": str(mirror),
        "edgewasm_artifact_cache": str(tmp_path / "cache"),
        "edgewasm_artifact_lock": str(tmp_path / "lock.json"),
        **more,
    }


def test_first_download_is_recorded_then_enforced(run_site, tmp_path, mirror):
    first = run_site(local_inventory(["node1"], []), variables(tmp_path, mirror), playbook=PLAYBOOK)
    assert first.rc == 0, first.output
    recorded = json.loads((tmp_path / "lock.json").read_text())["artifacts"]
    assert recorded == {ITEM: hashlib.sha256((mirror / ITEM).read_bytes()).hexdigest()}
    (mirror / ITEM).write_bytes(b"replaced upstream")
    (tmp_path / "cache" / ITEM).unlink()
    second = run_site(local_inventory(["node1"], []), variables(tmp_path, mirror), playbook=PLAYBOOK)
    assert second.rc != 0
    assert f"expected sha256 {recorded[ITEM]}" in second.output, second.output
    assert not (tmp_path / "cache" / ITEM).exists()


def test_unknown_artifact_is_refused_when_recording_is_off(run_site, tmp_path, mirror):
    result = run_site(
        local_inventory(["node1"], []),
        variables(tmp_path, mirror, edgewasm_artifact_record_new=False),
        playbook=PLAYBOOK,
    )
    assert result.rc != 0
    assert f"No checksum source for {ITEM}: edgewasm_artifact_record_new is false" in result.output, (
        result.output
    )
    assert not (tmp_path / "cache" / ITEM).exists()
    trusted = hashlib.sha256((mirror / ITEM).read_bytes()).hexdigest()
    ok = run_site(
        local_inventory(["node1"], []),
        variables(tmp_path, mirror, edgewasm_artifact_record_new=False, artifacts_sha256={ITEM: trusted}),
        playbook=PLAYBOOK,
    )
    assert ok.rc == 0, ok.output


def test_check_mode_downloads_and_records_nothing(run_site, tmp_path, mirror):
    """The fetch runs in the controller's process (an action plugin): check mode is the play's."""
    result = run_site(
        local_inventory(["node1"], []), variables(tmp_path, mirror), playbook=PLAYBOOK, check=True
    )
    assert result.rc == 0, result.output
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "lock.json").exists()
    assert "changed=1" in result.output or "changed: [node1" in result.output, result.output


def test_a_mistyped_option_is_named(run_site, tmp_path, mirror):
    result = run_site(
        local_inventory(["node1"], []),
        variables(tmp_path, mirror, artifacts_timeout="soon"),
        playbook=PLAYBOOK,
    )
    assert result.rc != 0
    assert "argument 'timeout'" in result.output and "int" in result.output, result.output
    assert "Traceback" not in result.output and "exception occurred" not in result.output, result.output
    assert not (tmp_path / "cache").exists()
