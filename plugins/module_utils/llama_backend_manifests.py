# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Manifests of one llama-api-server backend (Deployments per node group + Service), and its validation.

Pure functions: inputs are llama_backend's parameters (plain dicts), outputs plain dicts for the API
server. backend_errors is the one place the backend rules live: the module and the
llama_backends role (through the llama_backend_errors filter) both use it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.edgewasm.llamaedge.plugins.module_utils.llama_common import (
    dns_label_error,
    label_selector,
    labels,
    probe,
    range_error,
    selector,
)
from ansible_collections.edgewasm.llamaedge.plugins.module_utils.llama_contract import (
    MAX_SLOTS,
    MAX_WEIGHT,
    MIN_SLOTS,
    MIN_WEIGHT,
    MODELS_ANNOTATION,
    SLOTS_ANNOTATION,
    TARGET_LABEL,
    WEIGHT_ANNOTATION,
)

# crun runs a container as WASM only with one of its handler annotations; without it, a plain Linux process.
CRUN_WASM_ANNOTATIONS = {"module.wasm.image/variant": "compat"}
RUNTIMES = ("auto", "runwasi", "crun")
# The RuntimeClasses the containerd_wasm role declares, and what runtime_class=auto picks between: a stock
# llama-api-server.wasm imports wasi:logging (its wasi_logger setup), which crun's and the CLI's WasmEdge provide
# and runwasi's shim does not (it registers WASI and wasi_nn only): such an image runs on crun.
CRUN_CLASS = "crun-wasm"
SHIM_CLASS = "wasmedge-nn"
POD_MODELS_DIR = "/models"
# Options llama_backend requires with state=present.
REQUIRED_PRESENT = ("image", "model_file", "model_name", "prompt_template")
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
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:+@-]{0,127}\Z")
MODEL_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
# A deleted backend pod's grace period, in seconds. The server runs as its pod's PID 1 with no SIGTERM
# handler (under runwasi's shim and crun alike), so it never stops early: this is how long the requests it
# still holds get, out of the balancer's endpoints, before kubelet kills it.
MAX_GRACE_SECONDS = 86400
# option -> (lowest, highest) for the numbers llama-api-server takes; None: unbounded that side
SERVER_RANGES = {
    "ctx_size": (1, 1 << 24),
    "batch_size": (1, 1 << 24),
    "n_predict": (-2, 1 << 24),  # -1: until done, -2: until the context is full (llama.cpp)
    "threads": (1, 1024),
    "n_gpu_layers": (0, 100000),
}


def backend_errors(spec):
    """Every problem with a backend's parameters, each naming the option; empty when usable."""
    errors = []
    name_error = dns_label_error("name", spec["name"], 52)  # room for a "-gN" suffix per node group
    if name_error:
        errors.append(name_error)
    namespace_error = dns_label_error("namespace", spec["namespace"])
    if namespace_error:
        errors.append(namespace_error)
    if range_error("weight", spec["weight"], MIN_WEIGHT, MAX_WEIGHT, required=True):
        errors.append(
            "weight=%r must be an integer from 1 to %d (its share of the balancer's traffic)"
            % (spec["weight"], MAX_WEIGHT)
        )
    if spec["replicas"] < 0:
        errors.append("replicas=%r must be >= 0" % spec["replicas"])
    if range_error("slots", spec.get("slots", 1), MIN_SLOTS, MAX_SLOTS, required=True):
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
    errors.extend(_grace_period_errors(spec))
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
    return errors + runtime_errors(spec)


def _grace_period_errors(spec):
    seconds = spec.get("termination_grace_period")
    if range_error("termination_grace_period", seconds, 0, MAX_GRACE_SECONDS):
        return [
            "termination_grace_period=%r must be an integer from 0 to %d (seconds a deleted pod keeps its "
            "requests before it is killed)" % (seconds, MAX_GRACE_SECONDS)
        ]
    return []


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
    if not re.match(r"^[A-Za-z0-9_]+\Z", backend):
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
        # crun and WasmEdge print why a module did not start (an unknown import, a model llama.cpp refuses)
        # on the container's output: the pod status carries its tail, where the verify role reads it.
        "terminationMessagePolicy": "FallbackToLogsOnError",
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
        "startupProbe": probe("/v1/models", port, 5, spec["startup_seconds"] // 5 or 1),
        "readinessProbe": probe("/v1/models", port, 10, 3),
        "livenessProbe": probe("/echo", port, 20, 3),
    }
    if spec.get("resources"):
        container["resources"] = spec["resources"]
    return container


