"""The balancer vs nginx vs direct backend access, on loopback, in one run.

    make bench            (or: python benchmarks/balancer.py [--duration S] [--repeat N] [--connections N])

Backends are nginx server blocks answering a small fixed JSON body (fast enough that the proxy is
what is measured), weighted 5/1/1 in both proxies. Both proxies get one worker/process: nginx
`worker_processes 1`, the balancer one asyncio process with uvloop. wrk (one thread) generates
the load. Measured per target: requests/s at --connections connections, p50/p99 latency at one
connection (the added latency is the difference to direct access), requests/s with 64 KB request
bodies, and time to first byte of SSE streams from an aiohttp stand-in streaming backend.
Then, hostile load: 10 concurrent 15 MiB JSON bodies (a long prompt, and the worst case for model
routing: a messages array of millions of tokens before `model`) sent to each proxy while one
unrelated SSE stream runs through it: the proxy's peak RSS (sampled every 20 ms) and the longest
gap that stream saw between chunks, read by a process of its own (an event loop blocked by parsing
shows up there).
Prints a table and the balancer/nginx ratios. Needs nginx and wrk (make bench installs them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
# Flags of today's balancer that an older baseline (--baseline-src) may not have: no metrics listener, so
# that several balancer processes run side by side.
CURRENT_ONLY = ["--metrics-listen", "off"]

WEIGHTS = (5, 1, 1)
BODY = b'{"object":"list","data":[{"id":"bench","object":"model"}]}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def nginx_conf(work: Path, backends: list[int], proxy_port: int, sse_port: int, sse_proxy_port: int) -> Path:
    servers = "\n".join(
        f"    server {{ listen 127.0.0.1:{p}; access_log off; default_type application/json;\n"
        f"      client_max_body_size 1m; client_body_buffer_size 128k;\n"
        f"      location / {{ return 200 '{BODY.decode()}'; }} }}"
        for p in backends
    )
    upstream = "\n".join(
        f"      server 127.0.0.1:{p} weight={w};" for p, w in zip(backends, WEIGHTS, strict=True)
    )
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/body; proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fcgi; uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
{servers}
    upstream llm {{
{upstream}
      keepalive 128;
    }}
    upstream sse {{ server 127.0.0.1:{sse_port}; keepalive 16; }}
    server {{
      listen 127.0.0.1:{proxy_port};
      client_max_body_size 0; client_body_buffer_size 128k;
      location / {{ proxy_pass http://llm; proxy_http_version 1.1; proxy_set_header Connection "";
                   proxy_buffering off; proxy_request_buffering off; }}
    }}
    server {{
      listen 127.0.0.1:{sse_proxy_port};
      client_max_body_size 0;
      location / {{ proxy_pass http://sse; proxy_http_version 1.1; proxy_set_header Connection "";
                   proxy_buffering off; }}
    }}
}}
""")
    return conf


