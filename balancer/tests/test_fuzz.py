"""Property-based fuzzing (hypothesis) of the balancer's input validation: the backends file, admin
registrations, Kubernetes annotations and the model scan of JSON bodies. Any input gives a result or
the documented error type; whatever validation accepts can be applied to the pool.

Deterministic by default; EDGEWASM_FUZZ_RANDOM=1 explores, EDGEWASM_FUZZ_EXAMPLES=N sets the count.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgewasm_balancer import bodies
from edgewasm_balancer.contract import MAX_WEIGHT
from edgewasm_balancer.kube import parse_models, parse_weight
from edgewasm_balancer.pool import BackendPool
from edgewasm_balancer.sources import InvalidBackendError, parse_backends, registration

FUZZ = settings(
    max_examples=int(os.environ.get("EDGEWASM_FUZZ_EXAMPLES", "300")),
    deadline=timedelta(seconds=2),
    derandomize=not os.environ.get("EDGEWASM_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=True)
    | st.text(max_size=30)
    | st.from_regex(r"https?://[a-z0-9.:\[\]-]{1,30}/?", fullmatch=True)
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=20) | st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True),
        "url": SCALARS,
        "urls": st.lists(SCALARS, max_size=3),
        "weight": SCALARS,
        "models": st.lists(st.text(max_size=10), max_size=3) | SCALARS,
    },
)


@FUZZ
@given(st.lists(ENTRY, max_size=5) | JSONISH)
@example([{"name": "a", "url": "http://10.0.0.1:99999"}])
@example([{"name": "a", "url": "http://10.0.0.1:abc"}])
@example([{"name": "a", "url": "http://[::1"}])
@example([{"name": "a", "url": "http://a:1", "weight": 10**400}])
def test_fuzz_backends_file(data: object) -> None:
    try:
        specs = parse_backends(data, "fuzz.yaml")
    except InvalidBackendError as exc:
        assert str(exc).startswith("fuzz.yaml"), exc
        return
    assert all(1 <= spec.weight <= MAX_WEIGHT for spec in specs)
    pool = BackendPool()
    pool.replace("static", specs)  # whatever validation accepts must apply cleanly
    assert len(pool.services) == len(specs)


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.text(max_size=12) | st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True),
            "weight": SCALARS,
            "ip": st.text(max_size=40) | st.ip_addresses().map(str),
            "port": SCALARS | st.integers(0, 70000),
            "models": st.lists(st.text(max_size=8), max_size=2) | SCALARS,
        },
    )
    | JSONISH
)
def test_fuzz_registrations(data: object) -> None:
    try:
        spec = registration(data)
    except InvalidBackendError:
        return
    BackendPool().upsert("admin", spec)


@FUZZ
@given(st.text(max_size=50) | st.integers(-(10**500), 10**500).map(str))
def test_fuzz_annotations(raw: str) -> None:
    try:
        weight = parse_weight(raw)
    except ValueError:
        pass
    else:
        assert 1 <= weight <= MAX_WEIGHT
    try:
        models = parse_models(raw)
    except ValueError:
        return
    assert all(isinstance(m, str) and m == m.strip() and m for m in models)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


@FUZZ
@given(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=5), st.booleans())
def test_fuzz_model_scan_agrees_with_json(document: dict, large: bool) -> None:
    """On valid JSON objects the scanner finds what json.loads finds, on both paths."""
    text = json.dumps(document)
    if large:  # past the json-module path: the scanner
        text = text[:-1] + (", " if document else "") + '"pad": "' + "x" * bodies.SMALL + '"}'
    found = asyncio.run(bodies.requested_model(text.encode(), "application/json"))
    model = document.get("model")
    assert found == (model if isinstance(model, str) and model else None)


@FUZZ
@given(
    st.binary(max_size=200), st.booleans(), st.sampled_from(["application/json", "application/octet-stream"])
)
def test_fuzz_model_scan_on_garbage(data: bytes, large: bool, content_type: str) -> None:
    body = b"{" + data + (b" " * bodies.SMALL if large else b"")
    try:
        found = asyncio.run(bodies.requested_model(body, content_type))
    except bodies.UnreadableBodyError:
        assert "json" in content_type  # only a body declared JSON is ever refused
        return
    assert found is None or isinstance(found, str)