def runtime_class(spec):
    """The RuntimeClass of the pods: runtime_class, or with auto the one that can run the image (crun-wasm when
    its wasm imports wasi:logging, as a stock llama-api-server.wasm does; the shim's wasmedge-nn otherwise), or
    the one that runtime names."""
    chosen = spec.get("runtime_class") or "auto"
    if chosen != "auto":
        return chosen
    kind = spec.get("runtime") or "auto"
    if kind == "auto":
        return CRUN_CLASS if spec.get("image_wasi_logging", True) else SHIM_CLASS
    return CRUN_CLASS if kind == "crun" else SHIM_CLASS


def runtime_kind(spec):
    """runwasi or crun: the runtime behind the RuntimeClass (auto: crun when its name says crun)."""
    kind = spec.get("runtime") or "auto"
    if kind == "auto":
        return "crun" if "crun" in runtime_class(spec) else "runwasi"
    return kind


def runtime_errors(spec):
    """What the chosen runtime cannot run: a wasm importing wasi:logging on runwasi's shim; several plugin
    directories for crun (crun 1.29.1 hands WASMEDGE_PLUGIN_PATH to WasmEdge whole, without a ':' split)."""
    errors = []
    kind = runtime_kind(spec)
    if kind == "runwasi" and spec.get("image_wasi_logging", True):
        errors.append(
            "runtime_class=%s is runwasi's WasmEdge shim, which provides WASI and wasi_nn only, and image_wasi_logging "
            "is true (the image's llama-api-server.wasm imports wasi:logging, as every stock release does): its pods "
            'would fail with "unknown import"; use runtime_class %s (or auto), or an image built without its '
            "wasi_logger setup with image_wasi_logging=false" % (runtime_class(spec), CRUN_CLASS)
        )
    if kind == "crun":
        for index, group in enumerate(spec.get("node_groups") or []):
            for item in group.get("env") or []:
                if item.get("name") == "WASMEDGE_PLUGIN_PATH" and ":" in str(item.get("value") or ""):
                    errors.append(
                        "node_groups[%d] (%s): WASMEDGE_PLUGIN_PATH=%s names several directories, and crun passes it "
                        "to WasmEdge whole (no ':' split): give crun one plugin directory (llama_backends_plugin_paths)"
                        % (index, ", ".join(group.get("nodes") or []), item.get("value"))
                    )
    return errors


def pod_annotations(spec):
    return dict(CRUN_WASM_ANNOTATIONS) if runtime_kind(spec) == "crun" else {}


def _backend_deployment(spec, group, name, replicas):
    model_path = "%s/%s" % (spec["models_dir"].rstrip("/"), spec["model_file"])
    pod_labels = dict(labels(spec["name"], "backend"), **{"llamaedge/node-group": name})
    pod_spec = {
        "runtimeClassName": runtime_class(spec),
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
    if spec.get("termination_grace_period") is not None:
        pod_spec["terminationGracePeriodSeconds"] = spec["termination_grace_period"]
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


def objects_for(params):
    """The backend's objects, or the list of errors that stop the module before any API call."""
    name, namespace = params["name"], params["namespace"]
    if params["state"] == "absent":
        error = dns_label_error("name", name, 52) or dns_label_error("namespace", namespace)
        if error:
            return None, [error]
        # Its Deployments are found by label at run time: how many node groups it had is not known here.
        return [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace}}
        ], []
    missing = [key for key in REQUIRED_PRESENT if not params.get(key)]
    errors = ["%s is required with state=present" % key for key in missing]
    errors += [e for e in backend_errors(params) if not any(e.startswith(k) for k in missing)]
    if errors:
        return None, errors
    return backend_manifests(params), []


def owned_selector(params):
    """What finds every Deployment of this backend, whatever its node groups were."""
    return ("apps/v1", "Deployment", params["namespace"], label_selector(selector(params["name"], "backend")))


