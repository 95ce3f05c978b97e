# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes manifests for llama-api-server backends and the balancer: pure functions.

Inputs are the modules' validated parameters (plain dicts); outputs are plain dicts ready for the
API server. Nothing here talks to a cluster, so every object can be unit-tested and validated
against the Kubernetes schemas.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import re

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
TARGET_LABEL = "llamaedge/target"
WEIGHT_ANNOTATION = "llamaedge/weight"
MODELS_ANNOTATION = "llamaedge/models"
# Parallel slots of each backend pod: the balancer's load-aware routing sends a pod at most that many requests.
SLOTS_ANNOTATION = "llamaedge/slots"
MAX_SLOTS = 1024
ROUTING_POLICIES = ("swrr", "weighted-random", "load-aware")
# crun runs a container as WASM only with one of its handler annotations; without it, a plain Linux process.
CRUN_WASM_ANNOTATIONS = {"module.wasm.image/variant": "compat"}
RUNTIMES = ("auto", "runwasi", "crun")
MANAGED_BY = "edgewasm.llamaedge"
PART_OF = "edgewasm-llamaedge"
POD_MODELS_DIR = "/models"
BALANCER_PORT = 8080
BALANCER_ADMIN_PORT = 8081  # the admin API's own listener: a ClusterIP Service, never the public one
# The balancer's own defaults (balancer/src/edgewasm_balancer/config.py): its drain takes at most
# delay + timeout seconds after SIGTERM, and the pod's grace period must exceed that.
BALANCER_SHUTDOWN_DEFAULTS = {"--shutdown-delay": 0.0, "--shutdown-timeout": 30.0}
GRACE_MARGIN = 15
BALANCER_TOKEN_ENV = "EDGEWASM_BALANCER_ADMIN_TOKEN"  # noqa: S105 - a variable name, not a secret
# The flags of llama-api-server that the structured options map to, in the order they are emitted.
SERVER_FLAGS = (
    ("model_name", "--model-name"),
    ("model_aliases", "--model-alias"),
    ("prompt_template", "--prompt-template"),
    ("ctx_size", "--ctx-size"),
    ("batch_size", "--batch-size"),
    ("n_predict", "--n-predict"),
    ("threads", "--threads"),
    ("n_gpu_layers", "--n-gpu-layers"),
)


# A model name travels in the llamaedge/models annotation (comma-separated) and the OpenAI API's "model";
# an alias also in WASMEDGE_WASINN_PRELOAD (colon-separated): neither may contain its separators.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:+@-]{0,127}$")
MODEL_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
MAX_WEIGHT = 10000  # the balancer's bound (balancer/src/edgewasm_balancer/pool.py; tests/unit/test_balancer_contract.py)
# option -> (lowest, highest) for the numbers llama-api-server takes; None: unbounded that side
SERVER_RANGES = {
    "ctx_size": (1, 1 << 24),
    "batch_size": (1, 1 << 24),
    "n_predict": (-2, 1 << 24),  # -1: until done, -2: until the context is full (llama.cpp)
    "threads": (1, 1024),
    "n_gpu_layers": (0, 100000),
}


def range_error(option, value, low, high, required=False):
    """The message for an integer option outside [low, high] (or missing when ``required``), or None."""
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return "%s=%r must be an integer from %d to %d" % (option, value, low, high)
    return None


def dns_label_error(option, value, max_length=63):
    """Error text when ``value`` is not a DNS-1123 label of at most ``max_length``, else None."""
    if not isinstance(value, str) or not DNS1123_LABEL.match(value) or len(value) > max_length:
        return (
            "%s=%r must be a DNS-1123 label of at most %d characters: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit" % (option, value, max_length)
        )
    return None


