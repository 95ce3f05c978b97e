"""The contract between the collection's manifests and the balancer service: both sides agree.

llama_backend writes the label and annotations the balancer discovers backends by, and llama_balancer
passes the routing policy on the balancer's command line; a name changed on one side only would
silently turn discovery or routing off.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import llama_manifests as m

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "balancer" / "src"))

from edgewasm_balancer import pool
from edgewasm_balancer.config import Settings


def test_discovery_label_and_annotations_agree():
    defaults = Settings()
    assert defaults.label_selector == f"{m.TARGET_LABEL}=true"
    assert defaults.weight_annotation == m.WEIGHT_ANNOTATION
    assert defaults.models_annotation == m.MODELS_ANNOTATION
    assert defaults.slots_annotation == m.SLOTS_ANNOTATION


def test_ranges_and_routing_policies_agree():
    assert m.MAX_WEIGHT == pool.MAX_WEIGHT
    assert m.MAX_SLOTS == pool.MAX_SLOTS
    assert m.ROUTING_POLICIES == pool.ROUTING_POLICIES
    assert Settings().routing == "swrr"
