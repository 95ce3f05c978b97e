# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading ELF files the way glibc's loader does: the header, PT_INTERP and PT_DYNAMIC, through program
headers only (stripped files have no section headers). Bad input raises ResolverError with the file's name."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import os
import stat
import struct

try:
    from elftools.common.utils import parse_cstring_from_stream, struct_parse
    from elftools.elf.elffile import ELFFile

    HAS_ELFTOOLS = True
    ELFTOOLS_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised by ansible-test import sanity
    HAS_ELFTOOLS = False
    ELFTOOLS_IMPORT_ERROR = exc


EM_NAMES = {
    3: "i386",
    40: "arm",
    62: "x86_64",
    183: "aarch64",
    243: "riscv64",
    20: "ppc",
    21: "ppc64",
    22: "s390x",
}
# ELFOSABI_SYSV and ELFOSABI_GNU: the only OS ABIs glibc's loader accepts.
ACCEPTED_OSABI = (0, 3)
DF_1_NODEFLIB = 0x800
_STRING_TAGS = ("DT_SONAME", "DT_RUNPATH", "DT_RPATH")


class ResolverError(Exception):
    """A problem with an input file, reported to the user as is."""


Header = collections.namedtuple("Header", "elfclass data osabi etype machine")


class ElfObject:
    """What the loader needs from one ELF file."""

    __slots__ = ("header", "interp", "needed", "nodeflib", "path", "realpath", "rpath", "runpath", "soname")

    def __init__(self, path, realpath, header):
        self.path = path
        self.realpath = realpath
        self.header = header
        self.soname = None
        self.needed = []
        self.rpath = None
        self.runpath = None
        self.interp = None
        self.nodeflib = False

    @property
    def machine(self):
        return EM_NAMES.get(self.header.machine, "em%d" % self.header.machine)


def read_header(data):
    """Parse the fixed ELF header fields from the first 20 bytes, or None if not ELF."""
    if len(data) < 20 or data[:4] != b"\x7fELF":
        return None
    elfclass = {1: 32, 2: 64}.get(bytearray(data)[4])
    order = {1: "<", 2: ">"}.get(bytearray(data)[5])
    if elfclass is None or order is None:
        return None
    etype, machine = struct.unpack(order + "HH", data[16:20])
    return Header(elfclass, order, bytearray(data)[7], etype, machine)


def compatible(candidate, reference):
    """ld.so's test: same class, byte order and machine, and an accepted OS ABI."""
    return (
        candidate.elfclass == reference.elfclass
        and candidate.data == reference.data
        and candidate.machine == reference.machine
        and candidate.osabi in ACCEPTED_OSABI
    )


def _file_offset(phdrs, vaddr):
    """File offset of a virtual address, through the PT_LOAD segments."""
    if vaddr is None:
        return None
    for phdr in phdrs:
        if phdr["p_type"] == "PT_LOAD" and phdr["p_vaddr"] <= vaddr < phdr["p_vaddr"] + phdr["p_filesz"]:
            return vaddr - phdr["p_vaddr"] + phdr["p_offset"]
    return None


def open_regular(path, mode="rb"):
    """Open ``path`` only if it is a regular file (after symlinks), without ever blocking: a FIFO or a
    device named like a library would otherwise hang the open or the read. Raises OSError, or
    NotRegularFileError for anything but a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(path)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


class NotRegularFileError(OSError):
    """A path that exists but is a FIFO, socket, device or directory."""

    def __init__(self, path):
        super().__init__("%s is not a regular file" % path)
        self.strerror = "not a regular file"


def parse(handle, path, real):
    """An ElfObject from an open file (``path`` as asked for, ``real`` its real path)."""
    header = read_header(handle.read(20))
    if header is None:
        raise ResolverError("%s is not an ELF file" % path)
    handle.seek(0)
    obj = ElfObject(path, real, header)
    try:
        _read_dynamic(ELFFile(handle), handle, obj)
    except ResolverError:
        raise
    except Exception as exc:  # pylint: disable=broad-except  # pyelftools raises many kinds on bad input
        raise ResolverError("%s is a damaged ELF file: %s" % (path, exc or type(exc).__name__)) from exc
    return obj


def alias(obj, path):
    """The same parsed file reached by another name."""
    alias = ElfObject(path, obj.realpath, obj.header)
    for name in ("soname", "needed", "rpath", "runpath", "interp", "nodeflib"):
        setattr(alias, name, getattr(obj, name))
    return alias


def _read_dynamic(elf, handle, obj):
    """Read PT_INTERP and the PT_DYNAMIC entries through program headers only.

    pyelftools' DynamicSegment scans every section header to find .dynstr;
    the loader does not need section headers (stripped files have none), so
    the string table is located as ld.so does: DT_STRTAB mapped through PT_LOAD.
    """
    header = elf.header
    phdrs = [
        struct_parse(elf.structs.Elf_Phdr, handle, header["e_phoff"] + i * header["e_phentsize"])
        for i in range(header["e_phnum"])
    ]
    size_of_file = os.fstat(handle.fileno()).st_size

    def cstring(offset, what):
        """The NUL-terminated string at ``offset``; a clear error when it lies outside the file."""
        text = parse_cstring_from_stream(handle, offset) if 0 <= offset < size_of_file else None
        if text is None:
            raise ResolverError(
                "%s is a damaged ELF file: %s points to offset %d, outside the file (%d bytes)"
                % (obj.path, what, offset, size_of_file)
            )
        return text.decode("utf-8", "replace")

    dynamic = None
    for phdr in phdrs:
        if phdr["p_type"] == "PT_INTERP":
            obj.interp = cstring(phdr["p_offset"], "PT_INTERP")
        elif phdr["p_type"] == "PT_DYNAMIC":
            dynamic = phdr
    if dynamic is None:
        return
    entries = []
    size = elf.structs.Elf_Dyn.sizeof()
    end = min(dynamic["p_offset"] + dynamic["p_filesz"], size_of_file)  # a bogus size stops at EOF
    for offset in range(dynamic["p_offset"], end, size):
        entry = struct_parse(elf.structs.Elf_Dyn, handle, offset)
        if entry["d_tag"] == "DT_NULL":
            break
        entries.append((entry["d_tag"], entry["d_val"]))
    strtab = _file_offset(phdrs, dict(entries).get("DT_STRTAB"))

    def string(kind, value):
        if strtab is None:
            raise ResolverError("%s has dynamic strings but no mapped DT_STRTAB" % obj.path)
        return cstring(strtab + value, "a %s string" % kind)

    obj.needed = [string(kind, value) for kind, value in entries if kind == "DT_NEEDED"]
    strings = dict((kind, string(kind, value)) for kind, value in entries if kind in _STRING_TAGS)
    obj.soname = strings.get("DT_SONAME")
    obj.runpath = strings.get("DT_RUNPATH")
    obj.rpath = strings.get("DT_RPATH")
    obj.nodeflib = any(kind == "DT_FLAGS_1" and value & DF_1_NODEFLIB for kind, value in entries)
    if obj.runpath is not None:
        # glibc: "If both RUNPATH and RPATH are given, the latter is ignored."
        obj.rpath = None
