"""Model placement and backend validation: decided in module_utils, called by the roles as filters."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from jinja2 import Undefined

from ansible_collections.edgewasm.llamaedge.plugins.filter import catalog, placement
from ansible_collections.edgewasm.llamaedge.plugins.module_utils import llama_backend_manifests

FILTERS = placement.FilterModule().filters()
MODELS = [
    {"file": "small.gguf", "url": "https://example.com/s", "sha256": "0" * 64},
    {"file": "big.gguf", "src": "/models/big.gguf", "nodes": ["agent1", "agent2"]},
    {"file": "local.gguf", "present": True, "nodes": ["agent2", "ghost"]},
    {"file": "nowhere.gguf", "present": True, "nodes": []},
]
HOSTS = ["server1", "agent1", "agent2"]
GOOD = {"name": "low", "model": "small.gguf", "model_name": "llama-3-1b", "prompt_template": "llama-3-chat"}


def test_each_node_gets_the_models_that_name_it_or_name_no_node():
    mine = {host: [m["file"] for m in FILTERS["models_for_node"](MODELS, host)] for host in HOSTS}
    assert mine == {
        "server1": ["small.gguf"],
        "agent1": ["small.gguf", "big.gguf"],
        "agent2": ["small.gguf", "big.gguf", "local.gguf"],
    }
    assert [m["file"] for m in FILTERS["models_to_copy"](MODELS)] == ["small.gguf", "big.gguf"]


def test_a_backend_runs_where_its_model_is_and_only_on_play_hosts():
    backends = [
        dict(GOOD, name=n, model=m) for n, m in (("a", "small.gguf"), ("b", "big.gguf"), ("c", "local.gguf"))
    ]
    backends.append(dict(GOOD, name="d", model="nowhere.gguf"))
    assert FILTERS["backend_nodes"](backends, MODELS, HOSTS) == {
        "a": HOSTS,
        "b": ["agent1", "agent2"],
        "c": ["agent2"],  # "ghost" is not a host of the play
        "d": [],
    }
    # The same rule as the models role: a backend's nodes are exactly the nodes that were given its model.
    for backend in backends:
        holders = [
            h for h in HOSTS if backend["model"] in [m["file"] for m in FILTERS["models_for_node"](MODELS, h)]
        ]
        assert FILTERS["backend_nodes"]([backend], MODELS, HOSTS)[backend["name"]] == holders


def _stat(model, **stat):
    return {"item": model, "stat": stat}


def test_a_model_is_copied_unless_its_node_copy_has_the_sources_size_and_second():
    small, big, extra = (dict(MODELS[0]), dict(MODELS[1]), {"file": "extra.gguf", "src": "/m/extra.gguf"})
    source = {
        "results": [
            _stat(small, exists=True, size=100, mtime=1700000000.9),
            _stat(big, exists=True, size=200, mtime=1700000500.0),
            _stat(extra, exists=False),
        ]
    }
    node = [
        _stat(small, exists=True, size=100, mtime=1700000000.2),  # same second: in place
        _stat(big, exists=True, size=200, mtime=1700000501.0),  # another time: copied
        _stat(extra, exists=False),
    ]
    refresh = FILTERS["models_to_refresh"]
    stale = refresh([small, big, extra], node, source)
    assert [m["file"] for m in stale] == ["big.gguf", "extra.gguf"]
    assert stale[0] == dict(
        big, source_exists=True, source_size=200, source_mtime=1700000500, node_exists=True
    )
    assert stale[1] == dict(extra, source_exists=False, source_size=0, source_mtime=None, node_exists=False)
    node[0]["stat"]["size"] = 99
    assert [m["file"] for m in refresh([small], node, source)] == ["small.gguf"]
    # quick=false (or "false" from -e): every copy, ansible.builtin.copy then compares content.
    node[0]["stat"]["size"] = 100
    assert [m["file"] for m in refresh([small, big], node, source, "false")] == ["small.gguf", "big.gguf"]
    # A model without any stat (check mode before a download) is still one to copy.
    assert refresh([small], [], [])[0]["source_exists"] is False
    with pytest.raises(AnsibleFilterError, match="node stats"):
        refresh([small], "nope", source)


def test_placement_filters_refuse_what_is_not_a_list_of_mappings():
    with pytest.raises(AnsibleFilterError, match="models_for_node expects a list of mappings"):
        FILTERS["models_for_node"]("small.gguf", "agent1")
    with pytest.raises(AnsibleFilterError, match="backend_nodes expects a list of mappings"):
        FILTERS["backend_nodes"]([["low"]], MODELS, HOSTS)


def errors(backends, image="img", state="present"):
    return FILTERS["llama_backend_errors"](backends, MODELS, image, state, "llm")


def test_a_good_list_has_no_errors_and_numbers_may_be_strings():
    assert errors([GOOD, dict(GOOD, name="high", weight="3", replicas="0", slots="4", ctx_size="4096")]) == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"weight": 0}, "entry low: weight=0 must be an integer from 1 to 10000"),
        ({"weight": 10001}, "entry low: weight=10001 must be an integer from 1 to 10000"),
        ({"slots": 1025}, "entry low: slots=1025 must be an integer from 1 to 1024"),
        ({"replicas": -1}, "entry low: replicas=-1 must be >= 0"),
        ({"replicas": "some"}, "entry low: replicas='some' must be an integer >= 0"),
        ({"name": "Low_1"}, "entry Low_1: name='Low_1' must be a DNS-1123 label"),
        ({"name": "x" * 53}, "must be a DNS-1123 label of at most 52 characters"),
        ({"model": "other.gguf"}, "entry low: model='other.gguf' must be one of the files of models_list"),
        ({"model_name": "a,b"}, "entry low: model_name='a,b' must be one model id"),
        ({"model_aliases": ["de:fault"]}, "entry low: model_aliases: 'de:fault' must be letters"),
        ({"threads": 0}, "entry low: threads=0 must be an integer from 1 to 1024"),
        (
            {"termination_grace_period": -1},
            "entry low: termination_grace_period=-1 must be an integer from 0 to 86400",
        ),
        ({"prompt_template": ""}, "entry low: prompt_template is required"),
    ],
)
def test_each_rule_names_the_entry_and_the_option(entry, message):
    found = errors([dict(GOOD, **entry)])
    assert any(message in e for e in found), found


def test_the_rules_are_the_modules_own():
    # Every per-backend message comes from llama_backend's backend_errors (no copy of the rules in the role).
    entry = dict(GOOD, weight=0, slots=0, n_predict=-3)
    spec = llama_backend_manifests._entry_spec(entry, "img", "llm")
    module_errors = llama_backend_manifests.backend_errors(spec)
    role_errors = errors([entry])
    assert module_errors
    assert all(any(e in r for r in role_errors) for e in module_errors)


def test_the_roles_grace_period_is_checked_unless_an_entry_sets_its_own():
    check = FILTERS["llama_backend_errors"]
    assert check([GOOD], MODELS, "img", "present", "llm", "auto", True, 30) == []
    assert check([GOOD], MODELS, "img", "present", "llm", "auto", True, "5") == []
    assert check([GOOD], MODELS, "img", "present", "llm", "auto", True, 86401) == [
        "llama_backends_list entry low: termination_grace_period=86401 must be an integer from 0 to 86400 "
        "(seconds a deleted pod keeps its requests before it is killed)"
    ]
    # An entry's own value wins over the role's, both ways.
    assert (
        check([dict(GOOD, termination_grace_period=10)], MODELS, "img", "present", "llm", "auto", True, -1)
        == []
    )
    assert check([dict(GOOD, termination_grace_period=-5)], MODELS, "img", "present", "llm", "auto", True, 30)


def test_list_level_problems():
    assert errors([GOOD, GOOD]) == ["llama_backends_list names a backend twice: low"]
    assert errors([GOOD], image="") == [
        "llama_backends_image must name the OCI image that holds llama-api-server.wasm"
    ]
    assert errors("low") == [
        "llama_backends_list must be a list of mappings (name, model, model_name, ...), got 'low'"
    ]
    # Removing needs names only: a bad entry does not stop state=absent, a duplicate does.
    assert errors([dict(GOOD, weight=0)], image="", state="absent") == []
    assert errors([GOOD, GOOD], state="absent") == ["llama_backends_list names a backend twice: low"]


def test_the_archive_root_filter_only_accepts_the_roots_it_is_given():
    archive_root = catalog.FilterModule().filters()["archive_root"]
    assert archive_root("crun-1.8/\ncrun-1.8/configure\n", "configure", ["crun-1.8"]) == {
        "root": "crun-1.8",
        "strip": 1,
        "error": "",
    }
    assert archive_root(["./bin/wasmedge"], "bin/wasmedge", "") == {"root": "", "strip": 0, "error": ""}
    assert archive_root(["evil/bin/wasmedge"], "bin/wasmedge", ["", "WasmEdge-0.14.1-Linux"])["error"] == (
        "the archive has neither bin/wasmedge nor WasmEdge-0.14.1-Linux/bin/wasmedge"
    )
    assert archive_root(["crun-1.7/configure"], "configure", ["crun-1.8"])["error"] == (
        "the archive has no crun-1.8/configure"
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"model_name": 7}, "entry low: model_name=7 must be a string"),
        ({"model_name": {"id": "x"}}, "entry low: model_name={'id': 'x'} must be a string"),
        ({"model_aliases": "default"}, "entry low: model_aliases='default' must be a list of strings"),
        ({"model_aliases": [{"a": 1}]}, "entry low: model_aliases=[{'a': 1}] must be a list of strings"),
        ({"model": ["small.gguf"]}, "entry low: model=['small.gguf'] must be a string"),
        ({"name": 12}, "entry 12: name=12 must be a string"),
    ],
)
def test_values_of_the_wrong_type_are_named_not_a_crash(entry, message):
    assert errors([dict(GOOD, **entry)]) == ["llama_backends_list " + message]


def test_a_lone_node_name_is_one_host_not_a_string_to_search():
    models = [{"file": "m.gguf", "present": True, "nodes": "agent10"}]
    hosts = ["agent1", "agent10"]
    assert FILTERS["backend_nodes"]([dict(GOOD, model="m.gguf")], models, hosts) == {"low": ["agent10"]}
    assert FILTERS["models_for_node"](models, "agent1") == []
    assert FILTERS["models_for_node"](models, "agent10") == models


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("models_for_node", ("undefined", "server1")),
        ("models_for_node", (MODELS, "undefined")),
        ("backend_nodes", ("undefined", MODELS, HOSTS)),
        ("backend_nodes", ([GOOD], "undefined", HOSTS)),
        ("backend_nodes", ([GOOD], MODELS, "undefined")),
    ],
)
def test_an_undefined_input_propagates_instead_of_raising(name, args):
    """ansible-lint renders the roles without an inventory: an error there was reported as jinja[invalid] to every
    user linting a playbook that uses them (ansible-core 2.16); the roles' own validation names the variable."""
    missing = Undefined(name="models_list")
    values = tuple(missing if a == "undefined" else a for a in args)
    assert FILTERS[name](*values) is missing


def test_a_defined_input_of_the_wrong_kind_is_still_an_error():
    with pytest.raises(AnsibleFilterError, match="models_for_node expects a list of mappings"):
        FILTERS["models_for_node"](42, "server1")
    with pytest.raises(AnsibleFilterError, match="backend_nodes expects a list of mappings"):
        FILTERS["backend_nodes"]("text", MODELS, HOSTS)
