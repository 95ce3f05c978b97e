# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Manifests of the balancer: ServiceAccount, RBAC per watched namespace, token Secret, Deployment,
Services; and its validation. Pure functions over llama_balancer's parameters."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import math
import re
import secrets

from ansible_collections.edgewasm.llamaedge.plugins.module_utils.k8s_apply import READY_REPLICAS_ANNOTATION
from ansible_collections.edgewasm.llamaedge.plugins.module_utils.llama_common import (
    dns_label_error,
    label_selector,
    labels,
    probe,
    range_error,
    selector,
)
from ansible_collections.edgewasm.llamaedge.plugins.module_utils.llama_contract import (
    ADMIN_TOKEN_ENV,
    ROUTING_POLICIES,
    SHUTDOWN_DEFAULTS,
)

BALANCER_PORT = 8080
BALANCER_ADMIN_PORT = 8081  # the admin API's own listener: a ClusterIP Service, never the public one
BALANCER_METRICS_PORT = 8082  # Prometheus' listener: a container port in no Service (the series name pods)
GRACE_MARGIN = 15
# With leader election: the shutdown delay when extra_args sets none. The leader that gets SIGTERM hands the
# Lease over at once and keeps routing what still reaches it for this long: Kubernetes sends a terminating pod
# new connections while no other endpoint is ready, so a rollout that replaces every pod at once (the only
# kind that can end when one pod is ready) loses no request while the new leader starts.
ELECTION_SHUTDOWN_DELAY = 10
ELECTION_FLAGS = (
    "--leader-election",
    "--lease-name",
    "--lease-namespace",
    "--identity",
    "--lease-duration",
    "--renew-deadline",
    "--retry-period",
)
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}\Z")


def balancer_errors(spec):
    """Every problem with the balancer's parameters, each naming the option; empty when usable."""
    errors = []
    for option in ("name", "namespace"):
        error = dns_label_error(option, spec[option])
        if error:
            errors.append(error)
    for ns in spec["watch_namespaces"]:
        error = dns_label_error("watch_namespaces[]", ns)
        if error:
            errors.append(error)
    if not spec.get("image"):
        errors.append("image is required: the edgewasm-balancer image built from balancer/Containerfile")
    if spec["service_type"] != "NodePort" and spec.get("node_port"):
        errors.append("node_port is only used with service_type=NodePort")
    if spec.get("node_port") and not 30000 <= spec["node_port"] <= 32767:
        errors.append("node_port=%r must be in the NodePort range 30000-32767" % spec["node_port"])
    if spec["replicas"] < 1:
        errors.append("replicas=%r must be >= 1" % spec["replicas"])
    port = range_error("port", spec.get("port"), 1, 65535, required=True)
    if port:
        errors.append(port)
    if not SECRET_KEY.match(spec.get("admin_token_key") or ""):
        errors.append(
            "admin_token_key=%r must be a Secret key: letters, digits, '-', '_' and '.'"
            % spec.get("admin_token_key")
        )
    if (spec.get("routing") or "swrr") not in ROUTING_POLICIES:
        errors.append("routing=%r must be one of %s" % (spec.get("routing"), ", ".join(ROUTING_POLICIES)))
    errors.extend(_extra_args_errors(spec.get("extra_args") or []))
    errors.extend(_election_errors(spec))
    return errors


def election_enabled(spec):
    """Leader election: as asked, else on with more than one replica (their slot counts must be one)."""
    asked = spec.get("leader_election")
    return spec["replicas"] > 1 if asked is None else bool(asked)


def _election_errors(spec):
    duration = spec.get("lease_duration", 6)
    renew = spec.get("renew_deadline", 4)
    retry = spec.get("retry_period", 1)
    errors = []
    if not (isinstance(duration, int) and duration >= 1):
        errors.append("lease_duration=%r must be a whole number of seconds >= 1" % (duration,))
    elif not 0 < retry * 1.2 < renew < duration:
        errors.append(
            "lease_duration=%r, renew_deadline=%r and retry_period=%r must keep 1.2 x retry_period < renew_deadline "
            "< lease_duration: a leader cut off from the API must stop before another may take over"
            % (duration, renew, retry)
        )
    return errors


