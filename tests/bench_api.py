"""Benchmark: what the API-completeness features cost the plain chat path, and what they cost when used.

    .venv/bin/python -m tests.bench_api [--requests 3000] [--events 20000]

Part 1 times the writer alone, per streamed text event (the per-chunk work every token pays). Part 2
drives the app in process through ASGI (no sockets: only the gateway's own work) in front of the
instant mock backend, which answers about 30 words: chat non-streamed and streamed, plain and with the
optional features, and the legacy completions endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from adapters.canonical import Event, Finish, TextDelta, Usage
from gateway.app import create_app
from gateway.config import ModelConfig, Settings, Target
from gateway.observability.logs import configure_logging
from gateway.openai.requests import chat_request_decoder
from gateway.translation.translate import translate
from gateway.translation.writer import ResponseWriter
from tests.bench_limits import summary

CONFIG: dict[str, Any] = {
    "log_level": "error",
    "backends": {"instant": {"kind": "mock", "token_delay_s": 0}},
    "models": {"mock": {"targets": [{"backend": "instant", "model": "mock"}]}},
}
MESSAGES = [{"role": "user", "content": "hello there, how are you today?"}]


async def _events(count: int) -> AsyncIterator[Event]:
    for i in range(count):
        yield TextDelta(" word" if i else "word")
    yield Usage(10, count)
    yield Finish("stop")


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


async def time_writer(body: dict[str, Any], count: int) -> float:
    """Nanoseconds of writer work per streamed text event."""
    model = ModelConfig(targets=[Target(backend="instant", model="mock")])
    payload = chat_request_decoder.decode(json.dumps(body).encode())
    best = float("inf")
    for _ in range(5):
        translated = translate(payload, public_model="mock", model=model)
        writer = ResponseWriter(translated)
        started = time.perf_counter()
        async for _ in writer.stream(_events(count)):
            pass
        best = min(best, time.perf_counter() - started)
    return best / count * 1e9


async def time_requests(path: str, body: dict[str, Any], count: int) -> list[float]:
    """Microseconds the app spends on each request, driven in process through ASGI."""
    app = create_app(msgspec.convert(CONFIG, Settings))
    lifespan_in: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lifespan_out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await lifespan_in.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, lifespan_in.get, lifespan_out.put)  # type: ignore[arg-type]
    )
    assert (await lifespan_out.get())["type"] == "lifespan.startup.complete"
    raw = json.dumps(body).encode()
    headers = [
        (b"host", b"gateway"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
    ]
    latencies = []
    for i in range(count + 300):
        scope: Any = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
            "state": {},
        }
        exchange = _Exchange(raw)
        started = time.perf_counter()
        await app(scope, exchange.receive, exchange.send)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        assert exchange.statuses == [200], exchange.statuses
        if i >= 300:
            latencies.append(elapsed * 1e6)
    await lifespan_in.put({"type": "lifespan.shutdown"})
    await lifespan_out.get()
    await lifespan
    return latencies


CHAT = "/v1/chat/completions"
ROWS: list[tuple[str, str, dict[str, Any]]] = [
    ("chat, whole answer", CHAT, {"model": "mock", "messages": MESSAGES}),
    ("chat, stream", CHAT, {"model": "mock", "messages": MESSAGES, "stream": True}),
    ("chat, stream + stop", CHAT, {"model": "mock", "messages": MESSAGES, "stream": True, "stop": ["zzz"]}),
]
OPTIONAL_ROWS: list[tuple[str, str, dict[str, Any]]] = [
    ("chat, stream, n=3", CHAT, {"model": "mock", "messages": MESSAGES, "stream": True, "n": 3}),
    ("chat, whole answer, n=3", CHAT, {"model": "mock", "messages": MESSAGES, "n": 3}),
    ("completions, whole answer", "/v1/completions", {"model": "mock", "prompt": "hello there"}),
    ("completions, stream", "/v1/completions", {"model": "mock", "prompt": "hello there", "stream": True}),
]


def main() -> None:
    configure_logging("warning", "json")  # the per-request line would dominate what is measured
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--baseline", action="store_true", help="only the rows that existed before issue 9")
    args = parser.parse_args()
    configure_logging("error")
    print(f"Writer, per streamed text event ({args.events} events, best of 5)")
    plain = {"model": "mock", "messages": MESSAGES, "stream": True}
    for name, body in [("plain", plain), ("with a stop sequence", {**plain, "stop": ["zzz"]})]:
        print(f"  {name:24} {asyncio.run(time_writer(body, args.events)):7.0f} ns")
    print(f"\nGateway requests, in process, instant mock backend ({args.requests} per row)")
    rows = ROWS if args.baseline else ROWS + OPTIONAL_ROWS
    for name, path, body in rows:
        latencies = asyncio.run(time_requests(path, body, args.requests))
        print(f"  {name:28} {summary(latencies)}")


if __name__ == "__main__":
    main()
