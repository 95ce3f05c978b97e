"""Routing policies under LLM-shaped load: a simulation on loopback, in one run.

    python benchmarks/llm_routing.py [--duration S] [--scenarios matched,misweighted] [--rates 0.6,0.8,0.95]

Backends are simulated llama-api-servers (aiohttp, in this process): each has N parallel slots and a
FIFO queue behind them; a request holds a slot for prompt_cost + tokens x per_token, divided by the
backend's speed factor, and streams its tokens as SSE (the first chunk after the prompt). The real
balancer runs as a process of its own (`python -m edgewasm_balancer --routing ...`, static backends
file with weights and slots). An open-loop client sends Poisson arrivals at a fixed rate, each with a
token count drawn from a geometric distribution (mean --mean-tokens), and measures the end-to-end
latency and the time to first token of every request; 429/503 answers count as rejections.

Scenarios: the seed's three backends, weights 3:1:2 and slots 2/1/2.
- matched: speeds such that each backend's capacity (slots x speed) is proportional to its weight;
- misweighted: the same, but the weight-3 backend is 2x slower than its weight implies.
Rates are fractions of the scenario's real total capacity. A low-load run (--split-rate) of each
policy in the matched scenario measures how the traffic split follows the weights.

Prints, per scenario and rate: p50/p99 latency, p99 time to first token, rejections and each
backend's longest queue, per policy; then the ratios the routing issue asks about.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from balancer import free_port, process  # benchmarks/balancer.py: the same process helpers

REPO = Path(__file__).resolve().parents[1]
POLICIES = ("swrr", "weighted-random", "load-aware")
WEIGHTS = {"a": 3, "b": 1, "c": 2}
SLOTS = {"a": 2, "b": 1, "c": 2}
TOKENS_PER_CHUNK = 4


@dataclass
class SimBackend:
    """A simulated llama-api-server: `slots` requests at once, the others wait in FIFO order."""

    name: str
    slots: int
    speed: float
    prompt_cost: float
    per_token: float
    waiting: int = 0
    max_waiting: int = 0
    served: int = 0
    gate: asyncio.Semaphore = field(init=False)
    runner: web.AppRunner | None = None
    port: int = 0

    def __post_init__(self) -> None:
        self.gate = asyncio.Semaphore(self.slots)

    async def start(self) -> SimBackend:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "sim", "object": "model"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        tokens = int((await request.json()).get("max_tokens", 16))
        self.waiting += 1
        if self.gate.locked():  # every slot busy: this request queues behind them
            self.max_waiting = max(self.max_waiting, self.waiting)
        async with self.gate:
            self.waiting -= 1
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await asyncio.sleep(self.prompt_cost / self.speed)
            for sent in range(0, tokens, TOKENS_PER_CHUNK):
                chunk = min(TOKENS_PER_CHUNK, tokens - sent)
                data = {
                    "model": "sim",
                    "backend": self.name,
                    "choices": [{"delta": {"content": "t" * chunk}}],
                }
                await response.write(f"data: {json.dumps(data)}\n\n".encode())
                await asyncio.sleep(chunk * self.per_token / self.speed)
            await response.write(b"data: [DONE]\n\n")
            self.served += 1
            return response

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class Outcome:
    status: int
    backend: str = ""
    latency: float = 0.0
    ttft: float = 0.0


async def one_request(http: aiohttp.ClientSession, url: str, tokens: int) -> Outcome:
    started = time.perf_counter()
    body = {
        "model": "sim",
        "stream": True,
        "max_tokens": tokens,
        "messages": [{"role": "user", "content": "hi"}],
    }
    try:
        async with http.post(url, json=body) as answer:
            if answer.status != 200:
                await answer.read()
                return Outcome(answer.status)
            ttft = 0.0
            async for _line in answer.content:
                if not ttft:
                    ttft = time.perf_counter() - started
            return Outcome(
                200, answer.headers.get("X-Edgewasm-Backend", ""), time.perf_counter() - started, ttft
            )
    except (aiohttp.ClientError, TimeoutError):
        return Outcome(599)


async def open_loop(url: str, rate: float, duration: float, mean_tokens: float, seed: int) -> list[Outcome]:
    """Poisson arrivals at `rate` per second for `duration` seconds; waits for every answer."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible load, not cryptography
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=duration + 120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        tasks = []
        start = time.perf_counter()
        next_at = 0.0
        while next_at < duration:
            delay = start + next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tokens = min(256, 1 + int(math.log(1 - rng.random()) / math.log(1 - 1 / mean_tokens)))
            tasks.append(asyncio.create_task(one_request(http, url, tokens)))
            next_at += rng.expovariate(rate)
        return list(await asyncio.gather(*tasks))


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def speeds(scenario: str) -> dict[str, float]:
    """Speed factors: capacity (slots x speed) proportional to weight, or the weight-3 backend 2x slower."""
    matched = {name: WEIGHTS[name] / SLOTS[name] for name in WEIGHTS}
    if scenario == "misweighted":
        matched["a"] /= 2
    return matched


