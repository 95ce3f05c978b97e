#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: wasi_nn_probe
short_description: Run a WASI-NN probe under wasmedge with the environment pods get
version_added: "0.3.0"
description:
  - Runs C(wasmedge --nn-preload <alias>:GGML:AUTO:<model> <probe>) with exactly the C(VAR=value) lines of
    O(env_file) (the environment the WasmEdge runtime gives pods) and O(path), in O(chdir), killed after
    O(timeout) seconds. The wasi_nn_ggml role's self-test runs its probe with it; the
    P(edgewasm.llamaedge.wasi_nn_probe_report#filter) filter judges the result.
  - What wasmedge, the plugin and llama.cpp print is untrusted bytes (a model generates arbitrary bytes; logs quote
    model metadata). Both streams are returned as text that is always valid UTF-8 - every byte that is not UTF-8
    as a C(\\xNN) escape - and only their last O(output_limit) bytes are kept, so no output can break the
    module's result or exhaust the controller's memory.
  - Changes nothing on the node (the probe's scratch directory is the caller's); runs in check mode too.
extends_documentation_fragment:
  - edgewasm.llamaedge.attributes.READ_ONLY
options:
  wasmedge:
    description: The C(wasmedge) command line to run.
    type: path
    required: true
  probe:
    description: The WebAssembly module to run (relative to O(chdir) or absolute).
    type: path
    required: true
  model:
    description: The GGUF model preloaded as O(alias) (C(--nn-preload <alias>:GGML:AUTO:<model>)).
    type: path
    required: true
  alias:
    description: The WASI-NN graph name the model is preloaded under (the probe loads it by this name).
    type: str
    default: default
  env_file:
    description:
      - The environment file the runtime gives pods (for example C(/etc/default/wasmedge), which the wasmedge
        role writes). Its C(VAR=value) lines are the probe's whole environment, with O(path); other lines are
        ignored.
    type: path
    required: true
  path:
    description: The C(PATH) of the run (systemd's default, as services and the shims they start have it).
    type: str
    default: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  chdir:
    description: Directory to run in.
    type: path
  timeout:
    description: Seconds before the run and every process it started are killed (the result then has rc 124).
    type: int
    default: 120
  output_limit:
    description: Bytes of each stream kept (the last ones); what came before is counted and dropped.
    type: int
    default: 65536
author:
  - edgewasm.llamaedge maintainers (@edgewasm)
"""

EXAMPLES = r"""
- name: Run the probe as a pod would
  edgewasm.llamaedge.wasi_nn_probe:
    wasmedge: /opt/wasmedge/0.15.1/bin/wasmedge
    probe: wasi_nn_probe.wasm
    model: /tmp/self-test.gguf
    env_file: /etc/default/wasmedge
    chdir: /tmp/scratch
  register: probe_run

- name: Judge it
  ansible.builtin.debug:
    msg: >-
      {{ (probe_run | edgewasm.llamaedge.wasi_nn_probe_report(host=inventory_hostname,
         plugin='/opt/wasmedge/0.15.1/plugin/libwasmedgePluginWasiNN.so', model='/tmp/self-test.gguf')).message }}
"""

RETURN = r"""
rc:
  description: Exit status of wasmedge; 124 when it was killed after O(timeout); minus the signal number when a signal ended it.
  returned: always
  type: int
  sample: 0
stdout:
  description: The last O(output_limit) bytes of its standard output (WasmEdge logs there too), valid UTF-8.
  returned: always
  type: str
  sample: "edgewasm-wasi-nn-probe: ok: 3 bytes, hex: 8c2041"
stderr:
  description: The last O(output_limit) bytes of its standard error, valid UTF-8.
  returned: always
  type: str
  sample: ""
timed_out:
  description: Whether the run was killed after O(timeout) seconds.
  returned: always
  type: bool
  sample: false
cmd:
  description: The command line that ran.
  returned: always
  type: list
  elements: str
  sample: [/opt/wasmedge/0.15.1/bin/wasmedge, --nn-preload, "default:GGML:AUTO:/tmp/self-test.gguf", wasi_nn_probe.wasm]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import wasi_nn_probe


def main():
    module = AnsibleModule(
        argument_spec=dict(
            wasmedge=dict(type="path", required=True),
            probe=dict(type="path", required=True),
            model=dict(type="path", required=True),
            alias=dict(type="str", default="default"),
            env_file=dict(type="path", required=True),
            path=dict(type="str", default="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            chdir=dict(type="path"),
            timeout=dict(type="int", default=120),
            output_limit=dict(type="int", default=wasi_nn_probe.OUTPUT_LIMIT),
        ),
        supports_check_mode=True,
    )
    params = module.params
    for name in ("timeout", "output_limit"):
        if params[name] < 1:
            module.fail_json(msg="%s=%s must be at least 1" % (name, params[name]))
    try:
        with open(params["env_file"], "rb") as handle:
            env = wasi_nn_probe.env_from_file(handle.read(1 << 20))
    except (IOError, OSError) as exc:
        module.fail_json(msg="cannot read env_file %s: %s" % (params["env_file"], exc.strerror or exc))
    env["PATH"] = params["path"]
    preload = "%s:GGML:AUTO:%s" % (params["alias"], params["model"])
    argv = [params["wasmedge"], "--nn-preload", preload, params["probe"]]
    try:
        result = wasi_nn_probe.run(argv, env, params["chdir"], params["timeout"], params["output_limit"])
    except (IOError, OSError) as exc:
        module.fail_json(msg="cannot run %s: %s" % (params["wasmedge"], exc.strerror or exc), cmd=argv)
    module.exit_json(changed=False, cmd=argv, **result)


if __name__ == "__main__":
    main()