def labels(name, component):
    return {
        "app.kubernetes.io/name": "llama-api-server" if component == "backend" else "edgewasm-balancer",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def selector(name, component):
    return {"app.kubernetes.io/instance": name, "app.kubernetes.io/component": component}


# -- backends -----------------------------------------------------------------------------------------
def backend_errors(spec):
    """Every problem with a backend's parameters, each naming the option; empty when usable."""
    errors = []
    name_error = dns_label_error("name", spec["name"], 52)  # room for a "-gN" suffix per node group
    if name_error:
        errors.append(name_error)
    namespace_error = dns_label_error("namespace", spec["namespace"])
    if namespace_error:
        errors.append(namespace_error)
    if range_error("weight", spec["weight"], 1, MAX_WEIGHT, required=True):
        errors.append(
            "weight=%r must be an integer from 1 to %d (its share of the balancer's traffic)"
            % (spec["weight"], MAX_WEIGHT)
        )
    if spec["replicas"] < 0:
        errors.append("replicas=%r must be >= 0" % spec["replicas"])
    if range_error("slots", spec.get("slots", 1), 1, MAX_SLOTS, required=True):
        errors.append(
            "slots=%r must be an integer from 1 to %d (requests one pod serves at once)"
            % (spec.get("slots"), MAX_SLOTS)
        )
    errors.extend(
        e
        for e in [range_error("port", spec.get("port"), 1, 65535, required=True)]
        + [range_error(option, spec.get(option), low, high) for option, (low, high) in SERVER_RANGES.items()]
        + [range_error("startup_seconds", spec.get("startup_seconds"), 1, 86400, required=True)]
        if e
    )
    errors.extend(_model_name_errors(spec))
    if not spec.get("image"):
        errors.append("image is required: the OCI image holding llama-api-server.wasm")
    model_file = spec.get("model_file") or ""
    if not model_file or "/" in model_file or model_file in (".", ".."):
        errors.append("model_file=%r must be a file name inside models_dir, without '/'" % model_file)
    if not spec.get("models_dir", "").startswith("/"):
        errors.append("models_dir=%r must be an absolute path on the nodes" % spec.get("models_dir"))
    if not spec.get("prompt_template"):
        errors.append("prompt_template is required by llama-api-server (for example llama-3-chat)")
    if not spec.get("node_groups"):
        errors.append(
            "node_groups is empty: give at least one group of nodes that hold the model and the runtime, "
            "with the volumes, volume_mounts and env wasmedge_plugin_deps returned on them"
        )
    for index, group in enumerate(spec.get("node_groups") or []):
        if not group.get("nodes"):
            errors.append("node_groups[%d].nodes must list at least one node name" % index)
    return errors


def _model_name_errors(spec):
    errors = []
    name = spec.get("model_name")
    if name is not None and not MODEL_NAME.match(name):
        errors.append(
            "model_name=%r must be one model id: letters, digits and . _ - / : + @ (no commas or spaces; "
            "it is the OpenAI API's model and goes into the llamaedge/models annotation)" % name
        )
    for alias in spec.get("model_aliases") or []:
        if not MODEL_ALIAS.match(alias or ""):
            errors.append(
                "model_aliases: %r must be letters, digits and . _ - only (the first alias names the model "
                "in WASMEDGE_WASINN_PRELOAD, whose fields are separated by ':')" % alias
            )
    backend = spec.get("wasinn_backend") or ""
    if not re.match(r"^[A-Za-z0-9_]+$", backend):
        errors.append("wasinn_backend=%r must be a WASI-NN backend name such as GGML" % backend)
    return errors


def group_node_mounts(node_mounts):
    """Node groups from a node -> wasmedge_plugin_deps result mapping: nodes with identical volumes,
    mounts and env share a group (and a Deployment). Deterministic: sorted by first node name."""
    groups = {}
    for node in sorted(node_mounts):
        result = node_mounts[node] or {}
        shape = {key: result.get(key) or [] for key in ("volumes", "volume_mounts", "env")}
        key = repr(sorted((k, repr(v)) for k, v in shape.items()))
        if key not in groups:
            groups[key] = dict(shape, nodes=[])
        groups[key]["nodes"].append(node)
    return sorted(groups.values(), key=lambda g: g["nodes"][0])


def server_args(spec):
    """llama-api-server's command-line arguments from the structured options."""
    args = []
    for key, flag in SERVER_FLAGS:
        value = spec.get(key)
        if value is None or value == []:
            continue
        if isinstance(value, list):
            value = ",".join(value)
        args.extend([flag, str(value)])
    args.extend(["--port", str(spec["port"])])
    return args


def preload(spec):
    """WASMEDGE_WASINN_PRELOAD: alias:backend:target:path (the alias must be the server's first alias)."""
    alias = (spec.get("model_aliases") or ["default"])[0]
    return "%s:%s:%s:%s/%s" % (
        alias,
        spec["wasinn_backend"],
        spec["wasinn_target"],
        POD_MODELS_DIR,
        spec["model_file"],
    )


def split_replicas(total, groups):
    """Replicas per node group, in proportion to each group's node count (largest remainder)."""
    weights = [len(g["nodes"]) for g in groups]
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    order = sorted(range(len(groups)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _probe(path, port, period, failures, delay=0):
    probe = {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }
    if delay:
        probe["initialDelaySeconds"] = delay
    return probe


def _backend_container(spec, group):
    model_volume = "model"
    env = [dict(e) for e in group.get("env") or []]
    env.append({"name": "WASMEDGE_WASINN_PRELOAD", "value": preload(spec)})
    env.extend(dict(e) for e in spec.get("extra_env") or [])
    port = spec["port"]
    container = {
        "name": "llama-api-server",
        "image": spec["image"],
        "imagePullPolicy": spec["image_pull_policy"],
        "command": ["llama-api-server.wasm"],
        "args": server_args(spec),
        "env": env,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "volumeMounts": [dict(m) for m in group.get("volume_mounts") or []]
        + [
            {
                "name": model_volume,
                "mountPath": "%s/%s" % (POD_MODELS_DIR, spec["model_file"]),
                "readOnly": True,
            }
        ],
        # Loading a model takes a while: the startup probe allows it, then readiness and liveness take over.
        # llama-api-server has no /health: /v1/models answers once the model is loaded, /echo always.
        "startupProbe": _probe("/v1/models", port, 5, spec["startup_seconds"] // 5 or 1),
        "readinessProbe": _probe("/v1/models", port, 10, 3),
        "livenessProbe": _probe("/echo", port, 20, 3),
    }
    if spec.get("resources"):
        container["resources"] = spec["resources"]
    return container


def runtime_kind(spec):
    """runwasi or crun: the runtime behind the RuntimeClass (auto: crun when its name says crun)."""
    kind = spec.get("runtime") or "auto"
    if kind == "auto":
        return "crun" if "crun" in (spec.get("runtime_class") or "") else "runwasi"
    return kind


def pod_annotations(spec):
    return dict(CRUN_WASM_ANNOTATIONS) if runtime_kind(spec) == "crun" else {}


def _backend_deployment(spec, group, name, replicas):
    model_path = "%s/%s" % (spec["models_dir"].rstrip("/"), spec["model_file"])
    pod_labels = dict(labels(spec["name"], "backend"), **{"llamaedge/node-group": name})
    pod_spec = {
        "runtimeClassName": spec["runtime_class"],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": sorted(group["nodes"]),
                                }
                            ]
                        }
                    ]
                }
            }
        },
        "containers": [_backend_container(spec, group)],
        "volumes": [dict(v) for v in group.get("volumes") or []]
        + [{"name": "model", "hostPath": {"path": model_path, "type": "File"}}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": spec["namespace"], "labels": dict(pod_labels)},
        "spec": {
            "replicas": replicas,
            "selector": {
                "matchLabels": dict(selector(spec["name"], "backend"), **{"llamaedge/node-group": name})
            },
            "template": {"metadata": _pod_metadata(pod_labels, pod_annotations(spec)), "spec": pod_spec},
        },
    }


