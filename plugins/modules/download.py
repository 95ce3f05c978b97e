#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: download
short_description: Download a large file once, verified by sha256, resuming interrupted transfers
version_added: "0.1.0"
description:
  - Downloads O(url) to O(dest) (usually a cache on the controller) unless O(dest) already has the O(sha256)
    checksum. The bytes go to C(<dest>.part) first; an interrupted download continues where it stopped with
    an HTTP Range request, and the file is moved onto O(dest) only after its sha256 matched.
  - On a checksum mismatch the module fails, naming the file, the expected and the actual checksum, and
    removes the partial file; O(dest) is left as it was.
  - A partial file as long as the file or longer (the server answers 416 to the Range request) is installed
    when its checksum is the expected one, and otherwise removed and downloaded again.
  - An HTTP error (404...) fails with its status and nothing downloaded; only a transfer that stopped after
    some bytes arrived is reported as resumable.
  - Uses Ansible's URL handling (proxies, C(validate_certs), client certificates do not apply).
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  url:
    description: HTTP(S) or C(file://) URL of the file.
    type: str
    required: true
  dest:
    description: Absolute path of the file to create; its directory must exist.
    type: path
    required: true
  sha256:
    description:
      - Expected sha256 of the file, 64 hex digits.
      - Without it, O(lock_file) is required - the checksum recorded there under O(lock_key) is enforced, and
        when none is recorded yet the file's checksum is recorded on this first download (for upstreams that
        publish no checksums). That first download must prove its end - a C(Content-Length) that was met, or a
        complete chunked encoding - or nothing is installed nor recorded.
    type: str
  lock_file:
    description:
      - JSON lock file of recorded checksums, usually next to the inventory; created when missing.
      - A lock file that is not a JSON object with an C(artifacts) object of 64-hex-digit checksums fails the
        module, naming the file and what is wrong.
    type: path
  lock_key:
    description: Key of this file in O(lock_file); the URL's last path segments by default.
    type: str
  resume:
    description: Continue a previous partial download (C(<dest>.part)) instead of starting over.
    type: bool
    default: true
  timeout:
    description: Seconds without data before the download fails (it can then be resumed).
    type: int
    default: 60
  validate_certs:
    description: Verify the server's TLS certificate.
    type: bool
    default: true
  max_bytes:
    description:
      - A file larger than this is refused - before reading when the server declares its length, else as the bytes
        arrive - and the partial download removed; nothing is installed or recorded. Unset - no size limit (models
        run to tens of GB), but see O(min_free_bytes).
    type: int
  min_free_bytes:
    description:
      - The download stops, and its partial file is removed, before the file system of O(dest) has less than this
        free, so an endless or oversized stream never fills the disk. V(0) turns the check off.
    type: int
    default: 1073741824
author:
  - edgewasm.llamaedge maintainers (@edgewasm)
"""

EXAMPLES = r"""
- name: Fetch a model into the controller's cache
  edgewasm.llamaedge.download:
    url: https://huggingface.co/second-state/Llama-3.2-1B-Instruct-GGUF/resolve/main/Llama-3.2-1B-Instruct-Q5_K_M.gguf
    dest: "{{ lookup('env', 'HOME') }}/.cache/edgewasm/models/Llama-3.2-1B-Instruct-Q5_K_M.gguf"
    sha256: "{{ model_sha256 }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
dest:
  description: The verified file.
  returned: success
  type: str
size:
  description: Size of O(dest) in bytes.
  returned: when a download happened
  type: int
resumed_from:
  description: Bytes of an earlier partial download that were kept (0 when it started from scratch).
  returned: when a download happened
  type: int
sha256:
  description: The file's checksum.
  returned: success
  type: str
recorded:
  description: Whether the checksum was recorded in O(lock_file) by this run (first download).
  returned: success
  type: bool
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import download


def lock_key(url):
    parts = [p for p in url.split("?")[0].split("/") if p]
    return "/".join(parts[-2:])


def expected_checksum(params):
    """The checksum to enforce (None: first download, to record) and the lock key."""
    key = params["lock_key"] or lock_key(params["url"])
    if params["sha256"]:
        return params["sha256"].strip().lower(), key
    return download.read_lock(params["lock_file"]).get(key), key


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            dest=dict(type="path", required=True),
            sha256=dict(type="str"),
            lock_file=dict(type="path"),
            lock_key=dict(type="str", no_log=False),
            resume=dict(type="bool", default=True),
            timeout=dict(type="int", default=60),
            validate_certs=dict(type="bool", default=True),
            max_bytes=dict(type="int"),
            min_free_bytes=dict(type="int", default=1 << 30),
        ),
        required_one_of=[("sha256", "lock_file")],
        supports_check_mode=True,
    )
    params = module.params
    dest = params["dest"]
    for name in ("max_bytes", "min_free_bytes"):
        if params[name] is not None and params[name] < (1 if name == "max_bytes" else 0):
            module.fail_json(
                msg="%s=%s must be at least %d" % (name, params[name], 1 if name == "max_bytes" else 0)
            )
    try:
        sha256, key = expected_checksum(params)
        if sha256 is not None and download.is_current(dest, sha256):
            module.exit_json(changed=False, dest=dest, sha256=sha256, recorded=False)
        if module.check_mode:  # the directory may be created by an earlier task that check mode skipped
            module.exit_json(changed=True, dest=dest, sha256=sha256, recorded=sha256 is None)
        if not os.path.isdir(os.path.dirname(dest) or "/"):
            module.fail_json(msg="dest %s: directory %s does not exist" % (dest, os.path.dirname(dest)))

        def opener(url, headers):
            return open_url(
                url, headers=headers, timeout=params["timeout"], validate_certs=params["validate_certs"]
            )

        limits = download.Limits(params["max_bytes"], params["min_free_bytes"])
        result = download.fetch(params["url"], dest, sha256, opener, resume=params["resume"], limits=limits)
        if sha256 is None:
            download.record(params["lock_file"], key, result["sha256"])
    except download.DownloadError as exc:
        module.fail_json(msg=str(exc), dest=dest)
    except Exception as exc:  # pylint: disable=broad-except  # anything else: a message, never a traceback
        part = dest + ".part"
        again = "resume" if os.path.isfile(part) and os.path.getsize(part) else "retry"
        module.fail_json(
            msg="download of %s to %s failed: %s. Run again to %s." % (params["url"], dest, exc, again),
            dest=dest,
        )
    module.exit_json(changed=True, dest=dest, recorded=sha256 is None, **result)


if __name__ == "__main__":
    main()
