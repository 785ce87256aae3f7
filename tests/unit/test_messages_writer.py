"""The Messages writer (`gateway.translation.messages_writer`): its event grammar over generated
canonical event sequences, judged by the official `anthropic` SDK's own stream accumulator; the whole
answer agreeing with the stream; tool input that always parses; pings on an idle upstream; and the
request mapping's edge cases.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import msgspec
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from hypothesis import given
from hypothesis import strategies as st

from adapters.canonical import ChatRequest, Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from adapters.errors import UpstreamStatusError
from gateway.anthropic.requests import messages_request_decoder
from gateway.anthropic.responses import rate_limit_headers
from gateway.api.chat import decode_request
from gateway.api.messages import anthropic_validation_error, api_version
from gateway.config import ModelConfig, Target
from gateway.errors import (
    InvalidRequestError,
    UnsupportedParameterError,
    anthropic_error_response,
    prompt_too_long,
    surface_of,
)
from gateway.translation.messages import translate_messages
from gateway.translation.messages_writer import PING, MessagesWriter, json_closers
from tests.unit.test_properties_stream import PROPERTY_SETTINGS

MODEL = ModelConfig(targets=[Target(backend="b", model="m")])


def writer_for(body: dict[str, Any], **options: Any) -> MessagesWriter:
    payload = decode_request(messages_request_decoder, msgspec.json.encode(body), anthropic_validation_error)
    result = translate_messages(payload, version="2023-06-01", public_model="m", model=MODEL)
    return MessagesWriter(result.translated, thinking=result.thinking, request_id="req_1", **options)


async def _events(events: Iterable[Event], *, fail: Exception | None = None) -> AsyncIterator[Event]:
    for event in events:
        yield event
    if fail is not None:
        raise fail


def stream(writer: MessagesWriter, events: Iterable[Event], *, fail: Exception | None = None) -> list[bytes]:
    async def run() -> list[bytes]:
        return [frame async for frame in writer.stream(_events(events, fail=fail))]

    return asyncio.run(run())


def parse(frames: list[bytes]) -> list[dict[str, Any]]:
    """Each frame is one `event: <type>` + `data: <json whose type repeats it>` SSE event."""
    parsed: list[dict[str, Any]] = []
    for frame in frames:
        assert frame.endswith(b"\n\n")
        event_line, data_line = frame[:-2].split(b"\n")
        assert event_line.startswith(b"event: ")
        assert data_line.startswith(b"data: ")
        data = json.loads(data_line[6:])
        assert data["type"] == event_line[7:].decode()
        parsed.append(data)
    return parsed


def check_grammar(events: list[dict[str, Any]]) -> None:
    assert events[0]["type"] == "message_start"
    assert events[0]["message"]["content"] == []
    assert [e["type"] for e in events[-2:]] == ["message_delta", "message_stop"]
    open_index = None
    next_index = 0
    for event in events[1:-2]:
        kind = event["type"]
        if kind == "content_block_start":
            assert open_index is None
            assert event["index"] == next_index
            open_index, next_index = next_index, next_index + 1
        elif kind in ("content_block_delta", "content_block_stop"):
            assert event["index"] == open_index
            if kind == "content_block_stop":
                open_index = None
        else:
            assert kind == "ping"
    assert open_index is None


# Generated canonical answers: text, reasoning and tool calls in any order; each call's arguments a
# JSON object cut into pieces (the first piece may come before the call's name), maybe cut short.

name = st.from_regex(r"[a-z_]{1,8}", fullmatch=True)
arguments = st.dictionaries(name, st.one_of(st.integers(), st.text(max_size=8), st.booleans()), max_size=3)


@st.composite
def tool_call(draw: st.DrawFn, index: int) -> list[ToolCallDelta]:
    text = json.dumps(draw(arguments))
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]  # cut by max_tokens
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=4)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    early = draw(st.booleans()) and len(pieces) > 1
    deltas = [ToolCallDelta(index, None, pieces[0])] if early else []
    deltas.append(ToolCallDelta(index, draw(name), "" if early else pieces[0]))
    deltas += [ToolCallDelta(index, None, piece) for piece in pieces[1:]]
    return deltas


@st.composite
def answer(draw: st.DrawFn) -> list[Event]:
    events: list[Event] = []
    calls = 0
    for kind in draw(st.lists(st.sampled_from(["text", "reasoning", "tool"]), max_size=8)):
        if kind == "text":
            events.append(TextDelta(draw(st.text(max_size=10))))
        elif kind == "reasoning":
            events.append(ReasoningDelta(draw(st.text(min_size=1, max_size=10))))
        else:
            events += draw(tool_call(calls))
            calls += 1
    if draw(st.booleans()):
        events.append(
            Usage(draw(st.integers(0, 99)), draw(st.integers(0, 99)), draw(st.sampled_from([None, 3])))
        )
    events.append(Finish(draw(st.sampled_from(["stop", "length", "tool_calls"]))))
    return events


def normalized(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Blocks without their ids (each answer makes its own) and the SDK's optional null fields."""
    return [{k: v for k, v in b.items() if k != "id" and v is not None} for b in blocks]


