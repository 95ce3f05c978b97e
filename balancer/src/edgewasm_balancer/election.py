"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's rules.

Only the holder of the Lease routes: exact slot accounting and the central queue need one process. A
candidate takes the Lease when it is free (no holder, the holder released it) or when its record has not
changed for `lease_duration` seconds of the candidate's own clock (the holder's clock is never trusted). The
holder renews it every `retry_period`; if no renewal succeeds for `renew_deadline` seconds, counted from the
moment its last successful renewal was *sent*, it stops leading. Since a candidate counts at least
`lease_duration` from when it *received* that same record, and renew_deadline < lease_duration, a holder cut
off from the API has stopped before anyone else may start: two leaders never route at once (as long as the
two clocks run at about the same rate). Every update carries the record's resourceVersion, so two candidates
racing for a free Lease cannot both win.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from edgewasm_balancer.kube import read_json

log = logging.getLogger("edgewasm_balancer.election")

# Wait a little longer than retry_period between attempts, so candidates do not hit the API in lockstep.
JITTER = 1.2


class ElectionError(ValueError):
    """Timings that cannot keep two leaders apart."""


@dataclass(frozen=True)
class ElectionSettings:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 6.0
    renew_deadline: float = 4.0
    retry_period: float = 1.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline:
            raise ElectionError(
                f"--lease-duration ({self.lease_duration:g}) must be greater than --renew-deadline "
                f"({self.renew_deadline:g}): a cut-off leader must stop before another may start"
            )
        if not self.renew_deadline > JITTER * self.retry_period:
            raise ElectionError(
                f"--renew-deadline ({self.renew_deadline:g}) must be greater than {JITTER:g} x --retry-period "
                f"({self.retry_period:g}): a leader needs more than one try to renew"
            )
        if self.lease_duration != int(self.lease_duration):
            raise ElectionError(f"--lease-duration must be whole seconds, got {self.lease_duration:g}")


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def lease_namespace(given: str, account_file: Path = SERVICE_ACCOUNT_NAMESPACE) -> str:
    """--lease-namespace, else POD_NAMESPACE (the downward API), else the pod's service account's, else default."""
    if given:
        return given
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return account_file.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"


def identity(given: str) -> str:
    """--identity, else POD_NAME (unique among a Deployment's pods), else the host name with a random suffix
    (two processes on one host must never share an identity: each would take the other's renewals for its own)."""
    if given:
        return given
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{secrets.token_hex(4)}"


def lease_ref(settings: ElectionSettings) -> str:
    return f"{settings.namespace}/{settings.name}"


