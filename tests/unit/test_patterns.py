"""Every validation pattern matches the whole value: "$" also matches before a trailing newline, so a
value such as ``model_name: "llama\\n"`` passed validation and broke what it was written into."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import (
    download,
    llama_backend_manifests,
    llama_balancer_manifests,
    llama_common,
    plugin_mounts,
    release_catalog,
    wasi_nn_probe,
)

ROOT = Path(__file__).resolve().parents[2]

# (name, accepts(value) -> bool, a valid value): each is tried as given and with a newline after it.
VALIDATORS = [
    ("MODEL_NAME", lambda v: bool(llama_backend_manifests.MODEL_NAME.match(v)), "llama-3-1b"),
    ("MODEL_ALIAS", lambda v: bool(llama_backend_manifests.MODEL_ALIAS.match(v)), "default"),
    (
        "wasinn_backend",
        lambda v: (
            not [
                e
                for e in llama_backend_manifests._model_name_errors({"wasinn_backend": v})
                if "wasinn_backend" in e
            ]
        ),
        "GGML",
    ),
    ("SECRET_KEY", lambda v: bool(llama_balancer_manifests.SECRET_KEY.match(v)), "admin-token"),
    ("DNS1123_LABEL (llama_common)", lambda v: llama_common.dns_label_error("name", v) is None, "llama-low"),
    ("DNS1123_LABEL (plugin_mounts)", lambda v: plugin_mounts.check_prefix(v) is None, "wasmedge"),
    ("SHA256", lambda v: bool(download.SHA256.match(v)), "a" * 64),
    (
        "WasmEdge version",
        lambda v: (
            not release_catalog.platform(v, {"machine": "x86_64"})["errors"][:1]
            or "not in the release catalog"
            not in release_catalog.platform(v, {"machine": "x86_64"})["errors"][0]
        ),
        "0.15.1",
    ),
    ("k3s version", lambda v: not release_catalog.k3s_containerd(v)["errors"], "v1.31.6+k3s1"),
    ("plugin build", lambda v: release_catalog.build_number(v) is not None, "b5640"),
    ("checksum line", lambda v: bool(release_catalog._CHECKSUM_LINE.match(v)), "%s  a.tar.gz" % ("a" * 64)),
    ("probe ok line", lambda v: wasi_nn_probe._OK_LINE.match(v) is not None, "2 bytes, hex: 4142"),
]


@pytest.mark.parametrize(("name", "accepts", "valid"), VALIDATORS, ids=[v[0] for v in VALIDATORS])
def test_a_trailing_newline_is_refused(name, accepts, valid):
    assert accepts(valid), name
    assert not accepts(valid + "\n"), name


def _role_patterns():
    """Every pattern a role's tasks give to the match test or a 'match' select/reject."""
    found = []
    for path in sorted((ROOT / "roles").glob("*/tasks/*.yml")):
        text = path.read_text()
        for pattern in re.findall(r"""(?:is match\(|['"]match['"],\s*)'([^']*)'""", text):
            found.append((f"{path.relative_to(ROOT)}: {pattern}", pattern))
    return found


ROLE_PATTERNS = _role_patterns()


@pytest.mark.parametrize(("where", "pattern"), ROLE_PATTERNS, ids=[p[0] for p in ROLE_PATTERNS])
def test_role_patterns_anchored_at_the_end_use_backslash_z(where, pattern):
    """Jinja's match test is re.match: a pattern ending in "$" accepts "value\\n". (The text as the task file has
    it: a backslash is doubled in some YAML scalars and not in others; an escaped "$" is a literal dollar.)"""
    assert not pattern.endswith("$") or pattern.endswith("\\$"), where


def test_role_patterns_were_found():
    assert len(ROLE_PATTERNS) >= 8, ROLE_PATTERNS