@PROPERTY_SETTINGS
@given(answer(), st.booleans())
def test_any_answer_streams_as_the_sdk_parses_it_and_matches_the_whole_body(
    events: list[Event], thinking: bool
) -> None:
    body: dict[str, Any] = {"model": "m", "max_tokens": 2000, "messages": [{"role": "user", "content": "x"}]}
    if thinking:
        body["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    parsed = parse(stream(writer_for(body), events))
    check_grammar(parsed)
    snapshot = None
    buffers: dict[int, bytes] = {}
    for event in parsed:
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=buffers)  # type: ignore[arg-type]
    assert snapshot is not None
    for index, buffer in buffers.items():  # every tool's input, once complete, is a JSON object
        assert isinstance(json.loads(buffer), dict), index
    whole = json.loads(writer_for(body).complete(events))
    streamed: dict[str, Any] = snapshot.to_dict()
    assert normalized(streamed["content"]) == normalized(whole["content"])
    for field in ("stop_reason", "stop_sequence"):
        assert streamed[field] == whole[field]
    for field in ("input_tokens", "output_tokens", "cache_read_input_tokens"):
        assert streamed["usage"][field] == whole["usage"][field]
    kinds = {block["type"] for block in whole["content"]}
    assert ("thinking" in kinds) <= thinking
    if any(type(e) is ToolCallDelta for e in events):
        assert whole["stop_reason"] == "tool_use" or (whole["stop_reason"] == "max_tokens")


def test_stop_reasons_and_usage() -> None:
    body: dict[str, Any] = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    whole = json.loads(writer_for(body).complete([TextDelta("a b"), Usage(40, 5, 30), Finish("length")]))
    assert whole["stop_reason"] == "max_tokens"
    assert whole["usage"] == {
        "input_tokens": 10,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 30,
        "output_tokens": 5,
    }
    stopped = writer_for({**body, "max_tokens": 100, "stop_sequences": ["END"]})
    parsed = parse(stream(stopped, [TextDelta("one E"), TextDelta("ND two"), Finish("stop")]))
    texts = [e["delta"]["text"] for e in parsed if e["type"] == "content_block_delta"]
    assert "".join(texts) == "one "
    assert parsed[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


def test_a_failure_mid_stream_closes_with_an_error_event() -> None:
    body: dict[str, Any] = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "x"}]}
    error = UpstreamStatusError("b", "The engine is busy", status_code=503)
    frames = stream(writer_for(body), [TextDelta("partial")], fail=error)
    assert frames[-1].startswith(b"event: error\n")
    last = json.loads(frames[-1].split(b"data: ", 1)[1])
    assert last == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "The engine is busy"},
        "request_id": "req_1",
    }
    assert b"message_stop" not in b"".join(frames)


def test_an_idle_upstream_gets_pings_and_nothing_is_lost() -> None:
    body: dict[str, Any] = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "x"}]}

    async def slow() -> AsyncIterator[Event]:
        yield TextDelta("first")
        await asyncio.sleep(0.3)
        yield TextDelta(" second")
        yield Finish("stop")

    async def run() -> list[bytes]:
        writer = writer_for(body, ping_interval_s=0.05)
        return [frame async for frame in writer.stream(slow())]

    frames = asyncio.run(run())
    assert PING in frames
    parsed = parse(frames)
    check_grammar(parsed)
    texts = [e["delta"]["text"] for e in parsed if e["type"] == "content_block_delta"]
    assert texts == ["first", " second"]


def test_many_events_pass_the_read_ahead_buffer_in_order() -> None:
    body: dict[str, Any] = {"model": "m", "max_tokens": 5000, "messages": [{"role": "user", "content": "x"}]}
    events: list[Event] = [TextDelta(str(i)) for i in range(1000)]
    parsed = parse(stream(writer_for(body), [*events, Finish("stop")]))
    texts = [e["delta"]["text"] for e in parsed if e["type"] == "content_block_delta"]
    assert texts == [str(i) for i in range(1000)]


