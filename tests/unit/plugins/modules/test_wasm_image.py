"""wasm_image: the OCI archive it writes (checked with skopeo, a real OCI tool), its determinism, and the wasm
files it refuses before writing anything."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import wasmtime

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import wasm_image
from ansible_collections.edgewasm.llamaedge.plugins.modules import wasm_image as module

# What a stock llama-api-server.wasm imports (WASI, WASI-NN, and wasi:logging from its wasi_logger setup).
STOCK = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "load_by_name" (func (param i32 i32 i32) (result i32)))
  (import "wasi:logging/logging" "log" (func (param i32 i32 i32 i32 i32)))
  (import "env" "table" (table 1 funcref))
  (import "env" "g" (global (mut i32)))
  (memory (export "memory") 1 2)
  (func (export "_start")))"""
# A build with its wasi_logger setup removed (what runwasi's shim can run).
NO_LOGGING = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "load_by_name" (func (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")))"""


def wasm(tmp_path: Path, text: str = STOCK, name: str = "llama-api-server.wasm") -> Path:
    path = tmp_path / name
    path.write_bytes(wasmtime.wat2wasm(text))
    return path


def args(source: Path, dest: Path, **extra) -> dict:
    return {"wasm": str(source), "dest": str(dest), "tag": "0.28.1", **extra}


def skopeo(*argv: str) -> dict:
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is needed to check the archive (scripts/setup.sh installs it from Debian)")
    return json.loads(subprocess.run(["skopeo", *argv], check=True, capture_output=True, text=True).stdout)


def test_the_archive_is_an_oci_image_skopeo_reads(run_module, tmp_path):
    dest = tmp_path / "out" / "server.oci.tar"
    result = run_module(module.main, args(wasm(tmp_path), dest))
    assert result["changed"] is True and dest.is_file()
    assert result["reference"] == "localhost/llamaedge/llama-api-server:0.28.1"
    assert result["pinned"] == result["reference"] + "@" + result["digest"]
    manifest = skopeo("inspect", "--raw", f"oci-archive:{dest}")
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci-archive:{dest}"], check=True, capture_output=True
    ).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == result["digest"]
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat-smart"
    assert manifest["annotations"]["io.edgewasm.llamaedge.wasi-logging"] == "true"
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    config = skopeo("inspect", "--config", f"oci-archive:{dest}")
    assert (config["os"], config["architecture"]) == ("wasip1", "wasm")
    assert config["config"]["Entrypoint"] == ["llama-api-server.wasm"]
    # The layer holds the wasm, unchanged, at /llama-api-server.wasm, executable.
    with tarfile.open(dest) as archive:
        layer_name = "blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]
        with tarfile.open(fileobj=archive.extractfile(layer_name)) as layer:
            member = layer.getmember("llama-api-server.wasm")
            assert member.mode == 0o755 and member.uid == 0 and member.mtime == 0
            assert layer.extractfile(member).read() == (tmp_path / "llama-api-server.wasm").read_bytes()
        index = json.load(archive.extractfile("index.json"))
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == result["reference"]
    assert result["wasi_logging"] is True and result["wasi_nn"] is True
    assert result["imports"] == ["wasi_snapshot_preview1", "wasi_ephemeral_nn", "wasi:logging/logging", "env"]


def test_the_same_wasm_gives_the_same_digest_and_bytes_anywhere(run_module, tmp_path):
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    first = run_module(module.main, args(wasm(first_dir), first_dir / "i.tar"))
    second = run_module(module.main, args(wasm(second_dir), second_dir / "i.tar"))
    assert first["digest"] == second["digest"] and first["sha256"] == second["sha256"]
    assert (first_dir / "i.tar").read_bytes() == (second_dir / "i.tar").read_bytes()
    # The bytes never depend on the clock, the user or the file's own metadata.
    (second_dir / "llama-api-server.wasm").touch()
    again = run_module(module.main, args(second_dir / "llama-api-server.wasm", second_dir / "i.tar"))
    assert again["changed"] is False and again["digest"] == first["digest"]


def test_what_the_runtime_must_provide_follows_the_imports(run_module, tmp_path):
    result = run_module(module.main, args(wasm(tmp_path, NO_LOGGING), tmp_path / "i.tar"))
    assert result["wasi_logging"] is False and result["wasi_nn"] is True
    manifest = skopeo("inspect", "--raw", f"oci-archive:{tmp_path / 'i.tar'}")
    assert manifest["annotations"]["io.edgewasm.llamaedge.wasi-logging"] == "false"
    stock = run_module(module.main, args(wasm(tmp_path, STOCK, "other.wasm"), tmp_path / "j.tar"))
    assert stock["digest"] != result["digest"]


def test_rerun_check_mode_and_diff(run_module, tmp_path):
    source, dest = wasm(tmp_path), tmp_path / "i.tar"
    predicted = run_module(module.main, args(source, dest), check_mode=True, diff=True)
    assert predicted["changed"] is True and not dest.exists()
    assert predicted["diff"]["before"] == "(no image)\n"
    assert predicted["diff"]["after"] == predicted["pinned"] + "\n"
    built = run_module(module.main, args(source, dest))
    assert built["digest"] == predicted["digest"]
    rerun = run_module(module.main, args(source, dest), diff=True)
    assert rerun["changed"] is False and rerun["diff"]["before"] == rerun["diff"]["after"]
    # A fresh controller in check mode: the wasm is not downloaded yet.
    fresh = run_module(module.main, args(tmp_path / "missing.wasm", tmp_path / "k.tar"), check_mode=True)
    assert fresh["changed"] is True and fresh["digest"] is None and "does not exist yet" in fresh["msg"]


def _valid(tmp_path: Path) -> bytes:
    return wasm(tmp_path).read_bytes()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b"\x7fELF" + b[4:], "does not start with \\0asm"),
        (lambda b: b[:4] + b"\x0d\x00\x01\x00" + b[8:], "not a core WebAssembly module"),
        (lambda b: b[:-3], "runs past the end"),
        (lambda b: b + b"\x02\xff\xff\xff\xff\x7f", "LEB128"),
        (lambda b: b + b"\x0e\x00", "section id 14"),
        (lambda b: b + b"\x02\x03\x01\x01\xff", "not UTF-8"),
        (lambda b: b"", "does not start with \\0asm"),
    ],
    ids=["elf", "component", "truncated", "leb-overflow", "unknown-section", "bad-name", "empty"],
)
def test_a_damaged_wasm_is_refused_and_nothing_is_written(run_module, tmp_path, damage, message):
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(damage(_valid(tmp_path)))
    result = run_module(module.main, args(bad, tmp_path / "i.tar"))
    assert result["failed"] is True and message in result["msg"] and str(bad) in result["msg"], result["msg"]
    assert not (tmp_path / "i.tar").exists()


