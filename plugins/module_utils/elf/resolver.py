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

import collections
import os
import stat

from ansible_collections.edgewasm.llamaedge.plugins.module_utils.elf.parsing import (
    ELFTOOLS_IMPORT_ERROR,
    EM_NAMES,
    HAS_ELFTOOLS,
    NotRegularFileError,
    ResolverError,
    alias,
    compatible,
    open_regular,
    parse,
    read_header,
)
from ansible_collections.edgewasm.llamaedge.plugins.module_utils.elf.search import (
    DEFAULT_INTERPRETERS,
    MAX_CONF_FILES,
    TRIPLETS,
    FileSystem,
    dedupe,
    default_dirs,
    parse_ld_so_conf,
)


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
        max_conf_files=MAX_CONF_FILES,
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
        self._max_conf_files = max_conf_files
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
            return cached if cached.path == path else alias(cached, path)
        real_host = self.fs.host(real)
        try:
            st = os.stat(real_host)
        except OSError as exc:
            raise ResolverError("%s: %s" % (path, exc.strerror)) from exc
        if not stat.S_ISREG(st.st_mode):
            raise ResolverError("%s is not a regular file" % path)
        try:
            with open_regular(real_host) as handle:
                obj = parse(handle, path, real)
        except NotRegularFileError as exc:
            raise ResolverError("%s is not a regular file" % path) from exc
        except (IOError, OSError) as exc:
            raise ResolverError("%s cannot be read: %s" % (path, exc.strerror)) from exc
        self._objects[real] = obj
        return obj

    # --------------------------------------------------------------- searching
    def conf_dirs(self):
        if self._conf_dirs is None:
            self._conf_dirs = dedupe(
                parse_ld_so_conf(
                    self.fs.read_text, self.fs.glob, self._ld_so_conf, self.fs.realpath, self._max_conf_files
                )
            )
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