@pytest.mark.parametrize(
    ("cut", "closed"),
    [
        ('{"a": "b', '{"a": "b"}'),
        ('{"a": ', '{"a": null}'),
        ('{"a": [1, ', '{"a": [1, null]}'),
        ('{"a": 1, ', '{"a": 1, "_":null}'),
        ('{"a": "x\\', '{"a": "x\\\\"}'),
        ('{"a": {"b": [true', '{"a": {"b": [true]}}'),
    ],
)
def test_json_closers_complete_a_cut_object(cut: str, closed: str) -> None:
    assert cut + json_closers(cut) == closed
    assert isinstance(json.loads(closed), dict)


def test_rate_limit_headers_become_anthropics() -> None:
    headers = rate_limit_headers(
        {"x-ratelimit-limit-requests": "5", "x-ratelimit-reset-requests": "1m30s", "retry-after": "3"}, now=0
    )
    assert headers == {
        "anthropic-ratelimit-requests-limit": "5",
        "anthropic-ratelimit-requests-reset": "1970-01-01T00:01:30Z",
        "retry-after": "3",
    }


def test_versions_and_validation_wording() -> None:
    assert api_version(" 2023-06-01 ") == "2023-06-01"
    with pytest.raises(InvalidRequestError, match="header is required"):
        api_version(None)
    with pytest.raises(InvalidRequestError, match="not a supported version"):
        api_version("2024-01-01")
    with pytest.raises(InvalidRequestError, match=r"^messages\.0\.content: Field required$"):
        writer_for({"model": "m", "max_tokens": 1, "messages": [{"role": "user"}]})
    assert prompt_too_long(
        "This model's maximum context length is 20 tokens. However, you requested 110 tokens"
    ).startswith("prompt is too long: 110 tokens > 20 maximum")


def test_images_need_a_vision_model_and_server_tools_are_left_out() -> None:
    image: Any = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}
    body: dict[str, Any] = {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": [image]}],
    }
    with pytest.raises(UnsupportedParameterError, match="does not accept images"):
        writer_for(body)
    payload = decode_request(messages_request_decoder, msgspec.json.encode(body), anthropic_validation_error)
    vision = ModelConfig(targets=[Target(backend="b", model="m")], vision=True)
    result = translate_messages(payload, version="2023-06-01", public_model="m", model=vision)
    [message] = result.translated.request.messages
    assert not isinstance(message.content, str)
    assert msgspec.to_builtins(message.content) == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}
    ]
    tools: Any = [
        {"type": "web_search_20250305", "name": "web_search"},
        {"name": "f", "input_schema": {"type": "object"}},
    ]
    writer = writer_for({**body, "messages": [{"role": "user", "content": "x"}], "tools": tools})
    request = writer.translated.request
    assert isinstance(request, ChatRequest)
    assert request.tools is not msgspec.UNSET
    assert [tool.function.name for tool in request.tools] == ["f"]
    assert writer.translated.dropped == ("tools.0 (web_search_20250305)",)


nested = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(), children, max_size=3)
    ),
    max_leaves=8,
)


@PROPERTY_SETTINGS
@given(st.dictionaries(st.text(max_size=5), nested, max_size=4), st.data(), st.booleans())
def test_any_cut_of_an_object_is_completed_to_an_object(
    value: dict[str, Any], data: st.DataObject, ascii_only: bool
) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    cut = text[: data.draw(st.integers(1, len(text)))]
    assert isinstance(json.loads(cut + json_closers(cut)), dict)


@pytest.mark.parametrize(
    "cut", ['{"a": "\\ud83d', '{"a": "\\ud83d\\', '{"a": "\\ud8', '{"a": "\\ud83d\\ude', '{"a": "\\u00']
)
def test_json_closers_never_leave_half_a_surrogate_pair(cut: str) -> None:
    closed = cut + json_closers(cut)
    assert isinstance(json.loads(closed), dict)
    closed.encode().decode()
    json.loads(closed)["a"].encode("utf-8")  # raises on a lone surrogate


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (405, "invalid_request_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
    ],
)
def test_each_status_has_anthropics_error_type(status: int, kind: str) -> None:
    error = UpstreamStatusError("b", "it failed", status_code=status, retry_after=2.4)
    code, body, headers = anthropic_error_response(error, "req_9")
    assert code == status
    assert json.loads(body) == {
        "type": "error",
        "error": {"type": kind, "message": "it failed"},
        "request_id": "req_9",
    }
    assert headers == {"retry-after": "2"}
    assert surface_of("/v1/messages") == surface_of("/v1/messages/count_tokens") == "anthropic"
    assert surface_of("/v1/chat/completions") == surface_of("/v1/messagesx") == "openai"