# -- the llama_backends role's list ---------------------------------------------------------------------
# What a llama_backends_list entry does not set: the role passes these (or llama_backend's defaults).
_ROLE_FIXED = {
    "port": 8080,
    "startup_seconds": 300,
    "models_dir": "/var/lib/llamaedge/models",
    "wasinn_backend": "GGML",
    "node_groups": [{"nodes": ["placed-by-the-role"]}],
}
_ROLE_INTEGERS = ("weight", "replicas", "slots", "termination_grace_period", *SERVER_RANGES)
_ROLE_STRINGS = ("name", "model", "model_name", "prompt_template")


def as_int(value):
    """An integer option as Ansible's argument spec would take it: digit strings become integers."""
    if isinstance(value, str) and re.match(r"^-?[0-9]+\Z", value.strip()):
        return int(value)
    return value


def _entry_spec(entry, image, namespace, runtime=None):
    spec = dict(_ROLE_FIXED, image=image or "set-by-the-role", namespace=namespace, **(runtime or {}))
    for key in ("runtime_class", "runtime"):
        if entry.get(key):
            spec[key] = entry[key]
    spec.update({key: entry.get(key) for key in ("name", "model_name", "model_aliases", "prompt_template")})
    spec.update({key: as_int(entry.get(key)) for key in _ROLE_INTEGERS if key in entry or key not in spec})
    for key, default in (("weight", 1), ("replicas", 1), ("slots", 1)):
        spec[key] = default if spec[key] is None else spec[key]
    spec["model_file"] = entry.get("model") or ""
    return spec


def entry_errors(entry, model_files, image, namespace, runtime=None):
    """The problems of one llama_backends_list entry: llama_backend's own rules (backend_errors), applied to
    the parameters the role passes for it, plus the entry's model being a file of models_list."""
    types = [
        "%s=%r must be a string" % (key, entry[key])
        for key in _ROLE_STRINGS
        if entry.get(key) is not None and not isinstance(entry[key], str)
    ]
    aliases = entry.get("model_aliases")
    if aliases is not None and (
        not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases)
    ):
        types.append("model_aliases=%r must be a list of strings" % (aliases,))
    if types:
        return types  # the rules below read these as strings
    spec = _entry_spec(entry, image, namespace, runtime)
    errors = [
        "%s is required" % key for key in ("model", "model_name", "prompt_template") if not entry.get(key)
    ]
    if not isinstance(spec["replicas"], int) or isinstance(spec["replicas"], bool):
        errors.append("replicas=%r must be an integer >= 0" % (spec["replicas"],))
        spec["replicas"] = 0
    errors += [
        e
        for e in backend_errors(spec)
        if not e.startswith(("model_file=", "prompt_template is required", "image is required"))
    ]
    if entry.get("model") and entry["model"] not in model_files:
        errors.append(
            "model=%r must be one of the files of models_list %s" % (entry["model"], sorted(model_files))
        )
    return errors


def role_errors(backends, models, image, state, namespace, runtime=None):
    """Every problem with the llama_backends role's list, each naming the entry; empty when usable.

    ``runtime``: the role's runtime_class, image_wasi_logging and termination_grace_period (a backend's own
    runtime_class and termination_grace_period win)."""
    if not isinstance(backends, (list, tuple)) or any(not isinstance(b, dict) for b in backends):
        return [
            "llama_backends_list must be a list of mappings (name, model, model_name, ...), got %r"
            % (backends,)
        ]
    errors = []
    names = [b.get("name") for b in backends]
    twice = sorted({str(n) for n in names if names.count(n) > 1})
    if twice:
        errors.append("llama_backends_list names a backend twice: %s" % ", ".join(twice))
    if state != "present":
        return errors
    if backends and not image:
        errors.append("llama_backends_image must name the OCI image that holds llama-api-server.wasm")
    model_files = {m.get("file") for m in models or [] if isinstance(m, dict)}
    for index, backend in enumerate(backends):
        label = backend.get("name") or "#%d" % index
        errors += [
            "llama_backends_list entry %s: %s" % (label, e)
            for e in entry_errors(backend, model_files, image, namespace, runtime)
        ]
    return errors
