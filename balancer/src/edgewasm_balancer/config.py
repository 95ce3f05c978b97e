"""Command-line options; every option can also be set by an environment variable."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edgewasm_balancer import __version__
from edgewasm_balancer.contract import (
    ADMIN_TOKEN_ENV,
    ENV_PREFIX,
    MAX_SLOTS,
    MIN_SLOTS,
    MODELS_ANNOTATION,
    ROUTING_POLICIES,
    SHUTDOWN_DELAY,
    SHUTDOWN_TIMEOUT,
    SLOTS_ANNOTATION,
    TARGET_LABEL,
    WEIGHT_ANNOTATION,
)
from edgewasm_balancer.election import ElectionError, ElectionSettings, identity, lease_namespace

MIB = 1024 * 1024


class ConfigError(ValueError):
    """Settings that cannot work together: the balancer refuses to start (exit 2)."""


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104


def _listen_or_off(value: str) -> tuple[str, int] | None:
    return None if value.strip().lower() == "off" else _listen(value)


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


def _opt(flag: str, help_text: str, **argparse_kwargs: object) -> dict[str, Any]:
    """A setting's command-line flag (and so its EDGEWASM_BALANCER_* variable), help and parsing."""
    return {"flag": flag, "help": help_text, "argparse": argparse_kwargs}


