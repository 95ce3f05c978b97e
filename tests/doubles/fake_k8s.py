"""A FAKE Kubernetes API behind the DynamicClient interface, for unit tests.

Kept only for what the real API server of tests/controlplane cannot produce on demand: injected failures
(403, 5xx, timeouts per verb), a Deployment that rolls out (the real one has no nodes), objects stuck in
deletion, and a log of every call (to prove that bad input makes none). Apply, dry-run, defaulting, diffs,
RBAC, deletes and watches are tested against the real server (tests/cluster).

It keeps objects in memory and behaves like an API server where the modules can notice: server-side
apply stores the object with server-managed metadata (uid, resourceVersion, generation, managedFields),
defaults a few fields and a status, `dry_run="All"` returns the result without storing it, reads of
missing objects raise NotFoundError, and failures can be injected per verb.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError


class Instance:
    def __init__(self, data):
        self._data = data

    def to_dict(self):
        return copy.deepcopy(self._data)


class Resource:
    def __init__(self, api_version, kind):
        self.api_version = api_version
        self.kind = kind


class Resources:
    def get(self, api_version, kind):
        return Resource(api_version, kind)


def api_error(status, message, cls=DynamicApiError):
    body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "code": status})
    exc = ApiException(status=status, reason=message)
    exc.body = body
    exc.headers = {"Content-Type": "application/json"}
    return cls(exc)


def _pairs(selector):
    return dict(part.split("=", 1) for part in (selector or "").split(",") if part)


def _field(obj, dotted):
    for key in dotted.split("."):
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


class FakeDynamicClient:
    def __init__(self):
        self.resources = Resources()
        self.objects = {}
        self.versions = itertools.count(1000)
        self.calls = []
        self.fail = {}  # verb -> exception to raise
        self.rollout_ready = True

    def _key(self, resource, name, namespace):
        return (resource.kind, namespace, name)

    def _maybe_fail(self, verb):
        if verb in self.fail:
            raise self.fail[verb]

    def get(self, resource, name=None, namespace=None, label_selector=None, field_selector=None, **kwargs):
        self.calls.append(("get", resource.kind, namespace, name or label_selector))
        self._maybe_fail("get")
        if name is None:
            wanted = _pairs(label_selector)
            items = [
                copy.deepcopy(obj)
                for (kind, ns, _name), obj in sorted(self.objects.items())
                if kind == resource.kind
                and ns == namespace
                and all(obj["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
                and all(_field(obj, k) == v for k, v in _pairs(field_selector).items())
            ]
            return Instance({"items": items})
        obj = self.objects.get(self._key(resource, name, namespace))
        if obj is None:
            raise api_error(404, f"{resource.kind} {name!r} not found", NotFoundError)
        return Instance(obj)

    def server_side_apply(
        self,
        resource,
        body=None,
        name=None,
        namespace=None,
        force_conflicts=None,
        field_manager=None,
        dry_run=None,
        **kwargs,
    ):
        self.calls.append(("apply-dry-run" if dry_run else "apply", resource.kind, namespace, name))
        self._maybe_fail("apply-dry-run" if dry_run else "apply")
        assert field_manager == "edgewasm.llamaedge" and force_conflicts is True
        key = self._key(resource, name, namespace)
        live = self.objects.get(key)
        stored = copy.deepcopy(body)
        meta = stored.setdefault("metadata", {})
        old_meta = (live or {}).get("metadata", {})
        meta["uid"] = old_meta.get("uid", f"uid-{resource.kind.lower()}-{name}")
        meta["creationTimestamp"] = old_meta.get("creationTimestamp", "2026-11-23T00:00:00Z")
        same_spec = live is not None and live.get("spec") == self._defaulted(resource, stored).get("spec")
        meta["generation"] = old_meta.get("generation", 0) + (0 if same_spec else 1)
        meta["resourceVersion"] = str(next(self.versions))
        meta["managedFields"] = [
            {"manager": field_manager, "operation": "Apply", "time": meta["resourceVersion"]}
        ]
        stored = self._defaulted(resource, stored)
        if not dry_run:
            self.objects[key] = stored
        return Instance(stored)

    def _defaulted(self, resource, obj):
        obj = copy.deepcopy(obj)
        if resource.kind == "Deployment":
            spec = obj.setdefault("spec", {})
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            spec["template"]["spec"].setdefault("restartPolicy", "Always")
            replicas = spec.get("replicas", 1)
            ready = replicas if self.rollout_ready else 0
            obj["status"] = {
                "observedGeneration": obj["metadata"].get("generation", 1),
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": ready,
                "availableReplicas": ready,
            }
            obj["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = "1"
        if resource.kind == "Secret" and "stringData" in obj:
            # Like the API server: stringData is write-only, merged into base64 data.
            data = obj.setdefault("data", {})
            data.update({k: base64.b64encode(v.encode()).decode() for k, v in obj.pop("stringData").items()})
        if resource.kind == "Service":
            obj["spec"].setdefault("clusterIP", "10.43.0.17")
            obj["spec"].setdefault("sessionAffinity", "None")
        return obj

    def put(self, obj):
        """Store an object as the cluster would have it (pods, events, slices made by controllers)."""
        meta = obj["metadata"]
        self.objects[(obj["kind"], meta.get("namespace"), meta["name"])] = copy.deepcopy(obj)

    def delete(self, resource, name=None, namespace=None, body=None, **kwargs):
        self.calls.append(("delete", resource.kind, namespace, name))
        self._maybe_fail("delete")
        if self.objects.pop(self._key(resource, name, namespace), None) is None:
            raise api_error(404, "not found", NotFoundError)
