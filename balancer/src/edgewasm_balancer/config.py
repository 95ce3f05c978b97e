"""Command-line options; every option can also be set by an environment variable."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from edgewasm_balancer import __version__
from edgewasm_balancer.pool import MAX_SLOTS, MIN_SLOTS, ROUTING_POLICIES

ENV_PREFIX = "EDGEWASM_BALANCER_"
MIB = 1024 * 1024


class ConfigError(ValueError):
    """Settings that cannot work together: the balancer refuses to start (exit 2)."""


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"  # noqa: S104 - a gateway listens on every address by default
    port: int = 8080
    backends_file: Path | None = None
    reload_interval: float = 2.0
    kubernetes: bool = False
    namespaces: tuple[str, ...] = ("default",)
    label_selector: str = "llamaedge/target=true"
    weight_annotation: str = "llamaedge/weight"
    models_annotation: str = "llamaedge/models"
    slots_annotation: str = "llamaedge/slots"
    port_name: str = ""
    kubeconfig: Path | None = None
    admin_api: bool = False
    admin_token: str | None = None
    admin_listen: tuple[str, int] = ("127.0.0.1", 8081)
    admin_allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    connect_timeout: float = 5.0
    first_byte_timeout: float = 300.0
    idle_timeout: float = 120.0
    backend_write_timeout: float = 60.0
    upstream_keepalive: bool = True
    retries: int = 2
    retry_non_idempotent: bool = False
    max_fails: int = 1
    fail_window: float = 10.0
    ejection: float = 10.0
    max_ejection: float = 300.0
    max_ejection_percent: float = 50.0
    health_interval: float = 5.0
    health_path: str = "/v1/models"
    health_timeout: float = 3.0
    least_busy: bool = False
    routing: str = "swrr"
    queue_size: int = 128
    queue_timeout: float = 30.0
    default_slots: int = 1
    buffer_limit: int = 16 * MIB
    buffer_total: int = 64 * MIB
    client_header_timeout: float = 30.0
    client_body_timeout: float = 30.0
    client_keepalive_timeout: float = 60.0
    max_connections: int = 4096
    shutdown_delay: float = 0.0
    shutdown_timeout: float = 30.0
    log_level: str = "info"
    log_format: str = "json"


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104


def _network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a network like 10.42.0.0/16, got {value!r}") from exc


def _percent(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 100:
        raise argparse.ArgumentTypeError(f"must be from 0 to 100, got {value}")
    return number


def _positive(kind: type) -> object:
    def parse(value: str) -> float | int:
        number = kind(value)
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
        return number

    parse.__name__ = kind.__name__
    return parse


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def _slots(value: str) -> int:
    number = int(value)
    if not MIN_SLOTS <= number <= MAX_SLOTS:
        raise argparse.ArgumentTypeError(f"must be from {MIN_SLOTS} to {MAX_SLOTS}, got {value}")
    return number


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose options default to EDGEWASM_BALANCER_<OPTION> from the environment."""

    def option(self, flag: str, help_text: str, **kwargs: object) -> None:
        env = ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()
        if kwargs.get("action") == "store_true":
            kwargs.pop("action")
            kwargs.update(nargs="?", const=True, type=_flag, metavar="BOOL")
        if env in os.environ:
            raw = os.environ[env]
            convert = kwargs.get("type", str)
            try:
                value = convert(raw)  # type: ignore[operator]
            except (argparse.ArgumentTypeError, ValueError) as exc:
                self.error(f"{env}={raw!r}: {exc}")
            if kwargs.get("action") == "append":
                value = [convert(part.strip()) for part in raw.split(",") if part.strip()]  # type: ignore[operator]
            kwargs["default"] = value
        kind = kwargs.get("type")
        if "metavar" not in kwargs and "choices" not in kwargs and kwargs.get("nargs") != "?":
            seconds = "seconds" in help_text.split(" ", 3)[:3] or "in seconds" in help_text
            kwargs["metavar"] = (
                "FILE"
                if kind is Path
                else "SECONDS"
                if seconds
                else (
                    "N" if getattr(kind, "__name__", "") == "int" else flag.lstrip("-").split("-")[-1].upper()
                )
            )
        shown = kwargs.get("default")
        suffix = f" [env {env}" + (f"; default {shown}]" if shown not in (None, False, "") else "]")
        self.add_argument(flag, help=help_text + suffix, **kwargs)  # type: ignore[arg-type]


