"""Fuzzing (hypothesis) of the containerd_wasm role's runtime declarations: whatever the role's own
checks (tasks/validate.yml, read from the role itself) accept must render, through the role's own
template (templates/runtime-tables.j2), into TOML that parses and holds exactly the values given.
A runtime entry that could inject a table or break the file must be refused by the checks.

The checks and the template are evaluated with Jinja2 and ansible-core's own filters and tests, as
Ansible would; deterministic by default (EDGEWASM_FUZZ_RANDOM=1 explores).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jinja2
import yaml
from ansible.plugins.filter.core import FilterModule as AnsibleFilters
from ansible.plugins.test.core import TestModule as AnsibleTests
from fuzzseeds import FUZZ
from hypothesis import example, given
from hypothesis import strategies as st

ROLE = Path(__file__).resolve().parents[2] / "roles" / "containerd_wasm"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(  # noqa: S701 - renders TOML, not HTML
        loader=jinja2.FileSystemLoader(str(ROLE / "templates")), trim_blocks=True, undefined=jinja2.Undefined
    )
    # ansible-core's own filters and tests; where Jinja has one of the same name (default, map, select...),
    # Ansible's version needs Ansible's templating engine around it, and behaves like Jinja's here.
    env.filters.update({k: v for k, v in AnsibleFilters().filters().items() if k not in env.filters})
    env.tests.update({k: v for k, v in AnsibleTests().tests().items() if k not in env.tests})
    return env


ENV = _environment()
VARS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
CHECKS = next(
    task["ansible.builtin.assert"]["that"]
    for task in yaml.safe_load((ROLE / "tasks" / "validate.yml").read_text())
    if task["name"] == "Check each runtime"
)


def accepted(runtime: dict) -> bool:
    context = {"item": runtime, **VARS}
    return all(ENV.from_string(f"{{{{ ({check}) | bool }}}}").render(context) == "True" for check in CHECKS)


def render(runtime: dict, version: str) -> dict:
    text = ENV.get_template("runtime-tables.j2").render(
        _containerd_wasm_active=[runtime], _containerd_wasm_version=version, _cw_systemd_cgroup="true", **VARS
    )
    return tomllib.loads(text)


def _table(document: dict, version: str) -> dict:
    path = ["plugins", "io.containerd.grpc.v1.cri" if version == "2" else "io.containerd.cri.v1.runtime"]
    node = document
    for key in [*path, "containerd", "runtimes"]:
        node = node[key]
    return node


ANY_TEXT = st.text(max_size=24)
PATHLIKE = st.from_regex(r"/[A-Za-z0-9._/+\-\"'\]\[ =\n]{1,20}", fullmatch=True)
PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
VALUES = st.one_of(
    PRINTABLE,
    st.integers(-5, 5),
    ANY_TEXT,
    st.integers(-(2**63), 2**63),
    st.booleans(),
    st.floats(),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
KEYS = st.one_of(ANY_TEXT, *[st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)] * 3)


@st.composite
def runtimes(draw: st.DrawFn) -> dict:
    runtime = {
        "name": draw(
            st.one_of(st.from_regex(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?", fullmatch=True), ANY_TEXT)
        ),
        "runtime_type": draw(
            st.one_of(
                st.sampled_from(["io.containerd.runc.v2", "io.containerd.wasmedge.v1"]), PATHLIKE, ANY_TEXT
            )
        ),
        "binary": draw(st.one_of(st.just("/usr/local/bin/crun"), PATHLIKE, ANY_TEXT)),
    }
    if draw(st.booleans()):
        runtime["pod_annotations"] = draw(
            st.lists(st.one_of(st.just("module.wasm.image/*"), ANY_TEXT), max_size=3)
        )
    for field in ("options", "extra"):
        if draw(st.booleans()):
            runtime[field] = draw(st.dictionaries(KEYS, VALUES, max_size=3))
    return runtime


@FUZZ
@given(runtimes(), st.sampled_from(["2", "3"]))
@example(  # a key that closes the table and opens another one
    {
        "name": "evil",
        "runtime_type": "io.containerd.runc.v2",
        "binary": "/x",
        "options": {"a]\n[plugins.x": 1},
    },
    "3",
)
@example({"name": "evil", "runtime_type": '/x"\n', "binary": "/x"}, "3")  # a quote and a trailing newline
@example(
    {"name": "evil", "runtime_type": "io.containerd.runc.v2", "binary": "/x", "extra": {"k": {"a": 1}}}, "2"
)
@example(
    {
        "name": "emoji",
        "runtime_type": "io.containerd.runc.v2",
        "binary": "/x",
        "options": {"k": "\U0001f600"},
    },
    "3",
)
def test_fuzz_accepted_runtimes_render_to_exact_toml(runtime: dict, version: str) -> None:
    if not accepted(runtime):
        return
    table = _table(render(runtime, version), version)
    assert list(table) == [runtime["name"]]  # exactly one runtime table, the one declared
    declared = table[runtime["name"]]
    assert declared["runtime_type"] == runtime["runtime_type"]
    assert declared.get("pod_annotations", []) == runtime.get("pod_annotations", [])
    for key, value in runtime.get("extra", {}).items():
        assert declared[key] == value
    options = declared.get("options", {})
    for key, value in runtime.get("options", {}).items():
        assert options[key] == value
    if runtime["runtime_type"] == "io.containerd.runc.v2":
        assert options["BinaryName"] == runtime["binary"]


def test_the_roles_default_runtimes_are_accepted() -> None:
    """The harness agrees with the role: its own defaults pass the checks and render."""
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert defaults["containerd_wasm_runtimes"]
    for runtime in defaults["containerd_wasm_runtimes"]:
        assert accepted(runtime), json.dumps(runtime)
        assert list(_table(render(runtime, "3"), "3")) == [runtime["name"]]


def test_hostile_runtimes_are_refused() -> None:
    base = {"name": "evil", "runtime_type": "io.containerd.runc.v2", "binary": "/x"}
    for hostile in (
        {"options": {"a]\n[plugins.x": 1}},
        {"runtime_type": '/x"\n'},
        {"binary": '/x" injected = "1'},
        {"extra": {"k": {"a": 1}}},
        {"options": {"k": "\U0001f600"}},
        {"options": {"k": "line\nbreak"}},
        {"pod_annotations": ['a", "b']},
        {"options": {"k": None}},
        {"options": {"k": 1.5}},
    ):
        assert not accepted({**base, **hostile}), hostile
    assert accepted({**base, "options": {"Root": "/run/x", "IoUid": 0, "Debug": True}})
