"""Backends, their health, and the choice of one for a request.

A *service* is a group of equivalent endpoints (a Kubernetes Service, an entry of the backends file,
a registration through the admin API) with a weight, the models it serves and, optionally, its
endpoints' parallel slots. A *backend* is one (service, endpoint) pair. The routing policy splits
traffic between services:

- ``swrr`` (default): smooth weighted round-robin (nginx's algorithm), exact and blind to load;
- ``weighted-random``: a random service in proportion to the weights (the seed's behaviour);
- ``load-aware``: smooth weighted round-robin over the services that have an endpoint with a free
  slot, each endpoint holding at most its slots' worth of requests; when every backend is full, the
  request waits in a bounded central queue (first come, first served) for the first slot to free,
  and is refused with 429 + Retry-After when the queue is full or with 503 when it waited too long.
  At low load every backend has free slots and the split is exactly the weights'; under saturation
  a backend gets what it can take, so a backend slower than its weight implies cannot grow a queue.

Inside a service, round-robin over its available endpoints (optionally least-busy first; always
least-busy with load-aware routing), so a service's weight is its share whatever its number of
endpoints.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from edgewasm_balancer.contract import ROUTING_POLICIES


@dataclass(frozen=True)
class ServiceSpec:
    """What a discovery source knows about a service."""

    name: str
    weight: int
    urls: tuple[str, ...]
    models: frozenset[str] = frozenset()
    meta: tuple[tuple[str, object], ...] = ()
    slots: int | None = None  # None: unknown (Admission.default_slots with load-aware routing)


@dataclass(frozen=True)
class Admission:
    """Load-aware routing: the central queue in front of full backends."""

    queue_size: int = 128  # per model
    queue_per_client: int = 32
    queue_timeout: float = 30.0
    default_slots: int = 1


@dataclass(frozen=True)
class HealthPolicy:
    """Passive health: `max_fails` failures within `fail_window` eject an endpoint.

    The n-th consecutive ejection lasts `base_ejection * 2**(n-1)` seconds, at most `max_ejection`.
    Failures that may be the request's own doing (anything after it was written) eject an endpoint only
    while at most `max_ejection_percent` of all endpoints would then be out (Envoy's
    max_ejection_percent / panic threshold): one poisonous request cannot empty the pool. Proven
    failures (no connection, a failed health check) always count.
    """

    max_fails: int = 1
    fail_window: float = 10.0
    base_ejection: float = 10.0
    max_ejection: float = 300.0
    max_ejection_percent: float = 50.0


@dataclass(eq=False)
class Endpoint:
    url: str
    service: Service
    in_flight: int = 0
    ejected_until: float = 0.0
    ejections: int = 0
    failures: deque[float] = field(default_factory=deque)
    host: str = field(init=False)
    port: int = field(init=False)
    tls: bool = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        if ":" in self.host:
            self.host = f"[{self.host}]"
        self.port = parts.port or (443 if self.tls else 80)

    @property
    def label(self) -> str:
        return self.service.name

    def available(self, now: float) -> bool:
        return now >= self.ejected_until

    def record_failure(self, policy: HealthPolicy, now: float, may_eject: bool = True) -> bool:
        """Count a failure; returns True when it ejects the endpoint."""
        while self.failures and now - self.failures[0] > policy.fail_window:
            self.failures.popleft()
        self.failures.append(now)
        if len(self.failures) < policy.max_fails or not may_eject:
            return False
        self.ejections += 1
        period = min(policy.base_ejection * 2 ** (self.ejections - 1), policy.max_ejection)
        self.ejected_until = now + period
        self.failures.clear()
        return True

    def record_success(self) -> None:
        self.failures.clear()
        self.ejections = 0
        self.ejected_until = 0.0


@dataclass(eq=False)  # identity: services are dict keys and set members
class Service:
    key: tuple[str, str]
    name: str
    weight: int
    declared_models: frozenset[str] = frozenset()
    discovered_models: frozenset[str] = frozenset()
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    meta: tuple[tuple[str, object], ...] = ()
    slots: int | None = None
    current: int = 0
    next_index: int = 0

    @property
    def models(self) -> frozenset[str]:
        """Declared models win; otherwise what the service reported on /v1/models."""
        return self.declared_models or self.discovered_models

    def serves(self, model: str | None) -> bool:
        # A service that has not told us its models yet takes any model.
        return model is None or not self.models or model in self.models

    def candidates(self, now: float, exclude: set[str]) -> list[Endpoint]:
        return [e for e in self.endpoints.values() if e.url not in exclude and e.available(now)]

    def pick_endpoint(
        self, now: float, exclude: set[str], least_busy: bool, slots: int | None = None
    ) -> Endpoint | None:
        """The next usable endpoint; with `slots`, only one holding fewer requests than that."""
        ordered = list(self.endpoints.values())
        if not ordered:
            return None
        start = self.next_index % len(ordered)
        rotation = ordered[start:] + ordered[:start]
        usable = [
            e
            for e in rotation
            if e.url not in exclude and e.available(now) and (slots is None or e.in_flight < slots)
        ]
        if not usable:
            return None
        chosen = min(usable, key=lambda e: e.in_flight) if least_busy else usable[0]
        self.next_index = ordered.index(chosen) + 1
        return chosen


def smooth_weighted(services: list[Service], accruing: list[Service] | None = None) -> Service:
    """nginx's smooth weighted round-robin: one of `services` (non-empty); mutates their state.

    With `accruing` (load-aware routing: every service that could serve, `services` being those with a
    free slot), a full service takes part in the round too, earning its weight's credit without being
    able to win, and the winner pays for it: a backend that was busy for a moment wins the next picks
    once it is free, so the split keeps to the weights at low load. Its credit stops at two rounds'
    worth, and from then on it is left out of the round: a backend full for a long time gets no burst
    beyond its slots, and the others keep their weights' ratio among themselves.
    """
    entrants = list(services)
    if accruing is not None:
        cap = 2 * sum(svc.weight for svc in accruing)
        entrants += [svc for svc in accruing if svc not in services and svc.current + svc.weight <= cap]
    total = 0
    for svc in entrants:
        svc.current += svc.weight
        total += svc.weight
    best = max(services, key=lambda svc: svc.current)  # the first one on ties, as nginx
    best.current -= total
    return best


class NoBackendError(Exception):
    """No backend can take the request: `status` is 404 (unknown model), 503 (none available, or
    every one stayed busy for the queue timeout) or 429 (every one busy and the queue full)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass(eq=False)
