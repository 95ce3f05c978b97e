# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where glibc's loader looks for a library: ld.so.conf, the default directories, paths inside a root."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import os

from ansible_collections.edgewasm.llamaedge.plugins.module_utils.elf.parsing import (
    ResolverError,
    open_regular,
)

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
MAX_SYMLINKS = 40


MAX_CONF_FILES = 256


class _ConfWalk(object):
    """One walk of ld.so.conf and its includes: files read once each (by real path), at most ``limit``."""

    def __init__(self, read_file, expand_glob, identity, limit):
        self.read_file = read_file
        self.expand_glob = expand_glob
        self.identity = identity or (lambda path: path)
        self.limit = limit
        self.seen = set()

    def visit(self, path, top):
        try:
            key = self.identity(path)
        except ResolverError:
            return []  # a symlink loop: glibc cannot open it either
        if key in self.seen:
            return []
        if len(self.seen) >= self.limit:
            raise ResolverError(
                "%s includes more than %d configuration files (an include loop through symbolic links?): check "
                "the include lines under %s, or raise max_ld_so_conf_files"
                % (top, self.limit, os.path.dirname(top))
            )
        self.seen.add(key)
        text = self.read_file(path)
        return [] if text is None else self.lines(text, path, top)

    def lines(self, text, path, top):
        dirs = []
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            words = line.split()
            if words[0] == "include":
                for word in words[1:]:
                    pattern = word if word.startswith("/") else os.path.join(os.path.dirname(path), word)
                    for included in sorted(self.expand_glob(pattern)):
                        dirs.extend(self.visit(included, top))
                continue
            if words[0] == "hwcap":
                continue
            for word in line.replace(",", " ").replace(":", " ").split():
                directory = word.split("=", 1)[0].rstrip("/") or "/"
                if directory.startswith("/"):
                    dirs.append(directory)
        return dirs


def parse_ld_so_conf(read_file, expand_glob, path="/etc/ld.so.conf", identity=None, limit=MAX_CONF_FILES):
    """Directories listed by an ld.so.conf file, following ``include`` globs in order.

    ``read_file(path)`` returns the text or None; ``expand_glob(pattern)`` returns
    matching paths. Both work on paths inside the resolver's root. ``identity(path)``
    names the file a path is (its real path): each file is read once however many
    paths lead to it, and at most ``limit`` files are read (ResolverError beyond).
    """
    return _ConfWalk(read_file, expand_glob, identity, limit).visit(path, path)


def default_dirs(machine, elfclass):
    """The loader's built-in system directories (Debian multiarch layout first)."""
    dirs = []
    triplet = TRIPLETS.get(machine)
    if triplet:
        dirs += ["/lib/" + triplet, "/usr/lib/" + triplet]
    if elfclass == 64:
        dirs += ["/lib64", "/usr/lib64"]
    return [*dirs, "/lib", "/usr/lib"]


def dedupe(items):
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
