# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters over model placement and backend validation (plugins/module_utils/placement.py and
llama_backend_manifests.py): the models and llama_backends roles decide with these, not in Jinja."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean
from jinja2 import Undefined

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import llama_backend_manifests, placement


def _entries(value, name):
    if not isinstance(value, (list, tuple)) or any(not isinstance(item, dict) for item in value):
        raise AnsibleFilterError("%s expects a list of mappings, got %r" % (name, value))
    return list(value)


def _undefined(*values):
    """The first undefined input: returned as the result, so Undefined propagates (and a linter rendering the
    roles without an inventory, or a role's own validation naming the variable, sees it) instead of an error."""
    return next((value for value in values if isinstance(value, Undefined)), None)


def models_for_node(models, host):
    undefined = _undefined(models, host)
    if undefined is not None:
        return undefined
    return placement.models_for_node(_entries(models, "models_for_node"), host)


def models_to_copy(models):
    return placement.models_to_copy(_entries(models, "models_to_copy"))


def _results(value, name):
    if isinstance(value, dict) and "results" in value:
        value = value["results"]
    return _entries(value, name)


def models_to_refresh(copies, node_stats, source_stats, quick=True):
    return placement.models_to_refresh(
        _entries(copies, "models_to_refresh"),
        _results(node_stats, "models_to_refresh (node stats)"),
        _results(source_stats, "models_to_refresh (controller stats)"),
        quick=boolean(quick, strict=False),
    )


def backend_nodes(backends, models, hosts):
    undefined = _undefined(backends, models, hosts)
    if undefined is not None:
        return undefined
    return placement.backend_nodes(
        _entries(backends, "backend_nodes"), _entries(models, "backend_nodes (models_list)"), list(hosts)
    )


def llama_backend_errors(
    backends,
    models,
    image="",
    state="present",
    namespace="default",
    runtime_class="auto",
    image_wasi_logging=True,
    termination_grace_period=None,
):
    runtime = {
        "runtime_class": runtime_class,
        "image_wasi_logging": boolean(image_wasi_logging, strict=False),
        "termination_grace_period": llama_backend_manifests.as_int(termination_grace_period),
    }
    return llama_backend_manifests.role_errors(backends, models, image, state, namespace, runtime)


class FilterModule(object):
    def filters(self):
        return {
            "models_for_node": models_for_node,
            "models_to_copy": models_to_copy,
            "models_to_refresh": models_to_refresh,
            "backend_nodes": backend_nodes,
            "llama_backend_errors": llama_backend_errors,
        }
