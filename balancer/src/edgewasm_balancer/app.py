"""The balancer service: HTTP routes, background tasks, start and graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from time import perf_counter
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from kubernetes_asyncio import config as kube_config
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgewasm_balancer import upstream
from edgewasm_balancer.config import ConfigError, Settings, election_settings
from edgewasm_balancer.contract import ADMIN_TOKEN_ENV
from edgewasm_balancer.election import LeaseElector
from edgewasm_balancer.health import HealthChecker, merged_models
from edgewasm_balancer.kube import KubeDiscovery, KubeSettings, api_client
from edgewasm_balancer.listener import Limits, handler_factory, listen
from edgewasm_balancer.metrics import Metrics
from edgewasm_balancer.pool import Admission, BackendPool, HealthPolicy
from edgewasm_balancer.proxy import BACKEND, STARTED, Proxy, openai_error
from edgewasm_balancer.sources import AdminApi, BackendsFile

log = logging.getLogger("edgewasm_balancer")

# After the drain deadline, what aiohttp gets to cancel the handlers still running (it applies it twice).
FINAL_GRACE = 0.25
# After answering a request whose body was not read (refused, timed out), how long the rest of the
# body is read and discarded so the client can see the answer before the connection closes.
LINGERING = 2.0


class AccessLogger(AbstractAccessLogger):
    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if request.path in {"/healthz", "/readyz", "/metrics"}:
            return
        # uvloop's clock has millisecond resolution: proxied requests carry their own start time.
        started = request.get(STARTED)
        seconds = perf_counter() - started if started is not None else time
        self.logger.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_ms": round(seconds * 1000, 3),
                "backend": request.get(BACKEND),
                "remote": request.remote,
                "bytes": response.body_length,
            },
        )


class Balancer:
    def __init__(self, settings: Settings, pool: BackendPool | None = None, kube_api: Any = None) -> None:
        self.settings = settings
        self.backends_file: BackendsFile | None = None
        self.pool = pool or BackendPool(
            HealthPolicy(
                max_fails=settings.max_fails,
                fail_window=settings.fail_window,
                base_ejection=settings.ejection,
                max_ejection=settings.max_ejection,
                max_ejection_percent=settings.max_ejection_percent,
            ),
            least_busy=settings.least_busy,
            routing=settings.routing,
            admission=Admission(
                queue_size=settings.queue_size,
                queue_per_client=settings.queue_per_client,
                queue_timeout=settings.queue_timeout,
                default_slots=settings.default_slots,
            ),
        )
        self.metrics = Metrics(self.pool)
        self.kube_api = kube_api
        self.kube: Any = None
        self.elector: LeaseElector | None = None
        self.election_task: asyncio.Task[None] | None = None
        self.led_at_stop = False  # held the Lease when SIGTERM came: drains what kube-proxy still sends
        self.draining = False
        self.tasks: list[asyncio.Task[None]] = []
        self.session: aiohttp.ClientSession | None = None
        self.runner: web.AppRunner | None = None
        self.admin_runner: web.AppRunner | None = None
        self.metrics_runner: web.AppRunner | None = None
        self.servers: list[asyncio.Server] = []
        self.proxy: Proxy | None = None
        self.connections: upstream.ConnectionPool | None = None
        self.address: tuple[str, int] | None = None
        self.admin_address: tuple[str, int] | None = None
        self.metrics_address: tuple[str, int] | None = None

    # -- routes ---------------------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        assert self.proxy is not None
        app = web.Application(client_max_size=0)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/v1/models", self.models)
        app.router.add_route("*", "/v1/{tail:.*}", self.proxy.handle)
        return app

    def build_admin_app(self) -> web.Application:
        """The admin API, served only on its own listener (never the public port)."""
        s = self.settings
        assert s.admin_token is not None
        app = web.Application(client_max_size=64 * 1024)
        leader = self.elector.status if self.elector is not None else None
        app.router.add_routes(AdminApi(self.pool, s.admin_token, s.admin_allow_networks, leader).routes())
        return app

    def build_metrics_app(self) -> web.Application:
        """Prometheus' /metrics, on its own listener: the series name backends and pod addresses."""
        app = web.Application(client_max_size=1024)
        app.router.add_get("/metrics", self.metrics_view)
        return app

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def standing_by(self) -> bool:
        """With --leader-election: True while this replica must not route (it does not hold the Lease). The
        leader that got SIGTERM keeps routing what still reaches it while it drains: Kubernetes sends a
        terminating pod new connections only while no other endpoint is ready (the new leader's readiness)."""
        elector = self.elector
        if elector is None:
            return self.settings.leader_election  # not campaigning yet
        return not elector.leading and not (self.draining and self.led_at_stop)

    async def readyz(self, _request: web.Request) -> web.Response:
        reasons = []
        if self.settings.leader_election:
            if self.standing_by():
                holder = self.elector.holder if self.elector is not None else ""
                reasons.append(f"standing by: the leader is {holder or 'not elected yet'}")
        elif self.draining:
            reasons.append("shutting down")
        if self.kube is not None and not self.kube.synced:
            reasons.append("Kubernetes discovery has not listed every namespace yet")
        if not self.pool.ready():
            reasons.append("no backend is available")
        if reasons:
            return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics_view(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def models(self, _request: web.Request) -> web.Response:
        assert self.session is not None
        if not self.pool.ready():
            return openai_error(
                503, "No backend is available", "service_unavailable", "no_backend", {"Retry-After": "1"}
            )
        return web.json_response(await merged_models(self.pool, self.session, self.settings.health_timeout))

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> tuple[str, int]:
        """Load the sources, start listening and the background tasks; returns the bound address."""
        s = self.settings
        if s.admin_api and s.admin_token is None:
            raise ConfigError(f"the admin API needs a token: --admin-token-file or {ADMIN_TOKEN_ENV}")
        backends_file = None
        if s.backends_file is not None:
            backends_file = BackendsFile(s.backends_file, self.pool, s.reload_interval)
            backends_file.load()  # a missing or invalid file fails the start, with its reason
        self.backends_file = backends_file
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=10),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=s.connect_timeout),
            skip_auto_headers=("User-Agent",),
        )
        self.connections = upstream.ConnectionPool(s.connect_timeout, s.upstream_keepalive)
        self.proxy = Proxy(
            self.pool,
            self.metrics,
            self.connections,
            first_byte_timeout=s.first_byte_timeout,
            idle_timeout=s.idle_timeout,
            retries=s.retries,
            buffer_limit=s.buffer_limit,
            buffer_total=s.buffer_total,
            body_timeout=s.client_body_timeout,
            body_min_rate=s.client_body_min_rate,
            write_timeout=s.backend_write_timeout,
            retry_non_idempotent=s.retry_non_idempotent,
            backend_header=s.backend_header,
            standing_by=self.standing_by if s.leader_election else None,
        )
        if s.leader_election:
            await self._start_election()
        admin_app = self.build_admin_app() if s.admin_api else None
        self.runner = await self._serve(self.build_app(), s.host, s.port)
        self.address = self._bound(-1)
        if admin_app is not None:
            self.admin_runner = await self._serve(admin_app, *s.admin_listen)
            self.admin_address = self._bound(-1)
        if s.metrics_listen is not None:
            self.metrics_runner = await self._serve(self.build_metrics_app(), *s.metrics_listen)
            self.metrics_address = self._bound(-1)
        if backends_file is not None:
            self._spawn(backends_file.run())
        if s.kubernetes:
            self._start_kubernetes()
        if s.health_interval > 0:
            checker = HealthChecker(
                self.pool,
                self.metrics,
                self.session,
                path=s.health_path,
                interval=s.health_interval,
                timeout=s.health_timeout,
            )
            self._spawn(checker.run())
        log.info("listening", extra={"host": self.address[0], "port": self.address[1]})
        if self.admin_address is not None:
            log.info(
                "admin API listening", extra={"host": self.admin_address[0], "port": self.admin_address[1]}
            )
        if self.metrics_address is not None:
            log.info(
                "metrics listening",
                extra={"host": self.metrics_address[0], "port": self.metrics_address[1]},
            )
        return self.address

    async def _serve(self, app: web.Application, host: str, port: int) -> web.AppRunner:
        s = self.settings
        runner = web.AppRunner(app, shutdown_timeout=FINAL_GRACE, handler_cancellation=True)
        await runner.setup()
        assert runner.server is not None
        limits = Limits(s.max_connections, s.client_header_timeout, self._refused)
        # The per-connection options: handlers are made by our factory, not by runner.server().
        factory = handler_factory(
            runner.server,
            access_log_class=AccessLogger,
            keepalive_timeout=s.client_keepalive_timeout,
            lingering_time=LINGERING,
        )
        self.servers.append(await listen(factory, host, port, limits))
        return runner

    def _bound(self, index: int) -> tuple[str, int]:
        name = self.servers[index].sockets[0].getsockname()
        return (name[0], name[1])

    def _refused(self, reason: str) -> None:
        self.metrics.connections_refused.labels(reason).inc()

    def _start_kubernetes(self) -> None:
        s = self.settings
        kube_settings = KubeSettings(
            namespaces=s.namespaces,
            label_selector=s.label_selector,
            weight_annotation=s.weight_annotation,
            models_annotation=s.models_annotation,
            port_name=s.port_name,
            slots_annotation=s.slots_annotation,
        )

        async def run() -> None:
            api = self.kube_api or await api_client(s.kubeconfig)
            self.kube = KubeDiscovery(self.pool, kube_settings, api)
            await self.kube.run()

        self._spawn(run())

    async def _start_election(self) -> None:
        s = self.settings
        try:
            api = self.kube_api or await api_client(s.kubeconfig)
        except kube_config.ConfigException as exc:
            raise ConfigError(f"--leader-election needs the Kubernetes API: {exc}") from exc
        self.elector = LeaseElector(api, election_settings(s), self._leadership_changed)
        self.metrics.leader.set(0)
        self.election_task = self._spawn(self.elector.run())
        log.info("campaigning for leadership", extra=self.elector.status())

    def _leadership_changed(self, leading: bool) -> None:
        self.metrics.leadership(leading)

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(self._task_done)
        self.tasks.append(task)
        return task

    @staticmethod
    def _task_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def stop(self) -> None:
        """Fail readiness, wait the shutdown delay, stop listening, let requests in flight finish.

        One deadline: everything is over `shutdown_delay + shutdown_timeout` seconds after the call
        (plus a fraction of a second to cancel what still runs then), so a pod's grace period that
        exceeds both is never hit.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_delay + self.settings.shutdown_timeout
        self.led_at_stop = self.elector is not None and self.elector.leading
        self.draining = True
        if self.elector is not None:
            await self._hand_over()
        if self.settings.shutdown_delay:
            await asyncio.sleep(self.settings.shutdown_delay)
        log.info("shutting down", extra={"in_flight": self.proxy.in_flight if self.proxy else 0})
        for server in self.servers:
            server.close()  # no new connections
        for runner in (self.runner, self.admin_runner, self.metrics_runner):
            if runner is not None and runner.server is not None:
                runner.server.pre_shutdown()  # kept-alive connections close after their current request
        while self.proxy is not None and self.proxy.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for runner in (self.runner, self.admin_runner, self.metrics_runner):
            if runner is not None:
                await runner.cleanup()  # closes idle connections, cancels what still runs
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.session is not None:
            await self.session.close()
        if self.connections is not None:
            self.connections.close()

    async def _hand_over(self) -> None:
        """Stop campaigning and free the Lease at once: a standby takes it at its next try (--retry-period)."""
        if self.election_task is not None:
            self.election_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.election_task
        if self.elector is not None:
            await self.elector.release()

    def reload(self) -> None:
        """SIGHUP: re-read the backends file now (Kubernetes discovery and the admin API are always current)."""
        log.info("SIGHUP: reloading", extra={"file": str(self.settings.backends_file or "")})
        if self.backends_file is not None:
            self.backends_file.reload_now()

    async def serve(self) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully; SIGHUP reloads the backends file."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self.start()
        await stop.wait()
        await self.stop()
