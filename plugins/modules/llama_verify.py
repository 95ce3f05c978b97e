#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: llama_verify
short_description: Check deployed llama-api-server backends and the balancer, with a pass/fail report
version_added: "0.1.0"
description:
  - Reports each backend's pods (phase, readiness, restarts, waiting reasons, warning events) and its Service's
    ready endpoints, before and after the requests.
  - Sends one chat completion per backend through the balancer, routed by the backend's model name, and checks
    that it answered and that the answer came from that backend.
  - Which backend answered is what the balancer's C(X-Edgewasm-Backend) header says when it sends one (the
    balancer's C(backend_header) option, off by default), else the backend whose model name is the answer's
    C(model); with the header off, backends must serve distinct model names (the module fails saying so
    otherwise).
  - Sends a sequential and a concurrent batch without a model and checks that each backend's share of the
    answers matches its weight's share within O(tolerance).
  - Writes the report as JSON and Markdown under O(report_dir) and fails, listing every problem, when a check
    fails (a pod not ready or restarted, missing endpoints, a failed answer, a share outside the tolerance).
  - Changes nothing in the cluster; the report files are outputs, so the module reports C(changed=false). In
    check mode no request is sent.
extends_documentation_fragment:
  - edgewasm.llamaedge.k8s.auth
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Nothing is checked in check mode.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  namespace:
    description: Namespace of the backends.
    type: str
    required: true
  backends:
    description: The backends as deployed - C(name), C(model_name), C(weight) (default 1), C(replicas) (default 1).
    type: list
    elements: dict
    required: true
  balancer_url:
    description: Base URL of the balancer as the controller reaches it, for example C(http://node1:30080).
    type: str
    required: true
  backend_label:
    description:
      - How the balancer names a backend in C(X-Edgewasm-Backend) (and in the report); C({namespace}) and
        C({name}) are replaced.
        The balancer's Kubernetes discovery uses C({namespace}/{name}).
    type: str
    default: "{namespace}/{name}"
  sequential:
    description: Requests in the sequential batch.
    type: int
    default: 20
  concurrent:
    description: Requests in the concurrent batch.
    type: int
    default: 20
  concurrency:
    description: Requests in flight at once in the concurrent batch.
    type: int
    default: 5
  tolerance:
    description: Largest allowed difference between a backend's observed and expected share (0.1 = 10 points).
    type: float
    default: 0.15
  prompt:
    description: The user message of every request.
    type: str
    default: Answer with one word - what colour is the sky on a clear day?
  max_tokens:
    description: C(max_tokens) of every request.
    type: int
    default: 16
  timeout:
    description: Seconds one request may take (CPU inference is slow).
    type: int
    default: 300
  report_dir:
    description: Directory for C(verify.json) and C(verify.md) (created when missing).
    type: path
    required: true
author:
  - edgewasm.llamaedge maintainers (@edgewasm)
"""

EXAMPLES = r"""
- name: Verify the seed's three backends
  edgewasm.llamaedge.llama_verify:
    namespace: llamaedge
    balancer_url: http://node1:30080
    backends:
      - {name: llama-low-cost, model_name: llama-3-1b, weight: 3, replicas: 3}
      - {name: llama-high-cost, model_name: llama-3-3b, weight: 1, replicas: 2}
    report_dir: "{{ playbook_dir }}/reports"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
ok:
  description: Whether every check passed (the module fails otherwise).
  returned: always
  type: bool
problems:
  description: What failed, one sentence each.
  returned: always
  type: list
  elements: str
report:
  description: The whole report (also in RV(json_path)).
  returned: when the checks ran
  type: dict
json_path:
  description: The JSON report file.
  returned: when the checks ran
  type: str
markdown_path:
  description: The Markdown report file.
  returned: when the checks ran
  type: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.urls import open_url

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import k8s_apply, k8s_module, llama_verify


def opener(url, data, timeout):
    return open_url(
        url, data=data, method="POST", timeout=timeout, headers={"Content-Type": "application/json"}
    )


def main():
    module = AnsibleModule(
        argument_spec=dict(
            namespace=dict(type="str", required=True),
            backends=dict(type="list", elements="dict", required=True),
            balancer_url=dict(type="str", required=True),
            backend_label=dict(type="str", default="{namespace}/{name}"),
            sequential=dict(type="int", default=20),
            concurrent=dict(type="int", default=20),
            concurrency=dict(type="int", default=5),
            tolerance=dict(type="float", default=0.15),
            prompt=dict(type="str", default="Answer with one word - what colour is the sky on a clear day?"),
            max_tokens=dict(type="int", default=16, no_log=False),
            timeout=dict(type="int", default=300),
            report_dir=dict(type="path", required=True),
            **k8s_module.AUTH_ARGS,
        ),
        supports_check_mode=True,
    )
    if not k8s_apply.HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"))
    missing = [
        b.get("name", "?") for b in module.params["backends"] if not b.get("name") or not b.get("model_name")
    ]
    if missing:
        module.fail_json(msg="backends %s: each backend needs name and model_name" % missing)
    if module.check_mode:
        module.exit_json(changed=False, ok=True, problems=[], msg="verification is not run in check mode")
    try:
        client = k8s_apply.connect(module.params["kubeconfig"], module.params["context"])
        report = llama_verify.run_checks(client, module.params, opener)
    except (k8s_apply.KubernetesError, k8s_apply.DynamicApiError) as exc:
        module.fail_json(
            msg="verification could not read the cluster: %s" % exc, ok=False, problems=[str(exc)]
        )
    json_path, markdown_path = llama_verify.write_reports(report, module.params["report_dir"])
    result = dict(
        changed=False,
        ok=report["ok"],
        problems=report["problems"],
        report=report,
        json_path=json_path,
        markdown_path=markdown_path,
    )
    if not report["ok"]:
        module.fail_json(
            msg="verification failed: %s (report: %s)" % ("; ".join(report["problems"]), markdown_path),
            **result,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
