# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Resolve the shared-library closure of ELF objects the way glibc's ld.so does.

No program is executed (unlike ``ldd``), so it works for any architecture and
inside another filesystem tree (``root``). For every DT_NEEDED entry, in
breadth-first load order, the search is:

1. a name containing ``/`` is opened as a path;
2. an already loaded object whose name or DT_SONAME matches is reused
   (``preloaded`` sonames count as loaded: libraries the host process provides);
3. if the requesting object has no DT_RUNPATH: the DT_RPATH of the requesting
   object, then of the object that loaded it, and on up the loading chain;
4. ``LD_LIBRARY_PATH`` (as given, never the caller's own environment);
5. the DT_RUNPATH of the requesting object only;
6. unless DF_1_NODEFLIB: the directories of ``/etc/ld.so.conf`` (what
   ``ldconfig`` puts in ``ld.so.cache``), then the default system directories.

Each directory may be preceded by its ``glibc-hwcaps/<level>`` subdirectories.
A candidate whose ELF class, machine or OS ABI differs from the requesting
object is skipped, as ld.so does. ``$ORIGIN``, ``$LIB`` and ``$PLATFORM`` (and
their ``${...}`` forms) are expanded in RPATH/RUNPATH. A file reached by a
different name than an already loaded file (same real file) is reused too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import collections
import glob
import os
import stat
import struct
import sys

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
TRIPLETS = {
    "x86_64": "x86_64-linux-gnu",
    "aarch64": "aarch64-linux-gnu",
    "i386": "i386-linux-gnu",
    "arm": "arm-linux-gnueabihf",
    "riscv64": "riscv64-linux-gnu",
    "ppc64": "powerpc64le-linux-gnu",
    "s390x": "s390x-linux-gnu",
}
# The dynamic loader a process of this machine runs under (PT_INTERP of its programs).
DEFAULT_INTERPRETERS = {
    "x86_64": "/lib64/ld-linux-x86-64.so.2",
    "aarch64": "/lib/ld-linux-aarch64.so.1",
    "i386": "/lib/ld-linux.so.2",
    "arm": "/lib/ld-linux-armhf.so.3",
    "riscv64": "/lib/ld-linux-riscv64-lp64d.so.1",
}
# ELFOSABI_SYSV and ELFOSABI_GNU: the only OS ABIs glibc's loader accepts.
ACCEPTED_OSABI = (0, 3)
DF_1_NODEFLIB = 0x800
_STRING_TAGS = ("DT_SONAME", "DT_RUNPATH", "DT_RPATH")
MAX_SYMLINKS = 40


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


class Loaded:
    """One object in the load order: how it was found, and by whom."""

    __slots__ = ("depth", "found_via", "loader", "name", "obj")

    def __init__(self, name, obj, loader, found_via, depth):
        self.name = name
        self.obj = obj
        self.loader = loader
        self.found_via = found_via
        self.depth = depth

    def chain(self):
        names = []
        node = self
        while node is not None:
            names.append(node.name)
            node = node.loader
        return list(reversed(names))

    def as_dict(self):
        return {
            "name": self.name,
            "path": self.obj.path,
            "realpath": self.obj.realpath,
            "soname": self.obj.soname,
            "needed_by": self.loader.obj.path if self.loader else None,
            "found_via": self.found_via,
            "depth": self.depth,
        }


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


def parse_ld_so_conf(read_file, expand_glob, path="/etc/ld.so.conf", _seen=None):
    """Directories listed by an ld.so.conf file, following ``include`` globs in order.

    ``read_file(path)`` returns the text or None; ``expand_glob(pattern)`` returns
    matching paths. Both work on paths inside the resolver's root.
    """
    seen = _seen if _seen is not None else set()
    if path in seen:
        return []
    seen.add(path)
    text = read_file(path)
    if text is None:
        return []
    dirs = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] == "include":
            for word in words[1:]:
                pattern = word if word.startswith("/") else os.path.join(os.path.dirname(path), word)
                for included in sorted(expand_glob(pattern)):
                    dirs.extend(parse_ld_so_conf(read_file, expand_glob, included, seen))
            continue
        if words[0] == "hwcap":
            continue
        for word in line.replace(",", " ").replace(":", " ").split():
            directory = word.split("=", 1)[0].rstrip("/") or "/"
            if directory.startswith("/"):
                dirs.append(directory)
    return dirs


