"""Routing policies: swrr, weighted-random and load-aware (slots, the central queue, admission).

BackendPool-level tests drive `take`/`release` directly (no sockets); the HTTP tests go through the balancer
to stand-in backends that hold each request for a while.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections import Counter

import aiohttp
import pytest
from conftest import base_url, metrics_url

from edgewasm_balancer.config import parse_settings
from edgewasm_balancer.pool import Admission, BackendPool, NoBackendError, ServiceSpec
from edgewasm_balancer.sources import InvalidBackendError, parse_backends, registration

WEIGHTS = {"a": 3, "b": 1, "c": 2}
SLOTS = {"a": 2, "b": 1, "c": 2}


def seed_pool(
    routing: str, *, queue_size: int = 128, queue_timeout: float = 30.0, seed: int = 7
) -> BackendPool:
    pool = BackendPool(
        routing=routing,
        admission=Admission(queue_size=queue_size, queue_timeout=queue_timeout),
        rng=random.Random(seed),  # noqa: S311 - a reproducible test, not cryptography
    )
    pool.replace(
        "file",
        [
            ServiceSpec(name, weight, (f"http://10.0.0.{i}:8080",), frozenset({"m", name}), slots=SLOTS[name])
            for i, (name, weight) in enumerate(WEIGHTS.items(), 1)
        ],
    )
    return pool


async def one_at_a_time(pool: BackendPool, requests: int) -> Counter[str]:
    """`requests` requests for model m, each released before the next: the split at low load."""
    counts: Counter[str] = Counter()
    for _attempt in range(requests):
        endpoint = await pool.take("m")
        counts[endpoint.label] += 1
        pool.release(endpoint)
    return counts


async def test_low_load_load_aware_split_is_exactly_the_weights():
    """One request at a time: every backend has a free slot, so the split is smooth WRR's."""
    assert await one_at_a_time(seed_pool("load-aware"), 600) == {"a": 300, "b": 100, "c": 200}


async def test_weighted_random_follows_the_weights_on_average_only():
    pool = seed_pool("weighted-random")
    picks = [(await pool.take(None)) for _attempt in range(30_000)]
    for endpoint in picks:
        pool.release(endpoint)
    counts = Counter(e.label for e in picks)
    for name, weight in WEIGHTS.items():
        assert abs(counts[name] / 30_000 - weight / 6) < 0.01, counts
    # Not smooth: runs of one backend far longer than swrr's (which never repeats b or c).
    longest = max(len(run) for run in "".join(e.label for e in picks).replace("a", " ").split())
    assert longest >= 3


async def test_swrr_takes_never_wait_and_count_in_flight():
    pool = seed_pool("swrr")
    taken = [await pool.take(None) for _attempt in range(60)]  # far more than the slots: no queue
    assert sum(e.in_flight for e in pool.endpoints()) == 60
    assert Counter(e.label for e in taken) == {"a": 30, "b": 10, "c": 20}
    for endpoint in taken:
        pool.release(endpoint)
    assert sum(e.in_flight for e in pool.endpoints()) == 0


async def test_load_aware_never_exceeds_slots_and_queues_the_rest_first_come_first_served():
    pool = seed_pool("load-aware")
    held = [await pool.take("m") for _attempt in range(5)]  # 2 + 1 + 2 slots
    assert {e.label: e.in_flight for e in pool.endpoints()} == SLOTS
    waiting = [asyncio.create_task(pool.take("m")) for _attempt in range(3)]
    await asyncio.sleep(0)
    assert len(pool.queue) == 3
    assert not any(task.done() for task in waiting)
    # b frees its only slot: the oldest waiter gets it, the others keep waiting.
    pool.release(next(e for e in held if e.label == "b"))
    await asyncio.sleep(0)
    assert waiting[0].done() and not waiting[1].done()
    assert waiting[0].result().label == "b"
    assert max(e.in_flight - SLOTS[e.label] for e in pool.endpoints()) == 0
    pool.release(next(e for e in held if e.label == "a"))
    pool.release(next(e for e in held if e.label == "c"))
    await asyncio.sleep(0)
    assert {waiting[1].result().label, waiting[2].result().label} == {"a", "c"}
    assert not pool.queue


async def test_a_full_backend_gets_no_more_than_it_can_take_while_others_are_free():
    """The mis-weighted case in small: a slow `a` keeps its slots busy, so new requests go elsewhere
    although `a` has the largest weight."""
    pool = seed_pool("load-aware")
    slow = [await pool.take("a") for _attempt in range(2)]
    assert all(e.label == "a" for e in slow)
    assert await one_at_a_time(pool, 30) == {"b": 10, "c": 20}  # the others keep their weights' ratio


