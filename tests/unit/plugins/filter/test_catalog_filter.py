"""The catalog filters as the roles call them, through Jinja."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from jinja2 import Environment

from ansible_collections.edgewasm.llamaedge.plugins.filter import catalog

FILTERS = catalog.FilterModule().filters()


def render(template, **variables):
    env = Environment(autoescape=True)
    env.filters.update(FILTERS)
    return env.from_string(template).render(**variables)


def test_the_roles_calls_render():
    node = {
        "machine": "x86_64",
        "glibc_version": "2.36",
        "cpu": {"avx": True, "avx2": True, "fma": True, "f16c": True},
        "cuda": {},
    }
    assert render("{{ ('0.15.0' | wasmedge_platform(node)).dist }}", node=node) == "ubuntu20.04"
    assert (
        render("{{ (listing | wasmedge_archive_root('0.15.0')).strip }}", listing="bin/wasmedge\nlib/x")
        == "0"
    )
    assert render("{{ ('v1.31.6+k3s1' | k3s_containerd).config_version }}") == "3"
    assert render("{{ 'arm64' | k3s_binary }}") == "k3s-arm64"
    assert render("{{ ('aarch64' | release_arch).k3s }}") == "arm64"
    assert render("{{ 'riscv64' | release_arch | length }}") == "0"


def test_a_node_that_is_not_a_mapping_is_a_filter_error():
    with pytest.raises(AnsibleFilterError, match="wasmedge_platform expects a dictionary"):
        catalog.wasmedge_platform("0.15.0", "x86_64")
