"""Static discovery: a backends file (YAML or JSON), and the admin API of the seed balancer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import ipaddress
import json
import logging
import os
import re
import socket
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from aiohttp import web

from edgewasm_balancer.contract import MAX_SLOTS, MAX_WEIGHT, MIN_SLOTS, MIN_WEIGHT
from edgewasm_balancer.pool import BackendPool, ServiceSpec

log = logging.getLogger("edgewasm_balancer.sources")

STATIC = "static"
ADMIN = "admin"
# \Z, not $: "$" also matches before a trailing newline, and a name "evil\n" then broke every response header.
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?\Z")


class InvalidBackendError(ValueError):
    pass


def _weight(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_WEIGHT <= value <= MAX_WEIGHT:
        raise InvalidBackendError(
            f"{where}: weight must be an integer from {MIN_WEIGHT} to {MAX_WEIGHT}, got {value!r}"
        )
    return value


def slots_value(value: Any, where: str) -> int | None:
    """Parallel slots of one endpoint: None (not given) or an integer from MIN_SLOTS to MAX_SLOTS."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_SLOTS <= value <= MAX_SLOTS:
        raise InvalidBackendError(
            f"{where}: slots must be an integer from {MIN_SLOTS} to {MAX_SLOTS}, got {value!r}"
        )
    return value


def _models(value: Any, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(m, str) and m for m in value):
        raise InvalidBackendError(f"{where}: models must be a list of model names")
    return frozenset(value)


def _url(value: Any, where: str) -> str:
    """An http(s)://HOST[:PORT] URL whose host and port are usable (port 1-65535)."""
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+/?\Z", value):
        raise InvalidBackendError(f"{where}: url must look like http://HOST:PORT, got {value!r}")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:  # "Invalid IPv6 URL", a port that is no number or out of range
        parts, port = urlsplit("http://invalid"), -1
    if not parts.hostname or parts.username is not None or port in {0, -1}:
        raise InvalidBackendError(
            f"{where}: url must look like http://HOST:PORT with a port from 1 to 65535, got {value!r}"
        )
    return value.rstrip("/")


def parse_backends(data: Any, where: str) -> list[ServiceSpec]:
    """Backends from the parsed file: a list of {name, url | urls, weight, models, slots}."""
    if isinstance(data, dict) and "backends" in data:
        data = data["backends"]
    if not isinstance(data, list):
        raise InvalidBackendError(f"{where}: expected a list of backends")
    specs: dict[str, ServiceSpec] = {}
    for index, item in enumerate(data):
        at = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise InvalidBackendError(f"{at}: expected a mapping")
        unknown = set(item) - {"name", "url", "urls", "weight", "models", "slots"}
        if unknown:
            raise InvalidBackendError(f"{at}: unknown keys {sorted(unknown)}")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidBackendError(f"{at}: name must be a non-empty name, got {name!r}")
        if name in specs:
            raise InvalidBackendError(f"{at}: duplicate name {name!r}")
        raw_urls = item.get("urls", [item["url"]] if "url" in item else None)
        if not isinstance(raw_urls, list) or not raw_urls:
            raise InvalidBackendError(f"{at}: give url or a non-empty list urls")
        specs[name] = ServiceSpec(
            name=name,
            weight=_weight(item.get("weight", 1), at),
            urls=tuple(dict.fromkeys(_url(u, at) for u in raw_urls)),
            models=_models(item.get("models"), at),
            slots=slots_value(item.get("slots"), at),
        )
    return list(specs.values())


# A backends file lists backends, a few hundred bytes each: a larger one is refused before it is read.
MAX_BACKENDS_FILE_BYTES = 1 << 20