def _extra_args_errors(extra_args):
    errors = []
    options = [str(a).split("=", 1)[0] for a in extra_args if str(a).startswith("--") and len(str(a)) > 2]
    owned = (
        "--listen",
        "--admin-listen",
        "--kubernetes",
        "--admin-token-file",
        "--routing",
        "--metrics-listen",
        "--backend-header",
        *ELECTION_FLAGS,
    )
    for flag in owned:
        # A prefix too: the balancer refuses abbreviations, but the pod would only fail when it starts.
        if any(flag.startswith(option) for option in options):
            errors.append(
                "extra_args must not set %s: the module sets it (admin API: use admin_api; routing: use routing; "
                "metrics: use metrics; the backend header: use backend_header; leader election: use "
                "leader_election, lease_duration, renew_deadline and retry_period)" % flag
            )
    try:
        shutdown = shutdown_seconds(extra_args)
    except (TypeError, ValueError):
        shutdown = -1
    if not 0 <= shutdown <= 3600:
        errors.append(
            "extra_args: --shutdown-delay + --shutdown-timeout must be numbers adding up to 0-3600 s"
        )
    return errors


def _election_rbac(spec):
    """The Lease of leader election, in the balancer's own namespace: get and update that one Lease by name.
    Create cannot be limited to a name (Kubernetes RBAC authorizes a create before the name is known): the
    Role allows creating Leases in this namespace, and nothing else about them."""
    name = "%s-leader-election" % spec["name"]
    meta = {"name": name, "namespace": spec["namespace"], "labels": labels(spec["name"], "balancer")}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": dict(meta),
        "rules": [
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": [spec["name"]],
                "verbs": ["get", "update"],
            },
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": dict(meta),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": spec["name"], "namespace": spec["namespace"]}],
    }
    return [role, binding]


def _balancer_rbac(spec):
    """Read-only access to Services and EndpointSlices, one Role per watched namespace."""
    objects = []
    for ns in sorted(set(spec["watch_namespaces"])):
        meta = {"name": spec["name"], "namespace": ns, "labels": labels(spec["name"], "balancer")}
        objects.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": dict(meta),
                "rules": [
                    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": ["get", "list", "watch"],
                    },
                ],
            }
        )
        objects.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": dict(meta),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": spec["name"]},
                "subjects": [
                    {"kind": "ServiceAccount", "name": spec["name"], "namespace": spec["namespace"]}
                ],
            }
        )
    if election_enabled(spec):
        objects.extend(_election_rbac(spec))
    return objects


def shutdown_seconds(extra_args):
    """delay + timeout of the balancer's drain, from --shutdown-delay/--shutdown-timeout in extra_args."""
    values = dict(SHUTDOWN_DEFAULTS)
    args = list(extra_args or [])
    for index, arg in enumerate(args):
        flag, sep, value = arg.partition("=")
        if flag in values:
            raw = value if sep else (args[index + 1] if index + 1 < len(args) else "")
            values[flag] = float(raw)  # ValueError: reported by balancer_errors
    return values["--shutdown-delay"] + values["--shutdown-timeout"]


def grace_period(extra_args):
    return math.ceil(shutdown_seconds(extra_args)) + GRACE_MARGIN


def admin_enabled(spec):
    return bool(spec.get("admin_token_secret"))


