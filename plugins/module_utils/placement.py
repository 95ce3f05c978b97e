# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which node holds which model, and so which nodes serve which backend: decided once, here.

The models role places a models_list entry on the nodes it names (``nodes:``), or on every host of
the play when it names none; a backend runs on the nodes that hold its model. Both roles call these
functions through the models_for_node and backend_nodes filters.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


def _named(model):
    """The hosts a models_list entry names, or None when it names none (a lone name counts as one host,
    never as a string to search in)."""
    named = model.get("nodes")
    if named is None:
        return None
    return [named] if isinstance(named, str) else list(named)


def model_nodes(model, hosts):
    """The hosts (of ``hosts``, in that order) that hold ``model``: its ``nodes``, or all of them."""
    named = _named(model)
    if named is None:
        return list(hosts)
    return [host for host in hosts if host in named]


def models_for_node(models, host):
    """The entries of ``models`` placed on ``host`` (those without ``nodes`` are placed everywhere)."""
    return [model for model in models if _named(model) is None or host in _named(model)]


def models_to_copy(models):
    """The entries the controller copies to their nodes: all but those already ``present`` there."""
    return [model for model in models if not model.get("present", False)]


def backend_nodes(backends, models, hosts):
    """Backend name -> the hosts of ``hosts`` holding its model (empty when none does, or its model is unknown)."""
    by_file = {model.get("file"): model_nodes(model, hosts) for model in models}
    return {backend.get("name"): list(by_file.get(backend.get("model"), [])) for backend in backends}
