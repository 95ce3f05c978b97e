"""The Kubernetes modules against a FAKE API (run_module itself is in tests/conftest.py)."""

from __future__ import annotations

import pytest
from k8sfixtures.fake_k8s import FakeDynamicClient

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import k8s_apply


@pytest.fixture
def cluster(monkeypatch):
    """The Kubernetes modules connected to a FAKE in-memory API (tests/k8sfixtures/fake_k8s.py)."""
    fake = FakeDynamicClient()
    monkeypatch.setattr(k8s_apply, "connect", lambda kubeconfig=None, context=None: fake)
    return fake
