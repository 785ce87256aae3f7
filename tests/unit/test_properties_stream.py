"""Property: any upstream event sequence, split at any byte boundaries, comes out of the real SSE
decoder (`adapters.sse.SSEAnswer`), stream parser (Workers AI's `StreamParser`, vLLM's `chunk_events`)
and writer (`gateway.writer.ResponseWriter`) as a well-formed OpenAI stream:

- every event is `data: <json>\\n\\n`; every JSON is a `chat.completion.chunk` (or one in-band error);
- the first chunk carries `role: assistant` and no later one does;
- `finish_reason` is set exactly once, on the last choice chunk; a usage chunk (`choices: []`) only
  after it and only when asked for;
- the stream ends with `data: [DONE]` when the upstream finished, and with an in-band error (never
  `[DONE]`, never the gateway's own `internal_error`) when it was cut, malformed or failed.

The upstream bytes reach `SSEAnswer` through a real `httpx.Response` whose body arrives in the
generated pieces, exactly as the network would hand them over.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.sse import SSEAnswer
from adapters.vllm.answers import chunk_events
from adapters.workers_ai.answers import StreamParser
from gateway.api.chat import decode_chat_request
from gateway.config import ModelConfig, Target
from gateway.translation.translate import translate
from gateway.translation.writer import ResponseWriter

if TYPE_CHECKING:
    from adapters.canonical import Event

PROPERTY_SETTINGS = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI failures reproduce
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MODEL = ModelConfig(targets=[Target(backend="b", model="m")])

# Upstream events


text = st.text(max_size=12)
name = st.from_regex(r"[a-z_]{1,8}", fullmatch=True)
usage = st.builds(
    lambda p, c: {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
    st.integers(0, 5000),
    st.integers(0, 5000),
)
json_args = st.dictionaries(name, st.one_of(st.integers(), text, st.booleans()), max_size=3)

legacy_event = st.one_of(
    st.builds(lambda t: {"response": t}, text),
    st.builds(lambda t, u: {"response": t, "usage": u}, text, usage),
    st.builds(
        lambda n, a: {"response": "", "tool_calls": [{"name": n, "arguments": a}]},
        name,
        json_args,
    ),
    st.builds(lambda u: {"response": "", "usage": u}, usage),
)


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


tool_call_delta = st.builds(
    lambda i, cid, n, a: {
        "index": i,
        **({"id": cid, "type": "function"} if cid else {}),
        "function": {**({"name": n} if n else {}), "arguments": a},
    },
    st.integers(0, 2),
    st.one_of(st.none(), st.from_regex(r"call_[a-z0-9]{4}", fullmatch=True)),
    st.one_of(st.none(), name),
    st.one_of(st.just(""), st.sampled_from(['{"a":', "1}", '"x"', "{}"])),
)

openai_event = st.one_of(
    st.builds(lambda t: chunk({"role": "assistant", "content": t}), text),
    st.builds(lambda t: chunk({"content": t}), text),
    st.builds(lambda t: chunk({"reasoning_content": t}), text),
    st.builds(lambda c: chunk({"tool_calls": [c]}), tool_call_delta),
    st.builds(lambda f: chunk({}, f), st.sampled_from(["stop", "length", "tool_calls", "function_call"])),
    st.builds(lambda u: {**chunk({}), "choices": [], "usage": u}, usage),
)

# How the upstream stream ends.
ENDINGS = ["done", "done-no-newline", "truncated", "malformed", "error-event"]


def sse_bytes(events: list[dict[str, Any]], ending: str, crlf: bool) -> bytes:
    newline = b"\r\n" if crlf else b"\n"
    body = b"".join(b"data: " + json.dumps(e).encode() + newline + newline for e in events)
    if ending == "done":
        body += b"data: [DONE]" + newline + newline
    elif ending == "done-no-newline":
        body += b"data: [DONE]"
    elif ending == "malformed":
        body += b'data: {"response": "cut' + newline + newline
    elif ending == "error-event":
        body += b'data: {"error": {"message": "upstream broke"}}' + newline + newline
    return body


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(body[start:point])
        start = point
    pieces.append(body[start:])
    return [p for p in pieces if p]


class PiecesStream(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece


# The gateway side


def chat_request(*, include_usage: bool, stop: list[str] | None) -> bytes:
    body: dict[str, Any] = {
        "model": "pub",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": include_usage},
    }
    if stop:
        body["stop"] = stop
    return json.dumps(body).encode()


async def relay(
    pieces: list[bytes], parse: Callable[[bytes], Iterable[Event]], include_usage: bool, stop: list[str]
) -> bytes:
    translated = translate(
        decode_chat_request(chat_request(include_usage=include_usage, stop=stop)),
        public_model="pub",
        model=MODEL,
    )
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=PiecesStream(pieces))
    answer = SSEAnswer(response, backend="up", timeout_s=5, parse=parse)
    writer = ResponseWriter(translated)
    out = [part async for part in writer.stream(answer.events())]
    return b"".join(out)


def check_openai_stream(raw: bytes, *, upstream_finished: bool, include_usage: bool) -> None:
    assert raw.endswith(b"\n\n")
    events = raw[:-2].split(b"\n\n")
    for event in events:
        assert event.startswith(b"data: "), event
    payloads = [e[len(b"data: ") :] for e in events]
    if upstream_finished:
        assert payloads[-1] == b"[DONE]", payloads[-1]
        body = payloads[:-1]
    else:
        error = msgspec.json.decode(payloads[-1])["error"]
        assert isinstance(error["message"], str)
        assert error["message"]
        assert isinstance(error["type"], str)
        assert error["code"] != "internal_error", error
        assert error["code"].startswith("upstream_"), error
        body = payloads[:-1]
    assert b"[DONE]" not in body
    chunks = [msgspec.json.decode(p) for p in body]
    assert chunks or not upstream_finished
    ids = {c["id"] for c in chunks}
    assert len(ids) <= 1
    finishes = 0
    for i, c in enumerate(chunks):
        assert c["object"] == "chat.completion.chunk"
        assert isinstance(c["created"], int)
        assert c["model"] == "pub"
        if c["choices"] == []:
            assert include_usage
            assert "usage" in c
            assert finishes == 1, "usage before the finish"
            assert i == len(chunks) - 1
            continue
        (choice,) = c["choices"]
        assert choice["index"] == 0
        delta = choice["delta"]
        assert isinstance(delta, dict)
        assert ("role" in delta) == (i == 0), (i, delta)
        if "role" in delta:
            assert delta["role"] == "assistant"
        assert finishes == 0, "a chunk after the finish"
        if choice["finish_reason"] is not None:
            assert choice["finish_reason"] in ("stop", "length", "tool_calls", "content_filter")
            finishes += 1
        for call in delta.get("tool_calls") or []:
            assert isinstance(call["index"], int)
            assert isinstance(call["function"].get("arguments", ""), str)
    if upstream_finished:
        assert finishes == 1
        assert (chunks[-1]["choices"] == []) == include_usage


def run_property(
    events: list[dict[str, Any]],
    ending: str,
    cuts: list[int],
    crlf: bool,
    include_usage: bool,
    stop: list[str],
    parse: Callable[[bytes], Iterable[Event]],
) -> None:
    pieces = split(sse_bytes(events, ending, crlf), cuts)
    raw = asyncio.run(relay(pieces, parse, include_usage, stop))
    # A stop sequence in the text completes the answer there: whatever the upstream did afterwards.
    finished = ending.startswith("done") or any(s in content_text(events) for s in stop)
    check_openai_stream(raw, upstream_finished=finished, include_usage=include_usage)


def content_text(events: list[dict[str, Any]]) -> str:
    texts = []
    for event in events:
        if "response" in event:
            texts.append(event["response"])
        for choice in event.get("choices") or []:
            texts.append(choice["delta"].get("content") or "")
    return "".join(texts)


stream_args = {
    "ending": st.sampled_from(ENDINGS),
    "cuts": st.lists(st.integers(0, 10_000), max_size=12),
    "crlf": st.booleans(),
    "include_usage": st.booleans(),
    "stop": st.one_of(
        st.just([]), st.lists(st.sampled_from(["\n", "ab", "x", "END"]), min_size=1, max_size=2)
    ),
}


@PROPERTY_SETTINGS
@given(events=st.lists(legacy_event, max_size=8), **stream_args)
def test_workers_ai_legacy_streams_become_well_formed_openai_streams(
    events: list[dict[str, Any]],
    ending: str,
    cuts: list[int],
    crlf: bool,
    include_usage: bool,
    stop: list[str],
) -> None:
    run_property(events, ending, cuts, crlf, include_usage, stop, StreamParser("up").parse)


@PROPERTY_SETTINGS
@given(events=st.lists(openai_event, max_size=8), **stream_args)
def test_workers_ai_openai_shaped_streams_become_well_formed_openai_streams(
    events: list[dict[str, Any]],
    ending: str,
    cuts: list[int],
    crlf: bool,
    include_usage: bool,
    stop: list[str],
) -> None:
    run_property(events, ending, cuts, crlf, include_usage, stop, StreamParser("up").parse)


def vllm_parse(payload: bytes) -> list[Event]:
    return chunk_events(payload, "up")


@PROPERTY_SETTINGS
@given(events=st.lists(openai_event, max_size=8), **stream_args)
def test_vllm_streams_become_well_formed_openai_streams(
    events: list[dict[str, Any]],
    ending: str,
    cuts: list[int],
    crlf: bool,
    include_usage: bool,
    stop: list[str],
) -> None:
    run_property(events, ending, cuts, crlf, include_usage, stop, vllm_parse)


def test_the_splitter_keeps_every_byte() -> None:
    body = sse_bytes([{"response": "héllo"}], "done", crlf=False)
    assert b"".join(split(body, [1, 3, 3, 500, 7])) == body