def _file_offset(phdrs, vaddr):
    """File offset of a virtual address, through the PT_LOAD segments."""
    if vaddr is None:
        return None
    for phdr in phdrs:
        if phdr["p_type"] == "PT_LOAD" and phdr["p_vaddr"] <= vaddr < phdr["p_vaddr"] + phdr["p_filesz"]:
            return vaddr - phdr["p_vaddr"] + phdr["p_offset"]
    return None


def default_dirs(machine, elfclass):
    """The loader's built-in system directories (Debian multiarch layout first)."""
    dirs = []
    triplet = TRIPLETS.get(machine)
    if triplet:
        dirs += ["/lib/" + triplet, "/usr/lib/" + triplet]
    if elfclass == 64:
        dirs += ["/lib64", "/usr/lib64"]
    return [*dirs, "/lib", "/usr/lib"]


def _dedupe(items):
    seen = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


class FileSystem:
    """Path access inside ``root``: absolute symlinks never lead out of it."""

    def __init__(self, root="/"):
        self.root = os.path.abspath(root)
        self.chrooted = self.root != "/"

    def host(self, path):
        """Host path of an inside path (no symlink resolution)."""
        if not self.chrooted:
            return path
        return os.path.join(self.root, path.lstrip("/"))

    def realpath(self, path):
        """Resolve symlinks of an inside path, staying inside root."""
        if not self.chrooted:
            return os.path.realpath(path)
        parts = [p for p in path.split("/") if p]
        resolved = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = "/" + "/".join([*resolved, part])
            host = self.host(candidate)
            if os.path.islink(host):
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise ResolverError("too many levels of symbolic links under %s" % path)
                target = os.readlink(host)
                if target.startswith("/"):
                    resolved = []
                parts = [p for p in target.split("/") if p] + parts
                continue
            resolved.append(part)
        return "/" + "/".join(resolved)

    def resolved_host(self, path):
        """Host path of an inside path's real file (symlinks resolved inside root)."""
        return self.host(self.realpath(path)) if self.chrooted else path

    def exists(self, path):
        return os.path.exists(self.resolved_host(path))

    def read_text(self, path):
        try:
            with open_regular(self.resolved_host(path), "r") as handle:
                return handle.read()
        except (IOError, OSError, UnicodeDecodeError):
            return None

    def glob(self, pattern):
        matches = glob.glob(self.host(pattern))
        if not self.chrooted:
            return matches
        return ["/" + os.path.relpath(m, self.root) for m in matches]


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


