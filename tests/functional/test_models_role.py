"""The models role, run for real on this machine (two inventory hosts, each with its own models_dir)."""

from __future__ import annotations

import hashlib
import os
import re
import stat

import gguf
import numpy as np
import pytest
from site_runner import local_inventory

pytestmark = pytest.mark.slow
PLAYBOOK = "tests/functional/playbooks/models.yml"


def gguf_file(path, name):
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(8192)
    writer.add_tensor("w", np.zeros((2, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def setup(tmp_path):
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    small_sha = gguf_file(upstream / "small.gguf", "Stand-in small")
    gguf_file(upstream / "big.gguf", "Stand-in big")
    nodes = tmp_path / "nodes"
    (nodes / "node1").mkdir(parents=True)
    gguf_file(nodes / "node1" / "preplaced.gguf", "Stand-in preplaced")
    models = [
        {"file": "small.gguf", "url": f"file://{upstream}/small.gguf", "sha256": small_sha},
        {"file": "big.gguf", "src": str(upstream / "big.gguf"), "nodes": ["node2"]},
        {"file": "preplaced.gguf", "present": True, "nodes": ["node1"]},
    ]
    extra = {
        "models_list": models,
        "models_dir": str(nodes) + "/{{ inventory_hostname }}",
        "models_cache_dir": str(tmp_path / "cache"),
        "models_free_margin_mb": 1,
    }
    return nodes, extra


def recap_changed(output: str) -> int:
    return sum(int(n) for n in re.findall(r"changed=(\d+)", output))


def test_models_placed_verified_and_idempotent(run_site, setup):
    nodes, extra = setup
    inventory = local_inventory(["node1", "node2"], [])
    first = run_site(inventory, extra, playbook=PLAYBOOK)
    assert first.rc == 0, first.output
    assert sorted(p.name for p in (nodes / "node1").iterdir()) == ["preplaced.gguf", "small.gguf"]
    assert sorted(p.name for p in (nodes / "node2").iterdir()) == ["big.gguf", "small.gguf"]
    for path in (nodes / "node2").iterdir():
        mode = path.stat()
        assert stat.S_IMODE(mode.st_mode) == 0o644 and mode.st_uid == 0
    assert stat.S_IMODE((nodes / "node2").stat().st_mode) == 0o755
    second = run_site(inventory, extra, playbook=PLAYBOOK)
    assert second.rc == 0, second.output
    assert recap_changed(second.output) == 0, second.output


def test_a_rerun_copies_only_models_whose_size_or_time_changed(run_site, setup):
    nodes, extra = setup
    inventory = local_inventory(["node1", "node2"], [])
    upstream = nodes.parent / "upstream"
    assert run_site(inventory, extra, playbook=PLAYBOOK).rc == 0
    placed = nodes / "node2" / "big.gguf"
    # A copy takes its source's modification time: the next run's quick check.
    assert int(placed.stat().st_mtime) == int((upstream / "big.gguf").stat().st_mtime)

    # Edited on the node (same size, new time), and a new controller copy (new size, new time).
    edited = nodes / "node1" / "small.gguf"
    edited.write_bytes(b"X" * edited.stat().st_size)
    gguf_file(upstream / "big.gguf", "Stand-in big, a newer build")
    second = run_site(inventory, extra, playbook=PLAYBOOK)
    assert second.rc == 0, second.output
    assert edited.read_bytes() == (upstream / "small.gguf").read_bytes()
    assert placed.read_bytes() == (upstream / "big.gguf").read_bytes()
    assert re.search(r"changed: \[node1\] => \(item=small\.gguf\)", second.output), second.output
    assert not re.search(r"changed: \[node2\] => \(item=small\.gguf\)", second.output), second.output

    # Weights changed in place with size and time kept (the header still reads): the quick check cannot
    # see it, a content check can.
    kept = placed.stat()
    damaged = placed.read_bytes()[:-4] + b"YYYY"
    placed.write_bytes(damaged)
    os.utime(placed, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    quick = run_site(inventory, extra, playbook=PLAYBOOK)
    assert quick.rc == 0 and recap_changed(quick.output) == 0, quick.output
    assert placed.read_bytes() == damaged
    thorough = run_site(inventory, dict(extra, models_quick_check=False), playbook=PLAYBOOK)
    assert thorough.rc == 0, thorough.output
    assert placed.read_bytes() == (upstream / "big.gguf").read_bytes()


def test_check_mode_on_fresh_nodes(run_site, setup, tmp_path):
    nodes, extra = setup
    extra = dict(extra, models_list=[m for m in extra["models_list"] if not m.get("present")])
    result = run_site(local_inventory(["node1", "node2"], []), extra, playbook=PLAYBOOK, check=True)
    assert result.rc == 0, result.output
    assert not (tmp_path / "cache").exists() and not (nodes / "node2").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "0" * 64}, "checksum mismatch for small.gguf"),
        ({"src": "/nonexistent.gguf"}, "give exactly one of url"),
        ({"file": "sub/small.gguf"}, "file is a name without '/'"),
        ({"nodes": ["node9"]}, "names nodes that are not in the inventory"),
    ],
)
def test_bad_entries_fail_before_anything_is_placed(run_site, setup, change, message):
    nodes, extra = setup
    broken = dict(extra["models_list"][0], **change)
    extra = dict(extra, models_list=[broken, *extra["models_list"][1:]])
    result = run_site(local_inventory(["node1", "node2"], []), extra, playbook=PLAYBOOK)
    assert result.rc != 0
    assert message in result.output, result.output
    assert not (nodes / "node2").exists()


def header_only(path):
    """A GGUF header that describes a tensor whose data never follows: no model weights."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("w", np.zeros((64, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: path.write_text("<html>rate limited</html>"), "page.gguf is not a GGUF file"),
        (header_only, "page.gguf: truncated GGUF file: the data of tensor w ends at byte"),
    ],
)
def test_a_file_that_is_not_a_model_is_rejected_on_the_node(run_site, setup, tmp_path, make, message):
    extra = setup[1]
    fake = tmp_path / "upstream" / "page.gguf"
    make(fake)
    extra = dict(extra, models_list=[{"file": "page.gguf", "src": str(fake)}])
    result = run_site(local_inventory(["node1"], []), extra, playbook=PLAYBOOK)
    assert result.rc != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output