def test_every_truncation_is_a_clear_error_never_a_traceback(tmp_path):
    """A prefix that ends between sections is a smaller valid module; any other is a WasmError, nothing else."""
    data = _valid(tmp_path)
    boundaries, refused = set(), 0
    for end in range(len(data)):
        try:
            wasm_image.wasm_imports(data[:end])
        except wasm_image.WasmError:
            refused += 1
        else:
            boundaries.add(end)
    assert 8 in boundaries and len(boundaries) <= 12  # one per section of this small module
    assert refused == len(data) - len(boundaries)


def test_an_oversized_wasm_or_a_directory_is_refused_unread(run_module, tmp_path):
    big = tmp_path / "big.wasm"
    big.write_bytes(_valid(tmp_path) + b"\0" * 64)
    result = run_module(module.main, args(big, tmp_path / "i.tar", max_bytes=64))
    assert result["failed"] is True and "more than max_bytes=64" in result["msg"]
    result = run_module(module.main, args(tmp_path, tmp_path / "i.tar"))
    assert result["failed"] is True and "is not a regular file" in result["msg"]
    assert not (tmp_path / "i.tar").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"name": "Localhost/Upper"}, "name='Localhost/Upper' must be an image repository"),
        ({"name": "localhost/x:1"}, "must be an image repository"),
        ({"tag": "0.28.1\n"}, "tag='0.28.1\\n' must be an image tag"),
        ({"entrypoint": "../x.wasm"}, "entrypoint='../x.wasm' must be a file name ending in .wasm"),
        ({"annotations": {"a": 1}}, "annotations must map keys to strings: a"),
    ],
)
def test_bad_settings_fail_naming_the_option(run_module, tmp_path, override, message):
    result = run_module(module.main, args(wasm(tmp_path), tmp_path / "i.tar", **override))
    assert result["failed"] is True and message in result["msg"], result["msg"]
