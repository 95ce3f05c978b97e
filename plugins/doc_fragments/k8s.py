# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Options and attributes shared by the modules that manage Kubernetes objects (use with the auth fragment).
    DOCUMENTATION = r"""
options:
  state:
    description:
      - V(present) creates or updates the objects (server-side apply), V(absent) deletes them.
    type: str
    choices: [present, absent]
    default: present
  create_namespace:
    description:
      - Create O(namespace) first when it does not exist (never deleted with O(state=absent)).
    type: bool
    default: false
  wait:
    description:
      - Wait until every Deployment has rolled out (all replicas updated, ready and available), and until every
        object deleted (O(state=absent), or a left-over of a previous run) is gone.
      - Without it a deleted object may still be there, being deleted (its dependents are removed first); a
        run that finds an object being deleted leaves it alone and reports no change for it.
    type: bool
    default: false
  wait_timeout:
    description:
      - Seconds to wait with O(wait=true) before failing with the Deployment's status or the object that is
        still being deleted.
    type: int
    default: 600
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - A server-side dry run of every apply, so the API server validates and defaults the objects.
      - Objects in a namespace that O(create_namespace=true) would create are reported as created without a dry
        run (the server refuses one in a namespace that does not exist yet).
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
"""

    # How a module reaches the cluster: every module that talks to the API server (k8s_module.AUTH_ARGS).
    AUTH = r"""
options:
  kubeconfig:
    description:
      - Path to a kubeconfig file. Without it, C(KUBECONFIG) or C(~/.kube/config), or the pod's service
        account when the module runs inside the cluster.
    type: path
  context:
    description:
      - Context of the kubeconfig to use; its current context when not set.
    type: str
requirements:
  - kubernetes (Python client) >= 24.2 on the host that runs the module (usually the controller)
"""
