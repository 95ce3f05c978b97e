#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: node_files
short_description: Converge a role's directories, small files and symlinks on a node in one call
version_added: "0.2.0"
description:
  - Brings every entry of O(files) to its state, in order, in one module run; a rerun with nothing to do costs
    one round trip to the node instead of one per path (two for each M(ansible.builtin.copy) or
    M(ansible.builtin.template), which compare checksums first).
  - Contents are given inline, rendered on the controller (for example with
    C(lookup('ansible.builtin.template', 'x.j2', convert_data=false))); they are meant for configuration files,
    units and environment files, not for large artifacts.
  - A file is replaced atomically (a temporary file in the same directory with the final mode and the old file's
    owner, renamed over it); a link likewise. Missing parent directories are created (mode 0755).
  - Owner, group and mode are set with the same helpers M(ansible.builtin.file) uses; SELinux contexts of new
    paths are the policy defaults.
  - Every entry is checked against what is on the node before any is touched; an entry that cannot be converged
    (a directory where a file belongs, for example) fails the module with its path, and nothing is changed.
  - C(--diff) shows one diff per changed path; contents of O(files[].secret_content) never appear, nor the content
    of a file whose old or new mode does not let everyone read it (a C(0600) configuration file may hold a token).
  - An entry under a path that is a regular file (not a directory) fails naming both paths, before anything is
    changed.
extends_documentation_fragment:
  - edgewasm.llamaedge.attributes.CHECK_AND_DIFF
options:
  files:
    description: The paths to converge, in order (a directory before what goes into it).
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute path on the node.
        type: path
        required: true
      state:
        description:
          - V(file) a regular file with O(files[].content) or O(files[].secret_content); V(directory);
            V(link) a symlink to O(files[].src); V(absent) nothing (a directory is removed with what it holds).
        type: str
        choices: [file, directory, link, absent]
        default: file
      content:
        description: The file's content (UTF-8), shown in C(--diff) unless the file is not readable by everyone.
        type: str
      secret_content:
        description: The file's content when it holds a secret; never returned, logged or shown in C(--diff).
        type: str
      src:
        description: Target of a link, written as given (relative to the link's directory when relative).
        type: str
      on_other:
        description:
          - What to do when something other than a link is where a link belongs. V(fail) names it, V(keep) leaves
            it (another installation of that command, say) and reports the entry as C(kept), V(replace) replaces a
            regular file. A directory is never replaced.
        type: str
        choices: [fail, keep, replace]
        default: fail
      mode:
        description:
          - Permissions as an octal string (V('0644')); unset keeps an existing file's mode, V('0644') for a new file, or
            V('0600') for a new file given O(files[].secret_content).
        type: str
      owner:
        description: Owner name or uid; unset keeps the current one (the user Ansible runs as for a new path).
        type: str
      group:
        description: Group name or gid; unset keeps the current one.
        type: str
author:
  - edgewasm.llamaedge maintainers (@edgewasm)
"""

EXAMPLES = r"""
- name: Write k3s's configuration, environment file and unit
  edgewasm.llamaedge.node_files:
    files:
      - path: /etc/rancher/k3s
        state: directory
        mode: "0755"
      - path: /etc/rancher/k3s/config.yaml
        content: "{{ lookup('ansible.builtin.template', 'config.yaml.j2', convert_data=false) }}"
        mode: "0600"
      - path: /etc/systemd/system/k3s.service.env
        secret_content: "K3S_TOKEN={{ token }}\n"
        mode: "0600"
      - path: /usr/local/bin/kubectl
        state: link
        src: k3s
        on_other: keep
  notify: Restart k3s
"""

RETURN = r"""
files:
  description: One entry per path of O(files), in order.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The path.
      type: str
    state:
      description: The state asked for.
      type: str
    result:
      description: V(created), V(updated) (content or attributes), V(unchanged), V(kept) (a non-link left in place
        with O(files[].on_other=keep)) or V(removed); in check mode what would be.
      type: str
changed_paths:
  description: The paths that changed (or would, in check mode).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import node_files

ENTRY = dict(
    path=dict(type="path", required=True),
    state=dict(type="str", choices=list(node_files.STATES), default="file"),
    content=dict(type="str"),
    secret_content=dict(type="str", no_log=True),
    src=dict(type="str"),
    on_other=dict(type="str", choices=list(node_files.ON_OTHER), default="fail"),
    mode=dict(type="str"),
    owner=dict(type="str"),
    group=dict(type="str"),
)


def main():
    module = AnsibleModule(
        argument_spec=dict(files=dict(type="list", elements="dict", required=True, options=ENTRY)),
        supports_check_mode=True,
    )
    entries = module.params["files"]
    errors = node_files.entry_errors(entries)
    if errors:
        module.fail_json(msg="node_files: " + "; ".join(errors))
    converger = node_files.Converger(module)
    try:
        results = converger.converge(entries)
    except node_files.NodeFilesError as exc:
        module.fail_json(msg=str(exc), diff=converger.diffs)
    changed = [item["path"] for item in results if item["result"] not in ("unchanged", "kept")]
    result = dict(changed=bool(changed), files=results, changed_paths=changed)
    if module._diff:  # pylint: disable=protected-access
        result["diff"] = converger.diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
