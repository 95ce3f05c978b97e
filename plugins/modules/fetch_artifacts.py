#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: fetch_artifacts
short_description: Fetch release artifacts into the controller's cache, every one checksum-verified, in one call
version_added: "0.2.0"
description:
  - The download step of the P(edgewasm.llamaedge.artifacts#role) role, for many release paths at once. The
    checksum files first (each recorded in O(lock_file) on first download, enforced after), then every path of
    O(items), verified against O(sha256), else the release's checksum file (O(checksum_files)), else
    O(lock_file); a path with none of them has its checksum recorded on first download (unless
    O(record_new=false), which refuses it before anything is downloaded).
  - A file already in O(cache_dir) with the expected checksum is not downloaded again, so a rerun costs one
    checksum per file and no network. Downloads resume and are installed only once verified (see
    M(edgewasm.llamaedge.download)).
  - Runs on the controller, in Ansible's own process (an action plugin), since the cache is the controller's,
    whatever C(delegate_to) says. Use C(run_once=true); one call covers every host's paths.
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
    support: full
    details: The whole fetch runs in the action plugin, on the controller.
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Nothing is downloaded or recorded; paths not yet in the cache are reported in RV(changed_paths).
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  items:
    description: Release paths, C(<version>/<asset>), relative to the source.
    type: list
    elements: str
    required: true
  checksum_files:
    description: Release paths whose sha256 an upstream sha256sum-format file lists, mapped to that file's path.
    type: dict
    default: {}
  sha256:
    description: Checksums the user trusts, by release path (checksum files included).
    type: dict
    default: {}
  mirror:
    description: An http(s) base URL, or an absolute directory laid out like the release paths; replaces O(base_url).
    type: str
    default: ""
  base_url:
    description: Upstream base URL of the release paths.
    type: str
    default: ""
  cache_dir:
    description: Where the verified files are kept, under their release paths (directories are created, mode 0700).
    type: path
    required: true
  lock_file:
    description: JSON lock file of recorded checksums (created on the first record).
    type: path
    required: true
  record_new:
    description: Record the checksum of a path that has none; V(false) refuses such paths, naming them.
    type: bool
    default: true
  timeout:
    description: Seconds without data before a download fails (running again resumes it).
    type: int
    default: 120
  validate_certs:
    description: Verify TLS certificates of https sources.
    type: bool
    default: true
  max_bytes:
    description:
      - An artifact larger than this is refused - before reading when the server declares its length, else as
        the bytes arrive - and removed; nothing is installed or recorded. A WasmEdge archive is about 100 MB,
        k3s's air-gap images some hundreds.
    type: int
    default: 4294967296
  max_checksum_file_bytes:
    description:
      - A checksum file larger than this is refused the same way (upstream's lists a few dozen assets - a few KiB).
        A downloaded checksum file must also be in sha256sum format (C(<sha256> <name>) lines); one that is not
        (an error page, say) is removed and not recorded.
    type: int
    default: 4194304
author:
  - edgewasm.llamaedge maintainers (@edgewasm)
"""

EXAMPLES = r"""
- name: Fetch WasmEdge 0.14.1 for x86_64, verified against the release's SHA256SUM
  edgewasm.llamaedge.fetch_artifacts:
    items: [0.14.1/WasmEdge-0.14.1-ubuntu20.04_x86_64.tar.gz]
    checksum_files:
      0.14.1/WasmEdge-0.14.1-ubuntu20.04_x86_64.tar.gz: 0.14.1/SHA256SUM
    base_url: https://github.com/WasmEdge/WasmEdge/releases/download
    cache_dir: ~/.cache/edgewasm/artifacts
    lock_file: "{{ inventory_dir }}/edgewasm.lock.json"
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
verified:
  description: The sha256 of every path verified (checksum files included); in check mode only those already cached.
  returned: always
  type: dict
changed_paths:
  description: Paths downloaded (or, in check mode, that would be).
  returned: always
  type: list
  elements: str
recorded:
  description: Paths whose checksum was recorded in O(lock_file) by this run.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import release_fetch


def main():
    module = AnsibleModule(argument_spec=release_fetch.ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = release_fetch.run(module.params, open_url, check_mode=module.check_mode)
    except release_fetch.FetchError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