@dataclass(frozen=True)
class Settings:
    """Every setting, its flag, help and parsing. --listen sets host and port; --admin-token-file the token."""

    host: str = "0.0.0.0"  # noqa: S104 - a gateway listens on every address by default
    port: int = 8080
    backends_file: Path | None = field(
        default=None,
        metadata=_opt(
            "--backends-file",
            "YAML or JSON list of {name, url|urls, weight, models}; reloaded when it changes",
            type=Path,
        ),
    )
    reload_interval: float = field(
        default=2.0,
        metadata=_opt(
            "--reload-interval", "seconds between checks of the backends file", type=_positive(float)
        ),
    )
    kubernetes: bool = field(
        default=False,
        metadata=_opt(
            "--kubernetes",
            "discover backends from Kubernetes Services and EndpointSlices",
            action="store_true",
        ),
    )
    namespaces: tuple[str, ...] = field(
        default=("default",),
        metadata=_opt(
            "--namespace", "namespace to watch (repeat for several)", action="append", default=None
        ),
    )
    label_selector: str = field(
        default=f"{TARGET_LABEL}=true",
        metadata=_opt("--label-selector", "label selector of backend Services"),
    )
    weight_annotation: str = field(
        default=WEIGHT_ANNOTATION,
        metadata=_opt(
            "--weight-annotation", "Service annotation holding the weight (integer >= 1; default 1)"
        ),
    )
    models_annotation: str = field(
        default=MODELS_ANNOTATION,
        metadata=_opt(
            "--models-annotation", "Service annotation listing its models (comma-separated or JSON list)"
        ),
    )
    slots_annotation: str = field(
        default=SLOTS_ANNOTATION,
        metadata=_opt(
            "--slots-annotation",
            "Service annotation holding the parallel slots of each of its endpoints (load-aware routing)",
        ),
    )
    port_name: str = field(
        default="", metadata=_opt("--port-name", "name of the Service port to use (default: the first port)")
    )
    kubeconfig: Path | None = field(
        default=None,
        metadata=_opt(
            "--kubeconfig",
            "kubeconfig file (default: in-cluster service account, then ~/.kube/config)",
            type=Path,
        ),
    )
    leader_election: bool = field(
        default=False,
        metadata=_opt(
            "--leader-election",
            "several replicas: only the holder of a coordination.k8s.io Lease routes and reports ready "
            "(exact slot accounting); the others wait, their discovery warm, to take over",
            action="store_true",
        ),
    )
    lease_name: str = field(
        default="edgewasm-balancer",
        metadata=_opt("--lease-name", "name of the Lease the replicas campaign for (one per balancer)"),
    )
    lease_namespace: str = field(
        default="",
        metadata=_opt(
            "--lease-namespace",
            "namespace of the Lease (default: POD_NAMESPACE, else the service account's namespace, else default)",
        ),
    )
    identity: str = field(
        default="",
        metadata=_opt(
            "--identity",
            "this replica's name in the Lease (default: POD_NAME, else the host name and a random suffix)",
        ),
    )
    lease_duration: float = field(
        default=6.0,
        metadata=_opt(
            "--lease-duration",
            "seconds a Lease not renewed stays its holder's (whole seconds): how long a crashed leader is missed",
            type=_positive(float),
        ),
    )
    renew_deadline: float = field(
        default=4.0,
        metadata=_opt(
            "--renew-deadline",
            "seconds a leader keeps routing without a successful renewal (less than --lease-duration)",
            type=_positive(float),
        ),
    )
    retry_period: float = field(
        default=1.0,
        metadata=_opt(
            "--retry-period",
            "seconds between a candidate's tries and a leader's renewals",
            type=_positive(float),
        ),
    )
    admin_api: bool = field(
        default=False,
        metadata=_opt(
            "--admin-api",
            "serve /api/register, /api/unregister/NAME, /api/services on --admin-listen; "
            "on by default when a token is set, and never without one",
            type=_flag,
            default=None,
            metavar="BOOL",
        ),
    )
    admin_token: str | None = field(
        default=None,
        metadata=_opt(
            "--admin-token-file",
            f"file holding the bearer token the admin API requires (or set the token itself in {ADMIN_TOKEN_ENV})",
            type=Path,
            dest="admin_token_file",
        ),
    )
    admin_listen: tuple[str, int] = field(
        default=("127.0.0.1", 8081),
        metadata=_opt(
            "--admin-listen",
            "address of the admin API's own listener, HOST:PORT (never the public port)",
            type=_listen,
            default="127.0.0.1:8081",
        ),
    )
    metrics_listen: tuple[str, int] | None = field(
        default=("127.0.0.1", 8082),
        metadata=_opt(
            "--metrics-listen",
            "address of the Prometheus /metrics listener, HOST:PORT, or 'off' (never the public port: "
            "the series name backends and pod addresses)",
            type=_listen_or_off,
            default="127.0.0.1:8082",
        ),
    )
    backend_header: bool = field(
        default=False,
        metadata=_opt(
            "--backend-header",
            "name the backend that answered in an X-Edgewasm-Backend response header (off: clients "
            "do not learn the internal service names)",
            action="store_true",
        ),
    )
    admin_allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default=(),
        metadata=_opt(
            "--admin-allow-network",
            "network (CIDR) registrations may point into; repeat for several. Default: any address "
            "but loopback, link-local, multicast and unspecified ones",
            type=_network,
            action="append",
            default=None,
        ),
    )
    connect_timeout: float = field(
        default=5.0,
        metadata=_opt("--connect-timeout", "seconds to connect to a backend", type=_positive(float)),
    )
    first_byte_timeout: float = field(
        default=300.0,
        metadata=_opt(
            "--first-byte-timeout",
            "seconds from sending a request to the backend's response headers",
            type=_positive(float),
        ),
    )
    idle_timeout: float = field(
        default=120.0,
        metadata=_opt(
            "--idle-timeout",
            "seconds without a byte from a backend while a response streams",
            type=_positive(float),
        ),
    )
    backend_write_timeout: float = field(
        default=60.0,
        metadata=_opt(
            "--backend-write-timeout",
            "seconds a backend may go without reading a streamed request body",
            type=_positive(float),
        ),
    )
    upstream_keepalive: bool = field(
        default=True,
        metadata=_opt(
            "--upstream-keepalive",
            "reuse connections to backends; false gives every request a connection of its own, which "
            "no backend misbehaviour can desynchronise (LLM answers take seconds: the cost is small)",
            type=_flag,
            metavar="BOOL",
        ),
    )
    retries: int = field(
        default=2,
        metadata=_opt(
            "--retries", "other backends to try when one fails before answering", type=_non_negative_int
        ),
    )
    retry_non_idempotent: bool = field(
        default=False,
        metadata=_opt(
            "--retry-non-idempotent",
            "also send a POST without Idempotency-Key to another backend after a reset or timeout once it "
            "was written (it may then be processed twice); by default only idempotent requests are",
            type=_flag,
            metavar="BOOL",
        ),
    )
    max_fails: int = field(
        default=1,
        metadata=_opt(
            "--max-fails", "failures within --fail-window that eject a backend", type=_positive(int)
        ),
    )
    fail_window: float = field(
        default=10.0,
        metadata=_opt("--fail-window", "seconds over which failures are counted", type=_positive(float)),
    )
    ejection: float = field(
        default=10.0,
        metadata=_opt(
            "--ejection",
            "seconds of the first ejection; doubles with each consecutive one",
            type=_positive(float),
        ),
    )
    max_ejection: float = field(
        default=300.0, metadata=_opt("--max-ejection", "longest ejection in seconds", type=_positive(float))
    )
    max_ejection_percent: float = field(
        default=50.0,
        metadata=_opt(
            "--max-ejection-percent",
            "most endpoints (percent of all) that failures possibly caused by the request itself may eject; "
            "connect errors and failed health checks always eject",
            type=_percent,
        ),
    )
    health_interval: float = field(
        default=5.0,
        metadata=_opt(
            "--health-interval",
            "seconds between active health checks (0 disables them)",
            type=_non_negative_float,
        ),
    )
    health_path: str = field(
        default="/v1/models",
        metadata=_opt("--health-path", "path the active health check GETs (/v1/models or /echo)"),
    )
    health_timeout: float = field(
        default=3.0,
        metadata=_opt("--health-timeout", "seconds an active health check may take", type=_positive(float)),
    )
    least_busy: bool = field(
        default=False,
        metadata=_opt(
            "--least-busy",
            "inside a service, prefer the endpoint with the fewest requests in flight",
            action="store_true",
        ),
    )
    routing: str = field(
        default="swrr",
        metadata=_opt(
            "--routing",
            "how requests are split: swrr (smooth weighted round-robin, exact, load-blind), weighted-random "
            "(the seed's), load-aware (weights among backends with a free slot, a bounded queue when all "
            "are full: for LLM backends that serve a few requests at a time)",
            choices=list(ROUTING_POLICIES),
        ),
    )
    queue_size: int = field(
        default=128,
        metadata=_opt(
            "--queue-size",
            "load-aware: most requests for one model waiting for a free slot; more are refused with 429 + "
            "Retry-After (each model has a queue of its own: one model's flood never refuses another's)",
            type=_positive(int),
        ),
    )
    queue_per_client: int = field(
        default=32,
        metadata=_opt(
            "--queue-per-client",
            "load-aware: most queued requests of one client address (behind a NodePort with SNAT, every client "
            "of a node shares one: raise it there); more are refused with 429",
            type=_positive(int),
        ),
    )
    queue_timeout: float = field(
        default=30.0,
        metadata=_opt(
            "--queue-timeout",
            "load-aware: seconds a request may wait for a free slot (503 + Retry-After after that)",
            type=_positive(float),
        ),
    )
    default_slots: int = field(
        default=1,
        metadata=_opt(
            "--default-slots",
            "load-aware: parallel slots of an endpoint whose backend declares none (llama-api-server "
            "serves one request at a time)",
            type=_slots,
        ),
    )
    buffer_limit: int = field(
        default=16 * MIB,
        metadata=_opt(
            "--buffer-limit",
            "request bodies up to this many bytes are buffered (model routing, retries); "
            "larger ones are streamed to one backend",
            type=_positive(int),
        ),
    )
    buffer_total: int = field(
        default=64 * MIB,
        metadata=_opt(
            "--buffer-total",
            "most request bytes buffered at once over all requests; a body that does not fit is "
            "answered 503 with Retry-After",
            type=_positive(int),
        ),
    )
    client_header_timeout: float = field(
        default=30.0,
        metadata=_opt(
            "--client-header-timeout",
            "seconds a new client connection has to send its first request's headers",
            type=_positive(float),
        ),
    )
    client_body_timeout: float = field(
        default=30.0,
        metadata=_opt(
            "--client-body-timeout",
            "seconds a client may go without sending any of its request body (408 then)",
            type=_positive(float),
        ),
    )
    client_body_min_rate: float = field(
        default=16 * 1024,
        metadata=_opt(
            "--client-body-min-rate",
            "bytes a second a request body must average once --client-body-timeout has passed (408 then): a "
            "trickled upload cannot hold a buffer or a slot",
            type=_positive(float),
        ),
    )
    client_keepalive_timeout: float = field(
        default=60.0,
        metadata=_opt(
            "--client-keepalive-timeout",
            "seconds an idle client connection waits for its next request's headers",
            type=_positive(float),
        ),
    )
    max_connections: int = field(
        default=4096,
        metadata=_opt(
            "--max-connections",
            "most client connections at once; more are answered 503 and closed",
            type=_positive(int),
        ),
    )
    shutdown_delay: float = field(
        default=SHUTDOWN_DELAY,
        metadata=_opt(
            "--shutdown-delay",
            "seconds /readyz fails before the listener closes on SIGTERM",
            type=_non_negative_float,
        ),
    )
    shutdown_timeout: float = field(
        default=SHUTDOWN_TIMEOUT,
        metadata=_opt(
            "--shutdown-timeout",
            "seconds in-flight requests get to finish on SIGTERM, after the delay (one deadline: the pod's "
            "grace period must exceed delay + timeout)",
            type=_non_negative_float,
        ),
    )
    log_level: str = field(
        default="info",
        metadata=_opt(
            "--log-level", "debug, info, warning or error", choices=["debug", "info", "warning", "error"]
        ),
    )
    log_format: str = field(
        default="json", metadata=_opt("--log-format", "json or text", choices=["json", "text"])
    )


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
        # No abbreviations: "--rout" must not mean --routing (the llama_balancer module refuses options it owns).
        allow_abbrev=False,
        description=(
            "A weighted, model-aware gateway for OpenAI-compatible LLM backends (llama-api-server). "
            "Backends come from a backends file (static mode), from Kubernetes Services labelled "
            f"{TARGET_LABEL}=true (--kubernetes), and from the admin API."
        ),
    )
    p.option("--listen", "address to serve on, HOST:PORT", type=_listen, default=f"{d.host}:{d.port}")
    for setting in fields(Settings):
        if "flag" in setting.metadata:
            kwargs = {"dest": setting.name, "default": setting.default, **setting.metadata["argparse"]}
            p.option(setting.metadata["flag"], setting.metadata["help"], **kwargs)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _admin_token(parser: argparse.ArgumentParser, token_file: Path | None) -> str | None:
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            parser.error(f"--admin-token-file {token_file}: {exc.strerror}")
        if not token:
            parser.error(f"--admin-token-file {token_file} is empty")
        return token
    if os.environ.get(ADMIN_TOKEN_ENV):
        return os.environ[ADMIN_TOKEN_ENV].strip()
    return None


