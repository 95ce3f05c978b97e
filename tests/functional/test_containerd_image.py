"""containerd_image on real containerd: Debian's 1.6 (ctr 1.6) and the containerd 2 the lab runs (built from the
Go module proxy by scripts/setup.sh), each a private daemon under tmp_path. The archive is wasm_image's; the
kubelet's view is checked through CRI's ImageService, as the kubelet asks it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import private_containerd
import pytest
import wasmtime

from ansible_collections.edgewasm.llamaedge.plugins.modules import containerd_image, wasm_image

pytestmark = pytest.mark.slow
SERVER = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "load_by_name" (func (param i32 i32 i32) (result i32)))
  (import "wasi:logging/logging" "log" (func (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "_start")) %s)"""


# CRI's ImageStatus, as the kubelet asks it, from a process of its own: a gRPC channel open in this process would
# be inherited by the ctr processes the module forks, and grpcio's fork handlers abort them.
CRI_STATUS = """
import json, sys
import grpc
from cri_api.v1 import api_pb2 as cri
from cri_api.v1.api_pb2_grpc import ImageServiceStub
with grpc.insecure_channel("unix://" + sys.argv[1]) as channel:
    answer = ImageServiceStub(channel).ImageStatus(
        cri.ImageStatusRequest(image=cri.ImageSpec(image=sys.argv[2]), verbose=True), timeout=30
    )
print(json.dumps({"id": answer.image.id, "repo_digests": list(answer.image.repo_digests),
                  "info": json.loads(answer.info.get("info", "{}"))}))
"""


@pytest.fixture(params=[2, 3], ids=["containerd-1.6", "containerd-2"], scope="module")
def containerd(request, tmp_path_factory):
    root = Path(tmp_path_factory.mktemp("ctrd", numbered=True))
    with private_containerd.running(root, request.param) as daemon:
        yield {**daemon, "root": root}


def build(run_module, tmp_path: Path, tag: str, extra: str = "") -> dict:
    source = tmp_path / f"server-{tag}.wasm"
    source.write_bytes(wasmtime.wat2wasm(SERVER % extra))
    result = run_module(
        wasm_image.main, {"wasm": str(source), "dest": str(tmp_path / f"{tag}.tar"), "tag": tag}
    )
    assert result["changed"] is True, result
    return result


def imported(run_module, containerd, image: dict, **extra) -> dict:
    check = extra.pop("_check", False)
    params = {
        "archive": image["dest"],
        "reference": image["reference"],
        "digest": image["digest"],
        "ctr": containerd["ctr"],
        "address": containerd["address"],
        **extra,
    }
    return run_module(containerd_image.main, params, check_mode=check, diff=True)


def cri_status(containerd, reference: str) -> tuple[dict, dict]:
    answer = subprocess.run(
        [sys.executable, "-c", CRI_STATUS, containerd["address"], reference],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    status = json.loads(answer.stdout)
    return status, status["info"]


def test_import_once_by_digest_and_the_kubelets_view(run_module, containerd, tmp_path):
    image = build(run_module, tmp_path, "0.28.1")
    predicted = imported(run_module, containerd, image, _check=True)
    assert predicted["changed"] is True and predicted["imported"] is True
    assert cri_status(containerd, image["pinned"])[0]["id"] == ""  # check mode imported nothing
    first = imported(run_module, containerd, image)
    assert first.get("changed") is True and first["imported"] is True, first
    assert first["images"] == {
        image["reference"]: image["digest"],
        "localhost/llamaedge/llama-api-server@" + image["digest"]: image["digest"],
    }
    assert image["pinned"] + "\n" not in first["diff"]["before"] and image["digest"] in first["diff"]["after"]
    rerun = imported(run_module, containerd, image)
    assert rerun["changed"] is False and rerun["imported"] is False
    # What a pod pinning the digest resolves to (CRI drops the tag of a tag@digest reference), and by tag.
    for reference in (image["pinned"], image["reference"]):
        found, info = cri_status(containerd, reference)
        assert found["id"], f"CRI does not know {reference}"
        assert "localhost/llamaedge/llama-api-server@" + image["digest"] in found["repo_digests"]
        spec = info["imageSpec"]
        assert (spec["os"], spec["architecture"]) == ("wasip1", "wasm")
        assert spec["config"]["Entrypoint"] == ["llama-api-server.wasm"]


def test_a_new_build_replaces_the_old_one_with_prune_and_absent_removes_it(run_module, containerd, tmp_path):
    old = build(run_module, tmp_path, "0.28.0", '(func (export "old"))')
    new = build(run_module, tmp_path, "0.28.2", '(func (export "new"))')
    assert imported(run_module, containerd, old)["changed"] is True
    replaced = imported(run_module, containerd, new, prune=True)
    assert replaced.get("imported") is True, replaced.get("msg")
    assert old["reference"] in replaced["removed"] and old["reference"] not in replaced["images"]
    assert cri_status(containerd, old["pinned"])[0]["id"] == ""
    assert cri_status(containerd, new["pinned"])[0]["id"]
    gone = imported(run_module, containerd, new, state="absent")
    assert gone["changed"] is True and not any(n.endswith(new["digest"]) for n in gone["images"])
    assert cri_status(containerd, new["pinned"])[0]["id"] == ""


def test_an_archive_of_another_image_fails_naming_the_digest(run_module, containerd, tmp_path):
    real = build(run_module, tmp_path, "0.28.3", '(func (export "x"))')
    other = build(run_module, tmp_path, "0.28.4", '(func (export "y"))')
    lying = dict(other, digest=real["digest"], reference="localhost/llamaedge/llama-api-server:0.28.4")
    result = imported(run_module, containerd, lying)
    assert result["failed"] is True
    assert "containerd has no" in result["msg"] and real["digest"] in result["msg"], result["msg"]


def test_no_containerd_fails_clearly_or_is_predicted_in_check_mode(run_module, tmp_path):
    params = {
        "archive": str(tmp_path / "x.tar"),
        "reference": "localhost/llamaedge/llama-api-server:0.28.1",
        "digest": "sha256:" + "0" * 64,
        "address": str(tmp_path / "no.sock"),
    }
    result = run_module(containerd_image.main, params)
    assert result["failed"] is True and "is k3s installed and running on this node?" in result["msg"]
    predicted = run_module(containerd_image.main, params, check_mode=True)
    assert predicted["changed"] is True and "not running here yet" in predicted["msg"]
    bad = run_module(containerd_image.main, dict(params, digest="sha256:abc", reference="x"))
    assert bad["failed"] is True and "digest='sha256:abc'" in bad["msg"] and "reference='x'" in bad["msg"]