class Resolver:
    """Resolve DT_NEEDED closures; reuse one instance for many files (it caches)."""

    def __init__(
        self,
        root="/",
        ld_library_path=None,
        preloaded=None,
        hwcaps=None,
        lib=None,
        platform=None,
        ld_so_conf="/etc/ld.so.conf",
        default_interpreter=True,
    ):
        if not HAS_ELFTOOLS:
            raise ResolverError("pyelftools is required: pip install pyelftools (%s)" % ELFTOOLS_IMPORT_ERROR)
        self.fs = FileSystem(root)
        self.ld_library_path = [d for d in (ld_library_path or []) if d]
        self.preloaded = list(preloaded or [])
        self.hwcaps = list(hwcaps or [])
        self.lib = lib
        self.platform = platform
        self.default_interpreter = default_interpreter
        self._conf_dirs = None
        self._ld_so_conf = ld_so_conf
        self._objects = {}  # realpath -> ElfObject
        self._headers = {}  # host path -> Header or None
        self._dir_cache = {}  # inside dir -> set of names, or None

    # ----------------------------------------------------------------- reading
    def _header_of(self, path):
        host = self.fs.resolved_host(path)
        if host in self._headers:
            return self._headers[host]
        try:
            with open_regular(host) as handle:
                header = read_header(handle.read(20))
        except (IOError, OSError):  # missing, unreadable, or not a regular file (a FIFO would block)
            header = None
        self._headers[host] = header
        return header

    def load(self, path):
        """Parse an ELF file (an inside path), with clear errors for bad input."""
        host = self.fs.host(path)
        if not os.path.lexists(host):
            raise ResolverError("%s does not exist" % path)
        real = self.fs.realpath(path)
        cached = self._objects.get(real)
        if cached is not None:
            return cached if cached.path == path else self._alias(cached, path)
        real_host = self.fs.host(real)
        try:
            st = os.stat(real_host)
        except OSError as exc:
            raise ResolverError("%s: %s" % (path, exc.strerror)) from exc
        if not stat.S_ISREG(st.st_mode):
            raise ResolverError("%s is not a regular file" % path)
        try:
            with open_regular(real_host) as handle:
                obj = self._parse(handle, path, real)
        except NotRegularFileError as exc:
            raise ResolverError("%s is not a regular file" % path) from exc
        except (IOError, OSError) as exc:
            raise ResolverError("%s cannot be read: %s" % (path, exc.strerror)) from exc
        self._objects[real] = obj
        return obj

    def _parse(self, handle, path, real):
        header = read_header(handle.read(20))
        if header is None:
            raise ResolverError("%s is not an ELF file" % path)
        handle.seek(0)
        obj = ElfObject(path, real, header)
        try:
            self._read_dynamic(ELFFile(handle), handle, obj)
        except ResolverError:
            raise
        except Exception as exc:  # pylint: disable=broad-except  # pyelftools raises many kinds on bad input
            raise ResolverError("%s is a damaged ELF file: %s" % (path, exc or type(exc).__name__)) from exc
        return obj

    @staticmethod
    def _alias(obj, path):
        alias = ElfObject(path, obj.realpath, obj.header)
        for name in ("soname", "needed", "rpath", "runpath", "interp", "nodeflib"):
            setattr(alias, name, getattr(obj, name))
        return alias

    @staticmethod
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

    # --------------------------------------------------------------- searching
    def conf_dirs(self):
        if self._conf_dirs is None:
            self._conf_dirs = _dedupe(parse_ld_so_conf(self.fs.read_text, self.fs.glob, self._ld_so_conf))
        return self._conf_dirs

    def expand(self, entry, obj):
        """Expand one RPATH/RUNPATH entry for ``obj``; an empty entry means the current directory."""
        origin = os.path.dirname(obj.path) or "/"
        lib = self.lib or self._lib_for(obj)
        platform = self.platform or obj.machine
        for token, value in (("ORIGIN", origin), ("LIB", lib), ("PLATFORM", platform)):
            entry = entry.replace("${%s}" % token, value).replace("$%s" % token, value)
        return entry or "."

    def _lib_for(self, obj):
        triplet = TRIPLETS.get(obj.machine)
        if triplet and os.path.isdir(self.fs.host("/lib/" + triplet)):
            return "lib/" + triplet
        return "lib64" if obj.header.elfclass == 64 else "lib"

    def _path_list(self, value, obj):
        return [os.path.normpath(self.expand(e, obj)) for e in value.split(":")]

    def _with_hwcaps(self, dirs):
        if not self.hwcaps:
            return dirs
        out = []
        for d in dirs:
            out.extend(os.path.join(d, "glibc-hwcaps", level) for level in self.hwcaps)
            out.append(d)
        return out

    def search_order(self, requester):
        """(directory, how) pairs in the order ld.so tries them for ``requester.obj``'s needs."""
        obj = requester.obj
        order = []
        if obj.runpath is None:
            node = requester
            while node is not None:
                if node.obj.rpath:
                    order += [(d, "rpath") for d in self._path_list(node.obj.rpath, node.obj)]
                node = node.loader
        order += [(d, "ld_library_path") for d in self.ld_library_path]
        if obj.runpath:
            order += [(d, "runpath") for d in self._path_list(obj.runpath, obj)]
        if not obj.nodeflib:
            order += [(d, "ld.so.conf") for d in self.conf_dirs()]
            order += [(d, "default") for d in default_dirs(obj.machine, obj.header.elfclass)]
        out = []
        seen = set()
        for d, how in order:
            for hd in self._with_hwcaps([d]):
                if hd not in seen:
                    seen.add(hd)
                    out.append((hd, how))
        return out

    def _listing(self, directory):
        if directory not in self._dir_cache:
            try:
                self._dir_cache[directory] = set(os.listdir(self.fs.host(directory)))
            except OSError:
                self._dir_cache[directory] = None
        return self._dir_cache[directory]

    def find(self, name, requester, skipped):
        """Path of the first compatible candidate for ``name``, and how it was found."""
        for directory, how in self.search_order(requester):
            names = self._listing(directory)
            if not names or name not in names:
                continue
            path = os.path.join(directory, name)
            header = self._header_of(path)
            if header is None:
                continue
            if not compatible(header, requester.obj.header):
                skipped.append(
                    {"path": path, "needed_by": requester.obj.path, "reason": self._mismatch(header)}
                )
                continue
            return path, how
        return None, None

    @staticmethod
    def _mismatch(header):
        return "ELF%d %s, OS ABI %d" % (
            header.elfclass,
            EM_NAMES.get(header.machine, header.machine),
            header.osabi,
        )

    # --------------------------------------------------------------- resolving
    def resolve(self, path, preloaded=None):
        """Resolve one object's closure. Returns a Resolution."""
        root_obj = self.load(path)
        resolution = Resolution(root_obj)
        by_name = {}
        by_real = {}
        for soname in list(self.preloaded) + list(preloaded or []):
            by_name[soname] = None  # provided by the host process: not resolved, not missing
        root = Loaded(os.path.basename(path), root_obj, None, "argument", 0)
        self._register(root, by_name, by_real)
        self._add_interpreter(root_obj, resolution, by_name, by_real)
        queue = collections.deque([root])
        while queue:
            current = queue.popleft()
            for name in current.obj.needed:
                if name in by_name:
                    continue
                entry = self._resolve_name(name, current, resolution, by_real)
                if entry is None:
                    by_name[name] = None
                    continue
                self._register(entry, by_name, by_real, name)
                if entry.found_via != "loaded":
                    resolution.loaded.append(entry)
                    queue.append(entry)
        return resolution

    def _resolve_name(self, name, current, resolution, by_real):
        if "/" in name:
            path, how = self.expand(name, current.obj), "path"
            if not self.fs.exists(path):
                path = None
        else:
            path, how = self.find(name, current, resolution.skipped)
        if path is None:
            resolution.missing.append(
                {"name": name, "needed_by": current.obj.path, "chain": [*current.chain(), name]}
            )
            return None
        obj = self.load(path)
        existing = by_real.get(obj.realpath)
        if existing is not None:
            return Loaded(name, existing.obj, current, "loaded", current.depth + 1)
        return Loaded(name, obj, current, how, current.depth + 1)

    @staticmethod
    def _register(entry, by_name, by_real, requested=None):
        for key in (requested, entry.name, entry.obj.soname, entry.obj.path):
            if key:
                by_name.setdefault(key, entry)
        by_real.setdefault(entry.obj.realpath, entry)

    def _add_interpreter(self, root_obj, resolution, by_name, by_real):
        interp = root_obj.interp
        how = "interpreter"
        if interp is None:
            if not self.default_interpreter:
                return
            interp = DEFAULT_INTERPRETERS.get(root_obj.machine)
            how = "process interpreter"
        if not interp or not self.fs.exists(interp):
            return
        obj = self.load(interp)
        entry = Loaded(os.path.basename(interp), obj, None, how, 0)
        self._register(entry, by_name, by_real)
        resolution.interpreter = entry


