# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the Kubernetes modules share: their common options and the apply-all-objects run."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible.module_utils.common.yaml import HAS_YAML, yaml_dump

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import k8s_apply

# How a module reaches the cluster (doc fragment edgewasm.llamaedge.k8s.auth).
AUTH_ARGS = dict(
    kubeconfig=dict(type="path"),
    context=dict(type="str"),
)
# The options of the modules that manage objects (doc fragments edgewasm.llamaedge.k8s and .auth).
COMMON_ARGS = dict(
    AUTH_ARGS,
    state=dict(type="str", choices=["present", "absent"], default="present"),
    wait=dict(type="bool", default=False),
    wait_timeout=dict(type="int", default=600),
    create_namespace=dict(type="bool", default=False),
)


def _outcome(cluster, obj, state, new_namespaces, *, check_mode):
    if state == "absent":
        return cluster.delete(obj, check_mode=check_mode)
    if check_mode and obj["metadata"].get("namespace") in new_namespaces:
        # The server refuses a dry run in a namespace that does not exist yet.
        return cluster.planned(obj)
    outcome = cluster.apply(obj, check_mode=check_mode)
    if check_mode and obj["kind"] == "Namespace" and outcome["before"] is None:
        new_namespaces.add(obj["metadata"]["name"])
    return outcome


def run_objects(cluster, objects, state, *, check_mode, wait, wait_timeout):
    """Apply (or delete, in reverse order) ``objects``; the module result without ``manifests``.

    With ``wait``: applied Deployments must roll out, deleted objects must be gone."""
    results = []
    diff = []
    new_namespaces = set()
    deleted = []
    ordered = objects if state == "present" else list(reversed(objects))
    for obj in ordered:
        outcome = _outcome(cluster, obj, state, new_namespaces, check_mode=check_mode)
        if state == "absent" and outcome["changed"]:
            deleted.append(obj)
        results.append(
            {
                "kind": obj["kind"],
                "name": obj["metadata"]["name"],
                "namespace": obj["metadata"].get("namespace"),
                "changed": outcome["changed"],
            }
        )
        if outcome["changed"]:
            diff.append({"before": outcome["before"], "after": outcome["after"], "object": obj})
    rollout = []
    if state == "present" and wait and not check_mode:
        for obj in objects:
            if obj["kind"] == "Deployment":
                done = cluster.wait_ready(obj, wait_timeout)
                rollout.append(dict(name=obj["metadata"]["name"], **done))
    if state == "absent" and wait and not check_mode:
        for obj in deleted:
            cluster.wait_gone(obj, wait_timeout)
    return {
        "changed": any(r["changed"] for r in results),
        "objects": results,
        "rollout": rollout,
        "diff": diff,
    }


def stale_objects(cluster, objects, owned):
    """Live objects the ``owned`` selectors find that are not in ``objects``: to delete.

    With state=absent they are deleted with ``objects``; with state=present they are left-overs (a node
    group that went away) and are deleted after the apply.
    """
    wanted = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects}
    extra = []
    for api_version, kind, namespace, label_selector in owned:
        for live in cluster.find(api_version, kind, namespace, label_selector):
            key = (kind, namespace, live["metadata"]["name"])
            if key not in wanted:
                wanted.add(key)
                extra.append(
                    {
                        "apiVersion": api_version,
                        "kind": kind,
                        "metadata": {"name": live["metadata"]["name"], "namespace": namespace},
                    }
                )
    return extra


HIDDEN = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"


def _label(obj):
    namespace = obj["metadata"].get("namespace")
    return "%s %s%s" % (obj["kind"], namespace + "/" if namespace else "", obj["metadata"]["name"])


def _yaml(obj):
    """An object as YAML text for a diff (keys sorted, as kubectl shows them), or "" for none."""
    if not obj:
        return ""
    if not HAS_YAML:
        return json.dumps(obj, indent=2, sort_keys=True) + "\n"
    return yaml_dump(obj, default_flow_style=False, sort_keys=True)


def diff_entries(changes):
    """--diff in the list form Ansible's callbacks render: one before/after pair of YAML texts per changed
    object, headed by its kind, namespace and name; Secrets' values hidden."""
    return [
        {
            "before": _yaml(redact(change["before"])),
            "after": _yaml(redact(change["after"])),
            "before_header": _label(change["object"]),
            "after_header": _label(change["object"]),
        }
        for change in changes
    ]


def redact(obj):
    """A Secret with its values hidden, for results and --diff; other objects unchanged."""
    if not obj or obj.get("kind") != "Secret":
        return obj
    shown = dict(obj)
    for field in ("data", "stringData"):
        if field in shown:
            shown[field] = dict.fromkeys(shown[field], HIDDEN)
    return shown


def execute(module, objects, owned=(), prepare=None):
    """Connect, apply, report: the whole body of a module once its objects are built.

    ``prepare(cluster)``, when given, returns the objects instead: for objects that depend on what the
    cluster already holds (a generated Secret kept across runs).
    """
    params = module.params
    try:
        cluster = k8s_apply.Cluster(k8s_apply.connect(params["kubeconfig"], params["context"]))
        if prepare is not None:
            objects = prepare(cluster)
        if params["create_namespace"] and params["state"] == "present":
            namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": params["namespace"]}}
            objects = [namespace, *objects]
        result = run(
            cluster, objects, stale_objects(cluster, objects, owned), params, check_mode=module.check_mode
        )
    except k8s_apply.KubernetesError as exc:
        module.fail_json(msg=str(exc), manifests=[redact(o) for o in objects])
    if module._diff:
        result["diff"] = diff_entries(result["diff"])
    else:
        result.pop("diff")
    module.exit_json(manifests=[redact(o) for o in objects], **result)


def run(cluster, objects, stale, params, *, check_mode):
    """Apply or delete ``objects``, then delete ``stale`` ones; one result for the module."""
    waiting = dict(check_mode=check_mode, wait=params["wait"], wait_timeout=params["wait_timeout"])
    if params["state"] == "absent":
        return run_objects(cluster, stale + objects, "absent", **waiting)
    result = run_objects(cluster, objects, "present", **waiting)
    if stale:
        removed = run_objects(cluster, stale, "absent", **waiting)
        result["objects"] += removed["objects"]
        result["changed"] = result["changed"] or removed["changed"]
        result["diff"] += removed["diff"]
    return result
