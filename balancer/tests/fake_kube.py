"""A fake Kubernetes API server (list and watch of Services and EndpointSlices) on 127.0.0.1.

The balancer's real Kubernetes client (kubernetes_asyncio) talks to it over HTTP, so discovery is
tested through the same list/watch requests and JSON-lines watch stream a real API server sends.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

KINDS = {"services": ("v1", "Service"), "endpointslices": ("discovery.k8s.io/v1", "EndpointSlice")}


class FakeKubeApi:
    def __init__(self) -> None:
        self.version = 100
        self.objects: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.watchers: dict[tuple[str, str], list[asyncio.Queue[dict[str, Any] | None]]] = {}
        self.history: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
        self.lists: list[tuple[str, str, str]] = []  # (kind, namespace, labelSelector) of each list call
        self.url = ""
        self._runner: web.AppRunner | None = None
        # The next lists answer this status with a Status body, as an API server does (403: RBAC, 500, 429).
        self.failing_lists: list[int] = []

    async def start(self) -> FakeKubeApi:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{ns}/services", self.handle("services"))
        app.router.add_get(
            "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices", self.handle("endpointslices")
        )
        self._runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        for queues in self.watchers.values():
            for queue in queues:
                queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()

    def handle(self, kind: str):
        async def view(request: web.Request) -> web.StreamResponse:
            ns = request.match_info["ns"]
            if request.query.get("watch") in {"true", "1", "True"}:
                return await self._watch(request, kind, ns)
            self.lists.append((kind, ns, request.query.get("labelSelector", "")))
            if self.failing_lists:
                code = self.failing_lists.pop(0)
                status = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "code": code,
                }
                return web.json_response({**status, "message": f"failing with {code}"}, status=code)
            api_version, obj_kind = KINDS[kind]
            items = list(self.objects.get((kind, ns), {}).values())
            return web.json_response(
                {
                    "apiVersion": api_version,
                    "kind": obj_kind + "List",
                    "metadata": {"resourceVersion": str(self.version)},
                    "items": items,
                }
            )

        return view

    async def _watch(self, request: web.Request, kind: str, ns: str) -> web.StreamResponse:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        # Like a real API server: every change after the requested resourceVersion is delivered.
        since = int(request.query.get("resourceVersion") or 0)
        for version, event in self.history.get((kind, ns), []):
            if version > since:
                queue.put_nowait(event)
        self.watchers.setdefault((kind, ns), []).append(queue)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            while (event := await queue.get()) is not None:
                await response.write(json.dumps(event).encode() + b"\n")
        finally:
            self.watchers[(kind, ns)].remove(queue)
        return response

    def watching(self, kind: str, ns: str) -> int:
        return len(self.watchers.get((kind, ns), []))

    def _emit(self, kind: str, ns: str, event: dict[str, Any]) -> None:
        if event["type"] != "ERROR":
            self.history.setdefault((kind, ns), []).append((self.version, json.loads(json.dumps(event))))
        for queue in self.watchers.get((kind, ns), []):
            queue.put_nowait(event)

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        self.version += 1
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        obj["metadata"]["resourceVersion"] = str(self.version)
        store = self.objects.setdefault((kind, ns), {})
        event_type = "MODIFIED" if name in store else "ADDED"
        store[name] = obj
        self._emit(kind, ns, {"type": event_type, "object": obj})

    def delete(self, kind: str, ns: str, name: str) -> None:
        self.version += 1
        obj = self.objects[(kind, ns)].pop(name)
        obj["metadata"]["resourceVersion"] = str(self.version)
        self._emit(kind, ns, {"type": "DELETED", "object": obj})

    def expire(self, kind: str, ns: str) -> None:
        """Tell the watchers their resourceVersion is too old (410 Gone): they must list again."""
        self._emit(
            kind,
            ns,
            {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": "Expired",
                    "code": 410,
                    "message": "too old resource version",
                },
            },
        )


def service(
    ns: str, name: str, weight: str | None = "1", models: str | None = None, port_name: str = "http"
) -> dict[str, Any]:
    annotations = {}
    if weight is not None:
        annotations["llamaedge/weight"] = weight
    if models is not None:
        annotations["llamaedge/models"] = models
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"llamaedge/target": "true"},
            "annotations": annotations,
        },
        "spec": {"ports": [{"name": port_name, "port": 8080, "targetPort": 8080, "protocol": "TCP"}]},
    }


def endpoint_slice(
    ns: str,
    service_name: str,
    ready: list[str],
    not_ready: tuple[str, ...] = (),
    port: int = 8080,
    port_name: str = "http",
    suffix: str = "abcde",
) -> dict[str, Any]:
    endpoints = [{"addresses": [ip], "conditions": {"ready": True}} for ip in ready]
    endpoints += [{"addresses": [ip], "conditions": {"ready": False}} for ip in not_ready]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "addressType": "IPv4",
        "metadata": {
            "name": f"{service_name}-{suffix}",
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }
