#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: wasmedge_plugin_deps
short_description: Resolve the shared libraries WasmEdge plugins need, as Kubernetes volumes
version_added: "0.1.0"
description:
  - Reads WasmEdge plugin files (for example C(libwasmedgePluginWasiNN.so)) with pyelftools and
    resolves their whole C(DT_NEEDED) closure the way glibc's dynamic loader would on this node
    (RPATH and RUNPATH with C($ORIGIN), C(LD_LIBRARY_PATH), C(/etc/ld.so.conf), default
    directories, ELF class and machine matching). Nothing is executed, unlike C(ldd).
  - Returns ready-to-use Kubernetes C(volumes), C(volumeMounts) and C(env) so that a WASM pod sees
    the plugin and every library it needs at the same paths as the host. Without them the pod fails
    at instantiation with an C(unknown import) error for C(wasi_ephemeral_nn).
  - Fails with a message naming each missing library and the chain that needs it, unless
    O(allow_missing=true).
  - Only regular files are opened, and never in a way that blocks. A FIFO, socket or device named like a
    library is skipped as a candidate (never opened); given as a plugin it is an error. A damaged ELF file
    (a string or the interpreter pointing outside the file, broken headers) fails naming the file and what
    is wrong.
  - Never changes the node.
requirements:
  - pyelftools on the node
options:
  paths:
    description:
      - Plugin files, or directories whose C(*.so) files are the plugins.
    type: list
    elements: path
    default: [/opt/wasmedge/current/plugin]
  ld_library_path:
    description:
      - Directories searched like C(LD_LIBRARY_PATH) of the runtime process, typically the WasmEdge
        C(lib) directory. The module's own environment is never used.
      - Directories that provide a library are mounted whole and exported in the returned C(env).
    type: list
    elements: str
    default: []
  root:
    description:
      - Resolve inside this filesystem tree (a container rootfs, a mounted image). Absolute symlinks
        are followed inside it, never out of it. Returned paths are paths inside the tree.
    type: path
    default: /
  exclude:
    description:
      - Sonames the runtime process already provides (for example C(libwasmedge.so.0) when the shim
        links WasmEdge statically). They are neither resolved nor reported missing.
    type: list
    elements: str
    default: []
  hwcaps:
    description:
      - glibc-hwcaps levels to search first in every directory, best first (for example
        C([x86-64-v3, x86-64-v2])).
    type: list
    elements: str
    default: []
  architecture:
    description:
      - Machine the plugins must be built for (C(x86_64), C(aarch64)...). Defaults to the node's
        machine when O(root=/), and to no check otherwise.
    type: str
  volume_name_prefix:
    description:
      - Prefix of the generated volume names (a DNS-1123 label of at most 40 characters).
    type: str
    default: wasmedge
  collapse_directories:
    description:
      - Mount the plugin directories and the O(ld_library_path) directories that provide libraries
        as whole directories instead of file by file.
    type: bool
    default: true
  allow_missing:
    description:
      - Report missing libraries in RV(missing) instead of failing.
    type: bool
    default: false
  max_ld_so_conf_files:
    description:
      - At most this many files of C(/etc/ld.so.conf) and its C(include) lines are read. Each file is read once,
        by its real path, however many paths (symbolic links, overlapping globs) lead to it; a configuration that
        includes more fails naming C(/etc/ld.so.conf) instead of running for ever (an include loop through
        directory links doubles the work at each level).
    type: int
    default: 256
extends_documentation_fragment:
  - edgewasm.llamaedge.attributes.READ_ONLY
notes:
  - Files found through a symlink are reported with both the path the loader opens (C(path)) and the
    real file (C(realpath)); mounts use C(path), which the kubelet bind-mounts with its target's content.
  - Legacy hwcaps subdirectories (C(tls/), C(haswell/)) and C(ld.so.preload) are not modelled.
author:
  - edgewasm.llamaedge maintainers (@edgewasm)
"""

EXAMPLES = r"""
- name: Resolve the WASI-NN GGML plugin's libraries on this node
  edgewasm.llamaedge.wasmedge_plugin_deps:
    paths:
      - /opt/wasmedge/current/plugin
    ld_library_path:
      - /opt/wasmedge/current/lib
  register: plugin_deps

- name: Use them in a pod spec
  ansible.builtin.set_fact:
    backend_volumes: "{{ plugin_deps.volumes }}"
    backend_volume_mounts: "{{ plugin_deps.volume_mounts }}"
    backend_env: "{{ plugin_deps.env }}"

