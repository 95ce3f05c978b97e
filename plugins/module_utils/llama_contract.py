# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The contract between the collection and the balancer service (balancer/src/edgewasm_balancer/contract.py).

The collection writes these names into manifests and reads them back in llama_verify; the balancer
discovers, weighs and tags backends by them. tests/unit/test_balancer_contract.py checks that both
sides hold the same values: a name changed on one side only would silently turn discovery off.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# Backend Services carry this label (value "true") and these annotations.
TARGET_LABEL = "llamaedge/target"
WEIGHT_ANNOTATION = "llamaedge/weight"
MODELS_ANNOTATION = "llamaedge/models"
# Parallel slots of each backend pod: the balancer's load-aware routing sends a pod at most that many requests.
SLOTS_ANNOTATION = "llamaedge/slots"
MIN_WEIGHT, MAX_WEIGHT = 1, 10000
MIN_SLOTS, MAX_SLOTS = 1, 1024
ROUTING_POLICIES = ("swrr", "weighted-random", "load-aware")
# The response header naming the backend that answered (what llama_verify counts the split by).
BACKEND_HEADER = "X-Edgewasm-Backend"
# The variable the balancer reads its admin token from.
ADMIN_TOKEN_ENV = "EDGEWASM_BALANCER_ADMIN_TOKEN"  # noqa: S105 - a variable name, not a secret
# The balancer's own defaults: its drain takes at most delay + timeout seconds after SIGTERM, and the pod's
# grace period must exceed that.
SHUTDOWN_DEFAULTS = {"--shutdown-delay": 0.0, "--shutdown-timeout": 30.0}
