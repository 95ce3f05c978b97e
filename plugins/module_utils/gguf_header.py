# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read the header of a GGUF model file: version, tensor count and the metadata key/values.

Only the standard library: it runs on the nodes, where llama.cpp's ``gguf`` package (and numpy) are
not installed. Large arrays (the tokenizer's vocabulary) are skipped, not kept.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
# value type -> struct format of one scalar
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
KEEP_ARRAY_ITEMS = 16
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
}


class NotGGUF(ValueError):  # noqa: N818 - reads as a sentence: raise NotGGUF(...)
    """The file is not a GGUF model (or is truncated, or of an unsupported version)."""


class _Reader:
    def __init__(self, handle, path):
        self.handle = handle
        self.path = path

    def take(self, size):
        data = self.handle.read(size)
        if len(data) != size:
            raise NotGGUF(
                "%s: truncated GGUF header (wanted %d bytes at offset %d)"
                % (self.path, size, self.handle.tell())
            )
        return data

    def scalar(self, fmt):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        length = self.scalar("Q")
        if length > 1 << 24:
            raise NotGGUF("%s: implausible string length %d in the GGUF header" % (self.path, length))
        return self.take(length).decode("utf-8", errors="replace")

    def value(self, kind):
        if kind in SCALARS:
            return self.scalar(SCALARS[kind])
        if kind == STRING:
            return self.string()
        if kind == ARRAY:
            item_kind = self.scalar("I")
            count = self.scalar("Q")
            items = []
            if item_kind in SCALARS and count > KEEP_ARRAY_ITEMS:
                self.handle.seek(struct.calcsize(SCALARS[item_kind]) * count, 1)  # skip without reading
                return {"type": "array", "length": count}
            for index in range(count):
                item = self.value(item_kind)
                if index < KEEP_ARRAY_ITEMS:
                    items.append(item)
            return items if count <= KEEP_ARRAY_ITEMS else {"type": "array", "length": count}
        raise NotGGUF("%s: unknown GGUF value type %d" % (self.path, kind))


def read_header(path):
    """Version, tensor count and metadata of the GGUF file at ``path``; raises NotGGUF."""
    with open(path, "rb") as handle:
        reader = _Reader(handle, path)
        magic = handle.read(4)
        if magic != MAGIC:
            raise NotGGUF("%s is not a GGUF file (starts with %r, not %r)" % (path, magic, MAGIC))
        version = reader.scalar("I")
        if version not in SUPPORTED_VERSIONS:
            raise NotGGUF(
                "%s: GGUF version %d is not supported (only %s)" % (path, version, SUPPORTED_VERSIONS)
            )
        tensors = reader.scalar("Q")
        count = reader.scalar("Q")
        metadata = {}
        for _index in range(count):
            key = reader.string()
            metadata[key] = reader.value(reader.scalar("I"))
    return {"version": version, "tensor_count": tensors, "metadata": metadata}


def summary(header):
    """What a person checks about a model: architecture, name, context length, quantization."""
    meta = header["metadata"]
    arch = meta.get("general.architecture")
    file_type = meta.get("general.file_type")
    return {
        "version": header["version"],
        "tensor_count": header["tensor_count"],
        "architecture": arch,
        "name": meta.get("general.name"),
        "context_length": meta.get("%s.context_length" % arch) if arch else None,
        "block_count": meta.get("%s.block_count" % arch) if arch else None,
        "file_type": FILE_TYPES.get(file_type, file_type),
        "metadata_keys": len(meta),
    }
