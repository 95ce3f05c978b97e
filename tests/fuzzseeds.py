"""Seed corpus for the parser tests and the fuzzers: malformed GGUF and ELF files, built by code.

Each builder returns bytes (GGUF) or patches a gcc-built ELF file in place, so no blob is committed;
the unit tests use them for their named cases and the fuzzers start from them.
"""

from __future__ import annotations

import os
import struct
from datetime import timedelta
from pathlib import Path

from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, settings

# The fuzzers' settings: deterministic by default (the same examples every run, so CI cannot fail at
# random); EDGEWASM_FUZZ_RANDOM=1 explores new inputs, EDGEWASM_FUZZ_EXAMPLES=N runs more of them.
FUZZ = settings(
    max_examples=int(os.environ.get("EDGEWASM_FUZZ_EXAMPLES", "300")),
    deadline=timedelta(seconds=2),
    derandomize=not os.environ.get("EDGEWASM_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- GGUF ------------------------------------------------------------------------------------------
GGUF_STRING, GGUF_ARRAY, GGUF_UINT8, GGUF_UINT32, GGUF_INT32 = 8, 9, 0, 4, 5


def gguf_string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def gguf_kv(key: bytes, kind: int, payload: bytes) -> bytes:
    return gguf_string(key) + struct.pack("<I", kind) + payload


def gguf_bytes(
    kvs: list[bytes], tensor_data: bool = True, tensors: int = 1, declared: int | None = None
) -> bytes:
    """GGUF v3 with the given raw key/values and `tensors` 2x2 F32 tensors (their data present or not);
    the header may declare another tensor count."""
    count = tensors if declared is None else declared
    head = b"GGUF" + struct.pack("<IQQ", 3, count, len(kvs)) + b"".join(kvs)
    infos = b"".join(
        gguf_string(b"w%d" % i)
        + struct.pack("<I", 2)
        + struct.pack("<QQ", 2, 2)
        + struct.pack("<IQ", 0, 32 * i)
        for i in range(tensors)
    )
    body = head + infos
    body += bytes(-len(body) % 32)
    return body + (bytes(32 * tensors) if tensor_data else b"")


GGUF_ARCH = gguf_kv(b"general.architecture", GGUF_STRING, gguf_string(b"llama"))


def gguf_nested(depth: int) -> bytes:
    """An array of an array of ... of an empty uint8 array."""
    return gguf_kv(
        b"deep",
        GGUF_ARRAY,
        struct.pack("<IQ", GGUF_ARRAY, 1) * (depth - 1) + struct.pack("<IQ", GGUF_UINT8, 0),
    )


def gguf_seeds() -> list[bytes]:
    """The malformed files of the issue that found them, and a good one to mutate."""
    return [
        gguf_bytes([GGUF_ARCH]),
        gguf_bytes([gguf_kv(b"huge", GGUF_ARRAY, struct.pack("<IQ", GGUF_UINT8, 2**63))]),
        gguf_bytes([gguf_kv(b"name", GGUF_STRING, struct.pack("<Q", 2**63))]),
        gguf_bytes([GGUF_ARCH], declared=2**40),
        gguf_bytes([GGUF_ARCH], tensor_data=False),
        gguf_bytes([GGUF_ARCH], tensors=0),
        gguf_bytes([GGUF_ARCH, gguf_nested(5000)]),
        gguf_bytes(
            [
                gguf_kv(
                    b"general.file_type",
                    GGUF_ARRAY,
                    struct.pack("<IQ", GGUF_UINT32, 2) + struct.pack("<II", 1, 2),
                )
            ]
        ),
    ]


# -- ELF (64-bit little-endian, as gcc builds them here) --------------------------------------------
def patch(path: Path, offset: int, value: int, size: int = 8) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + size] = value.to_bytes(size, "little")
    path.write_bytes(bytes(data))


def dynamic_entry_offset(path: Path, tag: str) -> int:
    """File offset of the d_val of the first dynamic entry with ``tag``."""
    with path.open("rb") as handle:
        elf = ELFFile(handle)
        segment = next(s for s in elf.iter_segments() if s["p_type"] == "PT_DYNAMIC")
        for index, entry in enumerate(segment.iter_tags()):
            if entry.entry.d_tag == tag:
                return segment["p_offset"] + index * 16 + 8
    raise LookupError(tag)


def phdr_offset(path: Path, kind: str) -> int:
    """File offset of p_offset in the first program header of ``kind``."""
    with path.open("rb") as handle:
        elf = ELFFile(handle)
        for index, segment in enumerate(elf.iter_segments()):
            if segment["p_type"] == kind:
                return elf["e_phoff"] + index * elf["e_phentsize"] + 8
    raise LookupError(kind)


def elf_regions(path: Path) -> list[tuple[int, int]]:
    """(start, length) of what the resolver reads: the ELF header, program headers, PT_INTERP,
    PT_DYNAMIC and the dynamic string table. The fuzzer mutates these."""
    with path.open("rb") as handle:
        elf = ELFFile(handle)
        regions = [(0, 64), (elf["e_phoff"], elf["e_phnum"] * elf["e_phentsize"])]
        for segment in elf.iter_segments():
            if segment["p_type"] in ("PT_INTERP", "PT_DYNAMIC"):
                regions.append((segment["p_offset"], segment["p_filesz"]))
        dynstr = elf.get_section_by_name(".dynstr")
        if dynstr is not None:
            regions.append((dynstr["sh_offset"], dynstr["sh_size"]))
    return regions


def sparse_gguf_with_long_name(path, name_bytes: int = 100 << 20) -> None:
    """A valid GGUF whose general.name is ``name_bytes`` NULs: a sparse file, so it costs no disk."""
    with open(path, "wb") as handle:
        handle.write(b"GGUF" + struct.pack("<IQQ", 3, 1, 2) + GGUF_ARCH)
        handle.write(
            gguf_string(b"general.name") + struct.pack("<I", GGUF_STRING) + struct.pack("<Q", name_bytes)
        )
        handle.seek(name_bytes, 1)  # the NULs: a hole
        info = gguf_string(b"w0") + struct.pack("<I", 2) + struct.pack("<QQ", 2, 2) + struct.pack("<IQ", 0, 0)
        handle.write(info)
        handle.write(bytes(-handle.tell() % 32) + bytes(32))


def sparse_gguf_with_many_entries(path, entries: int = 330_000_000, size: int = 4 << 30) -> None:
    """A ``size``-byte sparse GGUF declaring ``entries`` metadata entries (each of them an empty key holding a
    uint8 0, as the holes read): enough bytes that every count check passes."""
    with open(path, "wb") as handle:
        handle.write(b"GGUF" + struct.pack("<IQQ", 3, 1, entries))
        handle.truncate(size)


def ld_so_conf_include_loop(root, directory: str = "/opt/a"):
    """<root>/etc/ld.so.conf including ld.so.conf.d/*.conf, where links s1 -> . and s2 -> . and a.conf (listing
    ``directory`` and including s1/*.conf s2/*.conf) make an include loop: without files keyed by their real
    path, each level doubles the work up to the 40-hop link limit (days of reads)."""
    confd = root / "etc" / "ld.so.conf.d"
    confd.mkdir(parents=True)
    (root / "etc" / "ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    (confd / "s1").symlink_to(".")
    (confd / "s2").symlink_to(".")
    (confd / "a.conf").write_text(f"{directory}\ninclude s1/*.conf s2/*.conf\n")
    return root
