# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Download a file into place only once its sha256 is right, resuming a partial download.

The bytes go to ``<dest>.part``; an interrupted transfer is continued with an HTTP Range request
(from scratch when the server ignores it); the result is hashed and renamed onto ``dest`` only if it
matches, so ``dest`` is either absent, the old file, or the verified new one - never half a file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import re

CHUNK = 1024 * 1024
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(Exception):
    pass


class InterruptedDownload(DownloadError):  # noqa: N818 - reads as what happened
    """The transfer stopped early; the partial file is kept for the next run to resume."""


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def is_current(dest, sha256):
    return os.path.isfile(dest) and sha256_of(dest) == sha256


def read_lock(path):
    """Recorded checksums: {key: sha256} from a lock file (absent file: none recorded)."""
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as handle:
            data = json.load(handle)
    except ValueError as exc:
        raise DownloadError("lock file %s is not valid JSON (%s): fix or delete it" % (path, exc)) from exc
    return dict(data.get("artifacts") or {})


def record(path, key, sha256):
    """Add ``key``'s checksum to the lock file, atomically."""
    artifacts = read_lock(path)
    artifacts[key] = sha256
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(
            {
                "comment": "sha256 of artifacts recorded on first download by edgewasm.llamaedge; "
                "enforced on every later run. Commit this file with your inventory.",
                "artifacts": dict(sorted(artifacts.items())),
            },
            handle,
            indent=2,
        )
        handle.write("\n")
    os.replace(tmp, path)


def fetch(url, dest, sha256, opener, resume=True):
    """Make ``dest`` the verified content of ``url``; returns a dict describing what happened.

    ``opener(url, headers)`` returns a file-like response with ``.status`` (or ``.code``) and
    ``.headers``; the module passes Ansible's open_url so proxies and CA settings apply. With
    ``sha256=None`` (trust on first use, the caller records the result) nothing is compared.
    """
    if sha256 is not None and not SHA256.match(sha256):
        raise DownloadError("sha256=%r must be 64 lowercase hex digits" % sha256)
    part = dest + ".part"
    offset = os.path.getsize(part) if resume and os.path.isfile(part) else 0
    headers = {"Range": "bytes=%d-" % offset} if offset else {}
    response = opener(url, headers)
    status = getattr(response, "status", None) or getattr(response, "code", 200)
    if offset and status != 206:
        offset = 0  # the server sent the whole file: start over
    mode = "ab" if offset else "wb"
    expected = response.headers.get("Content-Length")
    received = 0
    with open(part, mode) as handle:
        for block in iter(lambda: response.read(CHUNK), b""):
            handle.write(block)
            received += len(block)
    if expected is not None and expected.isdigit() and received < int(expected):
        raise InterruptedDownload(
            "download of %s stopped after %d of %d bytes; %s keeps what arrived. Run again to resume."
            % (url, received, int(expected), part)
        )
    actual = sha256_of(part)
    if sha256 is not None and actual != sha256:
        os.unlink(part)
        raise DownloadError(
            "checksum mismatch for %s (from %s): expected sha256 %s, got %s. Nothing was installed; the partial "
            "file was removed. Check the URL and the checksum."
            % (os.path.basename(dest), url, sha256, actual)
        )
    os.replace(part, dest)
    return {
        "resumed_from": offset,
        "bytes_received": received,
        "size": os.path.getsize(dest),
        "sha256": actual,
    }
