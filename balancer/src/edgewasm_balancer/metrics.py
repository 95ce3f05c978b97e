"""Prometheus metrics, in a registry of their own (several balancers can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets for LLM traffic: from sub-millisecond proxying to minutes-long generations.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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
        self.in_flight = Gauge(
            "in_flight_requests",
            "Requests being proxied",
            ["backend"],
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
        self.healthy = Gauge(
            "endpoint_up",
            "1 while an endpoint is in rotation, 0 while ejected",
            ["backend", "endpoint"],
            namespace=ns,
            registry=self.registry,
        )
        self.weight = Gauge(
            "backend_weight",
            "Configured weight of each backend service",
            ["backend"],
            namespace=ns,
            registry=self.registry,
        )
