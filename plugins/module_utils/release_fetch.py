# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The artifacts role's fetch, as one function: every release path of a run verified in one module call.

Sources, in order of trust: the checksum a user gives (``trusted``), the release's own checksum file
(sha256sum format, fetched and recorded in the lock file like any artifact), the lock file (recorded on
first download, enforced after). Each file is downloaded at most once into the controller's cache
(download.fetch: resumable, installed only when its checksum is right). Nothing here reaches a node.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import download
from ansible_collections.edgewasm.llamaedge.plugins.module_utils.release_catalog import (
    checksum_file_problem,
    parse_checksums,
)

# What a release's checksum file may weigh (upstream's SHA256SUM lists a few dozen assets: a few KiB), and an
# artifact (a WasmEdge archive is about 100 MB, a CUDA plugin or k3s's air-gap images some hundreds).
MAX_CHECKSUM_FILE_BYTES = 4 << 20
MAX_ARTIFACT_BYTES = 4 << 30


class FetchError(Exception):
    """A problem with the request, reported as is (names the variable or file, and the fix)."""


def source_url(mirror, base_url):
    """Where release paths are fetched from: the mirror (an http(s) URL, or a directory read through
    file://), else upstream's base URL."""
    if mirror:
        if re.match(r"^https?://", mirror):
            return mirror.rstrip("/")
        if mirror.startswith("/"):
            return "file://" + mirror.rstrip("/")
        raise FetchError(
            "edgewasm_artifact_mirror=%r must be an http(s) base URL or an absolute directory laid out like the "
            "upstream release paths (for example <dir>/0.14.1/WasmEdge-0.14.1-...tar.gz)." % mirror
        )
    if not base_url:
        raise FetchError(
            "no source for the artifacts: set edgewasm_artifact_mirror, or the calling role's release URL"
        )
    return base_url.rstrip("/")


def unknown_checksums(items, checksum_files, trusted, lock):
    """Paths with no checksum anywhere: neither given, nor listed in a checksum file, nor recorded."""
    wanted = [i for i in items if i not in checksum_files] + sorted(set(checksum_files.values()))
    return [p for p in dict.fromkeys(wanted) if p not in trusted and p not in lock]


class Fetcher:
    """Downloads and verifies release paths into ``cache_dir`` (``opener`` as download.fetch takes it)."""

    def __init__(
        self,
        source,
        cache_dir,
        lock_file,
        opener,
        *,
        check_mode=False,
        max_bytes=None,
        max_checksum_bytes=None,
    ):
        self.source = source
        self.limits = download.Limits(max_bytes or MAX_ARTIFACT_BYTES, what="max_bytes")
        self.checksum_limits = download.Limits(
            max_checksum_bytes or MAX_CHECKSUM_FILE_BYTES, what="max_checksum_file_bytes"
        )
        self.cache_dir = cache_dir
        self.lock_file = lock_file
        self.opener = opener
        self.check_mode = check_mode
        self.lock = download.read_lock(lock_file)
        self.changed = []
        self.recorded = []
        self.current = None  # the path being fetched or checked, for error messages

    def url(self, path):
        return "%s/%s" % (self.source, path.replace("+", "%2B"))

    def get(self, path, expected, checksum_file=False):
        """Make cache_dir/path the verified file; its sha256, or None in check mode when it is not there.
        A checksum file is held to its own size limit and to the sha256sum format before it is recorded."""
        self.current = path
        dest = os.path.join(self.cache_dir, path)
        expected = (expected or self.lock.get(path) or "").strip().lower() or None
        if expected is not None and download.is_current(dest, expected):
            return expected
        self.changed.append(path)
        if self.check_mode:
            return expected
        parent = os.path.dirname(dest)
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o700)
        limits = self.checksum_limits if checksum_file else self.limits
        result = download.fetch(self.url(path), dest, expected, self.opener, limits=limits)
        if checksum_file:
            self._check_format(path, dest)
        if expected is None:
            download.record(self.lock_file, path, result["sha256"])
            self.lock[path] = result["sha256"]
            self.recorded.append(path)
        return result["sha256"]

    def _check_format(self, path, dest):
        with open(dest, encoding="utf-8", errors="replace") as handle:
            problem = checksum_file_problem(handle.read(MAX_CHECKSUM_FILE_BYTES + 1))
        if problem:
            os.unlink(dest)
            raise FetchError(
                "%s (%s) is not a checksum file: %s. It was removed and nothing was recorded: check the mirror."
                % (path, self.url(path), problem)
            )

    def listed(self, checksum_file, path):
        """The sha256 the release's checksum file gives ``path``; "" when the file is not there (check mode)."""
        self.current = checksum_file
        text_path = os.path.join(self.cache_dir, checksum_file)
        if not os.path.isfile(text_path):
            return ""
        if os.path.getsize(text_path) > self.checksum_limits.max_bytes:
            raise FetchError(
                "%s (%s) is larger than max_checksum_file_bytes=%d: remove it and check the mirror"
                % (checksum_file, text_path, self.checksum_limits.max_bytes)
            )
        with open(text_path, encoding="utf-8", errors="replace") as handle:
            sha256 = parse_checksums(handle.read(), os.path.basename(path))
        if not sha256:
            raise FetchError(
                "%s is not listed in %s (%s): the version or architecture variable names a file this release "
                "does not have." % (os.path.basename(path), checksum_file, text_path)
            )
        return sha256