class _Waiter:
    """A request in the central queue (load-aware routing)."""

    model: str | None
    exclude: set[str]
    future: asyncio.Future[Endpoint]
    timer: asyncio.TimerHandle | None = None
    client: str | None = None


class BackendPool:
    """Every service from every discovery source, keyed by (source, name)."""

    def __init__(
        self,
        policy: HealthPolicy | None = None,
        least_busy: bool = False,
        clock: Callable[[], float] = time.monotonic,
        routing: str = "swrr",
        admission: Admission | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if routing not in ROUTING_POLICIES:
            raise ValueError(f"unknown routing policy {routing!r}: one of {', '.join(ROUTING_POLICIES)}")
        self.policy = policy or HealthPolicy()
        self.least_busy = least_busy
        self.clock = clock
        self.routing = routing
        self.admission = admission or Admission()
        self.rng = rng or random.Random()  # noqa: S311 - load spreading, not cryptography
        self.services: dict[tuple[str, str], Service] = {}
        # Endpoints that left their service (a pod failing readiness, a service withdrawn) while requests still
        # held their slots: one that comes back is the same endpoint, slots and all (else it would be booked twice).
        self.retired: dict[tuple[tuple[str, str], str], Endpoint] = {}
        self.queue: deque[_Waiter] = deque()
        self.queue_rejected = {"full": 0, "timeout": 0}
        # Exponentially weighted mean of how long a request holds a slot (for Retry-After).
        self.hold_seconds = 1.0

    # -- discovery ------------------------------------------------------------------------------------
    def replace(self, source: str, specs: Iterable[ServiceSpec]) -> None:
        """Make `specs` the whole set of services of `source`, keeping the health of known endpoints.

        Every service is built before the pool changes: a bad spec raises and changes nothing.
        """
        wanted = {(source, spec.name): spec for spec in specs}
        built = {key: self._build(key, spec) for key, spec in wanted.items()}
        for key in [k for k in self.services if k[0] == source and k not in wanted]:
            self._retire(self.services.pop(key).endpoints.values())
        for key, (svc, endpoints) in built.items():
            self._apply(key, wanted[key], svc, endpoints)
        self._dispatch()

    def _drop_gone(self, svc: Service, endpoints: dict[str, Endpoint]) -> None:
        self._retire(e for url, e in svc.endpoints.items() if url not in endpoints)

    def upsert(self, source: str, spec: ServiceSpec) -> None:
        key = (source, spec.name)
        self._apply(key, spec, *self._build(key, spec))
        self._dispatch()

    def remove(self, source: str, name: str) -> bool:
        svc = self.services.pop((source, name), None)
        if svc is not None:
            self._retire(svc.endpoints.values())
        return svc is not None

    def _retire(self, endpoints: Iterable[Endpoint]) -> None:
        for endpoint in endpoints:
            if endpoint.in_flight > 0:
                self.retired[(endpoint.service.key, endpoint.url)] = endpoint

    def _build(self, key: tuple[str, str], spec: ServiceSpec) -> tuple[Service, dict[str, Endpoint]]:
        svc = self.services.get(key) or Service(key=key, name=spec.name, weight=spec.weight)
        endpoints = {url: svc.endpoints.get(url) or self._returning(key, url, svc) for url in spec.urls}
        return svc, endpoints

    def _returning(self, key: tuple[str, str], url: str, svc: Service) -> Endpoint:
        """The endpoint `url` of `key`: the retired one still holding slots, or a new one."""
        endpoint = self.retired.pop((key, url), None)
        if endpoint is None:
            return Endpoint(url=url, service=svc)
        endpoint.service = svc
        return endpoint

    def _apply(
        self, key: tuple[str, str], spec: ServiceSpec, svc: Service, endpoints: dict[str, Endpoint]
    ) -> None:
        svc.weight = spec.weight
        svc.declared_models = spec.models
        svc.meta = spec.meta
        svc.slots = spec.slots
        self._drop_gone(svc, endpoints)
        svc.endpoints = endpoints
        self.services[key] = svc

    def endpoints(self) -> list[Endpoint]:
        return [e for svc in self.services.values() for e in svc.endpoints.values()]

    def models(self) -> set[str]:
        return {m for svc in self.services.values() for m in svc.models}

    # -- selection ------------------------------------------------------------------------------------
    def _ready(self, model: str | None, exclude: set[str], now: float) -> list[Service]:
        """The services that serve `model` and have an available endpoint; raises when there is none."""
        serving = [s for s in self.services.values() if s.serves(model) and s.endpoints]
        if not serving:
            if model is not None and self.services:
                raise NoBackendError(404, f"The model '{model}' does not exist")
            raise NoBackendError(503, "No backend is registered", retry_after=1)
        ready = [s for s in serving if s.candidates(now, exclude)]
        if not ready:
            raise NoBackendError(503, "No backend is available", retry_after=self._retry_after(serving, now))
        return ready

    def pick(self, model: str | None, exclude: set[str] | None = None) -> Endpoint:
        """The next backend for a request for `model` (None: any), skipping the URLs in `exclude`.

        Load-blind: the swrr or weighted-random choice (load-aware routing goes through `take`).
        """
        exclude = exclude or set()
        now = self.clock()
        ready = self._ready(model, exclude, now)
        if self.routing == "weighted-random":
            svc = self.rng.choices(ready, weights=[s.weight for s in ready])[0]
        else:
            # Services keep their smooth-WRR state between calls; only the ready ones take part.
            svc = smooth_weighted(ready)
        endpoint = svc.pick_endpoint(now, exclude, self.least_busy)
        assert endpoint is not None
        return endpoint

    def slots(self, svc: Service) -> int:
        return svc.slots or self.admission.default_slots

    def _pick_free(self, model: str | None, exclude: set[str], now: float) -> Endpoint | None:
        """Load-aware: an endpoint with a free slot, split by weight among the services that have one."""
        ready = self._ready(model, exclude, now)
        free = [s for s in ready if any(e.in_flight < self.slots(s) for e in s.candidates(now, exclude))]
        if not free:
            return None
        svc = smooth_weighted(free, ready)
        return svc.pick_endpoint(now, exclude, least_busy=True, slots=self.slots(svc))

    async def take(
        self, model: str | None, exclude: set[str] | None = None, client: str | None = None
    ) -> Endpoint:
        """Reserve a backend for a request (give it back with `release`); may wait with load-aware routing.
        `client`: the requester's address, for the per-client share of the queue."""
        exclude = set(exclude or ())
        if self.routing != "load-aware":
            endpoint = self.pick(model, exclude)
            endpoint.in_flight += 1
            return endpoint
        now = self.clock()
        # First come, first served: queued requests get every free slot they can use first (_dispatch), so
        # a slot still free after that is one no queued request can use - this one may take it.
        self._dispatch()
        endpoint = self._pick_free(model, exclude, now)
        if endpoint is None:
            self._ready(model, exclude, now)  # 404 or 503 right away, not after a wait
            return await self._wait(model, exclude, client)
        endpoint.in_flight += 1
        return endpoint

    async def _wait(self, model: str | None, exclude: set[str], client: str | None = None) -> Endpoint:
        if sum(1 for w in self.queue if w.model == model) >= self.admission.queue_size:
            self.queue_rejected["full"] += 1
            raise NoBackendError(
                429,
                "Every backend of this model is busy and its queue is full",
                retry_after=self._queue_retry_after(),
            )
        if (
            client is not None
            and sum(1 for w in self.queue if w.client == client) >= self.admission.queue_per_client
        ):
            self.queue_rejected["full"] += 1
            raise NoBackendError(
                429,
                f"This client already has {self.admission.queue_per_client} requests waiting",
                retry_after=self._queue_retry_after(),
            )
        loop = asyncio.get_running_loop()
        waiter = _Waiter(model, exclude, loop.create_future(), client=client)
        waiter.timer = loop.call_later(self.admission.queue_timeout, self._expire, waiter)
        self.queue.append(waiter)
        self._dispatch()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            # The client went away (or shutdown): give back a slot reserved at the same moment.
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
                self.release(waiter.future.result())
            raise
        finally:
            waiter.timer.cancel()
            if waiter in self.queue:
                self.queue.remove(waiter)

    def _expire(self, waiter: _Waiter) -> None:
        if waiter.future.done():
            return
        self.queue.remove(waiter)
        self.queue_rejected["timeout"] += 1
        waiter.future.set_exception(
            NoBackendError(
                503,
                f"Every backend stayed busy for {self.admission.queue_timeout:g} s",
                retry_after=self._queue_retry_after(),
            )
        )

    def _dispatch(self) -> None:
        """Hand free slots to queued requests, oldest first (a request no free backend can serve waits
        without holding up the ones behind it)."""
        if not self.queue:
            return
        now = self.clock()
        for waiter in list(self.queue):
            if waiter.future.done():
                self.queue.remove(waiter)
                continue
            try:
                endpoint = self._pick_free(waiter.model, waiter.exclude, now)
            except NoBackendError as exc:  # its model or its backends went away while it waited
                self.queue.remove(waiter)
                waiter.future.set_exception(exc)
                continue
            if endpoint is not None:
                self.queue.remove(waiter)
                endpoint.in_flight += 1
                waiter.future.set_result(endpoint)

    def release(self, endpoint: Endpoint, held: float | None = None) -> None:
        """Give back a slot `take` reserved; `held`: seconds the request held it."""
        endpoint.in_flight -= 1
        if endpoint.in_flight <= 0:
            self.retired.pop((endpoint.service.key, endpoint.url), None)
        if held is not None:
            self.hold_seconds += 0.1 * (held - self.hold_seconds)
        self._dispatch()

    def _queue_retry_after(self) -> int:
        """Seconds until the queue has likely drained: its length over the slots, times a slot's hold time."""
        slots = sum(self.slots(s) * len(s.endpoints) for s in self.services.values()) or 1
        return max(1, math.ceil(len(self.queue) / slots * self.hold_seconds))

    @staticmethod
    def _retry_after(services: list[Service], now: float) -> int:
        until = [e.ejected_until for s in services for e in s.endpoints.values() if e.ejected_until > now]
        return max(1, math.ceil(min(until) - now)) if until else 1

    def ready(self) -> bool:
        now = self.clock()
        return any(e.available(now) for e in self.endpoints())

    # -- health ---------------------------------------------------------------------------------------
    def failure(self, endpoint: Endpoint, *, proven: bool = True) -> bool:
        """Count a failure of `endpoint`; True when it is ejected. See HealthPolicy for `proven`."""
        now = self.clock()
        may_eject = proven or self._ejection_allowed(endpoint, now)
        return endpoint.record_failure(self.policy, now, may_eject)

    def _ejection_allowed(self, endpoint: Endpoint, now: float) -> bool:
        everything = self.endpoints()
        out = sum(1 for e in everything if not e.available(now) and e is not endpoint)
        return (out + 1) * 100 <= len(everything) * self.policy.max_ejection_percent

    def success(self, endpoint: Endpoint) -> None:
        endpoint.record_success()
        self._dispatch()