class Resolution:
    """The outcome for one root object."""

    def __init__(self, root):
        self.root = root
        self.interpreter = None
        self.loaded = []  # Loaded, in load order (the root excluded)
        self.missing = []
        self.skipped = []

    def used_interpreter(self):
        """The interpreter counts when the root runs under it or something needs its soname."""
        if self.interpreter is None:
            return None
        if self.root.interp:
            return self.interpreter
        soname = self.interpreter.obj.soname or self.interpreter.name
        needed = set(self.root.needed)
        for entry in self.loaded:
            needed.update(entry.obj.needed)
        return self.interpreter if soname in needed else None

    def libraries(self):
        """Every object the root needs at run time, interpreter included, in load order."""
        out = [e.as_dict() for e in self.loaded]
        interp = self.used_interpreter()
        if interp is not None:
            out.append(interp.as_dict())
        return out

    def real_paths(self):
        return {lib["realpath"] for lib in self.libraries()}


def format_tree(resolution):
    """Human-readable dependency tree (the CLI's output)."""
    lines = [
        resolution.root.path + "  [%s, ELF%d]" % (resolution.root.machine, resolution.root.header.elfclass)
    ]
    children = collections.defaultdict(list)
    for entry in resolution.loaded:
        children[id(entry.loader.obj) if entry.loader else None].append(entry)
    missing = collections.defaultdict(list)
    for item in resolution.missing:
        missing[item["needed_by"]].append(item["name"])

    def walk(obj, depth):
        for entry in children.get(id(obj), []):
            real = "" if entry.obj.realpath == entry.obj.path else " -> " + entry.obj.realpath
            lines.append(
                "%s%s => %s%s  (%s)" % ("    " * depth, entry.name, entry.obj.path, real, entry.found_via)
            )
            walk(entry.obj, depth + 1)
        for name in missing.get(obj.path, []):
            lines.append("%s%s => not found" % ("    " * depth, name))

    walk(resolution.root, 1)
    interp = resolution.used_interpreter()
    if interp is not None:
        real = "" if interp.obj.realpath == interp.obj.path else " -> " + interp.obj.realpath
        lines.append("    %s%s  (%s)" % (interp.obj.path, real, interp.found_via))
    for item in resolution.skipped:
        lines.append("    skipped %s (%s), needed by %s" % (item["path"], item["reason"], item["needed_by"]))
    return "\n".join(lines)


