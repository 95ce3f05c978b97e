"""Balancer replicas electing one router on a real coordination.k8s.io Lease (kube-apiserver and etcd).

Two `python -m edgewasm_balancer --kubernetes --leader-election` processes campaign for one Lease; both
readiness endpoints are sampled every 100 ms. Only the holder may be ready and route; a crashed holder is
replaced after the Lease expires, a stopped one hands over at once, and an API outage never leaves two
routers at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import kubernetes
import pytest

SRC = str(Path(__file__).resolve().parents[2] / "balancer" / "src")
LEASE = "llama-balancer"
TOKEN = "election-test-token"
DURATION, RENEW, RETRY = 6.0, 4.0, 1.0


@dataclass
class Replica:
    """One balancer process; its log lines (JSON) are read all along, so the pipe never fills."""

    name: str
    proc: subprocess.Popen[str]
    port: int = 0
    ports: dict[str, int] = field(default_factory=dict)
    lines: list[dict] = field(default_factory=list)

    def get(self, listener: str, path: str) -> bytes:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports[listener]}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            return answer.read()

    def metric(self, name: str) -> float:
        for line in self.get("metrics listening", "/metrics").decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"no {name} in /metrics")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=0.5) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def chat(self) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/chat/completions",
            data=b'{"model": "m", "messages": []}',
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def start_replica(name: str, kubeconfig: Path, namespace: str, *extra: str) -> Replica:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgewasm_balancer",
            "--listen=127.0.0.1:0",
            "--metrics-listen=127.0.0.1:0",
            "--admin-listen=127.0.0.1:0",
            "--kubernetes",
            f"--namespace={namespace}",
            f"--kubeconfig={kubeconfig}",
            "--health-interval=0",
            "--leader-election",
            f"--lease-name={LEASE}",
            f"--lease-namespace={namespace}",
            f"--identity={name}",
            f"--lease-duration={DURATION:g}",
            f"--renew-deadline={RENEW:g}",
            f"--retry-period={RETRY:g}",
            *extra,
        ],
        env={**os.environ, "PYTHONPATH": SRC, "EDGEWASM_BALANCER_ADMIN_TOKEN": TOKEN},
        stderr=subprocess.PIPE,
        text=True,
    )
    replica = Replica(name, proc)
    listening = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"msg": raw.rstrip()}
            replica.lines.append(line)
            if str(line.get("msg")).endswith("listening"):
                replica.ports[line["msg"]] = int(line["port"])
            if line.get("msg") == "metrics listening":
                replica.port = replica.ports["listening"]
                listening.set()

    threading.Thread(target=read, daemon=True).start()
    if not listening.wait(30):
        replica.stop()
        pytest.fail(f"balancer {name} did not start: {replica.lines[-20:]}")
    return replica


class Sampler:
    """Both readiness endpoints every 100 ms, in a thread: (time, a ready, b ready) per round."""

    def __init__(self, *replicas: Replica) -> None:
        self.replicas = replicas
        self.samples: list[tuple[float, tuple[bool, ...]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.samples.append((began, tuple(r.ready() for r in self.replicas)))
            self._stop.wait(max(0.1 - (time.monotonic() - began), 0))

    def both_ready(self) -> list[float]:
        return [t for t, ready in self.samples if all(ready)]

    def first(self, index: int, since: float) -> float | None:
        """When replica `index` was first seen ready at or after `since`."""
        return next((t for t, ready in self.samples if t >= since and ready[index]), None)


def wait_for(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def holder(api: kubernetes.client.ApiClient, namespace: str) -> str:
    lease = kubernetes.client.CoordinationV1Api(api).read_namespaced_lease(LEASE, namespace)
    return lease.spec.holder_identity or ""


@pytest.fixture
def backends_namespace(core, namespace) -> str:
    """A namespace with one labelled backend Service and its slice (never reached: no request gets that far)."""
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "tiny", "labels": {"llamaedge/target": "true"}},
            "spec": {"ports": [{"name": "http", "port": 8080}]},
        },
    )
    kubernetes.client.DiscoveryV1Api(core.api_client).create_namespaced_endpoint_slice(
        namespace,
        {
            "metadata": {"name": "tiny-a", "labels": {"kubernetes.io/service-name": "tiny"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.42.0.5"], "conditions": {"ready": True}}],
        },
    )
    return namespace


@pytest.fixture
def pair(control_plane, backends_namespace) -> Iterator[tuple[Replica, Replica]]:
    """Replica a, the leader (started first and ready), then b, standing by."""
    a = start_replica("a", control_plane.kubeconfig, backends_namespace, "--shutdown-delay=3")
    b = None
    try:
        wait_for(a.ready, "replica a ready (the only candidate)")
        b = start_replica("b", control_plane.kubeconfig, backends_namespace)
        yield a, b
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_only_the_lease_holder_is_ready_and_routes(api, pair, backends_namespace):
    a, b = pair
    with Sampler(a, b) as sampler:
        time.sleep(3 * RETRY + 1)  # b tried several times
    assert [ready for _t, ready in sampler.samples] == [(True, False)] * len(sampler.samples)
    assert holder(api, backends_namespace) == "a"
    status, answer = b.chat()
    assert status == 503 and answer["error"]["code"] == "not_leader", answer
    standby = [line for line in b.lines if line.get("msg") == "leadership acquired"]
    assert not standby, standby
    # Metrics and the admin API say who leads.
    assert (a.metric("edgewasm_balancer_leader"), b.metric("edgewasm_balancer_leader")) == (1.0, 0.0)
    assert a.metric('edgewasm_balancer_leadership_changes_total{change="acquired"}') == 1.0
    said = json.loads(b.get("admin API listening", "/api/leader"))
    assert said == {
        "election": True,
        "lease": f"{backends_namespace}/{LEASE}",
        "identity": "b",
        "leading": False,
        "holder": "a",
        "renew_time": said["renew_time"],
        "lease_transitions": 0,
    }, (said, [x for x in a.lines if "lease" in str(x) or "leader" in str(x)])
    assert json.loads(a.get("admin API listening", "/api/leader"))["leading"] is True


def test_a_crashed_leader_is_replaced_after_the_lease_expires(api, pair, backends_namespace):
    a, b = pair
    with Sampler(a, b) as sampler:
        time.sleep(1)
        crashed = time.monotonic()
        a.proc.kill()  # no release: b must wait for the Lease to expire
        wait_for(b.ready, "b ready after a crashed", timeout=DURATION + 10)
        time.sleep(0.3)
    took = sampler.first(1, crashed) - crashed
    print(f"failover after a crashed leader: b ready {took:.2f} s after the kill (lease {DURATION:g} s)")
    assert took <= DURATION + 2, took
    assert took >= DURATION - RENEW, took  # it did wait for the Lease: no early takeover
    assert not sampler.both_ready()
    assert holder(api, backends_namespace) == "b"
    assert json.loads(b.get("admin API listening", "/api/leader"))["lease_transitions"] == 1


def test_sigterm_hands_the_lease_over_at_once(api, pair, backends_namespace):
    a, b = pair
    with Sampler(a, b) as sampler:
        time.sleep(1)
        stopped = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        wait_for(b.ready, "b ready after a's SIGTERM", timeout=10)
        assert a.proc.wait(timeout=15) == 0
    took = sampler.first(1, stopped) - stopped
    print(f"handover on SIGTERM: b ready {took:.2f} s after it")
    assert took <= 2.0, took
    assert holder(api, backends_namespace) == "b"
    assert any(line.get("msg") == "leadership released" for line in a.lines), a.lines[-10:]


def test_an_api_outage_never_leaves_two_routers(control_plane, api, pair, backends_namespace):
    a, b = pair
    with Sampler(a, b) as sampler:
        time.sleep(1)
        cut = time.monotonic()
        control_plane.restart_apiserver(down=DURATION + 3)  # longer than the Lease: every renewal fails
        back = time.monotonic()
        wait_for(lambda: a.ready() or b.ready(), "a router again after the API came back", timeout=30)
        time.sleep(2)
    assert not sampler.both_ready(), sampler.both_ready()
    stopped = next(t for t, ready in sampler.samples if t > cut and not ready[0])
    print(
        f"API outage of {back - cut:.1f} s: the leader stopped routing {stopped - cut:.2f} s into it "
        f"(renew deadline {RENEW:g} s, lease {DURATION:g} s)"
    )
    assert stopped - cut <= RENEW + 1, stopped - cut
    ready_again = [t for t, ready in sampler.samples if t > back and any(ready)]
    assert ready_again, "nobody leads after the outage"
    final = sampler.samples[-1][1]
    assert final.count(True) == 1, final
    assert holder(api, backends_namespace) == ("a" if final[0] else "b")
