"""Backend sources: Kubernetes (through a fake API server), the backends file, the admin API."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from dataclasses import replace

import pytest
from conftest import TEST_SETTINGS, admin_url, base_url
from fake_kube import FakeKubeApi, endpoint_slice, service
from kubernetes_asyncio import client

from edgewasm_balancer import kube as kube_module
from edgewasm_balancer.app import Balancer
from edgewasm_balancer.kube import KubeDiscovery, KubeSettings, parse_models, parse_weight, service_specs
from edgewasm_balancer.pool import BackendPool
from edgewasm_balancer.sources import InvalidBackendError, load_backends_file, parse_backends, registration

KUBE = KubeSettings(
    namespaces=("llm", "other"),
    label_selector="llamaedge/target=true",
    weight_annotation="llamaedge/weight",
    models_annotation="llamaedge/models",
    backoff_initial=0.05,
    backoff_max=0.1,
)


async def eventually(check, timeout: float = 5.0) -> None:
    for _attempt in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    assert check(), getattr(check, "__doc__", None)


def urls(pool: BackendPool) -> dict[str, tuple[int, list[str], list[str]]]:
    return {s.name: (s.weight, sorted(s.endpoints), sorted(s.models)) for s in pool.services.values()}


@pytest.fixture
async def kube():
    api = await FakeKubeApi().start()
    cfg = client.Configuration(host=api.url)
    api_client = client.ApiClient(configuration=cfg)
    yield api, api_client
    await api_client.close()
    await api.stop()


async def test_kubernetes_list_then_watch(kube):
    fake, api_client = kube
    fake.apply("services", service("llm", "low-cost", weight="3", models="llama-3-1b"))
    fake.apply("endpointslices", endpoint_slice("llm", "low-cost", ["10.42.0.5", "10.42.1.7"], ["10.42.2.9"]))
    fake.apply("services", service("other", "low-cost", weight="1", models='["m-a", "m-b"]'))
    pool = BackendPool()
    discovery = KubeDiscovery(pool, KUBE, api_client)
    task = asyncio.create_task(discovery.run())
    try:
        await eventually(lambda: discovery.synced and len(pool.services) == 2)
        assert urls(pool) == {
            "llm/low-cost": (3, ["http://10.42.0.5:8080", "http://10.42.1.7:8080"], ["llama-3-1b"]),
            "other/low-cost": (1, [], ["m-a", "m-b"]),  # same name, other namespace: no collision
        }
        assert ("services", "llm", "llamaedge/target=true") in fake.lists
        await eventually(
            lambda: fake.watching("endpointslices", "other") and fake.watching("services", "llm")
        )
        # Watch events: a pod becomes ready, a weight changes, a service goes away.
        fake.apply("endpointslices", endpoint_slice("other", "low-cost", ["10.43.0.1"]))
        fake.apply("services", service("llm", "low-cost", weight="5", models="llama-3-1b"))
        await eventually(
            lambda: (
                urls(pool).get("other/low-cost", (0, []))[1] == ["http://10.43.0.1:8080"]
                and pool.services["kubernetes/llm", "llm/low-cost"].weight == 5
            )
        )
        fake.delete("services", "other", "low-cost")
        await eventually(lambda: list(urls(pool)) == ["llm/low-cost"])
        # An expired watch (410 Gone) is followed by a fresh list, and nothing is lost meanwhile.
        lists_before = len(fake.lists)
        fake.expire("services", "llm")
        await eventually(lambda: len(fake.lists) > lists_before)
        fake.apply("services", service("llm", "high-cost", weight="1", models="llama-3-3b"))
        await eventually(lambda: "llm/high-cost" in urls(pool))
        assert urls(pool)["llm/low-cost"][0] == 5
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_failed_list_keeps_the_backends_it_had(kube):
    """A list answered 403, 500 or 429 is an error, never an empty namespace: before, the Status body read as a
    list without items took every backend of the namespace out until the next good list."""
    fake, api_client = kube
    fake.apply("services", service("llm", "low-cost", weight="3", models="llama-3-1b"))
    fake.apply("endpointslices", endpoint_slice("llm", "low-cost", ["10.42.0.5"]))
    pool = BackendPool()
    discovery = KubeDiscovery(pool, KUBE, api_client)
    task = asyncio.create_task(discovery.run())
    expected = {"llm/low-cost": (3, ["http://10.42.0.5:8080"], ["llama-3-1b"])}
    try:
        await eventually(lambda: discovery.synced and urls(pool) == expected)
        await eventually(lambda: fake.watching("services", "llm"))
        lists_before = len(fake.lists)
        fake.failing_lists = [500, 403, 429]
        fake.expire("services", "llm")  # the informer lists again: three failures, then a good list
        seen = []
        for _tick in range(1000):  # 5 s at most
            seen.append(urls(pool))
            if not fake.failing_lists and len(fake.lists) >= lists_before + 4:
                break
            await asyncio.sleep(0.005)
        await eventually(lambda: fake.watching("services", "llm"))
        assert all(state == expected for state in seen), [s for s in seen if s != expected][:1]
        assert urls(pool) == expected
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_kubernetes_discovery_resyncs_after_the_api_goes_away(kube):
    fake, api_client = kube
    fake.apply("services", service("llm", "a"))
    pool = BackendPool()
    discovery = KubeDiscovery(pool, replace(KUBE, namespaces=("llm",)), api_client)
    task = asyncio.create_task(discovery.run())
    try:
        await eventually(lambda: fake.watching("services", "llm") == 1)
        lists_before = len(fake.lists)
        for queue in fake.watchers[("services", "llm")]:
            queue.put_nowait(None)  # the API server ends the watch
        await eventually(lambda: fake.watching("services", "llm") == 1)
        assert len(fake.lists) == lists_before  # resumed from its resourceVersion, no relist
        fake.apply("services", service("llm", "b"))
        await eventually(lambda: "llm/b" in urls(pool))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_service_specs_skip_invalid_annotations(caplog):
    services = {
        "ok": service("ns", "ok", weight=None),
        "zero": service("ns", "zero", weight="0"),
        "junk": service("ns", "junk", weight="heavy"),
        "badmodels": service("ns", "badmodels", models="[1, 2]"),
    }
    slices = {"ok-1": endpoint_slice("ns", "ok", ["10.0.0.1"], port=9000)}
    specs = service_specs("ns", services, slices, KUBE)
    assert [(s.name, s.weight, s.urls) for s in specs] == [("ns/ok", 1, ("http://10.0.0.1:9000",))]
    skipped = [r.service for r in caplog.records if getattr(r, "service", None)]
    assert sorted(skipped) == ["ns/badmodels", "ns/junk", "ns/zero"]


def test_named_port_selection():
    svc = service("ns", "s", port_name="api")
    slices = {"s-1": endpoint_slice("ns", "s", ["fd00::5"], port=8443, port_name="api")}
    assert service_specs("ns", {"s": svc}, slices, replace(KUBE, port_name="api"))[0].urls == (
        "http://[fd00::5]:8443",
    )
    assert service_specs("ns", {"s": svc}, slices, replace(KUBE, port_name="metrics")) == []


def test_annotation_parsers():
    assert parse_weight(None) == 1
    assert parse_weight(" 7 ") == 7
    for bad in ("0", "-2", "1.5", ""):
        with pytest.raises(ValueError):
            parse_weight(bad)
    assert parse_models("a, b,,c") == {"a", "b", "c"}
    assert parse_models('["x"]') == {"x"}
    assert parse_models(None) == frozenset()


async def test_balancer_in_kubernetes_mode_is_ready_only_after_sync(kube, backends, http):
    fake, api_client = kube
    a = await backends("a")
    fake.apply("services", service("llm", "a", port_name="http"))
    fake.apply("endpointslices", endpoint_slice("llm", "a", ["127.0.0.1"], port=a.port))
    bal = Balancer(replace(TEST_SETTINGS, kubernetes=True, namespaces=("llm",)), kube_api=api_client)
    await bal.start()
    try:
        await eventually(lambda: bal.kube is not None and bal.kube.synced)
        async with http.get(base_url(bal) + "/readyz") as r:
            assert r.status == 200
        async with http.post(base_url(bal) + "/v1/chat/completions", json={"messages": []}) as r:
            assert r.status == 200
            assert r.headers["X-Edgewasm-Backend"] == "llm/a"
    finally:
        await bal.stop()


# -- backends file ------------------------------------------------------------------------------------
async def test_backends_file_is_reloaded_and_a_bad_edit_keeps_the_last_good_set(
    backends, balancer, http, tmp_path
):
    a, b = await backends("a"), await backends("b")
    bal = await balancer([{"name": "a", "url": a.url}])
    path = bal.settings.backends_file
    path.write_text(json.dumps([{"name": "a", "url": a.url}, {"name": "b", "url": b.url, "weight": 2}]))
    await eventually(lambda: len(bal.pool.services) == 2)
    path.write_text("[{not json")
    await asyncio.sleep(0.2)
    assert sorted(n for _unused, n in bal.pool.services) == ["a", "b"]
    path.write_text(json.dumps([{"name": "b", "url": b.url}]))
    await eventually(lambda: list(bal.pool.services) == [("static", "b")])


def test_backends_file_validation(tmp_path):
    with pytest.raises(InvalidBackendError, match=r"\[0\]: weight must be an integer from 1 to 10000, got 0"):
        parse_backends([{"name": "a", "url": "http://x:1", "weight": 0}], "f")
    with pytest.raises(InvalidBackendError, match="duplicate name 'a'"):
        parse_backends([{"name": "a", "url": "http://x:1"}, {"name": "a", "url": "http://y:1"}], "f")
    with pytest.raises(InvalidBackendError, match="url must look like"):
        parse_backends([{"name": "a", "url": "x:1"}], "f")
    with pytest.raises(InvalidBackendError, match="unknown keys"):
        parse_backends([{"name": "a", "url": "http://x:1", "wieght": 2}], "f")
    yaml_file = tmp_path / "b.yaml"
    yaml_file.write_text("backends:\n  - name: a\n    urls: [http://x:1, http://y:2]\n    models: m\n")
    (only,) = load_backends_file(yaml_file)
    assert (only.urls, only.models, only.weight) == (("http://x:1", "http://y:2"), {"m"}, 1)


# -- admin API ----------------------------------------------------------------------------------------
async def test_admin_api_requires_the_token(backends, balancer, http):
    a = await backends("a")
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)  # the stand-in backends listen there
    bal = await balancer(admin_api=True, admin_token="s3cret", admin_allow_networks=loopback)
    url = admin_url(bal)
    reg = {"name": "low-cost", "weight": 3, "ip": "127.0.0.1", "port": a.port}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        async with http.post(url + "/api/register", json=reg, headers=headers) as r:
            assert r.status == 401
        async with http.get(url + "/api/services", headers=headers) as r:
            assert r.status == 401
        async with http.delete(url + "/api/unregister/low-cost", headers=headers) as r:
            assert r.status == 401
    assert bal.pool.services == {}
    auth = {"Authorization": "Bearer s3cret"}
    async with http.post(url + "/api/register", json=reg, headers=auth) as r:
        assert (r.status, await r.text()) == (200, "Registered")
    async with http.post(base_url(bal) + "/v1/chat/completions", json={}) as r:
        assert r.headers["X-Edgewasm-Backend"] == "low-cost"
    async with http.get(url + "/api/services", headers=auth) as r:
        (listed,) = await r.json()
    assert (listed["name"], listed["weight"], listed["ip"], listed["port"]) == (
        "low-cost",
        3,
        "127.0.0.1",
        a.port,
    )
    assert listed["endpoints"][0]["healthy"] is True
    async with http.delete(url + "/api/unregister/low-cost", headers=auth) as r:
        assert r.status == 200
    async with http.delete(url + "/api/unregister/low-cost", headers=auth) as r:
        assert r.status == 404


async def test_admin_api_rejects_bad_registrations(balancer, http):
    bal = await balancer(admin_api=True, admin_token="t")
    auth = {"Authorization": "Bearer t"}
    for bad in (
        {"name": "x", "weight": 0, "ip": "10.0.0.1", "port": 80},
        {"name": "x", "weight": 10001, "ip": "10.0.0.1", "port": 80},
        {"name": "x", "weight": 10**400, "ip": "10.0.0.1", "port": 80},
        {"name": "x", "weight": 1, "ip": "10.0.0.1", "port": 70000},
        {"name": "", "weight": 1, "ip": "10.0.0.1", "port": 80},
        {"name": "x", "weight": 1, "ip": "not a host!", "port": 80},
    ):
        async with http.post(admin_url(bal) + "/api/register", json=bad, headers=auth) as r:
            assert r.status == 400, bad
            assert "error" in await r.json()
    async with http.post(admin_url(bal) + "/api/register", data=b"{oops", headers=auth) as r:
        assert r.status == 400
    assert bal.pool.services == {}


def test_registration_formats_ipv6():
    assert registration({"name": "v6", "ip": "fd00::1", "port": 8080}).urls == ("http://[fd00::1]:8080",)


async def test_a_bug_in_discovery_is_logged_with_its_traceback_not_hidden(kube, caplog, monkeypatch):
    """Connection trouble is a warning and a relist; anything else is a bug and must say so loudly."""
    fake, api_client = kube
    fake.apply("services", service("llm", "low-cost", weight="3", models="llama-3-1b"))

    def broken(*_args):
        raise RuntimeError("a bug in our own code")

    monkeypatch.setattr(kube_module, "service_specs", broken)
    discovery = KubeDiscovery(BackendPool(), KUBE, api_client)
    task = asyncio.create_task(discovery.run())
    try:
        await eventually(lambda: any(r.exc_info for r in caplog.records))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    bug = next(r for r in caplog.records if r.exc_info)
    assert bug.levelname == "ERROR" and "a bug in our own code" in str(bug.exc_info[1])
    caplog.clear()  # handled here: not a crash for the fixtures to report
