"""Kubernetes discovery: Services labelled llamaedge/target=true and their EndpointSlices.

One list-then-watch loop (an informer) per kind and namespace keeps a cache of raw objects; every
change recomputes that namespace's services. A watch that ends is resumed from the last
resourceVersion; an expired one (410 Gone) or any error leads to a fresh list after a backoff.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from edgewasm_balancer.contract import MAX_SLOTS, MAX_WEIGHT, MIN_SLOTS, MIN_WEIGHT, SLOTS_ANNOTATION
from edgewasm_balancer.pool import BackendPool, ServiceSpec

log = logging.getLogger("edgewasm_balancer.kube")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class KubeSettings:
    namespaces: tuple[str, ...]
    label_selector: str
    weight_annotation: str
    models_annotation: str
    port_name: str = ""
    slots_annotation: str = SLOTS_ANNOTATION
    watch_timeout: int = 300
    backoff_initial: float = 1.0
    backoff_max: float = 30.0


def parse_weight(raw: str | None) -> int:
    if raw is None:
        return 1
    value = int(raw.strip())  # ValueError for junk
    if not MIN_WEIGHT <= value <= MAX_WEIGHT:
        raise ValueError(f"must be an integer from {MIN_WEIGHT} to {MAX_WEIGHT}, got {value}")
    return value


def parse_slots(raw: str | None) -> int | None:
    """An endpoint's parallel slots from its Service's annotation; None when absent."""
    if raw is None or not raw.strip():
        return None
    value = int(raw.strip())  # ValueError for junk
    if not MIN_SLOTS <= value <= MAX_SLOTS:
        raise ValueError(f"must be an integer from {MIN_SLOTS} to {MAX_SLOTS}, got {value}")
    return value


def parse_models(raw: str | None) -> frozenset[str]:
    if not raw or not raw.strip():
        return frozenset()
    text = raw.strip()
    if text.startswith("["):
        data = json.loads(text)
        if not isinstance(data, list) or not all(isinstance(m, str) for m in data):
            raise ValueError("expected a JSON list of strings")
        return frozenset(m.strip() for m in data if m.strip())
    return frozenset(m.strip() for m in text.split(",") if m.strip())


def _host(address: str) -> str:
    try:
        return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError:
        return address


def _service_port(service: dict[str, Any], port_name: str) -> dict[str, Any] | None:
    ports = (service.get("spec") or {}).get("ports") or []
    if port_name:
        return next((p for p in ports if p.get("name") == port_name), None)
    return ports[0] if ports else None


def endpoint_urls(service_port: dict[str, Any], slices: list[dict[str, Any]]) -> tuple[str, ...]:
    """URLs of the ready endpoints of the slices, on the slice port matching the Service port."""
    wanted = service_port.get("name") or ""
    urls: dict[str, None] = {}
    for piece in slices:
        ports = piece.get("ports") or []
        match = [p for p in ports if (p.get("name") or "") == wanted] or (ports if len(ports) == 1 else [])
        if not match or match[0].get("port") is None:
            continue
        port = match[0]["port"]
        for endpoint in piece.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False or not endpoint.get("addresses"):
                continue
            urls[f"http://{_host(endpoint['addresses'][0])}:{port}"] = None
    return tuple(sorted(urls))


def _skipped(service: str, reason: str, **fields: str) -> None:
    log.warning("service skipped: %s", reason, extra={"service": service, **fields})


def service_specs(
    namespace: str,
    services: dict[str, dict[str, Any]],
    slices: dict[str, dict[str, Any]],
    settings: KubeSettings,
) -> list[ServiceSpec]:
    """The backends of one namespace from its cached Services and EndpointSlices."""
    by_service: dict[str, list[dict[str, Any]]] = {}
    for piece in slices.values():
        owner = ((piece.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
        if owner:
            by_service.setdefault(owner, []).append(piece)
    specs = []
    for name, service in sorted(services.items()):
        annotations = (service.get("metadata") or {}).get("annotations") or {}
        where = f"{namespace}/{name}"
        try:
            annotation = settings.weight_annotation
            weight = parse_weight(annotations.get(annotation))
            annotation = settings.models_annotation
            models = parse_models(annotations.get(annotation))
            annotation = settings.slots_annotation
            slots = parse_slots(annotations.get(annotation))
        except ValueError as exc:
            _skipped(where, f"invalid annotation {annotation}", annotation=annotation, detail=str(exc))
            continue
        port = _service_port(service, settings.port_name)
        if port is None:
            _skipped(where, "no matching port", port_name=settings.port_name or "(first)")
            continue
        specs.append(
            ServiceSpec(
                name=where,
                weight=weight,
                models=models,
                urls=endpoint_urls(port, by_service.get(name, [])),
                meta=(("namespace", namespace), ("service", name)),
                slots=slots,
            )
        )
    return specs


ListCall = Callable[..., Awaitable[Any]]
# The most of an API error's body kept for its message.
ERROR_BODY = 2048


async def read_json(response: Any) -> dict[str, Any]:
    """The JSON body of a raw (`_preload_content=False`) API response; ApiException for any status but 2xx.

    Without preloading, kubernetes_asyncio returns error answers as they are: a 403 or a 500 read as a list
    would look like a namespace without any Service, and would take every backend out."""
    body = await response.read()
    if not 200 <= response.status <= 299:
        error = ApiException(status=response.status, reason=response.reason)
        error.body = body[:ERROR_BODY].decode("utf-8", "replace")
        raise error
    return json.loads(body)


class Informer:
    """List, then watch, one kind in one namespace, keeping `items` (name -> raw object) current."""

    def __init__(
        self,
        kind: str,
        call: ListCall,
        namespace: str,
        selector: str,
        settings: KubeSettings,
        on_change: Callable[[], None],
    ) -> None:
        self.kind = kind
        self.call = call
        self.namespace = namespace
        self.selector = selector
        self.settings = settings
        self.on_change = on_change
        self.items: dict[str, dict[str, Any]] = {}
        self.synced = asyncio.Event()

    async def run(self) -> None:
        delay = self.settings.backoff_initial
        while True:
            try:
                version = await self._list()
                delay = self.settings.backoff_initial
                await self._watch(version)
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status != 410:
                    log.warning(
                        "watch failed, will list again",
                        extra={
                            "kind": self.kind,
                            "namespace": self.namespace,
                            "status": exc.status,
                            "detail": str(exc.reason),
                        },
                    )
                    await self._sleep(delay)
                    delay = min(delay * 2, self.settings.backoff_max)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:  # the API connection
                log.warning(
                    "watch failed, will list again",
                    extra={
                        "kind": self.kind,
                        "namespace": self.namespace,
                        "detail": f"{type(exc).__name__}: {exc}",
                    },
                )
                await self._sleep(delay)
                delay = min(delay * 2, self.settings.backoff_max)
            except Exception:  # a bug of ours: say so loudly (with its traceback), then keep trying
                log.exception("discovery failed unexpectedly, will list again", extra={"kind": self.kind})
                await self._sleep(delay)
                delay = min(delay * 2, self.settings.backoff_max)

    @staticmethod
    async def _sleep(delay: float) -> None:
        await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not crypto

    async def _list(self) -> str:
        response = await self.call(self.namespace, label_selector=self.selector, _preload_content=False)
        data = await read_json(response)
        self.items = {i["metadata"]["name"]: i for i in data.get("items") or []}
        self.on_change()
        self.synced.set()
        return data["metadata"].get("resourceVersion", "")

    async def _watch(self, version: str) -> None:
        while True:
            stream = watch.Watch()
            async with stream:
                async for event in stream.stream(
                    self.call,
                    self.namespace,
                    label_selector=self.selector,
                    resource_version=version,
                    timeout_seconds=self.settings.watch_timeout,
                    allow_watch_bookmarks=True,
                ):
                    obj = event["raw_object"]
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if event["type"] == "BOOKMARK":
                        continue
                    name = obj["metadata"]["name"]
                    if event["type"] == "DELETED":
                        self.items.pop(name, None)
                    else:
                        self.items[name] = obj
                    self.on_change()


class KubeDiscovery:
    """Keeps the pool's `kubernetes/<namespace>` services equal to the cluster's."""

    def __init__(self, pool: BackendPool, settings: KubeSettings, api: client.ApiClient) -> None:
        self.pool = pool
        self.settings = settings
        core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
        self.informers: list[tuple[Informer, Informer]] = []
        for ns in settings.namespaces:
            services = Informer(
                "Service",
                core.list_namespaced_service,
                ns,
                settings.label_selector,
                settings,
                lambda ns=ns: self._refresh(ns),
            )
            slices = Informer(
                "EndpointSlice",
                discovery.list_namespaced_endpoint_slice,
                ns,
                SERVICE_NAME_LABEL,
                settings,
                lambda ns=ns: self._refresh(ns),
            )
            self.informers.append((services, slices))

    def _refresh(self, namespace: str) -> None:
        for services, slices in self.informers:
            if services.namespace == namespace:
                specs = service_specs(namespace, services.items, slices.items, self.settings)
                self.pool.replace(f"kubernetes/{namespace}", specs)

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for pair in self.informers for i in pair)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for pair in self.informers:
                for informer in pair:
                    group.create_task(informer.run())


async def api_client(kubeconfig: Path | None) -> client.ApiClient:
    """In-cluster service account first, then the kubeconfig (explicit path or ~/.kube/config)."""
    if kubeconfig is None:
        try:
            config.load_incluster_config()
            return client.ApiClient()
        except config.ConfigException:
            pass
    await config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None)
    return client.ApiClient()