def fetch_all(fetcher, items, checksum_files, trusted, *, record_new=True):
    """Fetch the checksum files, then every item; {path: sha256} of what is verified."""
    if not record_new:
        unknown = unknown_checksums(items, checksum_files, trusted, fetcher.lock)
        if unknown:
            raise FetchError(
                "No checksum source for %s: edgewasm_artifact_record_new is false, the role's *_sha256 variable "
                "(for example wasmedge_sha256) has no entry and %s has none recorded. Add the sha256 to that "
                "variable, or set edgewasm_artifact_record_new=true once to record it."
                % (", ".join(unknown), fetcher.lock_file)
            )
    verified = {}
    for checksum_file in dict.fromkeys(checksum_files[i] for i in items if i in checksum_files):
        sha256 = fetcher.get(checksum_file, trusted.get(checksum_file), checksum_file=True)
        if sha256:
            verified[checksum_file] = sha256
    for item in dict.fromkeys(items):
        expected = trusted.get(item)
        if not expected and item in checksum_files:
            expected = fetcher.listed(checksum_files[item], item)
        sha256 = fetcher.get(item, expected)
        if sha256:
            verified[item] = sha256
    return verified


ARGUMENT_SPEC = dict(
    items=dict(type="list", elements="str", required=True),
    checksum_files=dict(type="dict", default={}),
    sha256=dict(type="dict", default={}),
    mirror=dict(type="str", default=""),
    base_url=dict(type="str", default=""),
    cache_dir=dict(type="path", required=True),
    lock_file=dict(type="path", required=True),
    record_new=dict(type="bool", default=True),
    timeout=dict(type="int", default=120),
    validate_certs=dict(type="bool", default=True),
    max_bytes=dict(type="int", default=MAX_ARTIFACT_BYTES),
    max_checksum_file_bytes=dict(type="int", default=MAX_CHECKSUM_FILE_BYTES),
)


def run(params, open_url, *, check_mode):
    """fetch_artifacts for validated parameters: its result, or FetchError with the message to fail with
    (never another exception). open_url: ansible.module_utils.urls.open_url (passed in for tests)."""

    def opener(url, headers):
        return open_url(
            url, headers=headers, timeout=params["timeout"], validate_certs=params["validate_certs"]
        )

    fetcher = None
    try:
        source = source_url(params["mirror"], params["base_url"])
        for name in ("max_bytes", "max_checksum_file_bytes"):
            if params[name] is not None and params[name] < 1:
                raise FetchError("%s=%s must be at least 1" % (name, params[name]))
        fetcher = Fetcher(
            source,
            params["cache_dir"],
            params["lock_file"],
            opener,
            check_mode=check_mode,
            max_bytes=params["max_bytes"],
            max_checksum_bytes=params["max_checksum_file_bytes"],
        )
        verified = fetch_all(
            fetcher,
            params["items"],
            params["checksum_files"],
            params["sha256"],
            record_new=params["record_new"],
        )
    except FetchError:
        raise
    except download.DownloadError as exc:
        raise FetchError(str(exc)) from exc
    except Exception as exc:  # pylint: disable=broad-except  # a message, never a traceback
        if fetcher is None or fetcher.current is None:
            raise FetchError("fetching the artifacts failed: %s" % exc) from exc
        path = fetcher.current
        raise FetchError(
            "fetching %s (%s) into %s failed: %s. Run again to resume."
            % (path, fetcher.url(path), params["cache_dir"], exc)
        ) from exc
    return dict(
        changed=bool(fetcher.changed),
        verified=verified,
        changed_paths=fetcher.changed,
        recorded=fetcher.recorded,
    )
