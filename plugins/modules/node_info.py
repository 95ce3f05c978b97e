#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: node_info
short_description: Probe a node for what the WasmEdge, GGML and k3s roles depend on
version_added: "0.1.0"
description:
  - Reads the node's machine architecture, glibc version, CPU feature flags,
    NVIDIA driver and CUDA runtime libraries, free disk space at given paths,
    kernel modules and sysctl values.
  - Read-only; never changes the node, so it runs the same in check mode.
  - Used by the P(edgewasm.llamaedge.preflight#role) role, which turns the
    findings into decisions and clear failures.
options:
  paths:
    description:
      - Paths whose free disk space to report. A path that does not exist yet is
        measured at its closest existing parent directory.
    type: list
    elements: path
    default: []
  kernel_modules:
    description:
      - Kernel modules to look for under C(/sys/module) (loaded or built in).
    type: list
    elements: str
    default: []
  sysctls:
    description:
      - Sysctl names (dotted form, for example C(net.ipv4.ip_forward)) to read.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - edgewasm.llamaedge.attributes.READ_ONLY
author:
  - edgewasm.llamaedge maintainers (@edgewasm)
"""

EXAMPLES = r"""
- name: Probe the node
  edgewasm.llamaedge.node_info:
    paths:
      - /opt/wasmedge
      - /var/lib/llamaedge/models
    kernel_modules: [br_netfilter, overlay]
    sysctls: [net.ipv4.ip_forward]
  register: node

- name: Show the GGML-relevant CPU flags
  ansible.builtin.debug:
    var: node.cpu
"""

RETURN = r"""
machine:
  description: Machine architecture as C(uname -m) reports it.
  returned: always
  type: str
  sample: x86_64
glibc_version:
  description: Version of the node's glibc, or null when the C library is not glibc.
  returned: always
  type: str
  sample: "2.36"
cpu:
  description: Booleans for the CPU flags the GGML plugin variants depend on.
  returned: always
  type: dict
  sample: {avx: true, avx2: true, avx512f: false, fma: true, f16c: true}
cpu_flags:
  description: Every CPU flag of the first processor.
  returned: always
  type: list
  elements: str
cuda:
  description: NVIDIA driver presence and, per CUDA major version, whether all runtime libraries are in the linker cache.
  returned: always
  type: dict
  sample:
    driver_present: false
    driver_version: null
    runtimes:
      "12": {complete: false, missing: [libcudart.so.12]}
disk:
  description: Free space per requested path.
  returned: always
  type: list
  elements: dict
  sample: [{path: /var/lib/llamaedge/models, checked_path: /var/lib, free_mb: 81234}]
kernel_modules:
  description: Requested module name -> present (loaded or built in).
  returned: always
  type: dict
  sample: {overlay: true, br_netfilter: false}
sysctls:
  description: Requested sysctl name -> current value, or null when it does not exist.
  returned: always
  type: dict
  sample: {net.ipv4.ip_forward: "1"}
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import node_probe


def _ld_cache(module, machine):
    ldconfig = module.get_bin_path("ldconfig", opt_dirs=["/sbin", "/usr/sbin"])
    if not ldconfig:
        return {}
    rc, out, _dummy = module.run_command([ldconfig, "-p"])
    return node_probe.parse_ldconfig_cache(out, machine) if rc == 0 else {}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type="list", elements="path", default=[]),
            kernel_modules=dict(type="list", elements="str", default=[]),
            sysctls=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    machine = os.uname()[4]
    flags = node_probe.parse_cpu_flags(node_probe.read_text("/proc/cpuinfo") or "")
    driver = node_probe.parse_nvidia_driver_version(node_probe.read_text("/proc/driver/nvidia/version"))
    module.exit_json(
        changed=False,
        machine=machine,
        glibc_version=node_probe.glibc_version(),
        cpu=node_probe.cpu_summary(flags),
        cpu_flags=sorted(flags),
        cuda=node_probe.cuda_summary(driver, _ld_cache(module, machine)),
        disk=[node_probe.free_space_mb(p) for p in module.params["paths"]],
        kernel_modules=dict(
            (m, node_probe.kernel_module_present(m)) for m in module.params["kernel_modules"]
        ),
        sysctls=dict((s, node_probe.read_sysctl(s)) for s in module.params["sysctls"]),
    )


if __name__ == "__main__":
    main()
