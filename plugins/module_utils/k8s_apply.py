# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small apply / diff / wait layer over the kubernetes client's DynamicClient.

Objects are sent with server-side apply. Every apply is first made as a server-side dry run: the
object the server would store is compared with the live one, fields the server manages (status,
managedFields, resourceVersion...) left out, so ``changed`` is true only when something we own
would change, and check mode is exactly that dry run.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import time

try:
    from kubernetes import config as k8s_config
    from kubernetes.client import ApiClient
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError
except ImportError:  # the modules report it with missing_required_lib()
    HAS_KUBERNETES = False

    class DynamicApiError(Exception):  # stand-ins so the except clauses below stay valid
        pass

    class NotFoundError(DynamicApiError):
        pass

else:
    HAS_KUBERNETES = True

FIELD_MANAGER = "edgewasm.llamaedge"
SERVER_METADATA = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp", "selfLink")
# On a Deployment whose pods are not all meant to be Ready (leader election: only the leader is), how many are.
READY_REPLICAS_ANNOTATION = "llamaedge/ready-replicas"
SERVER_ANNOTATIONS = ("deployment.kubernetes.io/revision", "kubectl.kubernetes.io/last-applied-configuration")


class KubernetesError(Exception):
    """A failed API call, with a message naming the object and the server's reason."""


class WaitTimeoutError(KubernetesError):
    pass


def ref(obj):
    meta = obj["metadata"]
    where = "%s/%s" % (meta["namespace"], meta["name"]) if meta.get("namespace") else meta["name"]
    return "%s %s" % (obj["kind"], where)


def normalize(obj):
    """``obj`` without what the server manages: what our apply can change."""
    if obj is None:
        return None
    clean = copy.deepcopy(obj)
    clean.pop("status", None)
    meta = clean.get("metadata", {})
    for key in SERVER_METADATA:
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    for key in SERVER_ANNOTATIONS:
        annotations.pop(key, None)
    if "annotations" in meta and not annotations:
        meta.pop("annotations")
    return clean


def api_error(action, obj, exc):
    status = getattr(exc, "status", None)
    summary = exc.summary() if hasattr(exc, "summary") else str(exc)
    hint = {
        401: " Check the credentials in the kubeconfig.",
        403: " The credentials lack the RBAC permission for this; grant it or use another context.",
        404: " Does the namespace exist?",
        422: " The server rejected the object: see the reason above.",
    }.get(status, "")
    return KubernetesError(
        "Kubernetes API error while trying to %s %s: %s%s" % (action, ref(obj), summary, hint)
    )


def connect(kubeconfig=None, context=None):
    """A DynamicClient from a kubeconfig (explicit, KUBECONFIG or ~/.kube/config) or the pod's account."""
    try:
        if kubeconfig or context:
            api = k8s_config.new_client_from_config(config_file=kubeconfig, context=context)
        else:
            try:
                k8s_config.load_incluster_config()
                api = None
            except k8s_config.ConfigException:
                api = k8s_config.new_client_from_config()
        return DynamicClient(api or ApiClient())
    except Exception as exc:  # pylint: disable=broad-except
        raise KubernetesError(
            "Cannot reach the Kubernetes API (kubeconfig=%s, context=%s): %s. Set kubeconfig (or KUBECONFIG) "
            "to a kubeconfig for the cluster, for example the one k3s_server fetched."
            % (kubeconfig, context, exc)
        ) from exc


