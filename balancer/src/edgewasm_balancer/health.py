"""Active health checks and the merged model list.

Every interval, each endpoint gets `GET <health path>`. A 2xx answer brings an ejected endpoint back
and, for /v1/models, records the models its service serves; a failure counts like a failed request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp

from edgewasm_balancer.metrics import Metrics
from edgewasm_balancer.pool import BackendPool, Endpoint, Service

log = logging.getLogger("edgewasm_balancer.health")

# What the balancer reads of a backend's own answers (health checks, /v1/models): a model list is a few KiB.
MAX_ANSWER_BYTES = 1 << 20


async def bounded_json(resp: aiohttp.ClientResponse, limit: int = MAX_ANSWER_BYTES) -> Any:
    """The JSON of an answer of at most `limit` bytes; ValueError beyond (never read whole)."""
    data = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise ValueError(f"the answer is larger than {limit} bytes")
    return json.loads(data)


def model_ids(payload: Any) -> list[str]:
    """Model ids from an OpenAI `GET /v1/models` answer."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        return []
    return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]


class HealthChecker:
    def __init__(
        self,
        pool: BackendPool,
        metrics: Metrics,
        session: aiohttp.ClientSession,
        *,
        path: str,
        interval: float,
        timeout: float,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.session = session
        self.path = path
        self.interval = interval
        self.timeout = timeout

    async def run(self) -> None:
        while True:
            try:
                await self.check_all()
            except Exception:  # a bug here must not end health checking for good
                log.exception("health check round failed")
            await asyncio.sleep(self.interval)

    async def check_all(self) -> None:
        endpoints = self.pool.endpoints()
        results = await asyncio.gather(*(self.check(e) for e in endpoints))
        seen: dict[Service, set[str]] = {}
        for endpoint, models in zip(endpoints, results, strict=True):
            if models is not None:
                seen.setdefault(endpoint.service, set()).update(models)
        for service, models in seen.items():
            service.discovered_models = frozenset(models)

    async def check(self, endpoint: Endpoint) -> list[str] | None:
        """Probe one endpoint; the models it reported, or None when the probe failed."""
        label = endpoint.label
        try:
            # Never a redirect: the backend's answer is its own, not one fetched from where it points.
            get = self.session.get(endpoint.url + self.path, allow_redirects=False)
            async with asyncio.timeout(self.timeout), get as resp:
                if resp.status >= 300:
                    raise aiohttp.ClientResponseError(
                        resp.request_info, (), status=resp.status, message=f"HTTP {resp.status}"
                    )
                models = model_ids(await bounded_json(resp)) if self.path == "/v1/models" else []
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            was_up = endpoint.available(self.pool.clock())
            if self.pool.failure(endpoint) and was_up:
                self.metrics.ejections.labels(label, endpoint.url).inc()
                log.warning(
                    "endpoint ejected by health check",
                    extra={
                        "backend": label,
                        "endpoint": endpoint.url,
                        "detail": str(exc) or type(exc).__name__,
                    },
                )
            return None
        if not endpoint.available(self.pool.clock()):
            log.info("endpoint back in rotation", extra={"backend": label, "endpoint": endpoint.url})
        self.pool.success(endpoint)
        return models


async def merged_models(pool: BackendPool, session: aiohttp.ClientSession, timeout: float) -> dict[str, Any]:
    """`GET /v1/models` of the balancer: the union of what healthy services serve, asked live.

    One available endpoint per service is asked; a service that does not answer in time contributes
    the models it declared or last reported.
    """
    now = pool.clock()
    services = [s for s in pool.services.values() if s.candidates(now, set())]

    async def ask(service: Service) -> tuple[Service, list[dict[str, Any]] | None]:
        endpoint = service.candidates(now, set())[0]
        try:
            get = session.get(endpoint.url + "/v1/models", allow_redirects=False)
            async with asyncio.timeout(timeout), get as resp:
                payload = await bounded_json(resp) if resp.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            payload = None
        data = payload.get("data") if isinstance(payload, dict) else None
        return service, data if isinstance(data, list) else None

    merged: dict[str, dict[str, Any]] = {}
    for service, data in await asyncio.gather(*(ask(s) for s in services)):
        entries = (
            data
            if data is not None
            else [
                {"id": m, "object": "model", "created": 0, "owned_by": "llamaedge"}
                for m in sorted(service.models)
            ]
        )
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                merged.setdefault(entry["id"], entry)
    return {"object": "list", "data": [merged[k] for k in sorted(merged)]}
