#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: llama_balancer
short_description: Deploy the edgewasm balancer in front of the llama-api-server backends
version_added: "0.1.0"
description:
  - Creates, updates or deletes the balancer built from the collection's C(balancer/) directory - a
    ServiceAccount, one read-only Role and RoleBinding per watched namespace (C(get), C(list), C(watch) on
    C(services) and C(discovery.k8s.io/endpointslices), nothing else), optionally the Secret holding the
    admin API token, the Deployment and its Service (ClusterIP or NodePort).
  - The balancer discovers the backends that M(edgewasm.llamaedge.llama_backend) deploys by their Service
    label C(llamaedge/target=true) and annotations, so backends can come and go without touching it.
  - Its pods run as a non-root user with a read-only root filesystem, no capabilities and the runtime's
    default seccomp profile; readiness is C(/readyz), liveness C(/healthz).
  - Bad parameters fail before any API call, with a message naming each bad option.
extends_documentation_fragment:
  - edgewasm.llamaedge.k8s
  - edgewasm.llamaedge.k8s.auth
options:
  name:
    description: Name of every object of the balancer (a DNS-1123 label).
    type: str
    default: llama-balancer
  namespace:
    description: Namespace of the balancer.
    type: str
    default: default
  image:
    description:
      - The balancer image (C(podman build -f balancer/Containerfile balancer/)). Required with
        O(state=present).
    type: str
  image_pull_policy:
    description: The container's C(imagePullPolicy).
    type: str
    choices: [Always, IfNotPresent, Never]
    default: IfNotPresent
  watch_namespaces:
    description: Namespaces whose backends it balances; O(namespace) when empty.
    type: list
    elements: str
    default: []
  service_type:
    description: Type of the balancer's Service.
    type: str
    choices: [ClusterIP, NodePort]
    default: ClusterIP
  node_port:
    description: Fixed node port with O(service_type=NodePort) (30000-32767); Kubernetes picks one when unset.
    type: int
  port:
    description: Port of the balancer's Service.
    type: int
    default: 80
  replicas:
    description:
      - Balancer pods. With more than one, leader election is on unless O(leader_election=false) (see there).
    type: int
    default: 1
  leader_election:
    description:
      - Whether the replicas elect one router on a C(coordination.k8s.io/v1) Lease named O(name) in O(namespace).
        Default - on when O(replicas) is more than one, off otherwise.
      - Only the Lease's holder routes and reports ready, so the Service sends traffic to it alone and its slot
        counts and queue are exact (O(routing=load-aware)); the others keep their discovery current and stand by.
        A leader that gets SIGTERM hands the Lease over at once; a crashed one is replaced when the Lease expires
        (O(lease_duration)); one cut off from the API stops routing after O(renew_deadline), before anyone
        else may take over.
      - It adds a Role and RoleBinding C(<name>-leader-election) (C(get) and C(update) on that one Lease,
        C(create) on Leases in O(namespace), which Kubernetes RBAC cannot limit to a name), the C(POD_NAME) and
        C(POD_NAMESPACE) variables, a readiness probe every second, C(--shutdown-delay 10) unless O(extra_args)
        sets one, and a rollout that replaces every pod at once (a rollout waiting for new pods to be ready
        would never end, since only one is). With O(wait=true), rolled out means every pod updated and one ready.
      - No PodDisruptionBudget is made - a budget counts ready pods, and only the leader is ready, so it could
        only block every eviction of the leader or protect nothing.
    type: bool
  lease_duration:
    description: Seconds a Lease that is not renewed stays its holder's (how long a crashed leader is missed).
    type: int
    default: 6
  renew_deadline:
    description: Seconds a leader keeps routing without a successful renewal; less than O(lease_duration).
    type: float
    default: 4
  retry_period:
    description: Seconds between a candidate's attempts and a leader's renewals; 1.2 times it is less than O(renew_deadline).
    type: float
    default: 1
  admin_api:
    description:
      - Serve the balancer's admin API (C(/api/register), C(/api/unregister/NAME), C(/api/services), the seed
        balancer's registration API). It is off unless this is true or O(admin_token) /
        O(admin_token_secret) is given, and it always requires a bearer token.
      - The admin API listens on its own port (8081), exposed by its own Service C(<name>-admin) of type
        ClusterIP only, never on the public Service (which may be a NodePort).
      - Without O(admin_token) and O(admin_token_secret), the module generates a random token once and keeps it
        in the Secret C(<name>-admin) (later runs reuse it); read it from that Secret.
    type: bool
    default: false
  admin_token:
    description:
      - Bearer token for the balancer's admin API; implies O(admin_api=true). The module stores it in the
        Secret O(admin_token_secret) (its value never appears in results or diffs).
    type: str
  admin_token_secret:
    description:
      - Secret holding the token under O(admin_token_key); implies O(admin_api=true). Created with
        O(admin_token); otherwise an existing Secret, managed by you, is referenced. Defaults to
        C(<name>-admin).
    type: str
  admin_token_key:
    description: Key of the token in the Secret.
    type: str
    default: token
  routing:
    description:
      - How the balancer splits requests between backends (its C(--routing)).
      - V(swrr) - smooth weighted round-robin, exact and load-blind.
      - V(weighted-random) - the seed balancer's weighted random choice.
      - V(load-aware) - the weights among backends that have a free slot (each pod takes at most the
        C(llamaedge/slots) its backend declares, see M(edgewasm.llamaedge.llama_backend)'s O(edgewasm.llamaedge.llama_backend#module:slots)),
        and a bounded queue in the balancer when every slot is busy (429 when it is full); tune it with
        C(--queue-size), C(--queue-timeout) and C(--default-slots) in O(extra_args).
    type: str
    choices: [swrr, weighted-random, load-aware]
    default: swrr
  metrics:
    description:
      - Serve Prometheus metrics on the pods' own port 8082 (container port C(metrics), annotated
        C(prometheus.io/scrape), C(prometheus.io/port) and C(prometheus.io/path) for scrape configs that use them).
      - That port is in no Service, so the series (backend names, pod addresses) never reach the public
        Service or its node port; C(/metrics) on the public port answers 404.
    type: bool
    default: true
  backend_header:
    description:
      - Name the backend that answered each request in an C(X-Edgewasm-Backend) response header.
      - Off by default, so clients do not learn the internal Service names; the access log names the backend
        either way. M(edgewasm.llamaedge.llama_verify) identifies backends without it when their model names
        differ, and needs it when several backends serve the same model name.
    type: bool
    default: false
  extra_args:
    description:
      - More balancer flags, for example C([--least-busy, --retries, "3"]). C(--listen), C(--admin-listen),
        C(--kubernetes), C(--admin-token-file), C(--routing), C(--metrics-listen), C(--backend-header) and the
        leader election flags are set by the module and refused here.
      - The pod's C(terminationGracePeriodSeconds) is C(--shutdown-delay) + C(--shutdown-timeout) (defaults 0
        and 30) + 15 seconds, so the balancer always finishes its drain before Kubernetes kills it.
    type: list
    elements: str
    default: []
  resources:
    description: The container's C(resources); small requests and a 256Mi memory limit when unset.
    type: dict