class Cluster:
    def __init__(self, client, field_manager=FIELD_MANAGER, sleep=time.sleep, clock=time.monotonic):
        self.client = client
        self.field_manager = field_manager
        self.sleep = sleep
        self.clock = clock

    def _resource(self, obj):
        return self.client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])

    def get(self, obj):
        meta = obj["metadata"]
        try:
            found = self.client.get(self._resource(obj), name=meta["name"], namespace=meta.get("namespace"))
        except NotFoundError:
            return None
        except DynamicApiError as exc:
            raise api_error("read", obj, exc) from exc
        return found.to_dict()

    def find(self, api_version, kind, namespace, label_selector):
        """Live objects of ``kind`` in ``namespace`` matching ``label_selector``."""
        probe = {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": label_selector, "namespace": namespace},
        }
        try:
            found = self.client.get(self._resource(probe), namespace=namespace, label_selector=label_selector)
        except NotFoundError:
            return []
        except DynamicApiError as exc:
            raise api_error("list", probe, exc) from exc
        return list(found.to_dict().get("items") or [])

    def _apply(self, obj, dry_run):
        meta = obj["metadata"]
        kwargs = {"field_manager": self.field_manager, "force_conflicts": True}
        if dry_run:
            kwargs["dry_run"] = "All"
        try:
            result = self.client.server_side_apply(
                self._resource(obj), body=obj, name=meta["name"], namespace=meta.get("namespace"), **kwargs
            )
        except DynamicApiError as exc:
            raise api_error("apply", obj, exc) from exc
        return result.to_dict()

    def apply(self, obj, *, check_mode=False):
        """Make ``obj`` so; returns {changed, before, after} (normalized) for reports and --diff."""
        before = normalize(self.get(obj))
        after = normalize(self._apply(obj, dry_run=True))
        if before == after:
            return {"changed": False, "before": before, "after": after}
        if not check_mode:
            after = normalize(self._apply(obj, dry_run=False))
        return {"changed": True, "before": before, "after": after}

    def planned(self, obj):
        """What applying ``obj`` would do where the server cannot dry-run it (its namespace is to be created
        by this same run, in check mode): create it, as given."""
        return {"changed": True, "before": None, "after": normalize(obj)}

    def delete(self, obj, *, check_mode=False):
        """Delete ``obj`` if it exists and is not already being deleted; returns {changed, before, after}."""
        live = self.get(obj)
        if live is None or (live.get("metadata") or {}).get("deletionTimestamp"):
            # Gone, or its deletion is under way (finalizers, foreground deletion of its dependents).
            return {"changed": False, "before": None, "after": None}
        before = normalize(live)
        if not check_mode:
            meta = obj["metadata"]
            try:
                self.client.delete(
                    self._resource(obj),
                    name=meta["name"],
                    namespace=meta.get("namespace"),
                    body={"propagationPolicy": "Foreground"},
                )
            except NotFoundError:
                pass
            except DynamicApiError as exc:
                raise api_error("delete", obj, exc) from exc
        return {"changed": True, "before": before, "after": None}

    def wait_gone(self, obj, timeout, interval=1.0):
        """Wait until a deleted ``obj`` is gone (its dependents and finalizers done); raises WaitTimeoutError."""
        deadline = self.clock() + timeout
        while True:
            live = self.get(obj)
            if live is None:
                return
            if self.clock() >= deadline:
                finalizers = (live.get("metadata") or {}).get("finalizers") or []
                raise WaitTimeoutError(
                    "%s is still being deleted after %ss (finalizers: %s). The controllers that remove its "
                    "dependents may not be running; look at the object, or raise wait_timeout."
                    % (ref(obj), timeout, ", ".join(finalizers) or "none")
                )
            self.sleep(interval)

    def wait_ready(self, deployment, timeout, interval=2.0):
        """Wait until the Deployment's pods are all updated and ready; raises WaitTimeoutError with its status."""
        deadline = self.clock() + timeout
        while True:
            live = self.get(deployment) or {}
            state = rollout_state(live)
            if state["ready"]:
                return state
            if self.clock() >= deadline:
                raise WaitTimeoutError(
                    "%s is not ready after %ss: %s. Look at its pods' events (kubectl -n %s describe pods -l "
                    "app.kubernetes.io/instance=%s) or raise wait_timeout."
                    % (
                        ref(deployment),
                        timeout,
                        state["summary"],
                        deployment["metadata"]["namespace"],
                        deployment["metadata"]["labels"].get("app.kubernetes.io/instance", ""),
                    )
                )
            self.sleep(interval)


def rollout_state(live):
    """Whether a Deployment has rolled out, from its status."""
    spec = live.get("spec") or {}
    status = live.get("status") or {}
    meta = live.get("metadata") or {}
    wanted = spec.get("replicas", 1)
    ready_wanted = wanted
    annotated = (meta.get("annotations") or {}).get(READY_REPLICAS_ANNOTATION)
    if annotated is not None and str(annotated).isdigit():
        ready_wanted = min(int(annotated), wanted)
    observed = status.get("observedGeneration", 0) >= meta.get("generation", 1)
    updated = status.get("updatedReplicas", 0)
    ready = status.get("readyReplicas", 0)
    available = status.get("availableReplicas", 0)
    # Old pods gone too when not all are meant to be ready: a ready old leader must not pass for the new one.
    old_gone = ready_wanted == wanted or status.get("replicas", 0) <= updated
    done = (
        bool(live)
        and observed
        and updated >= wanted
        and old_gone
        and ready >= ready_wanted
        and available >= ready_wanted
    )
    summary = "%d/%d ready, %d updated, %d available%s" % (
        ready,
        ready_wanted,
        updated,
        available,
        "" if observed else ", newest generation not yet observed",
    )
    return {"ready": done, "summary": summary, "ready_replicas": ready, "replicas": wanted}