@contextmanager
def process(argv: list[str], port: int, **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    try:
        wait_port(port)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def wrk(url: str, duration: int, connections: int, script: Path | None = None) -> dict[str, float]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url]
    if script is not None:
        argv[1:1] = ["-s", str(script)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        value, unit = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)$", out, re.M).groups()  # type: ignore[union-attr]
        result[f"p{pct}_ms"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    # A connection cut when wrk stops at the deadline shows as one read error: tolerate a handful.
    if bad or socket_errors > max(5, total // 1000):
        raise RuntimeError(f"wrk saw errors for {url}:\n{out}")
    return result


async def ttfb(url: str, n: int) -> float:
    """Median time to the first SSE chunk over n sequential streams, in ms."""
    times = []
    async with aiohttp.ClientSession() as session:
        for _attempt in range(n):
            start = time.perf_counter()
            async with session.post(
                url + "/v1/chat/completions", json={"stream": True, "chunks": 4, "interval": 0.02}
            ) as r:
                await r.content.readline()
                times.append((time.perf_counter() - start) * 1000)
                await r.read()
    return statistics.median(times)


LARGE = 15 * 1024 * 1024
LARGE_BODIES = {
    # A long prompt: one huge string, the model after it.
    "long prompt": b'{"messages": [{"role": "user", "content": "' + b"x" * LARGE + b'"}], "model": "bench"}',
    # 900,000 tiny tokens before the model (the scan's limit is 1,000,000), padded to 15 MiB: the most
    # work the model scan accepts.
    "many tokens": b'{"messages": ['
    + b'"a",' * 900_000
    + b'"'
    + b"x" * (LARGE - 3_600_000)
    + b'"], "model": "bench"}',
}


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024  # type: ignore[union-attr]


def worker_pid(master: int) -> int:
    """nginx's single worker, the process that proxies."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0])


async def large_bodies(url: str, pid: int, body: bytes) -> dict[str, float]:
    """10 concurrent large POSTs beside one SSE stream: peak RSS, statuses, longest stream gap."""
    base = rss_mib(pid)
    peak = base
    done = False

    async def sample() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, rss_mib(pid))
            await asyncio.sleep(0.02)

    statuses: list[int] = []
    timeout = aiohttp.ClientTimeout(total=120)
    # The stream is read by a process of its own: the uploads keep this one busy, and a stall of
    # the reader must not be counted against the proxy.
    reader = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SSE_READER, url, stdout=asyncio.subprocess.PIPE
    )
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def stream() -> float:
            out, _err = await reader.communicate()
            return float(out)

        async def upload() -> None:
            async with session.post(
                url + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
            ) as r:
                await r.read()
                statuses.append(r.status)

        sampler = asyncio.create_task(sample())
        streaming = asyncio.create_task(stream())
        await asyncio.sleep(0.3)
        await asyncio.gather(*(upload() for _upload in range(10)))
        gap = await streaming
        done = True
        await sampler
    others = len(statuses) - statuses.count(200) - statuses.count(503)
    if others:
        raise RuntimeError(f"{url}: unexpected statuses {sorted(statuses)}")
    return {
        "rss_base": base,
        "rss_peak": peak,
        "ok": statuses.count(200),
        "busy": statuses.count(503),
        "gap_ms": gap * 1000,
    }


SSE_READER = """
import asyncio, sys, time
import aiohttp

async def main():
    gaps = []
    async with aiohttp.ClientSession() as session:
        payload = {"stream": True, "chunks": 300, "interval": 0.01}
        async with session.post(sys.argv[1] + "/v1/chat/completions", json=payload) as r:
            last = time.perf_counter()
            async for _line in r.content:
                now = time.perf_counter()
                gaps.append(now - last)
                last = now
    print(max(gaps[2:]))

asyncio.run(main())
"""


def report_large(large: dict[str, dict[str, dict[str, float]]]) -> None:
    print("\nhostile load: 10 concurrent 15 MiB JSON POSTs beside one SSE stream (10 ms between chunks)")
    print(
        f"  {'body':12} {'proxy':9} {'RSS before':>10} {'peak':>8} {'200':>4} {'503':>4} {'longest SSE gap':>16}"
    )
    for shape, by_proxy in large.items():
        for name, r in by_proxy.items():
            print(
                f"  {shape:12} {name:9} {r['rss_base']:7.0f} MiB {r['rss_peak']:5.0f} MiB"
                f" {r['ok']:4.0f} {r['busy']:4.0f} {r['gap_ms']:13.1f} ms"
            )
    print("ratios balancer/nginx (lower is better):")
    for shape, by_proxy in large.items():
        b, n = by_proxy["balancer"], by_proxy["nginx"]
        print(
            f"  {shape:12} peak RSS {b['rss_peak'] / n['rss_peak']:.2f}"
            f"   longest SSE gap {b['gap_ms'] / n['gap_ms']:.2f}"
        )


SSE_BACKEND = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from standin_backend import StandinBackend

async def main():
    await StandinBackend(name="sse", models=["bench"]).start(int(sys.argv[2]))
    await asyncio.Event().wait()

asyncio.run(main())
"""


def run_sse_backend(port: int) -> subprocess.Popen[bytes]:
    """The tests' stand-in streaming backend, in a process of its own."""
    tests = str(REPO / "balancer" / "tests")
    return subprocess.Popen(
        [sys.executable, "-c", SSE_BACKEND, tests, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds over all targets; medians are reported")
    parser.add_argument("--connections", type=int, default=50, help="connections for the throughput runs")
    parser.add_argument("--streams", type=int, default=40, help="SSE streams per target for the TTFB figure")
    parser.add_argument("--hostile-only", action="store_true", help="only the large-bodies measurement")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="another balancer package measured beside --balancer-src in the same rounds (before/after)",
    )
    parser.add_argument(
        "--balancer-src",
        type=Path,
        default=REPO / "balancer" / "src",
        help="the balancer package to measure (e.g. an older checkout's balancer/src, for before/after)",
    )
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None and not Path("/usr/sbin/nginx").exists():
            sys.exit(f"{tool} is missing: run `make bench` (installs nginx-light and wrk)")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    backends = [free_port() for _weight in WEIGHTS]
    nginx_port, balancer_port, sse_port, sse_nginx, sse_balancer = (free_port() for _port in range(5))
    with tempfile.TemporaryDirectory(prefix="edgewasm-bench-") as tmp:
        work = Path(tmp)
        conf = nginx_conf(work, backends, nginx_port, sse_port, sse_nginx)
        backends_file = work / "backends.json"
        backends_file.write_text(
            json.dumps(
                [
                    {"name": f"b{i}", "url": f"http://127.0.0.1:{p}", "weight": w}
                    for i, (p, w) in enumerate(zip(backends, WEIGHTS, strict=True))
                ]
            )
        )
        sse_file = work / "sse.json"
        sse_file.write_text(json.dumps([{"name": "sse", "url": f"http://127.0.0.1:{sse_port}"}]))
        post = work / "post64k.lua"
        post.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            'wrk.body = \'{"model":"bench","prompt":"' + "x" * (64 * 1024 - 32) + "\"}'\n"
        )
        work.chmod(0o755)  # nginx's worker (nobody) spools request bodies below it
        env = {**os.environ, "PYTHONPATH": str(args.balancer_src)}
        balancer = [
            sys.executable,
            "-m",
            "edgewasm_balancer",
            "--log-level",
            "warning",
            "--health-interval",
            "0",
        ]
        sse = run_sse_backend(sse_port)
        try:
            wait_port(sse_port)
            with (
                process(
                    [nginx, "-c", str(conf), "-p", str(work), "-g", "daemon off;"], nginx_port
                ) as nginx_proc,
                process(
                    [
                        *balancer,
                        *CURRENT_ONLY,
                        "--listen",
                        f"127.0.0.1:{balancer_port}",
                        "--backends-file",
                        str(backends_file),
                    ],
                    balancer_port,
                    env=env,
                ),
                baseline(balancer, backends_file, args.baseline_src) as baseline_port,
                process(
                    [
                        *balancer,
                        *CURRENT_ONLY,
                        "--listen",
                        f"127.0.0.1:{sse_balancer}",
                        "--backends-file",
                        str(sse_file),
                    ],
                    sse_balancer,
                    env=env,
                ) as sse_balancer_proc,
            ):
                wait_port(sse_nginx)
                targets = {
                    "direct": f"http://127.0.0.1:{backends[0]}",
                    "nginx": f"http://127.0.0.1:{nginx_port}",
                    "balancer": f"http://127.0.0.1:{balancer_port}",
                }
                if baseline_port:
                    targets["baseline"] = f"http://127.0.0.1:{baseline_port}"
                sse_targets = {
                    "direct": f"http://127.0.0.1:{sse_port}",
                    "nginx": f"http://127.0.0.1:{sse_nginx}",
                    "balancer": f"http://127.0.0.1:{sse_balancer}",
                }
                if not args.hostile_only:
                    results, ratios = throughput(targets, sse_targets, post, args)
                pids = {"nginx": worker_pid(nginx_proc.pid), "balancer": sse_balancer_proc.pid}
                large = {
                    shape: {
                        name: asyncio.run(large_bodies(sse_targets[name], pids[name], body))
                        for name in ("nginx", "balancer")
                    }
                    for shape, body in LARGE_BODIES.items()
                }
        finally:
            sse.terminate()
            sse.wait()
    if not args.hostile_only:
        report(results, args)
        print(f"  requests/s small, per round: {', '.join(f'{r:.2f}' for r in ratios)}")
    report_large(large)
    return 0


def throughput(
    targets: dict[str, str], sse_targets: dict[str, str], post: Path, args: argparse.Namespace
) -> tuple[dict[str, dict[str, float]], list[float]]:
    """req/s, latency and SSE TTFB per target (medians over rounds); the per-round req/s ratios."""
    for base in targets.values():
        wrk(base + "/v1/info", 2, args.connections)  # warm-up: connections, caches
    # Rounds interleave the targets, so a burst of noise on the machine hits all of them;
    # each figure is the median over the rounds.
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    for _round in range(args.repeat):
        for name, base in targets.items():
            url = base + "/v1/info"
            small = wrk(url, args.duration, args.connections)
            quiet = wrk(url, args.duration, 1)
            large = wrk(base + "/v1/completions", args.duration, 16, post)
            rounds[name].append(
                {
                    "rps": small["rps"],
                    "p50_ms": quiet["p50_ms"],
                    "p99_ms": quiet["p99_ms"],
                    "rps_64k": large["rps"],
                }
            )
    results = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for name, runs in rounds.items()
    }
    ratios = [b["rps"] / n["rps"] for b, n in zip(rounds["balancer"], rounds["nginx"], strict=True)]
    for name, base in sse_targets.items():
        results[name]["ttfb_ms"] = asyncio.run(ttfb(base, args.streams))
    if "baseline" in rounds:
        ab = [b["rps"] / o["rps"] for b, o in zip(rounds["balancer"], rounds["baseline"], strict=True)]
        print(f"balancer/baseline requests/s small, per round: {', '.join(f'{r:.3f}' for r in ab)}")
        print(f"balancer/baseline requests/s small, median: {statistics.median(ab):.3f}")
    return results, ratios


@contextmanager
def baseline(balancer: list[str], backends_file: Path, src: Path | None) -> Iterator[int | None]:
    """Another balancer package (an older checkout's balancer/src), for before/after comparisons."""
    if src is None:
        yield None
        return
    port = free_port()
    argv = [*balancer, "--listen", f"127.0.0.1:{port}", "--backends-file", str(backends_file)]
    with process(argv, port, env={**os.environ, "PYTHONPATH": str(src)}):
        yield port


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    print(
        f"\nloopback, {os.cpu_count()} cores; wrk -t1, {args.duration}s runs, median of {args.repeat} rounds; "
        f"weights {WEIGHTS}; one nginx worker, one balancer process"
    )
    print(
        f"{'target':<10}{'req/s (c=' + str(args.connections) + ')':>18}{'p50 ms (c=1)':>14}{'p99 ms (c=1)':>14}"
        f"{'req/s 64KB':>12}{'SSE TTFB ms':>13}"
    )
    for name, r in results.items():
        print(
            f"{name:<10}{r['rps']:>18.0f}{r['p50_ms']:>14.3f}{r['p99_ms']:>14.3f}{r['rps_64k']:>12.0f}"
            f"{r.get('ttfb_ms', float('nan')):>13.2f}"
        )
    d, n, b = results["direct"], results["nginx"], results["balancer"]
    print("\nadded latency over direct access at one connection:")
    print(f"  nginx    p50 {n['p50_ms'] - d['p50_ms']:+.3f} ms   p99 {n['p99_ms'] - d['p99_ms']:+.3f} ms")
    print(f"  balancer p50 {b['p50_ms'] - d['p50_ms']:+.3f} ms   p99 {b['p99_ms'] - d['p99_ms']:+.3f} ms")
    print("ratios balancer/nginx:")
    print(f"  requests/s small  {b['rps'] / n['rps']:.2f}")
    print(f"  requests/s 64 KB  {b['rps_64k'] / n['rps_64k']:.2f}")
    print(f"  SSE TTFB          {b['ttfb_ms'] / n['ttfb_ms']:.2f}  (lower is better)")


if __name__ == "__main__":
    sys.exit(main())
