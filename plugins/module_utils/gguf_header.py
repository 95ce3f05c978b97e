# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read the header of a GGUF model file: version, tensor count and the metadata key/values.

Only the standard library: it runs on the nodes, where llama.cpp's ``gguf`` package (and numpy) are
not installed. Large arrays (the tokenizer's vocabulary) are skipped, not kept.

The work is bounded whatever the file says (LIMITS, each overridable): a string is kept up to
``max_string_bytes`` (the rest is skipped, and the value says how long it was), at most
``max_metadata_entries`` entries and ``max_tensors`` tensor descriptions are read, and the metadata may span
at most ``max_metadata_bytes``; beyond a limit the file is refused with a message naming the limit. A sparse
file can declare gigabytes of metadata without holding them: without these, a 100 MiB name became a 629 MB
module result, and 330 M declared entries took most of an hour.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import struct

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
# value type -> struct format of one scalar
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
KEEP_ARRAY_ITEMS = 16
LIMITS = {
    # Characters of a string value kept (a chat template is a few KiB; a name, a few dozen characters).
    "max_string_bytes": 4096,
    # Real models have a few dozen metadata keys, and a few thousand tensors (tens of thousands for large MoE).
    "max_metadata_entries": 65536,
    "max_tensors": 1 << 20,
    # The vocabulary and merges of a 256k-token tokenizer take about 10 MiB.
    "max_metadata_bytes": 256 << 20,
}
TRUNCATED = "... [truncated: %d bytes]"
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


# ggml tensor type -> (elements per block, bytes per block); checked against llama.cpp's gguf package
# (GGML_QUANT_SIZES) by the unit tests. A type missing here is only checked for its offset.
TENSOR_TYPES = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}  # fmt: skip
MAX_DIMS = 4  # GGML_MAX_DIMS
MIN_TENSOR_INFO = 8 + 4 + 8 + 4 + 8  # name length, n_dims, one dimension, type, offset
# The smallest encoding of one array item of each kind: what `count` items need at least.
_MIN_ITEM = {kind: struct.calcsize("<" + fmt) for kind, fmt in SCALARS.items()}
_MIN_ITEM.update({STRING: 8, ARRAY: 12})


class NotGGUF(ValueError):  # noqa: N818 - reads as a sentence: raise NotGGUF(...)
    """The file is not a GGUF model (or is truncated, or of an unsupported version)."""


class _Array:
    """An array being read: its item kind, its count, and the first items kept."""

    def __init__(self, kind, count):
        self.kind = kind
        self.count = count
        self.index = 0
        self.items = []

    def add(self, item):
        if self.index < KEEP_ARRAY_ITEMS:
            self.items.append(item)
        self.index += 1

    def result(self):
        return self.items if self.count <= KEEP_ARRAY_ITEMS else {"type": "array", "length": self.count}


class _Reader:
    """Reads a GGUF file checking every length and count against the bytes left, before reading, and the
    metadata against the limits."""

    def __init__(self, handle, path, size, limits=None):
        self.handle = handle
        self.path = path
        self.size = size
        self.limits = dict(LIMITS, **(limits or {}))
        self.metadata_end = None  # the offset the metadata may not pass, once it starts

    def beyond(self, limit, what):
        return NotGGUF(
            "%s: %s, beyond %s=%d: if the file is genuine, raise that limit"
            % (self.path, what, limit, self.limits[limit])
        )

    def check_budget(self):
        if self.metadata_end is not None and self.handle.tell() > self.metadata_end:
            raise self.beyond(
                "max_metadata_bytes",
                "its metadata is larger than %d bytes" % self.limits["max_metadata_bytes"],
            )

    def left(self):
        return self.size - self.handle.tell()

    def need(self, size, what):
        if size > self.left():
            raise NotGGUF(
                "%s: truncated or corrupt GGUF file: %s needs %d bytes at offset %d, only %d are left"
                % (self.path, what, size, self.handle.tell(), self.left())
            )

    def take(self, size, what="the header"):
        self.need(size, what)
        return self.handle.read(size)

    def scalar(self, fmt, what="the header"):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))[0]

    def string(self, what="a string"):
        length = self.scalar("Q", what)
        keep = self.limits["max_string_bytes"]
        if length <= keep:
            text = self.take(length, what).decode("utf-8", errors="replace")
        else:
            self.need(length, what)
            text = self.handle.read(keep).decode("utf-8", errors="replace") + TRUNCATED % length
            self.handle.seek(length - keep, 1)
        self.check_budget()
        return text

    def _open_array(self, key):
        kind = self.scalar("I", "the array %s" % key)
        count = self.scalar("Q", "the array %s" % key)
        if kind not in _MIN_ITEM:
            raise NotGGUF("%s: unknown GGUF value type %d in the array %s" % (self.path, kind, key))
        self.need(count * _MIN_ITEM[kind], "the %d items of the array %s" % (count, key))
        return _Array(kind, count)

    def value(self, kind, key):
        if kind in SCALARS:
            return self.scalar(SCALARS[kind], "the value of %s" % key)
        if kind == STRING:
            return self.string("the value of %s" % key)
        if kind != ARRAY:
            raise NotGGUF("%s: unknown GGUF value type %d for %s" % (self.path, kind, key))
        return self._array(key)

    def _array(self, key):
        """Arrays of arrays are read with a stack, not recursion: any depth the file size allows."""
        stack = [self._open_array(key)]
        while True:
            top = stack[-1]
            if top.index == top.count:
                stack.pop()
                if not stack:
                    return top.result()
                stack[-1].add(top.result())
            elif top.kind == ARRAY:
                stack.append(self._open_array(key))
            elif top.kind in SCALARS and top.count > KEEP_ARRAY_ITEMS:
                size = _MIN_ITEM[top.kind] * top.count
                self.need(size, "the array %s" % key)
                self.handle.seek(size, 1)  # a vocabulary's scores: skipped, not read
                self.check_budget()
                top.index = top.count
            else:
                top.add(self.value(top.kind, key))