async def test_a_backend_busy_for_a_moment_catches_up_its_share_afterwards():
    """Low load: b's single slot is busy for a few requests; it earns its credit meanwhile and wins the
    next picks once free, so over the whole window the split is still the weights' (within one)."""
    pool = seed_pool("load-aware")
    held = await pool.take("b")
    counts = Counter({"b": 1}) + await one_at_a_time(pool, 6)
    assert counts["b"] == 1  # it was full
    pool.release(held)
    counts += await one_at_a_time(pool, 54)
    # 61 requests at 3:1:2 are 30.5 / 10.2 / 20.3: b got back the pick it missed (without its credit
    # it would end at 10, and a at 31).
    assert counts == {"a": 30, "b": 11, "c": 20}


async def test_poisson_load_keeps_the_split_at_the_weights_until_saturation():
    """A virtual-time simulation (Poisson arrivals, speeds matching the weights, slots 2/1/2): at 10-40%
    of capacity b's single slot is often busy when its turn comes, yet the split stays the weights'."""
    speed = {name: WEIGHTS[name] / SLOTS[name] for name in WEIGHTS}
    for load in (0.1, 0.2, 0.4):
        pool = seed_pool("load-aware")
        rng = random.Random(3)  # noqa: S311 - a reproducible simulation
        rate = load * sum(SLOTS[n] * speed[n] for n in WEIGHTS) / 0.25
        now, finishing, counts, skipped = 0.0, [], Counter(), 0
        for index in range(6000):
            now += rng.expovariate(rate)
            while finishing and finishing[0][0] <= now:
                pool.release(heapq.heappop(finishing)[2])
            if all(e.in_flight >= pool.slots(e.service) for e in pool.endpoints()):
                skipped += 1  # would wait in the queue: not part of the split
                continue
            endpoint = await pool.take("m")
            counts[endpoint.label] += 1
            seconds = (0.05 + rng.expovariate(1 / 40) * 0.005) / speed[endpoint.label]
            heapq.heappush(finishing, (now + seconds, index, endpoint))
        total = sum(counts.values())
        for name, weight in WEIGHTS.items():
            assert abs(counts[name] / total - weight / 6) < 0.002, (load, counts, skipped)


async def test_a_queued_request_for_one_model_does_not_hold_up_another_model():
    pool = seed_pool("load-aware")
    held = [await pool.take("b")]  # b's only slot
    stuck = asyncio.create_task(pool.take("b"))
    await asyncio.sleep(0)
    assert len(pool.queue) == 1
    other = await asyncio.wait_for(pool.take("c"), 1)  # queued behind `stuck`, dispatched at once
    assert other.label == "c"
    assert not stuck.done()
    pool.release(held[0])
    assert (await asyncio.wait_for(stuck, 1)).label == "b"


async def test_full_queue_is_refused_with_429_and_a_retry_after():
    pool = seed_pool("load-aware", queue_size=2)
    for _attempt in range(5):
        await pool.take("m")
    queued = [asyncio.create_task(pool.take("m")) for _attempt in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(NoBackendError) as refused:
        await pool.take("m")
    assert refused.value.status == 429
    assert refused.value.retry_after >= 1
    assert pool.queue_rejected == {"full": 1, "timeout": 0}
    for task in queued:
        task.cancel()
    await asyncio.gather(*queued, return_exceptions=True)
    assert not pool.queue


async def test_waiting_past_the_queue_timeout_is_a_503_and_leaves_the_queue():
    pool = seed_pool("load-aware", queue_timeout=0.05)
    for _attempt in range(5):
        await pool.take("m")
    with pytest.raises(NoBackendError) as expired:
        await pool.take("m")
    assert expired.value.status == 503
    assert "stayed busy for 0.05 s" in expired.value.message
    assert pool.queue_rejected == {"full": 0, "timeout": 1}
    assert not pool.queue


async def test_a_cancelled_waiter_leaks_no_slot():
    pool = seed_pool("load-aware")
    held = [await pool.take("b")]
    waiter = asyncio.create_task(pool.take("b"))
    await asyncio.sleep(0)
    # The slot is handed to the waiter and the waiter is cancelled before it resumes.
    pool.release(held[0])
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert [e.in_flight for e in pool.endpoints()] == [0, 0, 0]


async def test_unknown_model_and_no_backend_are_answered_at_once_even_with_a_queue():
    pool = seed_pool("load-aware")
    for _attempt in range(5):
        await pool.take("m")
    blocked = asyncio.create_task(pool.take("m"))
    await asyncio.sleep(0)
    with pytest.raises(NoBackendError) as unknown:
        await pool.take("nope")
    assert unknown.value.status == 404
    pool.replace("file", [])  # every backend removed while one request waits: it gets a 503, not a hang
    with pytest.raises(NoBackendError) as gone:
        await asyncio.wait_for(blocked, 1)
    assert gone.value.status == 503


async def test_slots_default_when_undeclared_and_come_from_every_source():
    pool = BackendPool(routing="load-aware", admission=Admission(default_slots=3))
    pool.replace("file", parse_backends([{"name": "x", "url": "http://10.0.0.9:8080"}], "file"))
    assert pool.slots(next(iter(pool.services.values()))) == 3
    (spec,) = parse_backends([{"name": "y", "url": "http://10.0.0.9:8080", "slots": 4}], "file")
    assert spec.slots == 4
    assert registration({"name": "r", "ip": "10.0.0.5", "port": 8080, "slots": 2}).slots == 2
    for bad in (0, 1025, "2", True, 1.5):
        with pytest.raises(InvalidBackendError, match="slots must be an integer from 1 to 1024"):
            parse_backends([{"name": "z", "url": "http://10.0.0.9:8080", "slots": bad}], "file")


def test_routing_settings_and_their_environment_variables(monkeypatch):
    settings = parse_settings(["--backends-file", "x.yaml"])
    assert (settings.routing, settings.queue_size, settings.queue_timeout, settings.default_slots) == (
        "swrr",
        128,
        30.0,
        1,
    )
    monkeypatch.setenv("EDGEWASM_BALANCER_ROUTING", "load-aware")
    monkeypatch.setenv("EDGEWASM_BALANCER_QUEUE_SIZE", "7")
    assert parse_settings(["--backends-file", "x.yaml"]).routing == "load-aware"
    assert parse_settings(["--backends-file", "x.yaml"]).queue_size == 7
    with pytest.raises(SystemExit):
        parse_settings(["--backends-file", "x.yaml", "--routing", "fastest"])
    with pytest.raises(ValueError, match="unknown routing policy"):
        BackendPool(routing="fastest")


async def _post(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str], dict]:
    async with http.post(url + "/v1/chat/completions", json={"model": "standin-model"}) as answer:
        return answer.status, dict(answer.headers), await answer.json()


