"""gguf_info and its parser, against files written by llama.cpp's own gguf package (the reference)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from fuzzseeds import (
    GGUF_ARCH,
    gguf_bytes,
    gguf_kv,
    gguf_nested,
    gguf_string,
    sparse_gguf_with_long_name,
    sparse_gguf_with_many_entries,
)

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import gguf_header
from ansible_collections.edgewasm.llamaedge.plugins.modules import gguf_info as module


def write_model(path, vocab: int = 2000) -> None:
    """A small but real GGUF file: llama metadata, a tokenizer vocabulary, two tensors."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("Stand-in Llama 3.2 1B Instruct")
    writer.add_context_length(131072)
    writer.add_block_count(16)
    writer.add_file_type(17)  # Q5_K_M
    writer.add_token_list([f"tok{i}" for i in range(vocab)])
    writer.add_token_scores([0.5] * vocab)
    writer.add_array("test.short_list", [1, 2, 3])
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.add_tensor("output.weight", np.ones((8,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "standin-1b.gguf"
    write_model(path)
    return path


def test_parser_agrees_with_the_reference_reader(model):
    header = gguf_header.read_header(str(model))
    reference = gguf.GGUFReader(str(model))
    assert header["tensor_count"] == len(reference.tensors) == 2
    ref_keys = [k for k in reference.fields if not k.startswith("GGUF.")]
    assert list(header["metadata"]) == ref_keys
    assert header["metadata"]["general.architecture"] == "llama"
    assert header["metadata"]["test.short_list"] == [1, 2, 3]
    assert header["metadata"]["tokenizer.ggml.tokens"] == {"type": "array", "length": 2000}
    assert header["metadata"]["tokenizer.ggml.scores"] == {"type": "array", "length": 2000}


def test_module_reports_metadata(run_module, model):
    result = run_module(module.main, {"paths": [str(model)]})
    assert result["changed"] is False
    (info,) = result["models"]
    assert (
        info["architecture"],
        info["name"],
        info["context_length"],
        info["block_count"],
        info["file_type"],
    ) == ("llama", "Stand-in Llama 3.2 1B Instruct", 131072, 16, "Q5_K_M")
    assert info["version"] == 3 and info["tensor_count"] == 2 and info["size"] == model.stat().st_size


def test_bad_files_fail_naming_each(run_module, model, tmp_path):
    html = tmp_path / "error-page.gguf"
    html.write_text("<html>403 Forbidden</html>")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(model.read_bytes()[:200])
    missing = tmp_path / "missing.gguf"
    result = run_module(module.main, {"paths": [str(model), str(html), str(truncated), str(missing)]})
    assert result["failed"] is True
    assert f"{html} is not a GGUF file" in result["msg"]
    assert f"{truncated}: truncated or corrupt GGUF file" in result["msg"]
    assert f"{missing} does not exist" in result["msg"]
    assert [m["path"] for m in result["models"]] == [str(model)]


def test_unsupported_version(tmp_path):
    old = tmp_path / "v1.gguf"
    old.write_bytes(b"GGUF" + (1).to_bytes(4, "little") + bytes(16))
    with pytest.raises(gguf_header.NotGGUF, match="GGUF version 1 is not supported"):
        gguf_header.read_header(str(old))


# -- malformed files, built byte by byte (tests/fuzzseeds.py) ----------------------------------------
_kv, ARCH, nested = gguf_kv, GGUF_ARCH, gguf_nested


def test_a_well_formed_handmade_file_parses(tmp_path):
    path = tmp_path / "ok.gguf"
    path.write_bytes(gguf_bytes([ARCH]))
    header = gguf_header.read_header(str(path))
    assert header["tensor_count"] == 1 and header["tensor_data_bytes"] == 32


@pytest.mark.parametrize(
    ("kvs", "options", "message"),
    [
        (
            [_kv(b"huge", 9, struct.pack("<IQ", 0, 2**63))],
            {},
            "the 9223372036854775808 items of the array huge",
        ),
        ([_kv(b"huge", 9, struct.pack("<IQ", 8, 2**64 - 1))], {}, "items of the array huge"),
        (
            [_kv(b"name", 8, struct.pack("<Q", 2**63))],
            {},
            "the value of name needs 9223372036854775808 bytes",
        ),
        ([_kv(b"odd", 13, b"")], {}, "unknown GGUF value type 13 for odd"),
        ([ARCH], {"declared": 2**40}, "it declares 1099511627776 tensors, beyond max_tensors=1048576"),
        ([ARCH], {"declared": 2**19}, "the 524288 tensor descriptions"),
        ([ARCH], {"tensor_data": False}, "the data of tensor w0 ends at byte"),
        ([ARCH], {"tensors": 0}, "describes no tensors"),
        (
            [_kv(b"general.alignment", 4, struct.pack("<I", 3))],
            {},
            "general.alignment must be a power of two",
        ),
    ],
)
def test_malformed_files_fail_naming_the_file_and_the_field(tmp_path, kvs, options, message):
    path = tmp_path / "bad.gguf"
    path.write_bytes(gguf_bytes(kvs, **options))
    with pytest.raises(gguf_header.NotGGUF) as failure:
        gguf_header.read_header(str(path))
    assert str(failure.value).startswith(str(path)) and message in str(failure.value)


def test_deeply_nested_arrays_parse_without_recursion(tmp_path):
    path = tmp_path / "deep.gguf"
    path.write_bytes(gguf_bytes([ARCH, nested(5000)]))
    header = gguf_header.read_header(str(path))
    value = header["metadata"]["deep"]
    for _level in range(4999):
        (value,) = value
    assert value == []


def test_metadata_of_the_wrong_type_is_reported_as_absent(run_module, tmp_path):
    path = tmp_path / "odd.gguf"
    file_type_array = _kv(b"general.file_type", 9, struct.pack("<IQ", 4, 2) + struct.pack("<II", 1, 2))
    name_number = _kv(b"general.name", 4, struct.pack("<I", 7))
    path.write_bytes(gguf_bytes([ARCH, file_type_array, name_number]))
    result = run_module(module.main, {"paths": [str(path)]})
    (info,) = result["models"]
    assert (info["file_type"], info["name"], info["architecture"]) == (None, None, "llama")


def test_an_unreadable_path_is_named(tmp_path):
    with pytest.raises(gguf_header.NotGGUF, match=str(tmp_path) + ": cannot read it"):
        gguf_header.read_header(str(tmp_path))  # a directory


def test_tensor_type_sizes_agree_with_llama_cpp():
    reference = {int(kind): sizes for kind, sizes in gguf.GGML_QUANT_SIZES.items()}
    assert {k: v for k, v in gguf_header.TENSOR_TYPES.items() if k in reference} == {
        k: v for k, v in reference.items() if k in gguf_header.TENSOR_TYPES
    }
    assert set(reference) <= set(gguf_header.TENSOR_TYPES)


def test_an_empty_tensor_at_the_end_of_the_data_is_not_truncation(tmp_path):
    """A 0-element tensor may sit exactly at the end of the data section: nothing of it is missing."""
    infos = gguf_string(b"w") + struct.pack("<I", 2) + struct.pack("<QQ", 2, 2) + struct.pack("<IQ", 0, 0)
    infos += gguf_string(b"empty") + struct.pack("<I", 1) + struct.pack("<Q", 0) + struct.pack("<IQ", 0, 32)
    body = b"GGUF" + struct.pack("<IQQ", 3, 2, 1) + ARCH + infos
    body += bytes(-len(body) % 32) + bytes(32)
    path = tmp_path / "empty-tensor.gguf"
    path.write_bytes(body)
    assert gguf_header.read_header(str(path))["tensor_count"] == 2


PEAK = """
import json, sys, time
from ansible_collections.edgewasm.llamaedge.plugins.modules import gguf_info
start = time.monotonic()
try:
    out = {"info": gguf_info.inspect(sys.argv[1])}
except gguf_info.gguf_header.NotGGUF as exc:
    out = {"error": str(exc)}
out["seconds"] = time.monotonic() - start
# VmHWM: this process image's own peak (ru_maxrss carries the parent's across fork and exec).
status = open("/proc/self/status").read()
out["peak_rss_kib"] = int(status.split("VmHWM:")[1].split()[0])
out["result_bytes"] = len(json.dumps(out))
print(json.dumps(out))
"""


def inspect_in_a_process(path) -> dict:
    """gguf_info's work on one file in a process of its own: its result, and its peak RSS."""
    # The directory holding ansible_collections/, as the tests import the collection from it.
    collections = Path(module.__file__).parents[5]
    env = dict(os.environ, PYTHONPATH=str(collections))
    done = subprocess.run(
        [sys.executable, "-c", PEAK, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
        env=env,
    )
    return json.loads(done.stdout)


def test_a_100_mib_name_is_kept_truncated_not_whole(tmp_path):
    """Before: a 629 MB module result and 2.5 GB peak RSS from one sparse file."""
    path = tmp_path / "long-name.gguf"
    sparse_gguf_with_long_name(path)
    out = inspect_in_a_process(path)
    name = out["info"]["name"]
    assert name == "\0" * gguf_header.LIMITS["max_string_bytes"] + "... [truncated: 104857600 bytes]"
    assert out["result_bytes"] < 64 * 1024
    assert out["peak_rss_kib"] < 128 * 1024, out  # MiB, not GiB


def test_330_million_declared_entries_are_refused_at_once(tmp_path):
    """Before: a 4 GiB sparse file declaring 330 M entries kept the module busy for about 48 minutes."""
    path = tmp_path / "many.gguf"
    sparse_gguf_with_many_entries(path)
    out = inspect_in_a_process(path)
    assert out["error"] == (
        f"{path}: it declares 330000000 metadata entries, beyond max_metadata_entries=65536: if the file is "
        "genuine, raise that limit"
    )


def test_the_limits_are_options_and_metadata_bytes_are_bounded(run_module, tmp_path):
    tokens = [b"tok%06d" % i for i in range(20000)]
    vocab = gguf_kv(
        b"tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, len(tokens)) + b"".join(map(gguf_string, tokens))
    )
    path = tmp_path / "vocab.gguf"
    name = gguf_kv(b"general.name", 8, gguf_string(b"n" * 100))
    path.write_bytes(gguf_bytes([GGUF_ARCH, name, vocab]))
    assert run_module(module.main, {"paths": [str(path)]})["models"][0]["architecture"] == "llama"
    small = run_module(module.main, {"paths": [str(path)], "max_metadata_bytes": 65536})
    assert small["failed"] is True
    assert "its metadata is larger than 65536 bytes, beyond max_metadata_bytes=65536" in small["msg"]
    few = run_module(module.main, {"paths": [str(path)], "max_metadata_entries": 1})
    assert "it declares 3 metadata entries, beyond max_metadata_entries=1" in few["msg"]
    short = run_module(module.main, {"paths": [str(path)], "max_string_bytes": 30})
    assert short["models"][0]["name"] == "n" * 30 + "... [truncated: 100 bytes]"
    bad = run_module(module.main, {"paths": [str(path)], "max_tensors": 0})
    assert bad["failed"] is True and bad["msg"] == "max_tensors=0 must be at least 1"
