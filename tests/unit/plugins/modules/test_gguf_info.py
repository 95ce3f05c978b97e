"""gguf_info and its parser, against files written by llama.cpp's own gguf package (the reference)."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

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
    assert f"{truncated}: truncated GGUF header" in result["msg"]
    assert f"{missing} does not exist" in result["msg"]
    assert [m["path"] for m in result["models"]] == [str(model)]


def test_unsupported_version(tmp_path):
    old = tmp_path / "v1.gguf"
    old.write_bytes(b"GGUF" + (1).to_bytes(4, "little") + bytes(16))
    with pytest.raises(gguf_header.NotGGUF, match="GGUF version 1 is not supported"):
        gguf_header.read_header(str(old))