def parse_settings(argv: list[str] | None = None) -> Settings:
    parser = build_parser()
    args = parser.parse_args(argv)
    values = {s.name: getattr(args, s.name) for s in fields(Settings) if hasattr(args, s.name)}
    values["host"], values["port"] = args.listen if isinstance(args.listen, tuple) else _listen(args.listen)
    if not isinstance(args.admin_listen, tuple):
        values["admin_listen"] = _listen(args.admin_listen)
    if isinstance(args.metrics_listen, str):
        values["metrics_listen"] = _listen_or_off(args.metrics_listen)
    values["namespaces"] = tuple(args.namespaces or Settings.namespaces)
    values["admin_allow_networks"] = tuple(args.admin_allow_networks or ())
    token = _admin_token(parser, args.admin_token_file)
    admin_api = token is not None if args.admin_api is None else args.admin_api
    if admin_api and token is None:
        parser.error(f"--admin-api needs a token: --admin-token-file or {ADMIN_TOKEN_ENV}")
    if args.backends_file is None and not args.kubernetes and not admin_api:
        parser.error("no backend source: give --backends-file, --kubernetes or an admin token")
    values.update(admin_api=admin_api, admin_token=token)
    settings = Settings(**values)
    if settings.leader_election:
        try:
            election_settings(settings)
        except ElectionError as exc:
            parser.error(str(exc))
    return settings


def election_settings(settings: Settings) -> ElectionSettings:
    """The Lease and timings of --leader-election; ElectionError when the timings cannot keep leaders apart."""
    return ElectionSettings(
        namespace=lease_namespace(settings.lease_namespace),
        name=settings.lease_name,
        identity=identity(settings.identity),
        lease_duration=settings.lease_duration,
        renew_deadline=settings.renew_deadline,
        retry_period=settings.retry_period,
    )