def _tensor_infos(reader, count):
    reader.need(count * MIN_TENSOR_INFO, "the %d tensor descriptions" % count)
    infos = []
    for _index in range(count):
        name = reader.string("a tensor name")
        n_dims = reader.scalar("I", "the tensor %s" % name)
        if not 1 <= n_dims <= MAX_DIMS:
            raise NotGGUF("%s: tensor %s has %d dimensions (1 to %d)" % (reader.path, name, n_dims, MAX_DIMS))
        dims = [reader.scalar("Q", "the tensor %s" % name) for _dim in range(n_dims)]
        kind = reader.scalar("I", "the tensor %s" % name)
        offset = reader.scalar("Q", "the tensor %s" % name)
        infos.append((name, dims, kind, offset))
    return infos


def _tensor_bytes(dims, kind):
    block, size = TENSOR_TYPES.get(kind, (1, 0))
    elements = 1
    for dim in dims:
        elements *= dim
    return (elements + block - 1) // block * size


def _check_tensor_data(reader, infos, alignment):
    """The tensor data must be there: a header alone is not a model."""
    if not infos:
        raise NotGGUF("%s: the GGUF file describes no tensors: it has no model weights" % reader.path)
    start = (reader.handle.tell() + alignment - 1) // alignment * alignment
    available = reader.size - start
    for name, dims, kind, offset in infos:
        end = offset + _tensor_bytes(dims, kind)
        if end > available:
            raise NotGGUF(
                "%s: truncated GGUF file: the data of tensor %s ends at byte %d but the file has %d; "
                "download it again" % (reader.path, name, start + end, reader.size)
            )
    return available


def read_header(path, limits=None):
    """Version, tensor count and metadata of the GGUF file at ``path``, and the size of its tensor data
    (which must be all there); raises NotGGUF naming the file and what is wrong. ``limits``: LIMITS to
    override."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            return _read(_Reader(handle, path, size, limits))
    except (OSError, OverflowError, MemoryError) as exc:
        raise NotGGUF("%s: cannot read it: %s" % (path, getattr(exc, "strerror", None) or exc)) from exc


def _read(reader):
    path = reader.path
    magic = reader.handle.read(4)
    if magic != MAGIC:
        raise NotGGUF("%s is not a GGUF file (starts with %r, not %r)" % (path, magic, MAGIC))
    version = reader.scalar("I")
    if version not in SUPPORTED_VERSIONS:
        raise NotGGUF("%s: GGUF version %d is not supported (only %s)" % (path, version, SUPPORTED_VERSIONS))
    tensors = reader.scalar("Q")
    count = reader.scalar("Q")
    if count > reader.limits["max_metadata_entries"]:
        raise reader.beyond("max_metadata_entries", "it declares %d metadata entries" % count)
    if tensors > reader.limits["max_tensors"]:
        raise reader.beyond("max_tensors", "it declares %d tensors" % tensors)
    reader.need(count * (8 + 4), "the %d metadata entries" % count)
    reader.metadata_end = reader.handle.tell() + reader.limits["max_metadata_bytes"]
    metadata = {}
    for _index in range(count):
        key = reader.string("a metadata key")
        metadata[key] = reader.value(reader.scalar("I", "the type of %s" % key), key)
    alignment = metadata.get("general.alignment", 32)
    if (
        not isinstance(alignment, int)
        or isinstance(alignment, bool)
        or alignment < 1
        or alignment & (alignment - 1)
    ):
        raise NotGGUF("%s: general.alignment must be a power of two, not %r" % (path, alignment))
    reader.metadata_end = None
    infos = _tensor_infos(reader, tensors)
    data = _check_tensor_data(reader, infos, alignment)
    return {"version": version, "tensor_count": tensors, "metadata": metadata, "tensor_data_bytes": data}


def _typed(value, kind):
    """``value`` if it is a ``kind`` (a bool is no int), else None: metadata keys can hold anything."""
    if isinstance(value, bool) and kind is not bool:
        return None
    return value if isinstance(value, kind) else None


def summary(header):
    """What a person checks about a model: architecture, name, context length, quantization."""
    meta = header["metadata"]
    arch = _typed(meta.get("general.architecture"), str)
    file_type = _typed(meta.get("general.file_type"), int)
    return {
        "version": header["version"],
        "tensor_count": header["tensor_count"],
        "tensor_data_bytes": header["tensor_data_bytes"],
        "architecture": arch,
        "name": _typed(meta.get("general.name"), str),
        "context_length": _typed(meta.get("%s.context_length" % arch), int) if arch else None,
        "block_count": _typed(meta.get("%s.block_count" % arch), int) if arch else None,
        "file_type": FILE_TYPES.get(file_type, file_type),
        "metadata_keys": len(meta),
    }