async def test_http_load_aware_holds_backends_to_their_slots_and_sheds_load_with_429(backends, balancer):
    slow = [await backends(name, first_byte_delay=1.0) for name in ("a", "b")]
    bal = await balancer(
        [
            {"name": "a", "url": slow[0].url, "weight": 3, "slots": 2},
            {"name": "b", "url": slow[1].url, "weight": 1, "slots": 1},
        ],
        routing="load-aware",
        queue_size=3,
    )
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(*(_post(http, base_url(bal)) for _attempt in range(8)))
        metrics = await (await http.get(metrics_url(bal))).text()
    statuses = Counter(status for status, _headers, _body in results)
    # 3 slots in use, 3 waiting: 6 answered; 2 refused with an OpenAI-style 429 and a Retry-After.
    assert statuses == {200: 6, 429: 2}
    refused = [(headers, body) for status, headers, body in results if status == 429]
    for headers, body in refused:
        assert int(headers["Retry-After"]) >= 1
        assert body["error"]["code"] == "queue_full"
    assert slow[0].max_active == 2
    assert slow[1].max_active == 1
    assert 'edgewasm_balancer_queue_rejected_total{reason="full"} 2.0' in metrics
    assert 'edgewasm_balancer_backend_slots{backend="a",source="static"} 2.0' in metrics


async def test_http_swrr_piles_requests_onto_a_backend_beyond_its_slots(backends, balancer):
    """The behaviour load-aware routing exists to avoid (and swrr keeps, as documented)."""
    slow = await backends("a", first_byte_delay=1.0)
    bal = await balancer([{"name": "a", "url": slow.url, "slots": 1}])
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(*(_post(http, base_url(bal)) for _attempt in range(4)))
    assert [status for status, _headers, _body in results] == [200] * 4
    assert slow.max_active == 4


async def test_http_a_client_that_leaves_the_queue_is_never_sent_to_a_backend(backends, balancer):
    """A queued request whose client disconnects gives up its place: the backend never computes it."""
    slow = await backends("a", first_byte_delay=0.6)
    bal = await balancer([{"name": "a", "url": slow.url, "slots": 1}], routing="load-aware")
    async with aiohttp.ClientSession() as http:
        first = asyncio.create_task(_post(http, base_url(bal)))
        await asyncio.sleep(0.2)
        async with aiohttp.ClientSession() as leaving:
            queued = asyncio.create_task(_post(leaving, base_url(bal)))
            await asyncio.sleep(0.2)
            assert len(bal.pool.queue) == 1
            queued.cancel()  # the client goes away while its request waits for the slot
            with pytest.raises(asyncio.CancelledError):
                await queued
        for _tick in range(50):
            if not bal.pool.queue:
                break
            await asyncio.sleep(0.02)
        assert not bal.pool.queue
        status, _headers, _body = await first
        third = await _post(http, base_url(bal))  # the slot is free again, nothing else took it
        await asyncio.sleep(0.2)
    assert (status, third[0]) == (200, 200)
    assert slow.hits == 2  # the first and the third: the abandoned one never reached the backend
    assert [e.in_flight for e in bal.pool.endpoints()] == [0]
