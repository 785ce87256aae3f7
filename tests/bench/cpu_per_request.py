"""CPU per request of the production configuration, in process: the figure to compare before and after
a change on a shared machine, where requests/s is noise.

    python -m tests.bench.cpu_per_request [--requests 2000] [--runs 5] [--target vllm]

Under load from elsewhere, instruction counts are the steadier figure: run it under
`valgrind --tool=callgrind` with `--runs 1` and two request counts, and divide the difference of the
two totals by the difference of the counts (start-up and warm-up cancel out).

The app (51 API keys, Redis rate limits on a redis-server started here, metrics, JSON log lines at
info level written to /dev/null) is driven through ASGI (no client sockets) in front of the fast
benchmark upstream (`tests.bench.upstream`, its own process), once with a vLLM target and once with
a Workers AI target. The figure is the gateway thread's CPU time per non-streamed request
(`time.thread_time`: neither Redis's nor the upstream's work, nor waiting for them, is counted),
the best of `--runs` runs: other load on the machine only ever adds to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import msgspec
import uvloop

from gateway.app import create_app
from gateway.config import Settings
from gateway.edge.asgi import CONNECTION_STATE
from gateway.observability.logs import configure_logging
from tests.bench.compare import vllm_config
from tests.bench.run import BENCH_KEY, CHAT_BODY, ROOT, gateway_config, wait_http
from tests.emulators.server import free_port
from tests.redis_server import RedisServer


class _Connection:
    """The server's connection state as `gateway.edge.server` hands it to the app."""

    __slots__ = ("disconnected", "on_disconnect")

    def __init__(self) -> None:
        self.disconnected = False
        self.on_disconnect: Callable[[], object] | None = None


class _Exchange:
    """One request's ASGI receive/send: the body at once, then a client that stays connected."""

    def __init__(self, body: bytes) -> None:
        self.messages = [{"type": "http.request", "body": body, "more_body": False}]
        self.status = 0

    async def receive(self) -> dict[str, Any]:
        if self.messages:
            return self.messages.pop()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]


async def cpu_per_request(config: dict[str, Any], count: int, warmup: int = 300) -> float:
    """Microseconds of this thread's CPU per request, over `count` requests after `warmup`."""
    app = create_app(msgspec.convert(config, Settings))
    lifespan_in: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lifespan_out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await lifespan_in.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, lifespan_in.get, lifespan_out.put)  # type: ignore[arg-type]
    )
    assert (await lifespan_out.get())["type"] == "lifespan.startup.complete"
    raw = json.dumps(CHAT_BODY).encode()
    headers = [
        (b"host", b"gateway"),
        (b"authorization", f"Bearer {BENCH_KEY}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
    ]
    started = 0.0
    for i in range(count + warmup):
        if i == warmup:
            started = time.thread_time()
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
            "state": {CONNECTION_STATE: _Connection()},
        }
        exchange = _Exchange(raw)
        await app(scope, exchange.receive, exchange.send)  # type: ignore[arg-type]
        assert exchange.status == 200, exchange.status
    elapsed = time.thread_time() - started
    await lifespan_in.put({"type": "lifespan.shutdown"})
    await lifespan_out.get()
    await lifespan
    return elapsed / count * 1e6


def _run(work: Coroutine[Any, Any, float]) -> float:
    """On uvloop, as the server runs the app."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(work)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--target", choices=("vllm", "workers-ai", "both"), default="both")
    args = parser.parse_args(argv)
    # The JSON log lines are rendered and written as in production, to /dev/null.
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.upstream", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    redis = RedisServer().start()
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        url = f"http://127.0.0.1:{port}"
        configs = {
            "vllm": ("vLLM target", json.loads(vllm_config(url, redis.url, 8080))),
            "workers-ai": ("Workers AI target", json.loads(gateway_config(url, redis.url, port=8080))),
        }
        configure_logging("info", "json")
        for target, (name, config) in configs.items():
            if args.target not in (target, "both"):
                continue
            best = min(_run(cpu_per_request(config, args.requests)) for _ in range(args.runs))
            print(f"{name:20} {best:6.1f} us CPU per request (best of {args.runs})", file=sys.stderr)
    finally:
        redis.stop()
        upstream.terminate()
        upstream.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
