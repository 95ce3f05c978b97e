#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: gguf_info
short_description: Check that files are GGUF models and report their metadata
version_added: "0.1.0"
description:
  - Reads the header of each GGUF file (magic, version, tensor count, metadata) with a small parser of its
    own (no numpy or C(gguf) package needed on the node) and reports the architecture, model name,
    context length and quantization.
  - Fails, naming the file and the field, when a file is missing, is not a GGUF file, is truncated or has a
    GGUF version other than 2 or 3 - so a wrong download or an HTML error page saved as a model is caught
    before llama-api-server fails to load it.
  - Every count and length in the file is checked against the bytes left before anything is read, nested
    arrays are read without recursion, and the tensor descriptions are read too - a file that describes no
    tensors, or whose tensor data is not all there (a header alone), is not a model and fails.
  - The work is bounded whatever a file declares (a sparse file can declare gigabytes it does not hold) - string
    values are kept up to O(max_string_bytes) (the rest is skipped, and the value ends with a marker giving the
    length), and a file with more metadata entries, tensors or metadata bytes than the limits
    below is refused with a message naming the limit.
  - Never changes the node.
extends_documentation_fragment:
  - edgewasm.llamaedge.attributes.READ_ONLY
options:
  paths:
    description: GGUF files to read.
    type: list
    elements: path
    required: true
  max_string_bytes:
    description: Bytes of a string value kept in the result; longer ones are cut with a marker.
    type: int
    default: 4096
  max_metadata_entries:
    description: A file declaring more metadata entries is refused (real models have a few dozen).
    type: int
    default: 65536
  max_metadata_bytes:
    description: A file whose metadata spans more bytes is refused (a 256k-token vocabulary takes about 10 MiB).
    type: int
    default: 268435456
  max_tensors:
    description: A file declaring more tensors is refused (real models have thousands).
    type: int
    default: 1048576
author:
  - edgewasm.llamaedge maintainers (@edgewasm)
"""

EXAMPLES = r"""
- name: Check the models on a node
  edgewasm.llamaedge.gguf_info:
    paths:
      - /var/lib/llamaedge/models/Llama-3.2-1B-Instruct-Q5_K_M.gguf
  register: models
"""

RETURN = r"""
models:
  description: One entry per file, in the order of O(paths).
  returned: success
  type: list
  elements: dict
  sample:
    - path: /var/lib/llamaedge/models/Llama-3.2-1B-Instruct-Q5_K_M.gguf
      size: 911503040
      version: 3
      tensor_count: 147
      tensor_data_bytes: 911466496
      architecture: llama
      name: Llama 3.2 1B Instruct
      context_length: 131072
      block_count: 16
      file_type: Q5_K_M
      metadata_keys: 31
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import gguf_header

LIMITS = tuple(sorted(gguf_header.LIMITS))


def inspect(path, limits=None):
    if not os.path.isfile(path):
        raise gguf_header.NotGGUF("%s does not exist or is not a regular file" % path)
    info = gguf_header.summary(gguf_header.read_header(path, limits))
    info.update(path=path, size=os.path.getsize(path))
    return info


def main():
    spec = dict(paths=dict(type="list", elements="path", required=True))
    spec.update((name, dict(type="int", default=gguf_header.LIMITS[name])) for name in LIMITS)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    limits = dict((name, module.params[name]) for name in LIMITS)
    for name, value in sorted(limits.items()):
        if value < 1:
            module.fail_json(msg="%s=%d must be at least 1" % (name, value))
    models, errors = [], []
    for path in module.params["paths"]:
        try:
            models.append(inspect(path, limits))
        except (gguf_header.NotGGUF, OSError) as exc:
            errors.append(str(exc))
    if errors:
        module.fail_json(
            msg="Not usable as GGUF models: %s. Download the file again (its sha256 should match "
            "the model's published checksum) or fix the path." % "; ".join(errors),
            models=models,
        )
    module.exit_json(changed=False, models=models)


if __name__ == "__main__":
    main()
