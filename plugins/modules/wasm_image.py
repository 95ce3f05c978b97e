#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: wasm_image
short_description: Build a WebAssembly OCI image archive from one .wasm file, without docker or a registry
version_added: "0.2.0"
description:
  - Writes an OCI image layout, as a tar archive that C(ctr images import) reads, holding one layer with the wasm
    at C(/<entrypoint>) and a config with C(os) V(wasip1), C(architecture) V(wasm) and
    C(Entrypoint) C([<entrypoint>]), the image format runwasi's shims and crun's WasmEdge handler run.
  - The manifest carries the C(module.wasm.image/variant=compat-smart) annotation crun's WasmEdge handler keys on,
    and C(io.edgewasm.llamaedge.wasi-logging) / C(io.edgewasm.llamaedge.wasi-nn), read from the wasm's imports -
    whether the runtime must provide C(wasi:logging) (runwasi's WasmEdge shim does not) and WASI-NN.
  - Deterministic - every tar header, file order and JSON byte is fixed and the layer is not compressed, so the
    same wasm gives the same manifest digest on every run and machine. The archive is rewritten only when its
    bytes would change.
  - The wasm is checked first - a core WebAssembly module with well-formed sections, at most O(max_bytes) - and
    nothing is written when it is not.
  - Runs where the wasm is, normally the controller (C(delegate_to) V(localhost)); the image is then copied to
    the nodes and imported with M(edgewasm.llamaedge.containerd_image).
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: When the wasm does not exist yet (a check run before the download), the module predicts a change.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: The image reference and manifest digest before and after.
options:
  wasm:
    description: The C(.wasm) file (for example C(llama-api-server.wasm) from a LlamaEdge release).
    type: path
    required: true
  dest:
    description: The archive to write (its directory is created).
    type: path
    required: true
  name:
    description: Repository of the image, without a tag. Nothing is pushed; it names the image in containerd.
    type: str
    default: localhost/llamaedge/llama-api-server
  tag:
    description: Tag of the image, for example the LlamaEdge release V(0.28.1).
    type: str
    required: true
  entrypoint:
    description: File name of the wasm inside the image, and the image's C(Entrypoint).
    type: str
    default: llama-api-server.wasm
  annotations:
    description: More manifest annotations (they override the module's own of the same key).
    type: dict
    default: {}
  max_bytes:
    description: Largest wasm accepted (the image is built in memory).
    type: int
    default: 268435456
author:
  - edgewasm.llamaedge maintainers (@edgewasm)
"""

EXAMPLES = r"""
- name: The image of LlamaEdge's llama-api-server 0.28.1
  edgewasm.llamaedge.wasm_image:
    wasm: ~/.cache/edgewasm/artifacts/0.28.1/llama-api-server.wasm
    dest: ~/.cache/edgewasm/images/llama-api-server-0.28.1.oci.tar
    tag: "0.28.1"
  delegate_to: localhost
  run_once: true
  register: server_image

- name: Pods then use it by digest
  ansible.builtin.debug:
    msg: "{{ server_image.pinned }}"
"""

RETURN = r"""
dest:
  description: The archive.
  returned: always
  type: str
reference:
  description: The image's name in containerd after an import, C(<name>:<tag>).
  returned: always
  type: str
  sample: localhost/llamaedge/llama-api-server:0.28.1
digest:
  description: The manifest digest (what a pod pins); null in check mode when the wasm is not there yet.
  returned: always
  type: str
  sample: sha256:8d1c0e0f8a0a4f3d9a6a2c1a5b7f8e2d3c4b5a6978877665544332211009988
pinned:
  description: C(<reference>@<digest>), the reference pods use; null when RV(digest) is.
  returned: always
  type: str
wasi_logging:
  description: Whether the wasm imports C(wasi:logging) (a stock llama-api-server.wasm does; runwasi's WasmEdge shim cannot run it).
  returned: when the wasm was read
  type: bool
wasi_nn:
  description: Whether the wasm imports WASI-NN (C(wasi_ephemeral_nn)).
  returned: when the wasm was read
  type: bool
imports:
  description: The module names the wasm imports from.
  returned: when the wasm was read
  type: list
  elements: str
  sample: [wasi_snapshot_preview1, wasi_ephemeral_nn, "wasi:logging/logging"]
sha256:
  description: The sha256 of the archive file.
  returned: when the wasm was read
  type: str
"""

import hashlib
import io
import json
import os
import tarfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import wasm_image

MAX_INDEX_BYTES = 1 << 20


def existing_reference(path):
    """'<reference>@<digest>' of the image in the archive already at ``path``, or None."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            member = tar.getmember("index.json")
            if not member.isfile() or member.size > MAX_INDEX_BYTES:
                return None
            index = json.load(io.TextIOWrapper(tar.extractfile(member), encoding="utf-8"))
        entry = index["manifests"][0]
        return "%s@%s" % (entry["annotations"][wasm_image.CONTAINERD_NAME], entry["digest"])
    except (IOError, OSError, KeyError, IndexError, TypeError, ValueError, tarfile.TarError):
        return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            wasm=dict(type="path", required=True),
            dest=dict(type="path", required=True),
            name=dict(type="str", default="localhost/llamaedge/llama-api-server"),
            tag=dict(type="str", required=True),
            entrypoint=dict(type="str", default="llama-api-server.wasm"),
            annotations=dict(type="dict", default={}),
            max_bytes=dict(type="int", default=wasm_image.MAX_WASM_BYTES),
        ),
        supports_check_mode=True,
    )
    p = module.params
    errors = wasm_image.settings_errors(p["name"], p["tag"], p["entrypoint"])
    if p["max_bytes"] < 8:
        errors.append("max_bytes=%d must be at least 8" % p["max_bytes"])
    bad = sorted(k for k, v in p["annotations"].items() if not isinstance(v, str))
    if bad:
        errors.append("annotations must map keys to strings: %s" % ", ".join(bad))
    if errors:
        module.fail_json(msg="; ".join(errors))
    reference = "%s:%s" % (p["name"], p["tag"])
    before = existing_reference(p["dest"]) if os.path.exists(p["dest"]) else None
    if module.check_mode and not os.path.exists(p["wasm"]):
        module.exit_json(
            changed=True,
            dest=p["dest"],
            reference=reference,
            digest=None,
            pinned=None,
            msg="check mode: %s does not exist yet; a real run builds the image from it" % p["wasm"],
        )
    try:
        image = wasm_image.build(
            wasm_image.read_wasm(p["wasm"], p["max_bytes"]),
            p["name"],
            p["tag"],
            p["entrypoint"],
            p["annotations"],
            path=p["wasm"],
        )
    except wasm_image.WasmError as exc:
        module.fail_json(msg=str(exc))
    sha256 = hashlib.sha256(image["archive"]).hexdigest()
    changed = wasm_image.archive_sha256(p["dest"]) != sha256
    if changed and not module.check_mode:
        try:
            wasm_image.write_atomic(p["dest"], image["archive"])
        except (IOError, OSError) as exc:
            module.fail_json(msg="cannot write dest %s: %s" % (p["dest"], exc.strerror or exc))
    result = dict(
        changed=changed,
        dest=p["dest"],
        reference=image["reference"],
        digest=image["digest"],
        pinned=image["pinned"],
        wasi_logging=image["needs"]["wasi_logging"],
        wasi_nn=image["needs"]["wasi_nn"],
        imports=image["imports"],
        sha256=sha256,
    )
    if module._diff:
        result["diff"] = {
            "before_header": p["dest"],
            "after_header": p["dest"],
            "before": (before or "(no image)") + "\n",
            "after": image["pinned"] + "\n",
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
