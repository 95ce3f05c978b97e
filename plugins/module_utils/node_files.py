# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Converge a role's directories, small files and symlinks on a node in one module run.

A rerun of a role that owns a dozen paths then costs one round trip instead of one (or, for
ansible.builtin.copy and template, two) per path. Contents are given inline (rendered on the
controller); owner, group, mode and SELinux context are set through AnsibleModule's own file
helpers, as ansible.builtin.file does. Every write is atomic: a temporary file or link in the same
directory, created with the final mode, then renamed over the path.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import stat
import tempfile

STATES = ("file", "directory", "link", "absent")
ON_OTHER = ("fail", "keep", "replace")
# Larger (or undecodable) contents are not shown in --diff, as ansible.builtin.copy does.
DIFF_LIMIT = 64 * 1024
_LARGE = object()  # an existing file too large to read for --diff that differs from the content
SECRET_DIFF = "(secret content not shown)\n"  # noqa: S105 - a placeholder, not a secret
PRIVATE_DIFF = "(content not shown: the file is not readable by everyone)\n"
# A new file given secret_content and no mode.
SECRET_MODE = 0o600


class NodeFilesError(Exception):
    """A path cannot be converged as asked; the message names it and the fix."""


def entry_errors(entries):
    """Problems with the entries as given (before anything is touched), one message each."""
    errors = []
    seen = set()
    for index, entry in enumerate(entries):
        path = entry.get("path") or ""
        where = "files[%d] (%s)" % (index, path or "no path")
        if "\0" in path or "\0" in (entry.get("src") or ""):
            errors.append("%s: path and src must not contain a NUL byte" % where)
        elif not os.path.isabs(path):
            errors.append("%s: path must be absolute" % where)
        elif os.path.normpath(path) in seen:
            errors.append("%s: path is listed twice" % where)
        seen.add(os.path.normpath(path))
        state = entry.get("state")
        has_content = entry.get("content") is not None or entry.get("secret_content") is not None
        if entry.get("content") is not None and entry.get("secret_content") is not None:
            errors.append("%s: give content or secret_content, not both" % where)
        if state == "file" and not has_content:
            errors.append("%s: state=file needs content or secret_content" % where)
        if state != "file" and has_content:
            errors.append("%s: content is only for state=file" % where)
        if state == "link" and not entry.get("src"):
            errors.append("%s: state=link needs src (the link's target)" % where)
        if state != "link" and entry.get("src"):
            errors.append("%s: src is only for state=link" % where)
        mode = entry.get("mode")
        if mode is not None and not _octal(mode):
            errors.append("%s: mode=%s must be an octal string such as '0644'" % (where, mode))
    return errors


def _octal(mode):
    text = str(mode)
    return 3 <= len(text) <= 4 and all(char in "01234567" for char in text)


