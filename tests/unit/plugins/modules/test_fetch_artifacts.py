"""fetch_artifacts: every release path of a role verified in one module call, from a mirror directory."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from ansible_collections.edgewasm.llamaedge.plugins.modules import fetch_artifacts as module

CORE = "0.14.1/WasmEdge-0.14.1-ubuntu20.04_x86_64.tar.gz"
PLUGIN = "0.14.1/WasmEdge-plugin-wasi_nn-ggml-0.14.1-ubuntu20.04_x86_64.tar.gz"
SUMS = "0.14.1/SHA256SUM"
OWN = "runwasi/0.6.0/containerd-shim-wasmedge-x86_64-linux-gnu.tar.gz"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def mirror(tmp_path):
    """A mirror directory laid out like the release paths, with a SHA256SUM listing the core and plugin."""
    root = tmp_path / "mirror"
    files = {CORE: b"core archive", PLUGIN: b"plugin archive", OWN: b"a site's own shim build"}
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    (root / SUMS).write_text(
        "".join(f"{sha(files[p])}  {os.path.basename(p)}\n" for p in (CORE, PLUGIN)) + "\n"
    )
    return {"root": root, "files": files}


def args(tmp_path, source, **extra):
    base = {
        "items": [CORE, PLUGIN, OWN],
        "checksum_files": {CORE: SUMS, PLUGIN: SUMS},
        "mirror": str(source["root"]),
        "cache_dir": str(tmp_path / "cache"),
        "lock_file": str(tmp_path / "edgewasm.lock.json"),
    }
    base.update(extra)
    return base


def test_first_run_verifies_and_records_then_a_rerun_changes_nothing(run_module, tmp_path, mirror):
    first = run_module(module.main, args(tmp_path, mirror))
    assert first["changed"] is True, first
    assert first["verified"] == {
        SUMS: sha((mirror["root"] / SUMS).read_bytes()),
        CORE: sha(b"core archive"),
        PLUGIN: sha(b"plugin archive"),
        OWN: sha(b"a site's own shim build"),
    }
    # The checksum file and the path no checksum file lists are recorded; the listed ones are not.
    assert sorted(first["recorded"]) == sorted([SUMS, OWN])
    lock = json.loads((tmp_path / "edgewasm.lock.json").read_text())["artifacts"]
    assert set(lock) == {SUMS, OWN}
    assert (tmp_path / "cache" / CORE).read_bytes() == b"core archive"
    assert oct((tmp_path / "cache" / "0.14.1").stat().st_mode & 0o777) == "0o700"
    again = run_module(module.main, args(tmp_path, mirror))
    assert (again["changed"], again["changed_paths"], again["recorded"]) == (False, [], [])
    assert again["verified"] == first["verified"]


def test_a_tampered_mirror_file_fails_and_installs_nothing(run_module, tmp_path, mirror):
    (mirror["root"] / CORE).write_bytes(b"tampered core archive")
    failed = run_module(module.main, args(tmp_path, mirror))
    assert failed["failed"] is True
    assert f"checksum mismatch for {os.path.basename(CORE)}" in failed["msg"], failed["msg"]
    assert not (tmp_path / "cache" / CORE).exists()
    assert not (tmp_path / "cache" / (CORE + ".part")).exists()


def test_a_recorded_checksum_is_enforced(run_module, tmp_path, mirror):
    run_module(module.main, args(tmp_path, mirror))
    (mirror["root"] / OWN).write_bytes(b"replaced upstream")
    (tmp_path / "cache" / OWN).unlink()
    failed = run_module(module.main, args(tmp_path, mirror))
    assert failed["failed"] is True and "checksum mismatch for" in failed["msg"], failed


def test_a_path_missing_from_its_checksum_file_is_named(run_module, tmp_path, mirror):
    other = "0.14.1/WasmEdge-0.14.1-manylinux2014_aarch64.tar.gz"
    failed = run_module(module.main, args(tmp_path, mirror, items=[other], checksum_files={other: SUMS}))
    assert failed["failed"] is True
    assert failed["msg"].startswith(f"{os.path.basename(other)} is not listed in {SUMS} ("), failed["msg"]


def test_without_recording_unknown_paths_are_refused_before_any_download(run_module, tmp_path, mirror):
    failed = run_module(module.main, args(tmp_path, mirror, record_new=False))
    assert failed["failed"] is True
    assert failed["msg"].startswith(
        f"No checksum source for {OWN}, {SUMS}: edgewasm_artifact_record_new is false"
    )
    assert not (tmp_path / "cache").exists()
    trusted = {OWN: sha(b"a site's own shim build"), SUMS: sha((mirror["root"] / SUMS).read_bytes())}
    assert (
        run_module(module.main, args(tmp_path, mirror, record_new=False, sha256=trusted))["changed"] is True
    )


def test_check_mode_downloads_and_records_nothing(run_module, tmp_path, mirror):
    result = run_module(module.main, args(tmp_path, mirror), check_mode=True)
    assert result["changed"] is True
    assert result["changed_paths"] == [SUMS, CORE, PLUGIN, OWN]
    assert result["verified"] == {}
    assert not (tmp_path / "cache").exists() and not (tmp_path / "edgewasm.lock.json").exists()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"mirror": "relative/dir"}, "edgewasm_artifact_mirror='relative/dir' must be an http(s) base URL"),
        ({"mirror": ""}, "no source for the artifacts: set edgewasm_artifact_mirror"),
    ],
)
def test_a_bad_source_is_named(run_module, tmp_path, mirror, source, message):
    failed = run_module(module.main, args(tmp_path, mirror, **source))
    assert failed["failed"] is True and message in failed["msg"], failed


def test_a_missing_mirror_file_says_which_and_how_to_go_on(run_module, tmp_path, mirror):
    (mirror["root"] / OWN).unlink()
    failed = run_module(module.main, args(tmp_path, mirror))
    assert failed["failed"] is True
    assert failed["msg"].startswith(f"cannot download file://{mirror['root']}/{OWN}: "), failed["msg"]
    assert failed["msg"].endswith("Run again to retry.")
    assert not (tmp_path / "cache" / OWN).exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe\x00garbage\n", "line 1 is not '<sha256> <name>'"),
        (b"<html><body>Not Found</body></html>\n", "line 1 is not '<sha256> <name>': '<html><body>Not Found"),
        (b"%s  WasmEdge-0.14.1-ubuntu20.04_x86_64.tar.gz\ngarbage line\n" % (b"a" * 64), "line 2 is not"),
    ],
    ids=["binary", "error-page", "a-stray-line"],
)
def test_a_checksum_file_that_is_not_one_is_removed_and_not_recorded(
    run_module, tmp_path, mirror, content, problem
):
    """Before: whatever the mirror served was recorded in the lock file and read whole."""
    (mirror["root"] / SUMS).write_bytes(content)
    failed = run_module(module.main, args(tmp_path, mirror, items=[CORE], checksum_files={CORE: SUMS}))
    assert failed["failed"] is True
    assert failed["msg"].startswith(f"{SUMS} (file://{mirror['root']}/{SUMS}) is not a checksum file: "), (
        failed["msg"]
    )
    assert problem in failed["msg"]
    assert not (tmp_path / "cache" / SUMS).exists()
    lock = tmp_path / "edgewasm.lock.json"
    assert not lock.exists() or SUMS not in json.loads(lock.read_text())["artifacts"]


def test_an_oversized_checksum_file_or_artifact_is_refused_and_nothing_recorded(run_module, tmp_path, mirror):
    """Before: a 300 MB SHA256SUM was downloaded whole, read whole (893 MB peak RSS) and recorded."""
    sums = (mirror["root"] / SUMS).read_text()
    (mirror["root"] / SUMS).write_text(sums + (f"{'0' * 64}  padding\n" * 100))
    small = run_module(
        module.main,
        args(tmp_path, mirror, items=[CORE], checksum_files={CORE: SUMS}, max_checksum_file_bytes=4096),
    )
    assert small["failed"] is True
    assert "more than max_checksum_file_bytes=4096 allows: refused before reading it" in small["msg"], small[
        "msg"
    ]
    big = run_module(module.main, args(tmp_path, mirror, items=[OWN], checksum_files={}, max_bytes=10))
    assert big["failed"] is True
    assert "more than max_bytes=10 allows" in big["msg"]
    assert not (tmp_path / "cache" / OWN).exists() and not (tmp_path / "cache" / SUMS).exists()
    assert not (tmp_path / "edgewasm.lock.json").exists()
    ok = run_module(module.main, args(tmp_path, mirror))
    assert ok.get("failed") is not True, ok