def _pod_metadata(pod_labels, annotations):
    metadata = {"labels": pod_labels}
    if annotations:
        metadata["annotations"] = annotations
    return metadata


def backend_service(spec):
    # Only the API model id: the aliases (the first is the preload's, "default") name WASI-NN graphs inside the
    # server, and a request for model "default" would be routed to a backend that does not answer to it.
    models = [spec["model_name"]]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": spec["name"],
            "namespace": spec["namespace"],
            "labels": dict(labels(spec["name"], "backend"), **{TARGET_LABEL: "true"}),
            "annotations": {
                WEIGHT_ANNOTATION: str(spec["weight"]),
                MODELS_ANNOTATION: ",".join(models),
                SLOTS_ANNOTATION: str(spec.get("slots", 1)),
            },
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector(spec["name"], "backend"),
            "ports": [{"name": "http", "port": spec["port"], "targetPort": "http", "protocol": "TCP"}],
        },
    }


def backend_manifests(spec):
    """The Deployments (one per node group) and the Service of one backend."""
    groups = spec["node_groups"]
    shares = split_replicas(spec["replicas"], groups)
    objects = []
    for index, group in enumerate(groups):
        replicas = shares[index]
        name = spec["name"] if len(groups) == 1 else "%s-g%d" % (spec["name"], index + 1)
        objects.append(_backend_deployment(spec, group, name, replicas))
    objects.append(backend_service(spec))
    return objects


# -- balancer -----------------------------------------------------------------------------------------
def balancer_errors(spec):
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
    return errors


def _extra_args_errors(extra_args):
    errors = []
    for flag in ("--listen", "--admin-listen", "--kubernetes", "--admin-token-file", "--routing"):
        if any(a == flag or a.startswith(flag + "=") for a in extra_args):
            errors.append(
                "extra_args must not set %s: the module sets it (admin API: use admin_api; routing: use routing)"
                % flag
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
    return objects


def shutdown_seconds(extra_args):
    """delay + timeout of the balancer's drain, from --shutdown-delay/--shutdown-timeout in extra_args."""
    values = dict(BALANCER_SHUTDOWN_DEFAULTS)
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
    args.extend(spec.get("extra_args") or [])
    env = []
    ports = [{"name": "http", "containerPort": BALANCER_PORT, "protocol": "TCP"}]
    if admin_enabled(spec):
        ports.append({"name": "admin", "containerPort": BALANCER_ADMIN_PORT, "protocol": "TCP"})
        env.append(
            {
                "name": BALANCER_TOKEN_ENV,
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
        "readinessProbe": _probe("/readyz", "http", 5, 2),
        "livenessProbe": _probe("/healthz", "http", 10, 3, delay=5),
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


def balancer_manifests(spec):
    """ServiceAccount, RBAC, (token Secret,) Deployment and Service of the balancer."""
    name, ns = spec["name"], spec["namespace"]
    meta = {"name": name, "namespace": ns, "labels": labels(name, "balancer")}
    service_port = {"name": "http", "port": spec["port"], "targetPort": "http", "protocol": "TCP"}
    if spec["service_type"] == "NodePort" and spec.get("node_port"):
        service_port["nodePort"] = spec["node_port"]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": dict(meta),
        "spec": {
            "replicas": spec["replicas"],
            "selector": {"matchLabels": selector(name, "balancer")},
            "template": {
                "metadata": {"labels": labels(name, "balancer")},
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": True,
                    "terminationGracePeriodSeconds": grace_period(spec.get("extra_args")),
                    "containers": [_balancer_container(spec)],
                },
            },
        },
    }
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
