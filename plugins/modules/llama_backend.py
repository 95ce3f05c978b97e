#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: llama_backend
short_description: Deploy one weighted llama-api-server backend as WASM pods
version_added: "0.1.0"
description:
  - Creates, updates or deletes the Deployment(s) and the Service of one LlamaEdge C(llama-api-server)
    backend that runs as a WebAssembly pod (RuntimeClass O(runtime_class)) with the WASI-NN GGML plugin.
  - The Service carries the label C(llamaedge/target=true) and the annotations C(llamaedge/weight),
    C(llamaedge/models) and C(llamaedge/slots) that the collection's balancer discovers it by.
  - The plugin's libraries differ between distributions and architectures, so the host paths to mount
    come from M(edgewasm.llamaedge.wasmedge_plugin_deps) run on the nodes, grouped in O(node_groups) - one
    Deployment per group, pinned to its nodes, with O(replicas) split between the groups by node count.
  - The model file is mounted read-only from O(models_dir) on the node at C(/models/<model_file>) and
    preloaded through C(WASMEDGE_WASINN_PRELOAD).
  - Bad parameters fail before any API call, with a message naming each bad option.
extends_documentation_fragment:
  - edgewasm.llamaedge.k8s
  - edgewasm.llamaedge.k8s.auth
options:
  name:
    description:
      - Name of the backend, its Service and (with one node group) its Deployment. A DNS-1123 label of at
        most 52 characters (room for C(-gN) suffixes).
    type: str
    required: true
  namespace:
    description: Namespace of the objects.
    type: str
    default: default
  image:
    description:
      - OCI image whose entrypoint file is C(llama-api-server.wasm). Required with O(state=present).
      - A stock C(llama-api-server.wasm) imports C(wasi:logging) (its C(wasi_logger) setup), which crun's WasmEdge
        provides and runwasi's WasmEdge shim does not (the shim registers WASI and C(wasi_nn) only) - under the shim
        such an image fails to instantiate with C(unknown import). Say which kind the image holds with
        O(image_wasi_logging); a shim backend with such an image is refused before any API call, and
        M(edgewasm.llamaedge.llama_verify) recognises the failure in a running cluster.
    type: str
  image_wasi_logging:
    description:
      - Whether the image's wasm imports C(wasi:logging), as every stock C(llama-api-server.wasm) release does.
      - V(false) for a build with its C(wasi_logger) setup removed, which runwasi's shim can run too.
    type: bool
    default: true
  image_pull_policy:
    description: The container's C(imagePullPolicy).
    type: str
    choices: [Always, IfNotPresent, Never]
    default: IfNotPresent
  runtime_class:
    description:
      - RuntimeClass that runs WASM with the WASI-NN plugin (the containerd_wasm role creates C(crun-wasm) and
        C(wasmedge-nn)).
      - V(auto) picks the one that can run the image - C(crun-wasm) when O(image_wasi_logging) is true, else
        C(wasmedge-nn) - or the one O(runtime) names.
    type: str
    default: auto
  runtime:
    description:
      - What runs behind O(runtime_class). V(crun) (crun built with WasmEdge) adds the pod annotation
        C(module.wasm.image/variant=compat), without which crun starts the container as an ordinary Linux
        process; V(runwasi) adds none. V(auto) means V(crun) when the RuntimeClass name contains C(crun)
        (the containerd_wasm role's C(crun-wasm)), else V(runwasi).
      - crun 1.29.1 hands C(WASMEDGE_PLUGIN_PATH) to WasmEdge whole, without splitting it on colons - a crun backend
        whose node group lists several plugin directories is refused.
    type: str
    choices: [auto, runwasi, crun]
    default: auto
  model_file:
    description: File name of the GGUF model inside O(models_dir) on the nodes.
    type: str
  models_dir:
    description: Directory holding the models on the nodes (the models role's default).
    type: path
    default: /var/lib/llamaedge/models
  model_name:
    description:
      - Name the server reports in answers (C(--model-name)); the balancer routes requests naming it here.
        Required with O(state=present).
    type: str
  model_aliases:
    description:
      - C(--model-alias) values. The first is the alias of the preloaded model (its WASI-NN graph name).
      - Aliases are not API model ids and are not advertised in the C(llamaedge/models) annotation; only
        O(model_name) is.
    type: list
    elements: str
    default: [default]
  prompt_template:
    description: C(--prompt-template), for example C(llama-3-chat). Required with O(state=present).
    type: str
  ctx_size:
    description: C(--ctx-size).
    type: int
  batch_size:
    description: C(--batch-size).
    type: int
  n_predict:
    description: C(--n-predict).
    type: int
  threads:
    description: C(--threads).
    type: int
  n_gpu_layers:
    description: C(--n-gpu-layers).
    type: int
  port:
    description: Port llama-api-server listens on (C(--port)), also the Service port.
    type: int
    default: 8080
  replicas:
    description: Pods in total, split between the node groups.
    type: int
    default: 1
  weight:
    description: Share of the balancer's traffic (annotation C(llamaedge/weight)); at least 1.
    type: int
    default: 1
  slots:
    description:
      - Requests one pod serves at once (annotation C(llamaedge/slots), 1 to 1024). The balancer's
        V(load-aware) routing sends a pod at most that many and queues the rest; llama-api-server serves
        one request at a time, so raise it only for a server that runs several sequences in parallel.
    type: int
    default: 1
  wasinn_backend:
    description: WASI-NN backend of the preload.
    type: str
    default: GGML
  wasinn_target:
    description: WASI-NN execution target of the preload.
    type: str
    choices: [AUTO, CPU, GPU]
    default: AUTO
  node_groups:
    description:
      - Groups of nodes that hold the model and the runtime and share the same plugin libraries, with the
        RV(edgewasm.llamaedge.wasmedge_plugin_deps#module:volumes),
        RV(edgewasm.llamaedge.wasmedge_plugin_deps#module:volume_mounts) and
        RV(edgewasm.llamaedge.wasmedge_plugin_deps#module:env) that module returned on them.
    type: list
    elements: dict
    default: []
    suboptions:
      nodes:
        description: Node names (C(kubernetes.io/hostname)).
        type: list
        elements: str
        required: true
      volumes:
        description: Pod volumes for the plugin and its libraries.
        type: list
        elements: dict
        default: []
      volume_mounts:
        description: Container volumeMounts matching O(node_groups[].volumes).
        type: list
        elements: dict
        default: []
      env:
        description: Container env (C(WASMEDGE_PLUGIN_PATH), C(LD_LIBRARY_PATH)).
        type: list
        elements: dict
        default: []
  node_mounts:
    description:
      - Instead of O(node_groups) - a mapping of node name to the result M(edgewasm.llamaedge.wasmedge_plugin_deps)
        returned on it (only its C(volumes), C(volume_mounts) and C(env) are used). Nodes with identical results
        are grouped, so a uniform cluster gets one Deployment.
    type: dict
  extra_env:
    description: More container env entries (for example C(LLAMA_LOG)).
    type: list
    elements: dict
    default: []
  resources:
    description: The container's C(resources) (requests and limits).
    type: dict
  startup_seconds:
    description: Seconds the startup probe allows for loading the model before liveness checks start.
    type: int
    default: 300
  termination_grace_period:
    description:
      - Seconds a deleted pod keeps the requests it is serving before kubelet kills it (the pods'
        C(terminationGracePeriodSeconds), 0 to 86400); omitted, Kubernetes' default of 30 applies.
      - The server runs as its pod's PID 1 without a SIGTERM handler (under runwasi's shim and crun alike), so a
        deleted, evicted or drained pod always takes this long to go, whether it still serves requests or not;
        the balancer stops sending it new ones as soon as it is deleted. Lower it when answers are short.
    type: int
author:
  - edgewasm.llamaedge maintainers (@edgewasm)
"""

EXAMPLES = r"""
- name: Resolve the plugin's libraries on a node
  edgewasm.llamaedge.wasmedge_plugin_deps:
    paths: [/opt/wasmedge/current/plugin]
    ld_library_path: [/opt/wasmedge/current/lib]
  register: plugin

- name: The seed's low-cost backend, weight 3, three replicas (a stock wasm - runtime_class auto picks crun-wasm)
  edgewasm.llamaedge.llama_backend:
    name: llama-low-cost
    namespace: llm
    image: registry.example.com/llamaedge/llama-api-server:0.28.1
    model_file: Llama-3.2-1B-Instruct-Q5_K_M.gguf
    model_name: llama-3-1b
    prompt_template: llama-3-chat
    ctx_size: 4096
    weight: 3
    replicas: 3
    node_groups:
      - nodes: [node1, node2]
        volumes: "{{ plugin.volumes }}"
        volume_mounts: "{{ plugin.volume_mounts }}"
        env: "{{ plugin.env }}"
    wait: true
  delegate_to: localhost

- name: A build without wasi_logger on runwasi's shim
  edgewasm.llamaedge.llama_backend:
    name: llama-shim
    namespace: llm
    image: registry.example.com/llamaedge/llama-api-server-nolog:0.28.1
    image_wasi_logging: false
    runtime_class: wasmedge-nn
    model_file: Llama-3.2-1B-Instruct-Q5_K_M.gguf
    model_name: llama-3-1b-shim
    prompt_template: llama-3-chat
    node_groups:
      - nodes: [node1]
        volumes: "{{ plugin.volumes }}"
        volume_mounts: "{{ plugin.volume_mounts }}"
        env: "{{ plugin.env }}"
  delegate_to: localhost

- name: Remove it
  edgewasm.llamaedge.llama_backend:
    name: llama-low-cost
    namespace: llm
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
manifests:
  description: The objects as sent to the API server (built before any call, also on failure).
  returned: always
  type: list
  elements: dict
objects:
  description: Each object's kind, name, namespace and whether it changed.
  returned: success
  type: list
  elements: dict
  sample: [{"kind": "Deployment", "name": "llama-low-cost", "namespace": "llm", "changed": true}]
rollout:
  description: With O(wait=true), each Deployment's final state.
  returned: success
  type: list
  elements: dict
  sample: [{"name": "llama-low-cost", "ready": true, "summary": "3/3 ready, 3 updated, 3 available"}]
diff:
  description: Normalized objects before and after, without server-managed fields; in diff mode only.
  returned: when diff mode is on
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import (
    k8s_apply,
    k8s_module,
    llama_backend_manifests,
)


def argument_spec():
    spec = dict(
        name=dict(type="str", required=True),
        namespace=dict(type="str", default="default"),
        image=dict(type="str"),
        image_pull_policy=dict(
            type="str", choices=["Always", "IfNotPresent", "Never"], default="IfNotPresent"
        ),
        image_wasi_logging=dict(type="bool", default=True),
        runtime_class=dict(type="str", default="auto"),
        runtime=dict(type="str", default="auto", choices=["auto", "runwasi", "crun"]),
        model_file=dict(type="str"),
        models_dir=dict(type="path", default="/var/lib/llamaedge/models"),
        model_name=dict(type="str"),
        model_aliases=dict(type="list", elements="str", default=["default"]),
        prompt_template=dict(type="str"),
        ctx_size=dict(type="int"),
        batch_size=dict(type="int"),
        n_predict=dict(type="int"),
        threads=dict(type="int"),
        n_gpu_layers=dict(type="int"),
        port=dict(type="int", default=8080),
        replicas=dict(type="int", default=1),
        weight=dict(type="int", default=1),
        slots=dict(type="int", default=1),
        wasinn_backend=dict(type="str", default="GGML"),
        wasinn_target=dict(type="str", choices=["AUTO", "CPU", "GPU"], default="AUTO"),
        node_groups=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(
                nodes=dict(type="list", elements="str", required=True),
                volumes=dict(type="list", elements="dict", default=[]),
                volume_mounts=dict(type="list", elements="dict", default=[]),
                env=dict(type="list", elements="dict", default=[]),
            ),
        ),
        node_mounts=dict(type="dict"),
        extra_env=dict(type="list", elements="dict", default=[]),
        resources=dict(type="dict"),
        startup_seconds=dict(type="int", default=300),
        termination_grace_period=dict(type="int"),
    )
    spec.update(k8s_module.COMMON_ARGS)
    return spec


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=[("node_groups", "node_mounts")],
    )
    if module.params["node_mounts"]:
        module.params["node_groups"] = llama_backend_manifests.group_node_mounts(module.params["node_mounts"])
    if not k8s_apply.HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"))
    objects, errors = llama_backend_manifests.objects_for(module.params)
    if errors:
        module.fail_json(msg="llama_backend %s: %s" % (module.params["name"], "; ".join(errors)))
    k8s_module.execute(module, objects, owned=[llama_backend_manifests.owned_selector(module.params)])


if __name__ == "__main__":
    main()