def _balancer_container(spec):
    args = [
        "--kubernetes",
        "--listen",
        "0.0.0.0:%d" % BALANCER_PORT,
        "--routing",
        spec.get("routing") or "swrr",
    ]
    for ns in spec["watch_namespaces"]:
        args.extend(["--namespace", ns])
    if admin_enabled(spec):
        args.extend(["--admin-listen", "0.0.0.0:%d" % BALANCER_ADMIN_PORT])
    # /metrics names backends and pod addresses: its own port, in no Service (Prometheus scrapes pods).
    metrics = "0.0.0.0:%d" % BALANCER_METRICS_PORT if spec.get("metrics", True) else "off"
    args.extend(["--metrics-listen", metrics])
    if spec.get("backend_header"):
        args.append("--backend-header")
    env = []
    election = election_enabled(spec)
    if election:
        args.extend(_election_args(spec))
        # The Lease names each replica by its pod (the downward API): unique within the Deployment.
        env.extend(
            {"name": variable, "valueFrom": {"fieldRef": {"fieldPath": "metadata.%s" % field}}}
            for variable, field in (("POD_NAME", "name"), ("POD_NAMESPACE", "namespace"))
        )
    args.extend(spec.get("extra_args") or [])
    ports = [{"name": "http", "containerPort": BALANCER_PORT, "protocol": "TCP"}]
    if spec.get("metrics", True):
        ports.append({"name": "metrics", "containerPort": BALANCER_METRICS_PORT, "protocol": "TCP"})
    if admin_enabled(spec):
        ports.append({"name": "admin", "containerPort": BALANCER_ADMIN_PORT, "protocol": "TCP"})
        env.append(
            {
                "name": ADMIN_TOKEN_ENV,
                "valueFrom": {
                    "secretKeyRef": {"name": spec["admin_token_secret"], "key": spec["admin_token_key"]}
                },
            }
        )
    container = {
        "name": "balancer",
        "image": spec["image"],
        "imagePullPolicy": spec["image_pull_policy"],
        "args": args,
        "ports": ports,
        # With election, readiness is leadership: probed every second, so a new leader gets traffic at once.
        "readinessProbe": dict(probe("/readyz", "http", 1, 1), timeoutSeconds=1)
        if election
        else probe("/readyz", "http", 5, 2),
        "livenessProbe": probe("/healthz", "http", 10, 3, delay=5),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": spec.get("resources")
        or {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        },
    }
    if env:
        container["env"] = env
    return container


def _election_args(spec):
    args = [
        "--leader-election",
        "--lease-name",
        spec["name"],
        "--lease-namespace",
        spec["namespace"],
        "--lease-duration",
        str(spec.get("lease_duration", 6)),
        "--renew-deadline",
        "%g" % spec.get("renew_deadline", 4),
        "--retry-period",
        "%g" % spec.get("retry_period", 1),
    ]
    if not any(str(a).startswith("--shutdown-delay") for a in spec.get("extra_args") or []):
        args.extend(["--shutdown-delay", str(ELECTION_SHUTDOWN_DELAY)])
    return args


def _strategy(spec):
    """With election only the leader is ready, so a rollout that waits for new pods to be ready before it
    stops old ones never ends: every pod is replaced at once (new ones first), and the old leader's shutdown
    delay bridges the new leader's start."""
    if not election_enabled(spec):
        return None
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "100%"}}


def token_secret(spec):
    """The Secret holding the admin token the module manages: the token it was given
    (``admin_token``), or the value already in the cluster (``admin_token_data``, base64)."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": spec["admin_token_secret"],
            "namespace": spec["namespace"],
            "labels": labels(spec["name"], "balancer"),
        },
        "type": "Opaque",
    }
    if spec.get("admin_token"):
        secret["stringData"] = {spec["admin_token_key"]: spec["admin_token"]}
    else:
        secret["data"] = {spec["admin_token_key"]: spec["admin_token_data"]}
    return secret


def admin_service(spec):
    """The admin API's Service: ClusterIP only, whatever type the public Service has."""
    name = "%s-admin" % spec["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": spec["namespace"],
            "labels": labels(spec["name"], "balancer"),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector(spec["name"], "balancer"),
            "ports": [
                {"name": "admin", "port": BALANCER_ADMIN_PORT, "targetPort": "admin", "protocol": "TCP"}
            ],
        },
    }


def _pod_metadata(name, spec):
    """The pods' labels, and the prometheus.io annotations scrape configs commonly key on."""
    metadata = {"labels": labels(name, "balancer")}
    if spec.get("metrics", True):
        metadata["annotations"] = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(BALANCER_METRICS_PORT),
            "prometheus.io/path": "/metrics",
        }
    return metadata


