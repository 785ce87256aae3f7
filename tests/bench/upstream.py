"""A minimal, fast upstream for benchmarks: Workers AI and vLLM dialects over raw asyncio + uvloop.

The test emulators validate everything and inject faults; this one only answers, as cheaply as
possible, so that it is never the bottleneck of a benchmark (tens of thousands of requests per
second on one core). Answers are pre-encoded at start-up.

    python -m tests.bench.upstream --port 9000 --tokens 20 --stream-tokens 50 --token-delay 0

Routes: `POST .../ai/run/{model}` (Workers AI, envelope + native SSE), `POST /v1/chat/completions`
(vLLM/OpenAI), `GET /health`. A request is a stream when its body contains `"stream":true`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from typing import Final, cast

_HEADER_END: Final = b"\r\n\r\n"
_CONTENT_LENGTH: Final = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_STREAM_FLAG: Final = re.compile(rb'"stream"\s*:\s*true')


def _response(status: str, content_type: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 "
        + status.encode()
        + b"\r\ncontent-type: "
        + content_type
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


_SSE_HEAD: Final = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"


class Answers:
    """Every answer the upstream gives, encoded once."""

    def __init__(self, tokens: int, stream_tokens: int) -> None:
        words = [("Lorem" if i == 0 else " ipsum") for i in range(tokens)]
        text = "".join(words)
        usage = {"prompt_tokens": 12, "completion_tokens": tokens, "total_tokens": 12 + tokens}
        self.workers_ai = _response(
            "200 OK",
            b"application/json",
            json.dumps(
                {
                    "result": {"response": text, "tool_calls": [], "usage": usage},
                    "success": True,
                    "errors": [],
                    "messages": [],
                }
            ).encode(),
        )
        completion = {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1,
            "model": "bench",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": usage,
        }
        self.vllm = _response("200 OK", b"application/json", json.dumps(completion).encode())
        stream_usage = {
            "prompt_tokens": 12,
            "completion_tokens": stream_tokens,
            "total_tokens": 12 + stream_tokens,
        }
        self.workers_ai_events = [
            _chunk(b"data: " + json.dumps({"response": " tok", "p": "abcdefg"}).encode() + b"\n\n")
            for _ in range(stream_tokens)
        ]
        self.workers_ai_tail = (
            _chunk(b"data: " + json.dumps({"response": "", "usage": stream_usage}).encode() + b"\n\n")
            + _chunk(b"data: [DONE]\n\n")
            + _LAST_CHUNK
        )
        chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "bench"}
        self.vllm_events = [
            _chunk(
                b"data: "
                + json.dumps(
                    {**chunk, "choices": [{"index": 0, "delta": {"content": " tok"}, "finish_reason": None}]}
                ).encode()
                + b"\n\n"
            )
            for _ in range(stream_tokens)
        ]
        self.vllm_tail = (
            _chunk(
                b"data: "
                + json.dumps(
                    {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                ).encode()
                + b"\n\n"
            )
            + _chunk(
                b"data: " + json.dumps({**chunk, "choices": [], "usage": stream_usage}).encode() + b"\n\n"
            )
            + _chunk(b"data: [DONE]\n\n")
            + _LAST_CHUNK
        )
        self.health = _response("200 OK", b"text/plain", b"")
        self.not_found = _response("404 Not Found", b"application/json", b'{"error":"not found"}')


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self, answers: Answers, token_delay: float) -> None:
        self._answers = answers
        self._delay = token_delay
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._streaming = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        self._transport = cast("asyncio.Transport", transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while not self._streaming:
            end = self._buffer.find(_HEADER_END)
            if end < 0:
                return
            head = bytes(self._buffer[:end])
            match = _CONTENT_LENGTH.search(head)
            length = int(match.group(1)) if match else 0
            total = end + 4 + length
            if len(self._buffer) < total:
                return
            body = bytes(self._buffer[end + 4 : total])
            del self._buffer[:total]
            self._answer(head, body)

    def _answer(self, head: bytes, body: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        answers = self._answers
        path = head.split(b" ", 2)[1]
        if b"/ai/run/" in path:
            if _STREAM_FLAG.search(body):
                self._stream(answers.workers_ai_events, answers.workers_ai_tail)
            else:
                transport.write(answers.workers_ai)
        elif path.endswith(b"/chat/completions"):
            if _STREAM_FLAG.search(body):
                self._stream(answers.vllm_events, answers.vllm_tail)
            else:
                transport.write(answers.vllm)
        elif path.endswith(b"/health"):
            transport.write(answers.health)
        else:
            transport.write(answers.not_found)

    def _stream(self, events: list[bytes], tail: bytes) -> None:
        transport = self._transport
        assert transport is not None
        if not self._delay:
            transport.write(_SSE_HEAD + b"".join(events) + tail)
            return
        self._streaming = True
        transport.write(_SSE_HEAD)
        asyncio.get_running_loop().create_task(self._drip(events, tail))

    async def _drip(self, events: list[bytes], tail: bytes) -> None:
        for event in events:
            await asyncio.sleep(self._delay)
            if self._transport is None:
                return
            self._transport.write(event)
        if self._transport is not None:
            self._transport.write(tail)
        self._streaming = False
        if self._buffer:
            self.data_received(b"")


async def serve(host: str, port: int, answers: Answers, token_delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(answers, token_delay), host, port, backlog=4096
    )
    print(f"upstream listening on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=20, help="words in a non-streamed answer")
    parser.add_argument("--stream-tokens", type=int, default=50, help="events in a streamed answer")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between streamed events")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        pass
    asyncio.run(serve(args.host, args.port, Answers(args.tokens, args.stream_tokens), args.token_delay))


if __name__ == "__main__":
    main()
