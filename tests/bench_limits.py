"""Benchmark: what a rate-limit decision costs, and what keys and limits add to a gateway request.

    .venv/bin/python -m tests.bench_limits [--decisions 10000] [--requests 2000]

Part 1 times limiter decisions in a loop against each store (in process, a local redis-server, a local
three-node Redis Cluster): one decision alone, a decision plus its settlement (what a request with a
token limit pays), and decisions from 64 concurrent tasks; each with and without a budget (a spend
counter checked, reserved and settled in the same calls). Part 2 drives the app in process through
ASGI (no sockets, so the figures are the gateway's own work) in front of the instant mock backend:
non-streamed requests without keys (the baseline), with keys only, and with key limits (and a budget)
kept in process and in Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

import msgspec

from gateway.app import create_app
from gateway.config import Settings
from gateway.limits import Budget, Limiter, MemoryLimiter, Scope
from gateway.limits.redis import RedisLimiter
from gateway.observability.logs import configure_logging
from tests.redis_server import RedisClusterServers, RedisServer

KEY = "sk-bench-" + "0123456789abcdef" * 2


async def time_decisions(limiter: Limiter, count: int, *, budget: bool = False) -> dict[str, float]:
    scope = Scope(
        "key",
        "bench-" + os.urandom(4).hex(),
        rpm=10**9,
        tpm=10**12,
        budget=Budget(usd=10**9, period="day") if budget else None,
    )
    cost = 2_500 if budget else 0  # micro-USD reserved per decision
    for _ in range(500):  # warm up: connections, script load
        await limiter.acquire(scope, tokens=10, ticket=None, cost=cost)
    started = time.perf_counter()
    for _ in range(count):
        await limiter.acquire(scope, tokens=10, ticket=None, cost=cost)
    decision = (time.perf_counter() - started) / count
    started = time.perf_counter()
    for _ in range(count):
        outcome = await limiter.acquire(scope, tokens=500, ticket=None, cost=cost)
        await limiter.settle(
            scope,
            slot=outcome.slot,
            requests=0,
            tokens=-450,
            ticket=None,
            period=outcome.period,
            cost=-cost // 2,
        )
    with_settle = (time.perf_counter() - started) / count

    async def worker(n: int) -> None:
        for _ in range(n):
            await limiter.acquire(scope, tokens=10, ticket=None, cost=cost)

    started = time.perf_counter()
    await asyncio.gather(*(worker(count // 64) for _ in range(64)))
    throughput = (count // 64 * 64) / (time.perf_counter() - started)
    await limiter.aclose()
    return {"decision_us": decision * 1e6, "decision_settle_us": with_settle * 1e6, "per_s_64": throughput}


def gateway_config(keys: bool, limits: bool, redis_url: str, *, budget: bool = False) -> dict[str, Any]:
    price = {"input_per_mtok": 0.293, "output_per_mtok": 2.253}  # Workers AI's llama-3.3-70b
    config: dict[str, Any] = {
        "log_level": "error",
        "backends": {"instant": {"kind": "mock", "token_delay_s": 0}},
        "models": {"mock": {"targets": [{"backend": "instant", "model": "mock"}], "price": price}},
    }
    if keys:
        entry: dict[str, Any] = {"id": "bench-" + os.urandom(4).hex(), "key": KEY}
        if limits:
            entry.update(rpm=10**8, tpm=10**11)
        if budget:
            entry["budget"] = {"usd": 10**9, "period": "day"}
        config["keys"] = [entry]
    if redis_url:
        config["redis_url"] = redis_url
    return config


class _Exchange:
    """One request's ASGI receive/send: the body at once, then a client that stays connected."""

    def __init__(self, body: bytes) -> None:
        self.messages = [{"type": "http.request", "body": body, "more_body": False}]
        self.statuses: list[int] = []

    async def receive(self) -> dict[str, Any]:
        if self.messages:
            return self.messages.pop()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.statuses.append(message["status"])


async def time_requests(config: dict[str, Any], count: int) -> list[float]:
    """Microseconds the app spends on each request, driven in process through ASGI (no sockets, no
    client: only the gateway's own work, plus the Redis round trips when limits live there)."""
    app = create_app(msgspec.convert(config, Settings))
    lifespan_in: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lifespan_out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await lifespan_in.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, lifespan_in.get, lifespan_out.put)  # type: ignore[arg-type]
    )
    assert (await lifespan_out.get())["type"] == "lifespan.startup.complete"
    body = json.dumps({"model": "mock", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 20})
    headers = [
        (b"host", b"gateway"),
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {KEY}".encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    latencies = []
    for i in range(count + 500):
        scope: Any = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
            "state": {},
        }
        exchange = _Exchange(body.encode())
        started = time.perf_counter()
        await app(scope, exchange.receive, exchange.send)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        assert exchange.statuses == [200], exchange.statuses
        if i >= 500:
            latencies.append(elapsed * 1e6)
    await lifespan_in.put({"type": "lifespan.shutdown"})
    await lifespan_out.get()
    await lifespan
    return latencies


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[int(len(ordered) * 0.99)]
    p50, mean = statistics.median(ordered), statistics.fmean(ordered)
    return f"p50 {p50:6.1f} us   p99 {p99:6.1f} us   mean {mean:6.1f} us"


def main() -> None:
    configure_logging("warning", "json")  # the per-request line would dominate what is measured
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--decisions", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=2_000)
    args = parser.parse_args()
    with RedisServer() as redis, RedisClusterServers() as cluster:
        print(f"Limiter decisions ({args.decisions} per figure)")
        stores: list[tuple[str, Any]] = [
            ("memory", MemoryLimiter),
            ("redis", lambda: RedisLimiter.from_url(redis.url)),
            ("redis cluster", lambda: RedisLimiter.from_url(cluster.url)),
        ]
        for name, make in stores:
            for budget in (False, True):
                figures = asyncio.run(time_decisions(make(), args.decisions, budget=budget))
                label = name + (" + budget" if budget else "")
                print(
                    f"  {label:23} decision {figures['decision_us']:7.1f} us   decision+settle "
                    f"{figures['decision_settle_us']:7.1f} us   64 concurrent: {figures['per_s_64']:8.0f}/s"
                )
        print(f"\nGateway requests, in process, mock backend ({args.requests} per row)")
        rows = [
            ("no keys (baseline)", gateway_config(False, False, "")),
            ("keys, no limits", gateway_config(True, False, "")),
            ("keys + limits, memory", gateway_config(True, True, "")),
            ("keys + limits, redis", gateway_config(True, True, redis.url)),
            ("+ budget, memory", gateway_config(True, True, "", budget=True)),
            ("+ budget, redis", gateway_config(True, True, redis.url, budget=True)),
        ]
        for name, config in rows:
            print(f"  {name:24} {summary(asyncio.run(time_requests(config, args.requests)))}")


if __name__ == "__main__":
    main()
