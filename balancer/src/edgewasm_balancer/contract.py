"""The balancer's side of its contract with the edgewasm.llamaedge collection.

The collection's manifests (plugins/module_utils/llama_contract.py) label and annotate backend
Services with these names and pass these values; its llama_verify module reads the header.
tests/unit/test_balancer_contract.py checks that both sides hold the same values.
"""

from __future__ import annotations

# Backend Services carry TARGET_LABEL=true; their weight, models and per-pod slots are annotations.
TARGET_LABEL = "llamaedge/target"
WEIGHT_ANNOTATION = "llamaedge/weight"
MODELS_ANNOTATION = "llamaedge/models"
SLOTS_ANNOTATION = "llamaedge/slots"
# Weights are relative shares; the bound keeps them finite and the smooth-WRR counters small.
MIN_WEIGHT, MAX_WEIGHT = 1, 10_000
# Parallel slots of one endpoint (requests a backend pod serves at once).
MIN_SLOTS, MAX_SLOTS = 1, 1024
ROUTING_POLICIES = ("swrr", "weighted-random", "load-aware")
# Set on every proxied response: which backend answered.
BACKEND_HEADER = "X-Edgewasm-Backend"
ENV_PREFIX = "EDGEWASM_BALANCER_"
ADMIN_TOKEN_ENV = ENV_PREFIX + "ADMIN_TOKEN"
# The drain after SIGTERM (--shutdown-delay, --shutdown-timeout); the pod's grace period must exceed the sum.
SHUTDOWN_DELAY = 0.0
SHUTDOWN_TIMEOUT = 30.0