async def run_one(
    policy: str, scenario: str, load: float, args: argparse.Namespace, work: Path
) -> dict[str, float | str]:
    speed = speeds(scenario)
    service = args.prompt_cost + args.mean_tokens * args.per_token  # mean seconds of one request at speed 1
    capacity = sum(SLOTS[n] * speed[n] for n in WEIGHTS) / service  # requests/s
    backends = [
        await SimBackend(n, SLOTS[n], speed[n], args.prompt_cost, args.per_token).start() for n in WEIGHTS
    ]
    entries = [
        {"name": b.name, "url": f"http://127.0.0.1:{b.port}", "weight": WEIGHTS[b.name], "slots": b.slots}
        for b in backends
    ]
    backends_file = work / f"backends-{policy}-{scenario}-{load}.json"
    backends_file.write_text(json.dumps(entries))
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "edgewasm_balancer",
        "--listen",
        f"127.0.0.1:{port}",
        "--backends-file",
        str(backends_file),
        "--routing",
        policy,
        "--health-interval",
        "0",
        "--log-level",
        "error",
        "--queue-timeout",
        "60",
        "--metrics-listen",
        "off",
        "--backend-header",  # the benchmark counts answers per backend
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "balancer" / "src")}
    try:
        with process(argv, port, env=env):
            outcomes = await open_loop(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                load * capacity,
                args.duration,
                args.mean_tokens,
                args.seed,
            )
    finally:
        for backend in backends:
            await backend.stop()
    done = [o for o in outcomes if o.status == 200]
    split = Counter(o.backend for o in done)
    return {
        "policy": policy,
        "scenario": scenario,
        "load": load,
        "rate": round(load * capacity, 2),
        "requests": len(outcomes),
        "p50": quantile([o.latency for o in done], 0.5),
        "p99": quantile([o.latency for o in done], 0.99),
        "ttft_p99": quantile([o.ttft for o in done], 0.99),
        "rejected": sum(1 for o in outcomes if o.status in {429, 503}),
        "failed": sum(1 for o in outcomes if o.status not in {200, 429, 503}),
        **{f"share_{n}": split[n] / max(1, len(done)) for n in WEIGHTS},
        **{f"queue_{b.name}": b.max_waiting for b in backends},
    }


def print_table(rows: list[dict[str, float | str]], header: bool = True) -> None:
    head = (
        f"{'scenario':<12}{'load':>5} {'policy':<16}{'req':>5}{'p50 s':>8}{'p99 s':>8}{'ttft99':>8}{'rej':>5}"
    )
    if header:
        print(head + "  max backend queue a/b/c   split a/b/c")
    for r in rows:
        print(
            f"{r['scenario']:<12}{r['load']:>5} {r['policy']:<16}{r['requests']:>5}{r['p50']:>8.2f}{r['p99']:>8.2f}"
            f"{r['ttft_p99']:>8.2f}{r['rejected']:>5}  {r['queue_a']:>5}/{r['queue_b']}/{r['queue_c']:<12}"
            f"  {r['share_a']:.3f}/{r['share_b']:.3f}/{r['share_c']:.3f}"
        )


def print_ratios(rows: list[dict[str, float | str]], split_rows: list[dict[str, float | str]]) -> None:
    def get(policy: str, scenario: str, load: float) -> dict[str, float | str] | None:
        return next(
            (r for r in rows if (r["policy"], r["scenario"], r["load"]) == (policy, scenario, load)), None
        )

    aware = get("load-aware", "misweighted", 0.8)
    if aware:
        for other in ("weighted-random", "swrr"):
            row = get(other, "misweighted", 0.8)
            if row:
                ratio = float(aware["p99"]) / float(row["p99"])
                print(f"misweighted, 80% load: p99 latency load-aware/{other} = {ratio:.2f}")
    total = sum(WEIGHTS.values())
    for row in split_rows:
        worst = max(
            abs(float(row[f"share_{n}"]) - WEIGHTS[n] / total) / (WEIGHTS[n] / total) for n in WEIGHTS
        )
        print(
            f"low load ({row['load']:.0%}): {row['policy']} split within {worst:.1%} of the weights "
            f"({row['requests']} requests)"
        )
    for row in rows:
        if row["load"] == 0.95 and row["policy"] == "load-aware":
            print(
                f"{row['scenario']}, 95% load, load-aware: longest backend queue "
                f"{max(int(row[f'queue_{n}']) for n in WEIGHTS)}, {row['rejected']} rejected"
            )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of arrivals per run")
    parser.add_argument("--scenarios", default="matched,misweighted")
    parser.add_argument("--rates", default="0.6,0.8,0.95", help="loads, as fractions of the total capacity")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument(
        "--split-rate", type=float, default=0.2, help="the low load of the split runs (0: none)"
    )
    parser.add_argument(
        "--split-duration", type=float, default=60.0, help="seconds of arrivals per split run"
    )
    parser.add_argument(
        "--prompt-cost", type=float, default=0.05, help="seconds of prompt processing at speed 1"
    )
    parser.add_argument(
        "--per-token", type=float, default=0.005, help="seconds per generated token at speed 1"
    )
    parser.add_argument("--mean-tokens", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    policies = args.policies.split(",")
    rows = []
    split_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.split_rate:
            for policy in policies:
                split_args = argparse.Namespace(**{**vars(args), "duration": args.split_duration})
                split_rows.append(await run_one(policy, "matched", args.split_rate, split_args, work))
        for scenario in args.scenarios.split(","):
            for load in (float(x) for x in args.rates.split(",")):
                for policy in policies:
                    rows.append(await run_one(policy, scenario, load, args, work))
                    print_table([rows[-1]], header=len(rows) == 1)
                    sys.stdout.flush()
    print()
    print_table(split_rows + rows)
    print()
    print_ratios(rows, split_rows)
    if any(r["failed"] for r in rows + split_rows):
        print("some requests failed outright (not 200, 429 or 503): see the 'failed' counts", file=sys.stderr)
        return 1
    print(f"mean p50 over all runs: {statistics.mean(float(r['p50']) for r in rows):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