def read_backends_file(path: Path) -> bytes:
    """The file's bytes: a regular file (symbolic links followed, as a ConfigMap volume has them) of at most
    MAX_BACKENDS_FILE_BYTES. Never blocks: a FIFO or a device at the path is refused, not opened for a read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidBackendError(f"{path}: not a regular file")
        data = os.read(fd, MAX_BACKENDS_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BACKENDS_FILE_BYTES:
        raise InvalidBackendError(
            f"{path}: larger than {MAX_BACKENDS_FILE_BYTES} bytes, the most a backends file may have"
        )
    return data


def _syntax_error(path: Path, kind: str, exc: Exception) -> InvalidBackendError:
    """What is wrong and where, never the file's text: the path may lead to a file that is not ours."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        where = f"line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}"
        return InvalidBackendError(f"{path}: not valid {kind}: {exc.problem or exc.context} at {where}")
    if isinstance(exc, json.JSONDecodeError):
        return InvalidBackendError(
            f"{path}: not valid {kind}: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        )
    return InvalidBackendError(f"{path}: not valid {kind} ({type(exc).__name__})")


def load_backends_file(path: Path) -> list[ServiceSpec]:
    data = read_backends_file(path)
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidBackendError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        parsed = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise _syntax_error(path, kind, exc) from None
    except RecursionError:
        raise InvalidBackendError(f"{path}: nested too deeply") from None
    return parse_backends(parsed, str(path))


class BackendsFile:
    """Keeps the pool's static services equal to the file, re-reading it when it changes (checked every
    interval, off the event loop) or when told to (SIGHUP).

    A file that becomes invalid is reported once and the last good set is kept; that version of the file is
    not parsed again until it changes (or a SIGHUP asks).
    """

    def __init__(self, path: Path, pool: BackendPool, interval: float) -> None:
        self.path = path
        self.pool = pool
        self.interval = interval
        self._seen: tuple[int, ...] | None = None
        self._failed: tuple[int, ...] | None = None
        self.wake = asyncio.Event()

    def _stamp(self) -> tuple[int, ...]:
        info = self.path.stat()
        return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)

    def check(self, force: bool = False) -> tuple[tuple[int, ...], list[ServiceSpec]] | None:
        """The file's stamp and services when it changed since the last load or failure (or with force);
        raises InvalidBackendError/OSError. Blocking I/O only: safe to run in a worker thread."""
        stamp = self._stamp()
        if not force and stamp in (self._seen, self._failed):
            return None
        try:
            return stamp, load_backends_file(self.path)
        except (InvalidBackendError, OSError):
            self._failed = stamp
            raise

    def apply(self, stamp: tuple[int, ...], specs: list[ServiceSpec]) -> None:
        """The whole new set at once, on the event loop's thread."""
        self.pool.replace(STATIC, specs)
        self._seen, self._failed = stamp, None
        log.info("backends file loaded", extra={"file": str(self.path), "services": len(specs)})

    def load(self) -> bool:
        """Reload if the file changed; raises InvalidBackendError/OSError so a bad file fails at start.

        The whole new set is validated before any of it is applied: a bad file changes nothing.
        """
        found = self.check()
        if found is None:
            return False
        self.apply(*found)
        return True

    def reload_now(self) -> None:
        """Re-read the file at once, changed or not (what SIGHUP asks)."""
        self.wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.interval)
            force = self.wake.is_set()
            self.wake.clear()
            try:
                found = await asyncio.to_thread(self.check, force)
            except (OSError, InvalidBackendError) as exc:
                self._kept(str(exc))
                continue
            except Exception as exc:  # the reload loop must outlive any bad edit
                self._kept(f"{type(exc).__name__}: {exc}")
                continue
            if found is not None:
                self.apply(*found)

    def _kept(self, detail: str) -> None:
        log.error(
            "backends file not reloaded, keeping the previous backends",
            extra={"file": str(self.path), "detail": detail},
        )


DEFAULT_REFUSED = "loopback, link-local, multicast and unspecified addresses"