def _micro_time(moment: datetime) -> str:
    """A Lease's MicroTime: RFC 3339 with exactly six fraction digits (the API refuses fewer)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Observed:
    """The Lease as this candidate last read it, and when (its own monotonic clock) it last changed."""

    spec: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    changed_at: float = 0.0


class LeaseElector:
    """Campaigns for the Lease until cancelled; `leading` says whether this process may route right now."""

    def __init__(
        self,
        api: client.ApiClient,
        settings: ElectionSettings,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.leases = client.CoordinationV1Api(api)
        self.on_change = on_change
        self.clock = clock
        self.observed = Observed()
        self._renewed_at: float | None = None  # when the last successful acquire/renew was sent
        self.transitions = 0  # times this process became the leader
        self.stopped = False

    # -- state ----------------------------------------------------------------------------------------
    @property
    def leading(self) -> bool:
        """True only while the last successful renewal was sent less than renew_deadline ago: a stalled loop
        or a hanging API call cannot stretch leadership."""
        renewed = self._renewed_at
        return renewed is not None and self.clock() - renewed < self.settings.renew_deadline

    @property
    def holder(self) -> str:
        return str(self.observed.spec.get("holderIdentity") or "")

    def status(self) -> dict[str, Any]:
        spec = self.observed.spec
        return {
            "lease": f"{self.settings.namespace}/{self.settings.name}",
            "identity": self.settings.identity,
            "leading": self.leading,
            "holder": self.holder or None,
            "renew_time": spec.get("renewTime"),
            "lease_transitions": spec.get("leaseTransitions", 0),
        }

    def _set_leading(self, sent_at: float | None) -> None:
        was = self._renewed_at is not None
        self._renewed_at = sent_at
        now = sent_at is not None
        if now != was:
            if now:
                self.transitions += 1
            log.info(
                "leadership acquired" if now else "leadership lost",
                extra={"lease": f"{self.settings.namespace}/{self.settings.name}", "holder": self.holder},
            )
            if self.on_change is not None:
                self.on_change(now)

    # -- the API --------------------------------------------------------------------------------------
    def _timeout(self) -> float:
        """One API call may take until leadership would end anyway (a candidate: one renew deadline)."""
        renewed = self._renewed_at
        if renewed is None:
            return self.settings.renew_deadline
        return max(self.settings.renew_deadline - (self.clock() - renewed), 0.05)

    async def _read(self) -> dict[str, Any] | None:
        s = self.settings
        response = await self.leases.read_namespaced_lease(
            s.name, s.namespace, _preload_content=False, _request_timeout=self._timeout()
        )
        try:
            return await read_json(response)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _spec(self, now: datetime, acquired: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.settings.identity,
            "leaseDurationSeconds": int(self.settings.lease_duration),
            "acquireTime": acquired,
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions,
        }

    async def _write(self, spec: dict[str, Any], version: str | None) -> bool:
        """Create (version None) or replace the Lease at `version`; False when another candidate won."""
        s = self.settings
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": s.name, "namespace": s.namespace},
            "spec": spec,
        }
        if version is None:
            response = await self.leases.create_namespaced_lease(
                s.namespace, body, _preload_content=False, _request_timeout=self._timeout()
            )
        else:
            # Never an empty resourceVersion: a Lease PUT without one creates or overwrites unconditionally.
            body["metadata"]["resourceVersion"] = version
            response = await self.leases.replace_namespaced_lease(
                s.name, s.namespace, body, _preload_content=False, _request_timeout=self._timeout()
            )
        try:
            written = await read_json(response)
        except ApiException as exc:
            if exc.status == 409:  # created or updated by someone else since we read it
                return False
            raise
        self._observe(written)
        return True

    def _observe(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec") or {}
        if spec != self.observed.spec:
            self.observed = Observed(spec=spec, changed_at=self.clock())
        self.observed.version = (lease.get("metadata") or {}).get("resourceVersion", "")

    async def try_acquire_or_renew(self) -> bool:
        sent_at = self.clock()
        now = datetime.now(UTC)
        lease = await self._read()
        if lease is None:
            won = await self._write(self._spec(now, _micro_time(now), 0), None)
            return self._won(won, sent_at)
        self._observe(lease)
        if not self.observed.version:
            raise ValueError(f"the Lease {lease_ref(self.settings)} read without a resourceVersion")
        spec = self.observed.spec
        holder = spec.get("holderIdentity") or ""
        ours = holder == self.settings.identity
        duration = float(spec.get("leaseDurationSeconds") or self.settings.lease_duration)
        if holder and not ours and self._renewed_at is not None:
            self._set_leading(
                None
            )  # another candidate holds it now: stop at once, whatever our deadline says
        if holder and not ours and self.clock() < self.observed.changed_at + duration:
            return self._won(False, sent_at)  # held, and renewed within its duration as far as we saw
        acquired = spec.get("acquireTime") if ours and spec.get("acquireTime") else _micro_time(now)
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        won = await self._write(self._spec(now, acquired, transitions), self.observed.version)
        return self._won(won, sent_at)

    def _won(self, won: bool, sent_at: float) -> bool:
        if won:
            self._set_leading(sent_at)
        elif not self.leading:
            self._set_leading(None)
        return won

    # -- the loop -------------------------------------------------------------------------------------
    async def run(self) -> None:
        s = self.settings
        while not self.stopped:
            try:
                async with asyncio.timeout(self._timeout()):
                    await self.try_acquire_or_renew()
            except asyncio.CancelledError:
                raise
            except (TimeoutError, ApiException, aiohttp.ClientError, OSError, ValueError) as exc:
                log.warning(
                    "lease update failed",
                    extra={"lease": f"{s.namespace}/{s.name}", "detail": f"{type(exc).__name__}: {exc}"},
                )
            if self._renewed_at is not None and not self.leading:
                self._set_leading(None)  # the renew deadline passed without a successful renewal
            await self._sleep()

    async def _sleep(self) -> None:
        """retry_period (with jitter); a leader wakes at its renew deadline at the latest, to give up on time."""
        delay = self.settings.retry_period * random.uniform(1.0, JITTER)  # noqa: S311 - jitter, not crypto
        renewed = self._renewed_at
        if renewed is not None:
            delay = min(delay, max(renewed + self.settings.renew_deadline - self.clock(), 0.0))
        await asyncio.sleep(delay)

    async def release(self) -> bool:
        """Stop leading now and hand the Lease over: a free Lease is taken by the next candidate's next try.
        Returns whether the Lease was released (False when this process did not hold it, or the API failed)."""
        self.stopped = True
        if self._renewed_at is None:
            return False
        self._set_leading(None)
        spec = dict(self.observed.spec)
        if spec.get("holderIdentity") != self.settings.identity:
            return False
        now = _micro_time(datetime.now(UTC))
        spec.update(holderIdentity="", leaseDurationSeconds=1, acquireTime=now, renewTime=now)
        try:
            async with asyncio.timeout(self.settings.renew_deadline):
                released = await self._write(spec, self.observed.version)
        except (TimeoutError, ApiException, aiohttp.ClientError, OSError, ValueError) as exc:
            log.warning("could not release the lease", extra={"detail": f"{type(exc).__name__}: {exc}"})
            return False
        log.info("leadership released", extra={"lease": f"{self.settings.namespace}/{self.settings.name}"})
        return released