- name: Check a CUDA build without failing, to report what is missing
  edgewasm.llamaedge.wasmedge_plugin_deps:
    paths: [/opt/wasmedge/current/plugin/libwasmedgePluginWasiNN.so]
    exclude: [libwasmedge.so.0]
    allow_missing: true
  register: cuda_deps
"""

RETURN = r"""
plugins:
  description: The plugin files resolved.
  returned: always
  type: list
  elements: dict
  sample: [{path: /opt/wasmedge/0.14.1/plugin/libwasmedgePluginWasiNN.so, realpath: /opt/wasmedge/0.14.1/plugin/libwasmedgePluginWasiNN.so,
            machine: x86_64, soname: libwasmedgePluginWasiNN.so}]
libraries:
  description: Every library the plugins need, in load order, once each, with how it was found.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: libstdc++.so.6, path: /lib/x86_64-linux-gnu/libstdc++.so.6, realpath: /usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30,
       soname: libstdc++.so.6, found_via: ld.so.conf, depth: 1, needed_by: [/opt/wasmedge/0.14.1/plugin/libwasmedgePluginWasiNN.so],
       plugins: [/opt/wasmedge/0.14.1/plugin/libwasmedgePluginWasiNN.so]}
fingerprint:
  description:
    - sha256 over the path, device, inode, size and modification time of every plugin file and library resolved;
      equal on two runs only when none of those files was replaced or modified in between.
  returned: always
  type: str
  version_added: "0.2.0"
missing:
  description: Libraries not found, each with the object that needs it and the whole chain.
  returned: always
  type: list
  elements: dict
  sample: [{name: libcudart.so.12, needed_by: /opt/wasmedge/0.14.1/plugin/libwasmedgePluginWasiNN.so,
            chain: [libwasmedgePluginWasiNN.so, libcudart.so.12]}]
skipped:
  description: Candidates the loader would pass over (wrong ELF class, machine or OS ABI).
  returned: always
  type: list
  elements: dict
volumes:
  description: Kubernetes pod C(volumes) (hostPath, type File or Directory), sorted by path.
  returned: always
  type: list
  elements: dict
  sample: [{name: wasmedge-plugin-3f2a9c1e, hostPath: {path: /opt/wasmedge/0.14.1/plugin, type: Directory}}]
volume_mounts:
  description: Kubernetes container C(volumeMounts) matching RV(volumes), read-only, at the same paths.
  returned: always
  type: list
  elements: dict
  sample: [{name: wasmedge-plugin-3f2a9c1e, mountPath: /opt/wasmedge/0.14.1/plugin, readOnly: true}]
env:
  description: Kubernetes container C(env) entries C(WASMEDGE_PLUGIN_PATH) and C(LD_LIBRARY_PATH).
  returned: always
  type: list
  elements: dict
  sample: [{name: WASMEDGE_PLUGIN_PATH, value: /opt/wasmedge/0.14.1/plugin}]
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import elf, plugin_deps, plugin_mounts


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type="list", elements="path", default=["/opt/wasmedge/current/plugin"]),
            ld_library_path=dict(type="list", elements="str", default=[]),
            root=dict(type="path", default="/"),
            exclude=dict(type="list", elements="str", default=[]),
            hwcaps=dict(type="list", elements="str", default=[]),
            architecture=dict(type="str"),
            volume_name_prefix=dict(type="str", default="wasmedge"),
            collapse_directories=dict(type="bool", default=True),
            allow_missing=dict(type="bool", default=False),
            max_ld_so_conf_files=dict(type="int", default=elf.MAX_CONF_FILES),
        ),
        supports_check_mode=True,
    )
    if not elf.HAS_ELFTOOLS:
        module.fail_json(msg=missing_required_lib("pyelftools"), exception=str(elf.ELFTOOLS_IMPORT_ERROR))
    if module.params["max_ld_so_conf_files"] < 1:
        module.fail_json(
            msg="max_ld_so_conf_files=%d must be at least 1" % module.params["max_ld_so_conf_files"]
        )
    problem = plugin_mounts.check_prefix(module.params["volume_name_prefix"])
    if problem:
        module.fail_json(msg=problem)
    try:
        result = plugin_deps.resolve(module.params)
    except elf.ResolverError as exc:
        module.fail_json(msg=str(exc))
    if result["missing"] and not module.params["allow_missing"]:
        module.fail_json(msg=plugin_mounts.missing_message(result["missing"]), changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