author:
  - edgewasm.llamaedge maintainers (@edgewasm)
"""

EXAMPLES = r"""
- name: The balancer for the backends in namespace llm, on node port 30080
  edgewasm.llamaedge.llama_balancer:
    namespace: llm
    image: registry.example.com/edgewasm/balancer:0.1.0
    service_type: NodePort
    node_port: 30080
    admin_token: "{{ vault_balancer_admin_token }}"
    wait: true
  delegate_to: localhost
"""

RETURN = r"""
manifests:
  description: The objects as sent to the API server, Secret values hidden.
  returned: always
  type: list
  elements: dict
objects:
  description: Each object's kind, name, namespace and whether it changed.
  returned: success
  type: list
  elements: dict
rollout:
  description: With O(wait=true), the Deployment's final state.
  returned: success
  type: list
  elements: dict
diff:
  description: Normalized objects before and after, Secret values hidden; in diff mode only.
  returned: when diff mode is on
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import (
    k8s_apply,
    k8s_module,
    llama_balancer_manifests,
)


def argument_spec():
    spec = dict(
        name=dict(type="str", default="llama-balancer"),
        namespace=dict(type="str", default="default"),
        image=dict(type="str"),
        image_pull_policy=dict(
            type="str", choices=["Always", "IfNotPresent", "Never"], default="IfNotPresent"
        ),
        watch_namespaces=dict(type="list", elements="str", default=[]),
        service_type=dict(type="str", choices=["ClusterIP", "NodePort"], default="ClusterIP"),
        node_port=dict(type="int"),
        port=dict(type="int", default=80),
        replicas=dict(type="int", default=1),
        leader_election=dict(type="bool"),
        lease_duration=dict(type="int", default=6),
        renew_deadline=dict(type="float", default=4.0),
        retry_period=dict(type="float", default=1.0),
        admin_api=dict(type="bool", default=False),
        admin_token=dict(type="str", no_log=True),
        admin_token_secret=dict(type="str", no_log=False),
        admin_token_key=dict(type="str", default="token", no_log=False),
        routing=dict(type="str", choices=["swrr", "weighted-random", "load-aware"], default="swrr"),
        metrics=dict(type="bool", default=True),
        backend_header=dict(type="bool", default=False),
        extra_args=dict(type="list", elements="str", default=[]),
        resources=dict(type="dict"),
    )
    spec.update(k8s_module.COMMON_ARGS)
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not k8s_apply.HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"))
    objects, errors = llama_balancer_manifests.objects_for(module.params)
    if errors:
        module.fail_json(msg="llama_balancer %s: %s" % (module.params["name"], "; ".join(errors)))
    k8s_module.execute(
        module,
        objects,
        owned=llama_balancer_manifests.owned_selectors(module.params),
        prepare=llama_balancer_manifests.generated_token(module.params),
    )


if __name__ == "__main__":
    main()