def program_name(argv0: str | None = None) -> str:
    """The command as it was started: the console script's name, or `python -m edgewasm_balancer`."""
    name = Path(sys.argv[0] if argv0 is None else argv0).name
    return "python -m edgewasm_balancer" if name in {"__main__.py", "-m", "-c", ""} else name


def build_parser() -> argparse.ArgumentParser:
    d = Settings()
    p = _Parser(
        prog=program_name(),
        description=(
            "A weighted, model-aware gateway for OpenAI-compatible LLM backends (llama-api-server). "
            "Backends come from a backends file (static mode), from Kubernetes Services labelled "
            "llamaedge/target=true (--kubernetes), and from the admin API."
        ),
    )
    p.option("--listen", "address to serve on, HOST:PORT", type=_listen, default=f"{d.host}:{d.port}")
    p.option(
        "--backends-file",
        "YAML or JSON list of {name, url|urls, weight, models}; reloaded when it changes",
        type=Path,
        default=None,
    )
    p.option(
        "--reload-interval",
        "seconds between checks of the backends file",
        type=_positive(float),
        default=d.reload_interval,
    )
    p.option(
        "--kubernetes",
        "discover backends from Kubernetes Services and EndpointSlices",
        action="store_true",
        default=False,
    )
    p.option(
        "--namespace",
        "namespace to watch (repeat for several)",
        action="append",
        dest="namespaces",
        default=None,
    )
    p.option("--label-selector", "label selector of backend Services", default=d.label_selector)
    p.option(
        "--weight-annotation",
        "Service annotation holding the weight (integer >= 1; default 1)",
        default=d.weight_annotation,
    )
    p.option(
        "--models-annotation",
        "Service annotation listing its models (comma-separated or JSON list)",
        default=d.models_annotation,
    )
    p.option(
        "--slots-annotation",
        "Service annotation holding the parallel slots of each of its endpoints (load-aware routing)",
        default=d.slots_annotation,
    )
    p.option("--port-name", "name of the Service port to use (default: the first port)", default=d.port_name)
    p.option(
        "--kubeconfig",
        "kubeconfig file (default: in-cluster service account, then ~/.kube/config)",
        type=Path,
        default=None,
    )
    p.option(
        "--admin-api",
        "serve /api/register, /api/unregister/NAME, /api/services on --admin-listen; "
        "on by default when a token is set, and never without one",
        type=_flag,
        default=None,
        metavar="BOOL",
    )
    p.option(
        "--admin-token-file",
        "file holding the bearer token the admin API requires (or set the token "
        f"itself in {ENV_PREFIX}ADMIN_TOKEN)",
        type=Path,
        default=None,
    )
    p.option(
        "--admin-listen",
        "address of the admin API's own listener, HOST:PORT (never the public port)",
        type=_listen,
        default=f"{d.admin_listen[0]}:{d.admin_listen[1]}",
    )
    p.option(
        "--admin-allow-network",
        "network (CIDR) registrations may point into; repeat for several. Default: any address "
        "but loopback, link-local, multicast and unspecified ones",
        type=_network,
        action="append",
        dest="admin_allow_networks",
        default=None,
    )
    p.option(
        "--connect-timeout",
        "seconds to connect to a backend",
        type=_positive(float),
        default=d.connect_timeout,
    )
    p.option(
        "--first-byte-timeout",
        "seconds from sending a request to the backend's response headers",
        type=_positive(float),
        default=d.first_byte_timeout,
    )
    p.option(
        "--idle-timeout",
        "seconds without a byte from a backend while a response streams",
        type=_positive(float),
        default=d.idle_timeout,
    )
    p.option(
        "--backend-write-timeout",
        "seconds a backend may go without reading a streamed request body",
        type=_positive(float),
        default=d.backend_write_timeout,
    )
    p.option(
        "--upstream-keepalive",
        "reuse connections to backends; false gives every request a connection of its own, which "
        "no backend misbehaviour can desynchronise (LLM answers take seconds: the cost is small)",
        type=_flag,
        default=d.upstream_keepalive,
        metavar="BOOL",
    )
    p.option(
        "--retries",
        "other backends to try when one fails before answering",
        type=_non_negative_int,
        default=d.retries,
    )
    p.option(
        "--retry-non-idempotent",
        "also send a POST without Idempotency-Key to another backend after a reset or timeout once it "
        "was written (it may then be processed twice); by default only idempotent requests are",
        type=_flag,
        default=d.retry_non_idempotent,
        metavar="BOOL",
    )
    p.option(
        "--max-fails",
        "failures within --fail-window that eject a backend",
        type=_positive(int),
        default=d.max_fails,
    )
    p.option(
        "--fail-window",
        "seconds over which failures are counted",
        type=_positive(float),
        default=d.fail_window,
    )
    p.option(
        "--ejection",
        "seconds of the first ejection; doubles with each consecutive one",
        type=_positive(float),
        default=d.ejection,
    )
    p.option("--max-ejection", "longest ejection in seconds", type=_positive(float), default=d.max_ejection)
    p.option(
        "--max-ejection-percent",
        "most endpoints (percent of all) that failures possibly caused by the request itself may eject; "
        "connect errors and failed health checks always eject",
        type=_percent,
        default=d.max_ejection_percent,
    )
    p.option(
        "--health-interval",
        "seconds between active health checks (0 disables them)",
        type=_non_negative_float,
        default=d.health_interval,
    )
    p.option(
        "--health-path", "path the active health check GETs (/v1/models or /echo)", default=d.health_path
    )
    p.option(
        "--health-timeout",
        "seconds an active health check may take",
        type=_positive(float),
        default=d.health_timeout,
    )
    p.option(
        "--least-busy",
        "inside a service, prefer the endpoint with the fewest requests in flight",
        action="store_true",
        default=False,
    )
    p.option(
        "--routing",
        "how requests are split: swrr (smooth weighted round-robin, exact, load-blind), weighted-random "
        "(the seed's), load-aware (weights among backends with a free slot, a bounded queue when all "
        "are full: for LLM backends that serve a few requests at a time)",
        choices=list(ROUTING_POLICIES),
        default=d.routing,
    )
    p.option(
        "--queue-size",
        "load-aware: most requests waiting for a free slot; more are refused with 429 + Retry-After",
        type=_positive(int),
        default=d.queue_size,
    )
    p.option(
        "--queue-timeout",
        "load-aware: seconds a request may wait for a free slot (503 + Retry-After after that)",
        type=_positive(float),
        default=d.queue_timeout,
    )
    p.option(
        "--default-slots",
        "load-aware: parallel slots of an endpoint whose backend declares none (llama-api-server "
        "serves one request at a time)",
        type=_slots,
        default=d.default_slots,
    )
    p.option(
        "--buffer-limit",
        "request bodies up to this many bytes are buffered (model routing, retries); "
        "larger ones are streamed to one backend",
        type=_positive(int),
        default=d.buffer_limit,
    )
    p.option(
        "--buffer-total",
        "most request bytes buffered at once over all requests; a body that does not fit is "
        "answered 503 with Retry-After",
        type=_positive(int),
        default=d.buffer_total,
    )
    p.option(
        "--client-header-timeout",
        "seconds a new client connection has to send its first request's headers",
        type=_positive(float),
        default=d.client_header_timeout,
    )
    p.option(
        "--client-body-timeout",
        "seconds a client may go without sending any of its request body (408 then)",
        type=_positive(float),
        default=d.client_body_timeout,
    )
    p.option(
        "--client-keepalive-timeout",
        "seconds an idle client connection waits for its next request's headers",
        type=_positive(float),
        default=d.client_keepalive_timeout,
    )
    p.option(
        "--max-connections",
        "most client connections at once; more are answered 503 and closed",
        type=_positive(int),
        default=d.max_connections,
    )
    p.option(
        "--shutdown-delay",
        "seconds /readyz fails before the listener closes on SIGTERM",
        type=_non_negative_float,
        default=d.shutdown_delay,
    )
    p.option(
        "--shutdown-timeout",
        "seconds in-flight requests get to finish on SIGTERM, after the delay (one deadline: the pod's "
        "grace period must exceed delay + timeout)",
        type=_non_negative_float,
        default=d.shutdown_timeout,
    )
    p.option(
        "--log-level",
        "debug, info, warning or error",
        default=d.log_level,
        choices=["debug", "info", "warning", "error"],
    )
    p.option("--log-format", "json or text", default=d.log_format, choices=["json", "text"])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def parse_settings(argv: list[str] | None = None) -> Settings:
    parser = build_parser()
    args = parser.parse_args(argv)
    host, port = args.listen if isinstance(args.listen, tuple) else _listen(args.listen)
    token = None
    if args.admin_token_file is not None:
        try:
            token = args.admin_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            parser.error(f"--admin-token-file {args.admin_token_file}: {exc.strerror}")
        if not token:
            parser.error(f"--admin-token-file {args.admin_token_file} is empty")
    elif os.environ.get(ENV_PREFIX + "ADMIN_TOKEN"):
        token = os.environ[ENV_PREFIX + "ADMIN_TOKEN"].strip()
    admin_api = token is not None if args.admin_api is None else args.admin_api
    if admin_api and token is None:
        parser.error(f"--admin-api needs a token: --admin-token-file or {ENV_PREFIX}ADMIN_TOKEN")
    if args.backends_file is None and not args.kubernetes and not admin_api:
        parser.error("no backend source: give --backends-file, --kubernetes or an admin token")
    admin_listen = args.admin_listen if isinstance(args.admin_listen, tuple) else _listen(args.admin_listen)
    return Settings(
        host=host,
        port=port,
        backends_file=args.backends_file,
        reload_interval=args.reload_interval,
        kubernetes=args.kubernetes,
        namespaces=tuple(args.namespaces or ("default",)),
        label_selector=args.label_selector,
        weight_annotation=args.weight_annotation,
        models_annotation=args.models_annotation,
        slots_annotation=args.slots_annotation,
        port_name=args.port_name,
        kubeconfig=args.kubeconfig,
        admin_api=admin_api,
        admin_token=token,
        admin_listen=admin_listen,
        admin_allow_networks=tuple(args.admin_allow_networks or ()),
        connect_timeout=args.connect_timeout,
        first_byte_timeout=args.first_byte_timeout,
        idle_timeout=args.idle_timeout,
        backend_write_timeout=args.backend_write_timeout,
        upstream_keepalive=args.upstream_keepalive,
        retries=args.retries,
        retry_non_idempotent=args.retry_non_idempotent,
        max_fails=args.max_fails,
        fail_window=args.fail_window,
        ejection=args.ejection,
        max_ejection=args.max_ejection,
        max_ejection_percent=args.max_ejection_percent,
        health_interval=args.health_interval,
        health_path=args.health_path,
        health_timeout=args.health_timeout,
        least_busy=args.least_busy,
        routing=args.routing,
        queue_size=args.queue_size,
        queue_timeout=args.queue_timeout,
        default_slots=args.default_slots,
        buffer_limit=args.buffer_limit,
        buffer_total=args.buffer_total,
        client_header_timeout=args.client_header_timeout,
        client_body_timeout=args.client_body_timeout,
        client_keepalive_timeout=args.client_keepalive_timeout,
        max_connections=args.max_connections,
        shutdown_delay=args.shutdown_delay,
        shutdown_timeout=args.shutdown_timeout,
        log_level=args.log_level,
        log_format=args.log_format,
    )
