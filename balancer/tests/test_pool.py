"""Selection and passive health, without sockets."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from edgewasm_balancer.pool import Admission, BackendPool, HealthPolicy, NoBackendError, ServiceSpec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool_of(*specs: ServiceSpec, clock: Clock | None = None, **kwargs) -> BackendPool:
    pool = BackendPool(clock=clock or Clock(), **kwargs)
    pool.replace("static", specs)
    return pool


def spec(name: str, weight: int, n: int = 1, models: tuple[str, ...] = ()) -> ServiceSpec:
    return ServiceSpec(
        name=name,
        weight=weight,
        urls=tuple(f"http://{name}-{i}:80" for i in range(n)),
        models=frozenset(models),
    )


def test_smooth_sequence_for_5_1_1_is_nginx_s():
    pool = pool_of(spec("a", 5), spec("b", 1), spec("c", 1))
    picks = [pool.pick(None).service.name for _attempt in range(14)]
    assert "".join(picks) == "aabacaa" * 2


def test_service_weight_is_spread_over_its_endpoints():
    pool = pool_of(spec("big", 3, n=3), spec("small", 1, n=1))
    counts = Counter(pool.pick(None).url for _attempt in range(4000))
    assert counts == {
        "http://big-0:80": 1000,
        "http://big-1:80": 1000,
        "http://big-2:80": 1000,
        "http://small-0:80": 1000,
    }


def test_model_restricts_candidates_and_unknown_model_is_404():
    pool = pool_of(spec("one", 3, models=("m1",)), spec("two", 1, models=("m2", "m2-alias")))
    assert {pool.pick("m2-alias").service.name for _attempt in range(10)} == {"two"}
    assert {pool.pick("m1").service.name for _attempt in range(10)} == {"one"}
    with pytest.raises(NoBackendError) as err:
        pool.pick("nope")
    assert err.value.status == 404
    assert "nope" in err.value.message


def test_service_without_known_models_takes_any_model():
    pool = pool_of(spec("declared", 1, models=("m1",)), spec("silent", 1))
    assert {pool.pick("other").service.name for _attempt in range(5)} == {"silent"}


def test_ejection_grows_and_expires():
    clock = Clock()
    pool = pool_of(
        spec("a", 1),
        spec("b", 1),
        clock=clock,
        policy=HealthPolicy(max_fails=2, fail_window=10, base_ejection=10, max_ejection=25),
    )
    a = pool.services["static", "a"].endpoints["http://a-0:80"]
    assert not pool.failure(a)  # 1 of 2
    clock.now += 11  # the first failure is out of the window
    assert not pool.failure(a)
    assert pool.failure(a)
    assert a.ejected_until == clock.now + 10
    assert {pool.pick(None).service.name for _attempt in range(6)} == {"b"}
    clock.now += 10  # ejection over: back in rotation
    assert {pool.pick(None).service.name for _attempt in range(6)} == {"a", "b"}
    pool.failure(a)
    assert pool.failure(a)
    assert a.ejected_until == clock.now + 20  # second consecutive ejection doubles
    clock.now += 20
    pool.failure(a)
    pool.failure(a)
    assert a.ejected_until == clock.now + 25  # capped by max_ejection
    pool.success(a)
    assert a.available(clock.now) and a.ejections == 0


def test_all_ejected_is_503_with_retry_after():
    clock = Clock()
    pool = pool_of(spec("a", 1), clock=clock, policy=HealthPolicy(base_ejection=7.5))
    pool.failure(pool.services["static", "a"].endpoints["http://a-0:80"])
    with pytest.raises(NoBackendError) as err:
        pool.pick(None)
    assert (err.value.status, err.value.retry_after) == (503, 8)


def test_no_backends_is_503_and_exclusion_is_respected():
    with pytest.raises(NoBackendError) as err:
        BackendPool().pick("m")
    assert err.value.status == 503
    pool = pool_of(spec("a", 1, n=2))
    assert pool.pick(None, exclude={"http://a-0:80"}).url == "http://a-1:80"
    with pytest.raises(NoBackendError):
        pool.pick(None, exclude={"http://a-0:80", "http://a-1:80"})


def test_least_busy_prefers_fewest_in_flight():
    pool = pool_of(spec("a", 1, n=3), least_busy=True)
    eps = pool.services["static", "a"].endpoints
    eps["http://a-0:80"].in_flight = 2
    eps["http://a-1:80"].in_flight = 0
    eps["http://a-2:80"].in_flight = 1
    assert pool.pick(None).url == "http://a-1:80"


def test_replace_keeps_health_of_surviving_endpoints_and_drops_gone_services():
    clock = Clock()
    pool = pool_of(spec("a", 1, n=2), spec("b", 1), clock=clock)
    a0 = pool.services["static", "a"].endpoints["http://a-0:80"]
    pool.failure(a0)
    pool.replace("static", [spec("a", 4, n=2)])
    assert list(pool.services) == [("static", "a")]
    same = pool.services["static", "a"].endpoints["http://a-0:80"]
    assert same is a0 and not same.available(clock.now)
    assert pool.services["static", "a"].weight == 4


def test_sources_do_not_overwrite_each_other():
    pool = BackendPool()
    pool.replace("kubernetes/ns1", [spec("ns1/llama", 1)])
    pool.replace("kubernetes/ns2", [spec("ns2/llama", 1)])
    pool.replace("kubernetes/ns1", [])
    assert list(pool.services) == [("kubernetes/ns2", "ns2/llama")]


@pytest.mark.parametrize("how", ["endpoint-flaps", "service-withdrawn", "service-removed"])
async def test_a_busy_endpoint_that_comes_back_keeps_its_slots(how):
    """Before: a busy pod that failed readiness and came back was rebuilt with in_flight=0 and double-booked."""
    pool = pool_of(spec("a", 1, n=2), routing="load-aware")
    a = await pool.take(None, set())
    busy = next(iter(pool.services.values())).endpoints[a.url]
    assert busy.in_flight == 1
    others = tuple(u for u in (f"http://a-{i}:80" for i in range(2)) if u != a.url)
    if how == "endpoint-flaps":
        pool.replace("static", [ServiceSpec("a", 1, others)])
    elif how == "service-withdrawn":
        pool.replace("static", [])
    else:
        pool.remove("static", "a")
    pool.replace("static", [spec("a", 1, n=2)])
    back = next(iter(pool.services.values())).endpoints[a.url]
    assert back is busy and back.in_flight == 1
    pool.release(a)
    assert back.in_flight == 0 and pool.retired == {}


async def test_one_models_flood_never_refuses_another_model_and_one_client_cannot_fill_the_queue():
    """Before: with --queue-size 8, nine requests for model a made a request for b get 429 while b was idle."""
    pool = pool_of(
        spec("a", 1, models=("m-a",)),
        spec("b", 1, models=("m-b",)),
        routing="load-aware",
        admission=Admission(queue_size=2, queue_per_client=2, queue_timeout=30),
    )
    first_a = await pool.take("m-a", set(), "c1")
    waiting = [asyncio.create_task(pool.take("m-a", set(), client)) for client in ("c1", "c2")]
    await asyncio.sleep(0)
    with pytest.raises(NoBackendError) as full:
        await pool.take("m-a", set(), "c3")
    assert full.value.status == 429 and "of this model" in full.value.message
    # b's backend is idle: served at once, though a's queue is full and not empty.
    first_b = await asyncio.wait_for(pool.take("m-b", set(), "c3"), 1)
    assert first_b.service.name == "b"
    # b's own queue: c1 may still queue one more request (its share is 2, one of them for a).
    queued_b = asyncio.create_task(pool.take("m-b", set(), "c1"))
    await asyncio.sleep(0)
    with pytest.raises(NoBackendError) as mine:
        await pool.take("m-b", set(), "c1")
    assert mine.value.status == 429 and "This client already has 2 requests waiting" in mine.value.message
    pool.release(first_a)
    assert (await waiting[0]).service.name == "a"
    pool.release(first_b)
    assert (await queued_b).service.name == "b"
    for task in waiting[1:]:
        task.cancel()