def _kind(path):
    """'absent', 'link', 'directory', 'file' or 'other' for what is at path (links not followed)."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # under a file: nothing is there (conflict() says why)
        return "absent"
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def _read(path, size):
    """The file's bytes when it may equal content of this size or is small enough to show in a diff; else
    a placeholder that equals no content (never read a large file whole)."""
    current = os.path.getsize(path)
    if current != size and current > DIFF_LIMIT:
        return _LARGE
    with open(path, "rb") as handle:
        return handle.read()


def _state_diff(path, before, after):
    return {"before": {"path": path, "state": before}, "after": {"path": path, "state": after}}


def _text(data):
    if len(data) > DIFF_LIMIT:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _content_diff(path, old, new, secret, private=False):
    if secret:
        before, after = (SECRET_DIFF if old is not None else ""), SECRET_DIFF
    elif private:
        before, after = (PRIVATE_DIFF if old is not None else ""), PRIVATE_DIFF
    elif old is _LARGE:
        before, after = "(content not shown)\n", "(%d bytes)\n" % len(new)
    else:
        before = "" if old is None else _text(old)
        after = _text(new)
        if before is None or after is None:
            before, after = "(content not shown)\n", "(%d bytes)\n" % len(new)
    return {"before": before, "after": after, "before_header": path, "after_header": path}


def _mode_bits(mode):
    """The permission bits of an octal mode string (entry_errors refused any other form)."""
    return None if mode is None else int(str(mode), 8)


def _write_atomic(path, data, mode, keep):
    """Write data to a temporary file next to path with the final mode, then rename it over path.

    keep: the stat of the file being replaced, whose mode and ownership a new version keeps unless the
    entry sets them (the temporary file never has more permissions than the final one).
    """
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        if keep is not None and (keep.st_uid, keep.st_gid) != (os.geteuid(), os.getegid()):
            os.fchown(fd, keep.st_uid, keep.st_gid)
        os.fchmod(fd, mode if mode is not None else (stat.S_IMODE(keep.st_mode) if keep else 0o644))
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def _link_atomic(path, target):
    tmp = os.path.join(os.path.dirname(path), ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _missing_parents(path):
    parents = []
    parent = os.path.dirname(path)
    while parent and parent != os.path.dirname(parent) and not os.path.lexists(parent):
        parents.append(parent)
        parent = os.path.dirname(parent)
    return list(reversed(parents))


def _file_parent(path):
    """The closest existing parent of path when it is not a directory (nothing can be created under it)."""
    parent = os.path.dirname(path)
    while parent and parent != os.path.dirname(parent) and not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    return parent if parent and os.path.lexists(parent) and not os.path.isdir(parent) else None


def conflict(entry):
    """Why the entry cannot be converged over what is at its path now, or None."""
    path = os.path.normpath(entry["path"])
    blocking = _file_parent(path) if entry["state"] != "absent" else None
    if blocking:
        return "%s cannot be created: %s is a %s, not a directory: move it away, or change this path" % (
            path,
            blocking,
            _kind(blocking),
        )
    kind = _kind(path)
    state = entry["state"]
    if state == "absent" or kind in ("absent", state):
        return None
    if state == "link":
        if entry.get("on_other") == "keep" or (entry.get("on_other") == "replace" and kind != "directory"):
            return None
        return "%s is a %s where a link to %s belongs: remove it, or set on_other=keep to leave it" % (
            path,
            kind,
            entry["src"],
        )
    wanted = "a regular file" if state == "file" else "a directory"
    return "%s is a %s, not %s: move it away, or change this path" % (path, kind, wanted)


class Converger:
    """Converges entries one by one with an AnsibleModule's file helpers (check mode respected)."""

    def __init__(self, module):
        self.module = module
        self.check_mode = module.check_mode
        self.diffs = []

    def _attributes(self, entry, path, changed, follow=True):
        args = self.module.load_file_common_arguments(
            {"mode": entry.get("mode"), "owner": entry.get("owner"), "group": entry.get("group")}, path=path
        )
        if not follow:
            args["mode"] = None  # a link's own mode means nothing on Linux
        if self.check_mode and not os.path.lexists(path):
            return changed  # nothing to compare yet: the path itself is the change
        diff = {"before": {"path": path}, "after": {"path": path}}
        changed = self.module.set_fs_attributes_if_different(args, changed, diff, expand=False)
        if len(diff["before"]) > 1:
            self.diffs.append(diff)
        return changed

    def _parents(self, path, entry=None):
        """Create the missing parents of path: with the entry's attributes for a directory entry (as
        ansible.builtin.file does), else 0755 and the current user."""
        for parent in _missing_parents(path):
            self.diffs.append(_state_diff(parent, "absent", "directory"))
            if not self.check_mode:
                os.mkdir(parent, 0o755)
                self.module.set_default_selinux_context(parent, False)
                if entry is not None:
                    self._attributes(entry, parent, True)

    # converge() ran conflict() on every entry first: each method below meets only the kinds it accepts.
    def directory(self, entry, path):
        if _kind(path) == "absent":
            self._parents(os.path.join(path, "x"), entry)
            if not self.check_mode:
                self._attributes(entry, path, True)
            return "created"
        return "updated" if self._attributes(entry, path, False) else "unchanged"

    def file(self, entry, path):
        secret = entry.get("secret_content") is not None
        data = (entry["secret_content"] if secret else entry["content"]).encode("utf-8")
        old = _read(path, len(data)) if _kind(path) == "file" else None
        if old == data:
            return "updated" if self._attributes(entry, path, False) else "unchanged"
        self._parents(path)
        keep = os.stat(path) if old is not None else None
        mode = _mode_bits(entry.get("mode"))
        if mode is None and keep is None and secret:
            mode = SECRET_MODE
        # What only some may read is never shown, before or after (a token in k3s's config.yaml, 0600).
        modes = [m for m in (mode, stat.S_IMODE(keep.st_mode) if keep else None) if m is not None]
        private = any(not m & stat.S_IROTH for m in modes)
        self.diffs.append(_content_diff(path, old, data, secret, private))
        if not self.check_mode:
            _write_atomic(path, data, mode, keep)
            self.module.set_default_selinux_context(path, False)
            self._attributes(entry, path, True)
        return "created" if old is None else "updated"

    def link(self, entry, path):
        target = entry["src"]
        kind = _kind(path)
        if kind == "link" and os.readlink(path) == target:
            return "updated" if self._attributes(entry, path, False, follow=False) else "unchanged"
        if kind not in ("absent", "link") and entry.get("on_other") == "keep":
            return "kept"
        before = (
            "absent" if kind == "absent" else ("link to %s" % os.readlink(path) if kind == "link" else kind)
        )
        self._parents(path)
        self.diffs.append(_state_diff(path, before, "link to %s" % target))
        if not self.check_mode:
            _link_atomic(path, target)
            self._attributes(entry, path, True, follow=False)
        return "created" if kind == "absent" else "updated"

    def absent(self, entry, path):
        kind = _kind(path)
        if kind == "absent":
            return "unchanged"
        self.diffs.append(_state_diff(path, kind, "absent"))
        if not self.check_mode:
            if kind == "directory":
                shutil.rmtree(path)
            else:
                os.unlink(path)
        return "removed"

    def converge(self, entries):
        """Each entry in order, after checking none conflicts with what is on the node; returns one
        {path, state, result} per entry (result: created, updated, unchanged, kept, removed)."""
        problems = [problem for problem in map(conflict, entries) if problem]
        if problems:
            raise NodeFilesError("; ".join(problems) + " (nothing was changed)")
        results = []
        for entry in entries:
            path = os.path.normpath(entry["path"])
            try:
                outcome = getattr(self, entry["state"])(entry, path)
            except (OSError, ValueError) as exc:  # ValueError: a NUL byte, content that is not UTF-8
                raise NodeFilesError(
                    "%s (%s): %s" % (path, entry["state"], getattr(exc, "strerror", None) or exc)
                ) from exc
            results.append({"path": path, "state": entry["state"], "result": outcome})
        return results