def balancer_manifests(spec):
    """ServiceAccount, RBAC, (token Secret,) Deployment and Service of the balancer."""
    name, ns = spec["name"], spec["namespace"]
    meta = {"name": name, "namespace": ns, "labels": labels(name, "balancer")}
    service_port = {"name": "http", "port": spec["port"], "targetPort": "http", "protocol": "TCP"}
    if spec["service_type"] == "NodePort" and spec.get("node_port"):
        service_port["nodePort"] = spec["node_port"]
    container = _balancer_container(spec)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": dict(meta),
        "spec": {
            "replicas": spec["replicas"],
            "selector": {"matchLabels": selector(name, "balancer")},
            "template": {
                "metadata": _pod_metadata(name, spec),
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": True,
                    "terminationGracePeriodSeconds": grace_period(container["args"]),
                    "containers": [container],
                },
            },
        },
    }
    strategy = _strategy(spec)
    if strategy is not None:
        deployment["spec"]["strategy"] = strategy
        # What "rolled out" means here (k8s_apply.rollout_state): every pod updated, one of them ready.
        deployment["metadata"]["annotations"] = {READY_REPLICAS_ANNOTATION: "1"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": dict(meta),
        "spec": {
            "type": spec["service_type"],
            "selector": selector(name, "balancer"),
            "ports": [service_port],
        },
    }
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(meta)}
    managed = spec.get("admin_token") or spec.get("admin_token_data")
    secret = [token_secret(spec)] if managed else []
    admin = [admin_service(spec)] if admin_enabled(spec) else []
    return [account, *_balancer_rbac(spec), *secret, deployment, service, *admin]


def spec_from(params):
    spec = dict(params)
    spec["watch_namespaces"] = list(params["watch_namespaces"]) or [params["namespace"]]
    admin = params["admin_api"] or params.get("admin_token") or params.get("admin_token_secret")
    if admin and not params.get("admin_token_secret"):
        spec["admin_token_secret"] = "%s-admin" % params["name"]
    # A token of our own making: kept in the Secret across runs (see generated_token).
    spec["generate_token"] = bool(
        admin and not params.get("admin_token") and not params.get("admin_token_secret")
    )
    if spec["generate_token"]:
        spec["admin_token_data"] = None  # read from the cluster (or made) before anything is applied
    return spec


def objects_for(params):
    """The balancer's objects, or the errors that stop the module before any API call."""
    spec = spec_from(params)
    if params["state"] == "absent":
        spec["image"] = spec["image"] or "absent"  # names are all that deletion needs
    errors = balancer_errors(spec)
    if errors:
        return None, errors
    return balancer_manifests(spec), []


def generated_token(params):
    """For admin_api without a given token: a ``prepare`` hook that keeps the token already in the
    cluster's Secret, or makes a new random one the first time."""
    spec = spec_from(params)
    if not spec["generate_token"] or params["state"] == "absent":
        return None

    def prepare(cluster):
        probe = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": spec["admin_token_secret"], "namespace": spec["namespace"]},
        }
        live = cluster.get(probe) or {}
        existing = (live.get("data") or {}).get(spec["admin_token_key"])
        fresh = base64.b64encode(secrets.token_urlsafe(32).encode("ascii")).decode("ascii")
        spec["admin_token_data"] = existing or fresh
        return balancer_manifests(spec)

    return prepare


def owned_selectors(params):
    """What finds the objects this balancer made earlier: a token Secret and an admin Service it no
    longer needs, Roles and RoleBindings in namespaces it no longer watches (among those named now)."""
    selector_text = label_selector(selector(params["name"], "balancer"))
    found = [
        ("v1", "Secret", params["namespace"], selector_text),
        ("v1", "Service", params["namespace"], selector_text),
    ]
    for ns in sorted(set(spec_from(params)["watch_namespaces"]) | {params["namespace"]}):
        found.append(("rbac.authorization.k8s.io/v1", "RoleBinding", ns, selector_text))
        found.append(("rbac.authorization.k8s.io/v1", "Role", ns, selector_text))
    return found
