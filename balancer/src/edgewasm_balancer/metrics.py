"""Prometheus metrics, in a registry of their own (several balancers can live in one process)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edgewasm_balancer.contract import MAX_SLOTS, MAX_WEIGHT
from edgewasm_balancer.pool import BackendPool

# Latency buckets for LLM traffic: from sub-millisecond proxying to minutes-long generations.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass
class BackendMetrics:
    """The per-backend series the proxy touches on every request, looked up once."""

    metrics: Metrics
    label: str
    latency: Any = None
    ttfb: Any = None
    codes: dict[int, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.latency = self.metrics.latency.labels(self.label)
        self.ttfb = self.metrics.ttfb.labels(self.label)

    def answered(self, status: int, seconds: float) -> None:
        counter = self.codes.get(status)
        if counter is None:
            counter = self.codes[status] = self.metrics.requests.labels(self.label, str(status))
        counter.inc()
        self.latency.observe(seconds)


class Metrics:
    def __init__(self, pool: BackendPool | None = None) -> None:
        self._backends: dict[str, BackendMetrics] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        if pool is not None:
            self.registry.register(PoolCollector(pool))
        ns = "edgewasm_balancer"
        self.requests = Counter(
            "requests",
            "Requests answered, by backend service and HTTP status",
            ["backend", "code"],
            namespace=ns,
            registry=self.registry,
        )
        self.errors = Counter(
            "backend_errors",
            "Backend failures, by kind (connect, timeout, status, stream)",
            ["backend", "kind"],
            namespace=ns,
            registry=self.registry,
        )
        self.retries = Counter(
            "retries",
            "Requests sent again to another backend",
            ["backend"],
            namespace=ns,
            registry=self.registry,
        )
        self.rejected = Counter(
            "rejected",
            "Requests answered by the balancer itself (no backend, unknown model)",
            ["code"],
            namespace=ns,
            registry=self.registry,
        )
        self.latency = Histogram(
            "request_duration_seconds",
            "Time from receiving a request to the end of its response",
            ["backend"],
            namespace=ns,
            registry=self.registry,
            buckets=_BUCKETS,
        )
        self.ttfb = Histogram(
            "time_to_first_byte_seconds",
            "Time from receiving a request to the backend's first body byte",
            ["backend"],
            namespace=ns,
            registry=self.registry,
            buckets=_BUCKETS,
        )
        self.connections_refused = Counter(
            "connections_refused",
            "Client connections closed by the gateway (too_many_connections, header_timeout)",
            ["reason"],
            namespace=ns,
            registry=self.registry,
        )
        self.ejections = Counter(
            "ejections",
            "Times an endpoint was taken out of rotation",
            ["backend", "endpoint"],
            namespace=ns,
            registry=self.registry,
        )
        self.leader = Gauge(
            "leader",
            "1 while this replica routes: it holds the Lease (--leader-election), or runs without election",
            namespace=ns,
            registry=self.registry,
        )
        self.leader.set(1)
        self.leadership_changes = Counter(
            "leadership_changes",
            "Times this replica became the leader (acquired) or stopped being it (lost: released, expired, taken)",
            ["change"],
            namespace=ns,
            registry=self.registry,
        )

    def leadership(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)
        self.leadership_changes.labels("acquired" if leading else "lost").inc()

    def backend(self, label: str) -> BackendMetrics:
        """The cached per-backend series (created on first use)."""
        found = self._backends.get(label)
        if found is None:
            found = self._backends[label] = BackendMetrics(self, label)
        return found


class PoolCollector(Collector):
    """Gauges read from the pool when Prometheus scrapes, so requests pay nothing for them.

    Services are keyed by (source, name): the same name may come from the backends file and the admin
    API, so `source` is a label and every series is unique. Values are finite and bounded.
    """

    def __init__(self, pool: BackendPool) -> None:
        self.pool = pool

    def describe(self) -> list[GaugeMetricFamily]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        ns = "edgewasm_balancer_"
        in_flight = GaugeMetricFamily(
            ns + "in_flight_requests", "Requests being proxied", labels=["backend", "source"]
        )
        weight = GaugeMetricFamily(
            ns + "backend_weight", "Configured weight of each backend service", labels=["backend", "source"]
        )
        up = GaugeMetricFamily(
            ns + "endpoint_up",
            "1 while an endpoint is in rotation, 0 while ejected",
            labels=["backend", "source", "endpoint"],
        )
        slots = GaugeMetricFamily(
            ns + "backend_slots",
            "Parallel slots of each endpoint of a backend service (load-aware routing's limit)",
            labels=["backend", "source"],
        )
        now = self.pool.clock()
        for (source, _name), svc in list(self.pool.services.items()):
            in_flight.add_metric([svc.name, source], sum(e.in_flight for e in svc.endpoints.values()))
            weight.add_metric([svc.name, source], min(max(svc.weight, 0), MAX_WEIGHT))
            slots.add_metric([svc.name, source], min(self.pool.slots(svc), MAX_SLOTS))
            for endpoint in svc.endpoints.values():
                up.add_metric([svc.name, source, endpoint.url], 1 if endpoint.available(now) else 0)
        queued = GaugeMetricFamily(
            ns + "queued_requests",
            "Requests waiting in the central queue for a free slot (load-aware routing)",
        )
        queued.add_metric([], len(self.pool.queue))
        refused = CounterMetricFamily(
            ns + "queue_rejected",
            "Requests the central queue refused: full (429) or waited past --queue-timeout (503)",
            labels=["reason"],
        )
        for reason, count in sorted(self.pool.queue_rejected.items()):
            refused.add_metric([reason], count)
        yield from (in_flight, weight, slots, up, queued, refused)
