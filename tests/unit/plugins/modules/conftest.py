"""Run Ansible modules in-process with given arguments and capture their result."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args
from k8sfixtures.fake_k8s import FakeDynamicClient

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import k8s_apply


@pytest.fixture
def run_module(capsys):
    def run(main, args: dict, check_mode: bool = False) -> dict:
        if check_mode:
            args = dict(args, _ansible_check_mode=True)
        with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
            main()
        result = json.loads(capsys.readouterr().out)
        result["_exit_code"] = exit_info.value.code
        return result

    return run


@pytest.fixture
def cluster(monkeypatch):
    """The Kubernetes modules connected to a FAKE in-memory API (tests/k8sfixtures/fake_k8s.py)."""
    fake = FakeDynamicClient()
    monkeypatch.setattr(k8s_apply, "connect", lambda kubeconfig=None, context=None: fake)
    return fake
