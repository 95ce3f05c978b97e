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
SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


class DownloadError(Exception):
    pass


class InterruptedDownload(DownloadError):  # noqa: N818 - reads as what happened
    """The transfer stopped early; the partial file is kept for the next run to resume."""


class Limits(object):
    """What one download may take: at most ``max_bytes`` (None: no limit), and never the destination's file
    system below ``min_free_bytes`` free (checked as the bytes arrive). ``what`` names the options."""

    def __init__(self, max_bytes=None, min_free_bytes=0, what="max_bytes"):
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.what = what

    def refuse_declared(self, url, declared, offset):
        if self.max_bytes is not None and declared is not None and offset + declared > self.max_bytes:
            raise DownloadError(
                "%s is %d bytes, more than %s=%d allows: refused before reading it; nothing was installed. "
                "Check the URL, or raise %s if the file is genuine."
                % (url, offset + declared, self.what, self.max_bytes, self.what)
            )

    def check(self, url, total, part):
        if self.max_bytes is not None and total > self.max_bytes:
            os.unlink(part)
            raise DownloadError(
                "%s sent more than %s=%d bytes: the download was stopped and removed; nothing was installed. "
                "Check the URL, or raise %s if the file is genuine."
                % (url, self.what, self.max_bytes, self.what)
            )
        if self.min_free_bytes:
            stats = os.statvfs(os.path.dirname(part) or ".")
            if stats.f_bavail * stats.f_frsize < self.min_free_bytes:
                os.unlink(part)
                raise DownloadError(
                    "downloading %s would leave less than min_free_bytes=%d free where %s is: the download was "
                    "stopped and removed; nothing was installed" % (url, self.min_free_bytes, part)
                )


NO_LIMITS = Limits()


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
    except (OSError, RecursionError) as exc:
        raise DownloadError(
            "lock file %s cannot be read: %s" % (path, getattr(exc, "strerror", exc))
        ) from exc
    artifacts = data.get("artifacts") if isinstance(data, dict) else None
    if not isinstance(artifacts, dict):
        raise DownloadError(
            'lock file %s must be a JSON object with an "artifacts" object of name -> sha256, not a %s: '
            "fix or delete it" % (path, type(artifacts if isinstance(data, dict) else data).__name__)
        )
    for key, value in artifacts.items():
        if not isinstance(value, str) or not SHA256.match(value):
            raise DownloadError(
                "lock file %s: the checksum of %r must be 64 lowercase hex digits, got %r: fix or delete it"
                % (path, key, value)
            )
    return dict(artifacts)


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


def _status(response):
    return getattr(response, "status", None) or getattr(response, "code", 200)


def _content_range_start(response):
    match = re.match(r"^bytes (\d+)-\d+/(\d+|\*)\Z", response.headers.get("Content-Range") or "")
    return int(match.group(1)) if match else None


def _declared_length(response):
    """The body length the server committed to: Content-Length, or None."""
    value = (response.headers.get("Content-Length") or "").strip()
    return int(value) if value.isdigit() else None


def _chunked(response):
    return "chunked" in (response.headers.get("Transfer-Encoding") or "").lower()


def _open(url, offset, opener):
    """The response for ``url`` from byte ``offset``; (None, None) when the server says the partial file is
    already complete or larger than the file (416)."""
    headers = {"Range": "bytes=%d-" % offset} if offset else {}
    try:
        return opener(url, headers), offset
    except Exception as exc:  # the opener's HTTP errors carry .code  # pylint: disable=broad-except
        code = getattr(exc, "code", None)
        if code == 416 and offset:
            return None, None
        if code is not None:
            raise DownloadError(
                "HTTP %s %s for %s: nothing was downloaded. Check the URL (and the version in it)."
                % (code, getattr(exc, "reason", "") or "", url)
            ) from exc
        raise DownloadError("cannot download %s: %s. Run again to retry." % (url, exc)) from exc


def _copy(response, handle, url, part, limits=NO_LIMITS, offset=0):
    received = 0
    try:
        for block in iter(lambda: response.read(CHUNK), b""):
            handle.write(block)
            received += len(block)
            limits.check(url, offset + received, part)
    except DownloadError:
        raise
    except Exception as exc:  # IncompleteRead, resets, timeouts  # pylint: disable=broad-except
        raise InterruptedDownload(
            "download of %s stopped after %d bytes (%s); %s keeps what arrived. Run again to resume."
            % (url, received, exc, part)
        ) from exc
    return received


def _verify_complete_part(part, dest, sha256, url, opener, limits):
    """A 416 for our Range: the partial file is as long as the file, or longer. Install it if its checksum
    is the expected one; otherwise it is stale or oversized: remove it and download again."""
    if sha256 is not None and sha256_of(part) == sha256:
        os.replace(part, dest)
        return {
            "resumed_from": os.path.getsize(dest),
            "bytes_received": 0,
            "size": os.path.getsize(dest),
            "sha256": sha256,
        }
    os.unlink(part)
    return fetch(url, dest, sha256, opener, resume=False, limits=limits)


def fetch(url, dest, sha256, opener, *, resume=True, limits=NO_LIMITS):
    """Make ``dest`` the verified content of ``url``; returns a dict describing what happened.

    ``opener(url, headers)`` returns a file-like response with ``.status`` (or ``.code``) and
    ``.headers``, and raises an exception with ``.code`` for HTTP errors; the module passes Ansible's
    open_url so proxies and CA settings apply. With ``sha256=None`` (trust on first use, the caller
    records the result) the body must have a declared length (or a complete chunked encoding) that was
    met exactly: a body whose end cannot be confirmed is never installed nor recorded. ``limits``: a body
    longer than they allow is refused (a declared length before reading, the bytes as they arrive) and removed.
    """
    if sha256 is not None and not SHA256.match(sha256):
        raise DownloadError("sha256=%r must be 64 lowercase hex digits" % sha256)
    part = dest + ".part"
    offset = os.path.getsize(part) if resume and os.path.isfile(part) else 0
    response, offset = _open(url, offset, opener)
    if response is None:
        return _verify_complete_part(part, dest, sha256, url, opener, limits)
    if offset and (_status(response) != 206 or _content_range_start(response) != offset):
        offset = 0  # the server sent the whole file (or another range): start over
    expected = _declared_length(response)
    limits.refuse_declared(url, expected, offset)
    if sha256 is None and expected is None and not _chunked(response):
        raise DownloadError(
            "%s came without a Content-Length (and not chunked): its end cannot be confirmed, so no checksum "
            "is recorded from it. Give sha256 for this artifact, or serve it with a length." % url
        )
    with open(part, "ab" if offset else "wb") as handle:
        received = _copy(response, handle, url, part, limits, offset)
    if expected is not None and received != expected:
        raise InterruptedDownload(
            "download of %s stopped after %d of %d bytes; %s keeps what arrived. Run again to resume."
            % (url, received, expected, part)
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
