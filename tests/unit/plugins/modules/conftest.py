"""Run Ansible modules in-process with given arguments and capture their result."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args


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
