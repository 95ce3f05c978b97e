"""Backends, their health, and the choice of one for a request.

A *service* is a group of equivalent endpoints (a Kubernetes Service, an entry of the backends file,
a registration through the admin API) with a weight and the models it serves. A *backend* is one
(service, endpoint) pair. Traffic is split between services by smooth weighted round-robin (nginx's
algorithm) and, inside a service, round-robin over its available endpoints (optionally least-busy
first), so a service's weight is its share of traffic whatever its number of endpoints.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# Weights are relative shares; the bound keeps them finite and the smooth-WRR counters small.
MIN_WEIGHT = 1
MAX_WEIGHT = 10_000


@dataclass(frozen=True)
class ServiceSpec:
    """What a discovery source knows about a service."""

    name: str
    weight: int
    urls: tuple[str, ...]
    models: frozenset[str] = frozenset()
    meta: tuple[tuple[str, object], ...] = ()


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

    def pick_endpoint(self, now: float, exclude: set[str], least_busy: bool) -> Endpoint | None:
        ordered = list(self.endpoints.values())
        if not ordered:
            return None
        start = self.next_index % len(ordered)
        rotation = ordered[start:] + ordered[:start]
        usable = [e for e in rotation if e.url not in exclude and e.available(now)]
        if not usable:
            return None
        chosen = min(usable, key=lambda e: e.in_flight) if least_busy else usable[0]
        self.next_index = ordered.index(chosen) + 1
        return chosen


def smooth_weighted(services: list[Service]) -> Service:
    """nginx's smooth weighted round-robin over `services` (non-empty); mutates their state."""
    total = 0
    best: Service | None = None
    for svc in services:
        svc.current += svc.weight
        total += svc.weight
        if best is None or svc.current > best.current:
            best = svc
    assert best is not None
    best.current -= total
    return best


class NoBackendError(Exception):
    """No backend can take the request: `status` is 404 (unknown model) or 503 (none available)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class Pool:
    """Every service from every discovery source, keyed by (source, name)."""

    def __init__(
        self,
        policy: HealthPolicy | None = None,
        least_busy: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or HealthPolicy()
        self.least_busy = least_busy
        self.clock = clock
        self.services: dict[tuple[str, str], Service] = {}

    # -- discovery ------------------------------------------------------------------------------------
    def replace(self, source: str, specs: Iterable[ServiceSpec]) -> None:
        """Make `specs` the whole set of services of `source`, keeping the health of known endpoints.

        Every service is built before the pool changes: a bad spec raises and changes nothing.
        """
        wanted = {(source, spec.name): spec for spec in specs}
        built = {key: self._build(key, spec) for key, spec in wanted.items()}
        for key in [k for k in self.services if k[0] == source and k not in wanted]:
            del self.services[key]
        for key, (svc, endpoints) in built.items():
            self._apply(key, wanted[key], svc, endpoints)

    def upsert(self, source: str, spec: ServiceSpec) -> None:
        key = (source, spec.name)
        self._apply(key, spec, *self._build(key, spec))

    def remove(self, source: str, name: str) -> bool:
        return self.services.pop((source, name), None) is not None

    def _build(self, key: tuple[str, str], spec: ServiceSpec) -> tuple[Service, dict[str, Endpoint]]:
        svc = self.services.get(key) or Service(key=key, name=spec.name, weight=spec.weight)
        endpoints = {url: svc.endpoints.get(url) or Endpoint(url=url, service=svc) for url in spec.urls}
        return svc, endpoints

    def _apply(
        self, key: tuple[str, str], spec: ServiceSpec, svc: Service, endpoints: dict[str, Endpoint]
    ) -> None:
        svc.weight = spec.weight
        svc.declared_models = spec.models
        svc.meta = spec.meta
        svc.endpoints = endpoints
        self.services[key] = svc

    def endpoints(self) -> list[Endpoint]:
        return [e for svc in self.services.values() for e in svc.endpoints.values()]

    def models(self) -> set[str]:
        return {m for svc in self.services.values() for m in svc.models}

    # -- selection ------------------------------------------------------------------------------------
    def pick(self, model: str | None, exclude: set[str] | None = None) -> Endpoint:
        """The next backend for a request for `model` (None: any), skipping the URLs in `exclude`."""
        exclude = exclude or set()
        now = self.clock()
        serving = [s for s in self.services.values() if s.serves(model) and s.endpoints]
        if not serving:
            if model is not None and self.services:
                raise NoBackendError(404, f"The model '{model}' does not exist")
            raise NoBackendError(503, "No backend is registered", retry_after=1)
        ready = [s for s in serving if s.candidates(now, exclude)]
        if not ready:
            raise NoBackendError(503, "No backend is available", retry_after=self._retry_after(serving, now))
        # Services keep their smooth-WRR state between calls; only the ready ones take part.
        svc = smooth_weighted(ready)
        endpoint = svc.pick_endpoint(now, exclude, self.least_busy)
        assert endpoint is not None
        return endpoint

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
