"""Property-based fuzzing (hypothesis) of what reads untrusted input: the GGUF parser, the ELF
resolver's parsing of program headers, dynamic section and strings, and the manifest builders'
option validation. Any input gives a result or the module's own error type, never another exception,
never a hang (each example has a deadline).

Deterministic by default (the same examples every run, so CI cannot fail at random); set
EDGEWASM_FUZZ_RANDOM=1 to explore new inputs and EDGEWASM_FUZZ_EXAMPLES=N for more of them.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from doubles.elf_builders import shared_lib
from fuzzseeds import FUZZ, elf_regions, gguf_seeds
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import (
    elf,
    gguf_header,
    llama_backend_manifests,
)

# Hypothesis calls the properties many times per test: one directory for them all, removed with the module.
WORK = Path(tempfile.mkdtemp(prefix="edgewasm-fuzz-"))


@pytest.fixture(scope="module", autouse=True)
def _remove_work_dir():
    yield
    shutil.rmtree(WORK, ignore_errors=True)


# -- GGUF ------------------------------------------------------------------------------------------
def _parse(data: bytes) -> None:
    path = WORK / "fuzz.gguf"
    path.write_bytes(data)
    try:
        header = gguf_header.read_header(str(path))
    except gguf_header.NotGGUF as exc:
        assert str(exc).startswith(str(path)), exc  # every error names the file
        return
    summary = gguf_header.summary(header)
    assert summary["tensor_count"] >= 1 and header["tensor_data_bytes"] > 0


@st.composite
def mutated_gguf(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(gguf_seeds())))
    for _edit in range(draw(st.integers(1, 8))):
        offset = draw(st.integers(0, max(0, min(len(data), 4096) - 1)))
        value = draw(st.binary(min_size=1, max_size=8))
        data[offset : offset + len(value)] = value
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


@FUZZ
@given(mutated_gguf())
def test_fuzz_gguf_mutations(data: bytes) -> None:
    _parse(data)


@FUZZ
@given(st.binary(max_size=2048).map(lambda tail: b"GGUF\x03\x00\x00\x00" + tail))
@example(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
def test_fuzz_gguf_random_bodies(data: bytes) -> None:
    _parse(data)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@FUZZ
@given(
    mutated_gguf(),
    st.fixed_dictionaries(
        {
            "max_string_bytes": st.integers(1, 64),
            "max_metadata_entries": st.integers(1, 8),
            "max_metadata_bytes": st.integers(1, 4096),
            "max_tensors": st.integers(1, 8),
        }
    ),
)
def test_fuzz_gguf_limits_bound_what_is_kept(data: bytes, limits: dict) -> None:
    """Whatever the file, with any limits: a result within them, or an error naming the file."""
    path = WORK / "fuzz-limits.gguf"
    path.write_bytes(data)
    try:
        header = gguf_header.read_header(str(path), limits)
    except gguf_header.NotGGUF as exc:
        assert str(exc).startswith(str(path)), exc
        return
    assert len(header["metadata"]) <= limits["max_metadata_entries"]
    assert header["tensor_count"] <= limits["max_tensors"]
    marker = len(gguf_header.TRUNCATED % len(data))
    for key, value in header["metadata"].items():
        for text in (key, *_strings(value)):
            assert len(text) <= limits["max_string_bytes"] + marker


def test_gguf_seeds_give_results_or_named_errors() -> None:
    for seed in gguf_seeds():
        _parse(seed)


# -- ELF -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def elf_base() -> tuple[bytes, list[tuple[int, int]]]:
    leaf = shared_lib(WORK / "base" / "libleaf.so", soname="libleaf.so")
    lib = shared_lib(WORK / "base" / "libbase.so", soname="libbase.so", needed=[leaf], runpath="$ORIGIN")
    return lib.read_bytes(), elf_regions(lib)


@settings(FUZZ, suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_elf_headers_dynamic_section_and_strings(elf_base, data: st.DataObject) -> None:
    base, regions = elf_base
    mutated = bytearray(base)
    for _edit in range(data.draw(st.integers(1, 6))):
        start, length = data.draw(st.sampled_from(regions))
        offset = start + data.draw(st.integers(0, max(0, length - 1)))
        value = data.draw(st.binary(min_size=1, max_size=8))
        mutated[offset : offset + len(value)] = value
    path = WORK / "base" / "libfuzz.so"  # beside libleaf.so, which $ORIGIN finds
    path.write_bytes(bytes(mutated))
    try:
        elf.Resolver().resolve(str(path))
    except elf.ResolverError as exc:
        assert "libfuzz.so" in str(exc), exc


# -- manifest option validation ----------------------------------------------------------------------
NAMES = st.text(alphabet=st.characters(codec="utf-8"), max_size=20) | st.from_regex(
    r"[a-z0-9][a-z0-9.,:/ _-]{0,12}", fullmatch=True
)
NUMBERS = st.none() | st.integers(-(2**70), 2**70) | st.sampled_from([0, 1, -1, 65535, 65536, 10000, 10001])


@st.composite
def backend_spec(draw: st.DrawFn) -> dict:
    return {
        "name": draw(NAMES),
        "namespace": draw(NAMES),
        "image": draw(st.sampled_from(["registry.example.com/llama:1", ""])),
        "runtime_class": "wasmedge-nn",
        "model_file": draw(NAMES),
        "models_dir": draw(st.sampled_from(["/var/lib/llamaedge/models", "relative"])),
        "model_name": draw(NAMES),
        "model_aliases": draw(st.lists(NAMES, max_size=3)),
        "prompt_template": draw(st.sampled_from(["llama-3-chat", ""])),
        "ctx_size": draw(NUMBERS),
        "batch_size": draw(NUMBERS),
        "n_predict": draw(NUMBERS),
        "threads": draw(NUMBERS),
        "n_gpu_layers": draw(NUMBERS),
        "port": draw(NUMBERS),
        "replicas": draw(st.integers(-1, 5)),
        "weight": draw(NUMBERS),
        "wasinn_backend": draw(st.sampled_from(["GGML", "GG:ML", ""])),
        "wasinn_target": "AUTO",
        "node_groups": [{"nodes": ["node1"], "volumes": [], "volume_mounts": [], "env": []}],
        "extra_env": [],
        "resources": None,
        "startup_seconds": draw(NUMBERS),
        "image_pull_policy": "IfNotPresent",
    }


@FUZZ
@given(backend_spec())
@example(  # found by this fuzzer: a required number given as null passed validation, then crashed
    {
        "name": "a", "namespace": "a", "image": "i", "runtime_class": "wasmedge-nn", "model_file": "m.gguf",
        "models_dir": "/models", "model_name": "m", "model_aliases": [], "prompt_template": "llama-3-chat",
        "ctx_size": None, "batch_size": None, "n_predict": None, "threads": None, "n_gpu_layers": None,
        "port": None, "replicas": 1, "weight": 1, "wasinn_backend": "GGML", "wasinn_target": "AUTO",
        "node_groups": [{"nodes": ["n"], "volumes": [], "volume_mounts": [], "env": []}], "extra_env": [],
        "resources": None, "startup_seconds": None, "image_pull_policy": "IfNotPresent",
    }
)  # fmt: skip
def test_fuzz_backend_validation(spec: dict) -> None:
    errors = llama_backend_manifests.backend_errors(spec)
    assert all(isinstance(e, str) and e for e in errors)
    if errors:
        return
    objects = llama_backend_manifests.backend_manifests(spec)
    service = objects[-1]
    models = service["metadata"]["annotations"][llama_backend_manifests.MODELS_ANNOTATION].split(",")
    assert models == [spec["model_name"]]  # the API model id only: aliases name WASI-NN graphs
    env = objects[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    preload = next(e["value"] for e in env if e["name"] == "WASMEDGE_WASINN_PRELOAD")
    alias, backend, target, _path = preload.split(":", 3)
    assert (alias, backend, target) == (
        (spec["model_aliases"] or ["default"])[0],
        spec["wasinn_backend"],
        "AUTO",
    )