def address_allowed(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> bool:
    """Whether a registration may point at `address`: inside `networks` when given, else anything but
    loopback, link-local (cloud metadata services), multicast and unspecified addresses."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if networks:
        return any(address in network for network in networks)
    return not (
        address.is_loopback or address.is_link_local or address.is_multicast or address.is_unspecified
    )


class AdminApi:
    """The seed balancer's registration API, behind a bearer token, on its own listener.

    Registrations may only point at addresses `address_allowed` accepts; a host name is resolved once,
    every address it resolves to must be allowed, and the first one is what gets registered (so a
    later DNS answer cannot redirect traffic).
    """

    def __init__(
        self,
        pool: BackendPool,
        token: str,
        networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
        leader: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.pool = pool
        self.token = token
        self.networks = tuple(networks)
        self.leader_status = leader

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/register", self.register),
            web.delete("/api/unregister/{name}", self.unregister),
            web.get("/api/services", self.services),
            web.get("/api/leader", self.leader),
        ]

    async def leader(self, request: web.Request) -> web.Response:
        """Who routes: the Lease, its holder and whether that is this replica (--leader-election)."""
        if not self._authorized(request):
            return self._denied()
        if self.leader_status is None:
            return web.json_response({"election": False, "leading": True})
        return web.json_response({"election": True, **self.leader_status()})

    def _authorized(self, request: web.Request) -> bool:
        scheme, _sep, given = request.headers.get("Authorization", "").partition(" ")
        # Bytes that are not UTF-8 arrive as lone surrogates: compared as the bytes they were, never a 500.
        offered = given.strip().encode("utf-8", "surrogateescape")
        return scheme.lower() == "bearer" and hmac.compare_digest(offered, self.token.encode())

    @staticmethod
    def _denied() -> web.Response:
        return web.json_response(
            {"error": "a valid bearer token is required"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="edgewasm-balancer"'},
        )

    async def register(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._denied()
        try:
            spec = registration(await request.json())
            spec = await self._pinned(spec)
        except (ValueError, InvalidBackendError, RecursionError) as exc:
            return web.json_response({"error": str(exc) or "the body is not valid JSON"}, status=400)
        self.pool.upsert(ADMIN, spec)
        log.info("backend registered", extra={"backend": spec.name, "urls": list(spec.urls)})
        return web.Response(text="Registered")

    async def _pinned(self, spec: ServiceSpec) -> ServiceSpec:
        """`spec` pointing at a checked address; InvalidBackendError when the target is not allowed."""
        meta = dict(spec.meta)
        host, port = str(meta["ip"]), int(meta["port"])  # type: ignore[call-overload]
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = await self._resolve(host, port)
        refused = [str(a) for a in addresses if not address_allowed(a, self.networks)]
        if refused:
            allowed = (
                ", ".join(map(str, self.networks)) if self.networks else f"anything but {DEFAULT_REFUSED}"
            )
            raise InvalidBackendError(
                f"ip {host!r} ({', '.join(refused)}) is not an allowed backend address (allowed: {allowed}; "
                "see --admin-allow-network)"
            )
        first = addresses[0]
        shown = f"[{first}]" if first.version == 6 else str(first)
        return dataclasses.replace(spec, urls=(f"http://{shown}:{port}",))

    @staticmethod
    async def _resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise InvalidBackendError(f"ip {host!r} does not resolve: {exc.strerror or exc}") from None
        found = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if not found:
            raise InvalidBackendError(f"ip {host!r} does not resolve to any address")
        return found

    async def unregister(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._denied()
        name = request.match_info["name"]
        if not self.pool.remove(ADMIN, name):
            return web.json_response({"error": f"no registered backend named {name!r}"}, status=404)
        log.info("backend unregistered", extra={"backend": name})
        return web.Response(text="Unregistered")

    async def services(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._denied()
        now = self.pool.clock()
        listing = []
        for (source, _name), svc in sorted(self.pool.services.items()):
            entry: dict[str, Any] = {
                "name": svc.name,
                "source": source,
                "weight": svc.weight,
                "models": sorted(svc.models),
                "slots": self.pool.slots(svc),
                "endpoints": [
                    {
                        "url": e.url,
                        "healthy": e.available(now),
                        "in_flight": e.in_flight,
                        "ejected_for_s": max(0.0, round(e.ejected_until - now, 1)),
                    }
                    for e in svc.endpoints.values()
                ],
            }
            entry.update(dict(svc.meta))
            listing.append(entry)
        return web.json_response(listing)


def registration(data: Any) -> ServiceSpec:
    """A backend from the seed's `{"name", "weight", "ip", "port"}` (optionally `models`, `slots`)."""
    if not isinstance(data, dict):
        raise InvalidBackendError("expected a JSON object with name, weight, ip and port")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidBackendError(f"name must be a non-empty name, got {name!r}")
    ip, port = data.get("ip"), data.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise InvalidBackendError(f"port must be an integer 1-65535, got {port!r}")
    if not isinstance(ip, str):
        raise InvalidBackendError(f"ip must be a string, got {ip!r}")
    try:
        host = ipaddress.ip_address(ip)
        shown = f"[{host}]" if host.version == 6 else str(host)
    except ValueError:
        if not re.match(r"^[A-Za-z0-9.-]{1,253}\Z", ip):
            raise InvalidBackendError(f"ip must be an IP address or host name, got {ip!r}") from None
        shown = ip
    return ServiceSpec(
        name=name,
        weight=_weight(data.get("weight", 1), "register"),
        urls=(f"http://{shown}:{port}",),
        models=_models(data.get("models"), "register"),
        meta=(("ip", ip), ("port", port)),
        slots=slots_value(data.get("slots"), "register"),
    )
