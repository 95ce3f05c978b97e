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


def _stats_by_file(results):
    """models_list file name -> the ``stat`` of a registered ansible.builtin.stat loop over entries."""
    stats = {}
    for result in results or []:
        item = result.get("item") if isinstance(result, dict) else None
        if isinstance(item, dict):
            stats[item.get("file")] = result.get("stat") or {}
    return stats


def _mtime(stat):
    mtime = stat.get("mtime")
    return None if mtime is None else int(mtime)


def in_place(node, source):
    """rsync's quick check: the node's copy has the controller copy's size and (whole-second) mtime."""
    return bool(
        node.get("exists")
        and source.get("exists")
        and node.get("size") == source.get("size")
        and _mtime(node) == _mtime(source)
    )


def models_to_refresh(copies, node_results, source_results, quick=True):
    """The entries of ``copies`` to copy now, each with what the copy tasks need to know.

    ``node_results`` and ``source_results`` are the results of stat loops over models_list entries, on the
    node (its models_dir) and on the controller (the copy source). With ``quick``, an entry whose node copy
    passes the quick check (``in_place``) is left out: one stat per model instead of hashing both copies.
    Without it, every entry is copied, and ansible.builtin.copy compares content.
    Each returned entry gains ``source_exists``, ``source_size``, ``source_mtime`` (whole seconds) and
    ``node_exists``.
    """
    node_stats = _stats_by_file(node_results)
    source_stats = _stats_by_file(source_results)
    refresh = []
    for model in copies:
        node = node_stats.get(model.get("file"), {})
        source = source_stats.get(model.get("file"), {})
        if quick and in_place(node, source):
            continue
        refresh.append(
            dict(
                model,
                source_exists=bool(source.get("exists")),
                source_size=int(source.get("size") or 0),
                source_mtime=_mtime(source),
                node_exists=bool(node.get("exists")),
            )
        )
    return refresh


def backend_nodes(backends, models, hosts):
    """Backend name -> the hosts of ``hosts`` holding its model (empty when none does, or its model is unknown)."""
    by_file = {model.get("file"): model_nodes(model, hosts) for model in models}
    return {backend.get("name"): list(by_file.get(backend.get("model"), [])) for backend in backends}
