# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The wasi_nn_ggml role's self-test verdict (plugins/module_utils/wasi_nn_probe.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import wasi_nn_probe


def wasi_nn_probe_report(result, host, **context):
    """``context``: plugin and model (required), variant, plugin_exists, missing, cpu, env_file, timeout."""
    if not isinstance(result, dict) or "rc" not in result:
        raise AnsibleFilterError("wasi_nn_probe_report expects the registered result of the probe's command")
    if "missing" in context:
        context["missing_libraries"] = context.pop("missing")
    try:
        report = wasi_nn_probe.diagnose(result["rc"], result.get("stdout"), result.get("stderr"), **context)
    except TypeError as exc:
        raise AnsibleFilterError(
            "wasi_nn_probe_report: %s (see its documentation for the options)" % exc
        ) from exc
    report["message"] = wasi_nn_probe.message(report, host)
    return report


class FilterModule(object):
    def filters(self):
        return {"wasi_nn_probe_report": wasi_nn_probe_report}
