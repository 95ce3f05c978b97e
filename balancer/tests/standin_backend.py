"""STAND-IN for llama-api-server: a small OpenAI-compatible backend used only by these tests.

It answers /v1/models, /v1/chat/completions (JSON or SSE), /v1/completions, /v1/embeddings and
/echo, reports what it received (body size and sha256, headers) so the tests can check what the
balancer forwarded, and can be told to fail, stall or stream under the test's control.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PEAK = web.RequestKey("standin_peak", list)  # [most requests answered at once during this one]


@dataclass
class StandinBackend:
    name: str
    models: list[str] = field(default_factory=lambda: ["standin-model"])
    fail_status: int | None = None  # answer every /v1 request with this status
    stream_gate: asyncio.Event | None = None  # SSE: wait for this between the first and second chunk
    first_byte_delay: float = 0.0
    stall_after_first_chunk: float = 0.0
    hits: int = 0
    cancelled: int = 0
    active: int = 0  # /v1 requests being answered right now
    max_active: int = 0
    # Per request being answered: the most requests this backend answered at once during its lifetime, sent
    # back as "peak_active" (in the JSON answer, in the last SSE chunk): a client sees whether it shared a slot.
    _peaks: dict[int, list[int]] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None
    port: int = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self.models_view)
        app.router.add_get("/echo", self.echo)
        app.router.add_route("*", "/v1/{tail:.*}", self.generic)
        return app

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> StandinBackend:
        self._runner = web.AppRunner(self.app(), handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port or self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def models_view(self, _request: web.Request) -> web.Response:
        if self.fail_status:
            return web.Response(status=self.fail_status)
        data = [{"id": m, "object": "model", "created": 1, "owned_by": self.name} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def echo(self, _request: web.Request) -> web.Response:
        return web.Response(text="echo")

    async def generic(self, request: web.Request) -> web.StreamResponse:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        peak = [self.active]
        self._peaks[id(peak)] = peak
        for other in self._peaks.values():
            other[0] = max(other[0], self.active)
        request[PEAK] = peak
        try:
            return await self._generic(request)
        finally:
            self.active -= 1
            del self._peaks[id(peak)]

    async def _generic(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        body = await request.read()
        record = {
            "path": request.path_qs,
            "raw_path": request.raw_path,
            "method": request.method,
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "headers": dict(request.headers),
            "chunked": request.headers.get("Transfer-Encoding", "").lower() == "chunked",
        }
        self.received.append(record)
        if self.fail_status:
            return web.json_response({"error": "stand-in failure"}, status=self.fail_status)
        if self.first_byte_delay:
            await asyncio.sleep(self.first_byte_delay)
        try:
            payload = json.loads(body) if body.startswith(b"{") and len(body) < 1_000_000 else {}
        except (ValueError, RecursionError):
            payload = {}
        if payload.get("stream"):
            return await self._stream(request, payload)
        answer = {
            "backend": self.name,
            # llama-api-server answers with its own --model-name, never with whatever the request named: a
            # request routed to the wrong backend shows in the answer.
            "model": payload.get("model") if payload.get("model") in self.models else self.models[0],
            **record,
            "peak_active": request[PEAK][0],
            "object": "chat.completion",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "blue"}, "finish_reason": "stop"}
            ],
        }
        answer.pop("headers")
        answer["headers"] = record["headers"]
        return web.json_response(answer)

    async def _stream(self, request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            chunks = int(payload.get("chunks", 3))
            for index in range(chunks):
                chunk = {
                    "backend": self.name,
                    "index": index,
                    "choices": [{"delta": {"content": f"t{index}"}}],
                }
                if index == chunks - 1:
                    chunk["peak_active"] = request[PEAK][0]
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
                if index == 0 and self.stream_gate is not None:
                    await self.stream_gate.wait()
                if index == 0 and self.stall_after_first_chunk:
                    await asyncio.sleep(self.stall_after_first_chunk)
                await asyncio.sleep(float(payload.get("interval", 0)))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled += 1
            raise
        return response
