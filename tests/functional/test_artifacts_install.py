"""The artifacts role's install pipeline on this machine (local connection), from a mirror directory.

tree: the accepted root becomes dest atomically, with a marker naming the archive's sha256; files:
unpacked once per checksum into a staging directory that counts only once marked complete.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile

import pytest
from site_runner import local_inventory

pytestmark = pytest.mark.slow
PLAYBOOK = "tests/functional/playbooks/artifacts_install.yml"
TREE = "1.0.0/tool-1.0.0.tar.gz"
FILES = "1.0.0/plugin-1.0.0.tar.gz"


def tarball(path, members: dict[str, bytes]):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            archive.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(run_site, tmp_path, archive, **more):
    extra = {
        "archive": archive,
        "edgewasm_artifact_mirror": str(tmp_path / "mirror"),
        "edgewasm_artifact_cache": str(tmp_path / "cache"),
        "edgewasm_artifact_lock": str(tmp_path / "lock.json"),
        **more,
    }
    return run_site(local_inventory(["node1"], []), extra, playbook=PLAYBOOK)


def changed(result) -> int:
    return int(re.search(r"node1\s+: ok=\d+\s+changed=(\d+)", result.output).group(1))


def tree_vars(tmp_path):
    return {
        "artifacts_install_mode": "tree",
        "artifacts_install_dest": str(tmp_path / "opt" / "tool"),
        "artifacts_install_anchor": "bin/tool",
        "artifacts_install_roots": ["", "tool-1.0.0"],
    }


def files_vars(tmp_path):
    return {
        "artifacts_install_mode": "files",
        "artifacts_install_stage": str(tmp_path / "stage"),
        "artifacts_install_files": [
            {"src": "libplugin.so", "dest": str(tmp_path / "libplugin.so"), "mode": "0755"}
        ],
    }


def test_a_tree_is_swapped_in_with_its_marker_and_a_rerun_changes_nothing(run_site, tmp_path):
    sha = tarball(
        tmp_path / "mirror" / TREE, {"tool-1.0.0/bin/tool": b"v1", "tool-1.0.0/lib/libtool.so": b"lib"}
    )
    first = run(run_site, tmp_path, TREE, **tree_vars(tmp_path))
    assert first.rc == 0, first.output
    dest = tmp_path / "opt" / "tool"
    assert (dest / "bin" / "tool").read_bytes() == b"v1"  # the top directory stripped
    assert (dest / ".edgewasm-archive.sha256").read_text().strip() == sha
    assert not (tmp_path / "opt" / "tool.partial").exists() and not (tmp_path / "opt" / "tool.old").exists()
    again = run(run_site, tmp_path, TREE, **tree_vars(tmp_path))
    assert again.rc == 0 and changed(again) == 0, again.output
    # A republished archive of the same name (its new checksum given) replaces the tree.
    new = tarball(tmp_path / "mirror" / TREE, {"tool-1.0.0/bin/tool": b"v2"})
    third = run(run_site, tmp_path, TREE, artifacts_sha256={TREE: new}, **tree_vars(tmp_path))
    assert third.rc == 0, third.output
    assert (dest / "bin" / "tool").read_bytes() == b"v2"
    assert not (dest / "lib").exists()


def test_an_anchor_outside_the_accepted_roots_is_refused_and_nothing_is_written(run_site, tmp_path):
    tarball(tmp_path / "mirror" / TREE, {"evil/bin/tool": b"x", "README": b"r"})
    result = run(run_site, tmp_path, TREE, **tree_vars(tmp_path))
    assert result.rc != 0
    assert "the archive has neither bin/tool nor tool-1.0.0/bin/tool; nothing was installed" in result.output
    assert not (tmp_path / "opt" / "tool").exists() and not (tmp_path / "opt" / "tool.partial").exists()


def test_files_come_from_a_complete_staging_directory_only(run_site, tmp_path):
    sha = tarball(tmp_path / "mirror" / FILES, {"libplugin.so": b"the whole plugin"})
    # What an interrupted unpack leaves: the member half written, no completion marker.
    half = tmp_path / "stage" / sha
    half.mkdir(parents=True)
    (half / "libplugin.so").write_bytes(b"the wh")
    (tmp_path / "stage" / ("0" * 64)).mkdir()  # an earlier archive's directory
    first = run(run_site, tmp_path, FILES, **files_vars(tmp_path))
    assert first.rc == 0, first.output
    assert (tmp_path / "libplugin.so").read_bytes() == b"the whole plugin"
    assert (half / ".edgewasm-archive.sha256").read_text().strip() == sha
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == [sha]
    again = run(run_site, tmp_path, FILES, **files_vars(tmp_path))
    assert again.rc == 0 and changed(again) == 0, again.output


def test_check_mode_on_a_fresh_node_installs_nothing(run_site, tmp_path):
    tarball(tmp_path / "mirror" / FILES, {"libplugin.so": b"p"})
    result = run_site(
        local_inventory(["node1"], []),
        {
            "archive": FILES,
            "edgewasm_artifact_mirror": str(tmp_path / "mirror"),
            "edgewasm_artifact_cache": str(tmp_path / "cache"),
            "edgewasm_artifact_lock": str(tmp_path / "lock.json"),
            **files_vars(tmp_path),
        },
        playbook=PLAYBOOK,
        check=True,
    )
    assert result.rc == 0, result.output
    assert not (tmp_path / "stage").exists() and not (tmp_path / "libplugin.so").exists()