def main(argv=None):
    """``python -m ...module_utils.elf_resolver FILE...``: print dependency trees."""
    parser = argparse.ArgumentParser(
        prog="python -m ansible_collections.edgewasm.llamaedge.plugins.module_utils.elf_resolver",
        description="Print the shared-library tree of ELF files as glibc's loader would resolve it (no ldd).",
    )
    parser.add_argument("files", nargs="+", help="ELF files (paths inside --root)")
    parser.add_argument("--root", default="/", help="resolve inside this filesystem tree")
    parser.add_argument("--ld-library-path", default="", help="colon-separated LD_LIBRARY_PATH to model")
    parser.add_argument("--exclude", action="append", default=[], help="soname the process already provides")
    parser.add_argument("--hwcaps", action="append", default=[], help="glibc-hwcaps level to search first")
    args = parser.parse_args(argv)
    try:
        resolver = Resolver(
            root=args.root,
            ld_library_path=args.ld_library_path.split(":"),
            preloaded=args.exclude,
            hwcaps=args.hwcaps,
        )
        status = 0
        for path in args.files:
            resolution = resolver.resolve(path)
            sys.stdout.write(format_tree(resolution) + "\n")
            status = status or (1 if resolution.missing else 0)
        return status
    except ResolverError as exc:
        sys.stderr.write("error: %s\n" % exc)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
