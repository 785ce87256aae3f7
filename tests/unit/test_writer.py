"""Framing rules of the writer, checked on its raw output and through the official SDK's accumulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from adapters.canonical import (
    ChatRequest,
    Event,
    Finish,
    Indexed,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from adapters.errors import UpstreamProtocolError
from gateway.config import ModelConfig, Target
from gateway.openai.requests import chat_request_decoder
from gateway.translation.translate import Translated, translate
from gateway.translation.writer import ResponseWriter

pytestmark = pytest.mark.anyio

MODEL = ModelConfig(targets=[Target(backend="b", model="m")])


def translated(**body: Any) -> Translated[ChatRequest]:
    payload = {"model": "public", "messages": [{"role": "user", "content": "hi"}], **body}
    return translate(chat_request_decoder.decode(json.dumps(payload)), public_model="public", model=MODEL)


async def aiter(events: Iterable[Event], error: Exception | None = None) -> AsyncIterator[Event]:
    for event in events:
        yield event
    if error is not None:
        raise error


async def sse(events: Iterable[Event], error: Exception | None = None, **body: Any) -> list[str]:
    writer = ResponseWriter(translated(stream=True, **body))
    raw = b"".join([chunk async for chunk in writer.stream(aiter(events, error))]).decode()
    assert raw.endswith("\n\n")
    return [block.removeprefix("data: ") for block in raw[:-2].split("\n\n")]


def chunks(data: list[str]) -> list[dict[str, Any]]:
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def sdk_accumulate(data: list[str]) -> Any:
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in chunks(data):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return state.get_final_completion()


async def test_text_stream_framing() -> None:
    """Role once with empty content, content deltas, an empty-delta finish chunk, then [DONE]."""
    data = await sse([TextDelta("Hel"), TextDelta("lo"), Usage(3, 2)])
    parsed = chunks(data)
    deltas = [c["choices"][0]["delta"] for c in parsed]
    assert deltas == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in parsed] == [None, None, None, "stop"]
    assert len({c["id"] for c in parsed}) == 1
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "public" for c in parsed)
    assert "usage" not in parsed[-1]
    completion = sdk_accumulate(data)
    assert completion.choices[0].message.content == "Hello"
    assert completion.choices[0].message.role == "assistant"


async def test_usage_chunk_is_last_and_only_when_asked() -> None:
    data = await sse([TextDelta("x"), Usage(7, 1)], stream_options={"include_usage": True})
    parsed = chunks(data)
    assert parsed[-1]["choices"] == []
    assert parsed[-1]["usage"]["prompt_tokens"] == 7
    assert parsed[-1]["usage"]["total_tokens"] == 8
    assert sdk_accumulate(data).usage.completion_tokens == 1


async def test_tool_call_ids_and_names_only_in_first_delta_with_dense_indexes() -> None:
    """Upstream indexes 3 and 7 become 0 and 1; the SDK accumulator rebuilds both calls intact."""
    events: list[Event] = [
        ToolCallDelta(3, "add", ""),
        ToolCallDelta(3, None, '{"a":'),
        ToolCallDelta(7, "mul", '{"x":2}'),
        ToolCallDelta(3, None, "1}"),
        Finish("stop"),
    ]
    data = await sse(events)
    parsed = chunks(data)
    first = parsed[0]["choices"][0]["delta"]
    assert first["role"] == "assistant"
    assert first["content"] is None
    assert first["tool_calls"][0]["function"] == {"name": "add", "arguments": ""}
    headers = [c for c in parsed if any("id" in t for t in c["choices"][0]["delta"].get("tool_calls", []))]
    assert len(headers) == 2
    assert parsed[-1]["choices"][0]["finish_reason"] == "tool_calls"
    calls = sdk_accumulate(data).choices[0].message.tool_calls
    assert [(c.index, c.function.name, c.function.arguments) for c in calls] == [
        (0, "add", '{"a":1}'),
        (1, "mul", '{"x":2}'),
    ]
    assert calls[0].id.startswith("call_")
    assert calls[0].id != calls[1].id


async def test_arguments_before_the_name_are_held_back() -> None:
    data = await sse([ToolCallDelta(0, None, '{"a"'), ToolCallDelta(0, "f", ":1}")])
    call = sdk_accumulate(data).choices[0].message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == ("f", '{"a":1}')


async def test_parallel_tool_calls_false_returns_only_the_first_call() -> None:
    data = await sse([ToolCallDelta(0, "a", "{}"), ToolCallDelta(1, "b", "{}")], parallel_tool_calls=False)
    assert [c.function.name for c in sdk_accumulate(data).choices[0].message.tool_calls] == ["a"]


async def test_reasoning_deltas_use_reasoning_content() -> None:
    data = await sse([ReasoningDelta("think"), TextDelta("answer")])
    deltas = [c["choices"][0]["delta"] for c in chunks(data)]
    assert deltas[0]["role"] == "assistant"
    assert {"reasoning_content": "think"} in deltas
    assert sum("role" in d for d in deltas) == 1


async def test_failure_after_first_byte_is_in_band_and_has_no_done() -> None:
    """A cut stream must never look finished: error event, no finish chunk, no [DONE]."""
    error = UpstreamProtocolError(
        "cf", "backend 'cf' ended its stream without [DONE]", code="upstream_stream_truncated"
    )
    data = await sse([TextDelta("partial")], error=error)
    assert data[-1] != "[DONE]"
    last = json.loads(data[-1])
    assert last["error"]["code"] == "upstream_stream_truncated"
    assert not any('"finish_reason":"stop"' in d for d in data)


async def test_empty_answer_still_has_role_and_finish() -> None:
    parsed = chunks(await sse([]))
    assert parsed[0]["choices"][0]["delta"]["role"] == "assistant"
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"


async def test_length_is_inferred_from_usage_when_upstream_gives_no_finish() -> None:
    parsed = chunks(await sse([TextDelta("a b c"), Usage(1, 5)], max_tokens=5))
    assert parsed[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param(["Hello END world"], id="whole"),
        pytest.param(["Hello E", "N", "D world"], id="split-across-three"),
        pytest.param(["Hello EN", "D", " world"], id="split-before-last-char"),
    ],
)
async def test_stop_sequence_cuts_text_even_across_chunks(pieces: list[str]) -> None:
    data = await sse([TextDelta(p) for p in pieces], stop=["END"])
    completion = sdk_accumulate(data)
    assert completion.choices[0].message.content == "Hello "
    assert completion.choices[0].finish_reason == "stop"


async def test_partial_stop_prefix_is_released_when_it_does_not_complete() -> None:
    data = await sse([TextDelta("ab E"), TextDelta("ND? no, EN"), TextDelta("!")], stop=["ENDX"])
    assert sdk_accumulate(data).choices[0].message.content == "ab END? no, EN!"


async def test_legacy_functions_answer_with_function_call() -> None:
    functions = [{"name": "f", "parameters": {"type": "object", "properties": {}}}]
    data = await sse([ToolCallDelta(0, "f", '{"q":1}')], functions=functions)
    parsed = chunks(data)
    assert parsed[0]["choices"][0]["delta"]["function_call"] == {"name": "f", "arguments": ""}
    assert parsed[-1]["choices"][0]["finish_reason"] == "function_call"


def test_complete_answer_shape() -> None:
    writer = ResponseWriter(translated())
    body = json.loads(writer.complete([TextDelta("Hi"), TextDelta("!"), Usage(5, 2), Finish("stop")]))
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "Hi!", "refusal": None, "annotations": []},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert body["usage"]["total_tokens"] == 7


def test_complete_answer_with_tool_calls_has_null_content() -> None:
    writer = ResponseWriter(translated())
    body = json.loads(writer.complete([ToolCallDelta(0, "f", '{"a":1}'), Usage(5, 2)]))
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert message["tool_calls"][0]["type"] == "function"
    assert body["choices"][0]["finish_reason"] == "tool_calls"


def test_usage_is_estimated_when_the_upstream_sends_none() -> None:
    writer = ResponseWriter(translated())
    body = json.loads(writer.complete([TextDelta("x" * 40)]))
    assert body["usage"]["completion_tokens"] == 10
    assert body["usage"]["prompt_tokens"] >= 1


# Several choices (n > 1) and the gateway's own rules


async def test_choices_interleave_with_their_own_index_and_the_sdk_rebuilds_each() -> None:
    """Role chunks come first in index order; each choice's deltas carry its index; usage is summed."""
    events: list[Event] = [
        Indexed(1, TextDelta("B1")),
        Indexed(0, TextDelta("A1")),
        Indexed(2, ToolCallDelta(0, "f", '{"x":1}')),
        Indexed(1, TextDelta(" B2")),
        Indexed(0, Usage(3, 2)),
        Indexed(1, Usage(3, 4)),
        Indexed(2, Usage(3, 1)),
        Indexed(1, Finish("content_filter")),
    ]
    data = await sse(events, n=3, stream_options={"include_usage": True})
    parsed = chunks(data)
    assert [c["choices"][0]["index"] for c in parsed[:3]] == [0, 1, 2]
    assert all(c["choices"][0]["delta"].get("role") == "assistant" for c in parsed[:3])
    assert sum("role" in c["choices"][0]["delta"] for c in parsed if c["choices"]) == 3
    finishes = {c["choices"][0]["index"]: c["choices"][0]["finish_reason"] for c in parsed if c["choices"]}
    assert finishes == {0: "stop", 1: "content_filter", 2: "tool_calls"}
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in parsed:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    completion = state.current_completion_snapshot  # unparsed: `content_filter` would raise
    by_index = {choice.index: choice for choice in completion.choices}
    assert by_index[0].message.content == "A1"
    assert by_index[1].message.content == "B1 B2"
    calls = by_index[2].message.tool_calls or []
    assert [call.function.name for call in calls] == ["f"]
    assert by_index[2].finish_reason == "tool_calls"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (9, 7)


async def test_an_unindexed_usage_counts_the_whole_answer() -> None:
    """vLLM's native n: one usage for all choices."""
    events: list[Event] = [Indexed(0, TextDelta("a")), Indexed(1, TextDelta("b")), Usage(5, 2)]
    parsed = chunks(await sse(events, n=2, stream_options={"include_usage": True}))
    assert parsed[-1]["usage"]["total_tokens"] == 7


async def test_stop_sequence_ends_only_its_own_choice() -> None:
    events: list[Event] = [
        Indexed(0, TextDelta("one EN")),
        Indexed(1, TextDelta("two END three")),
        Indexed(0, TextDelta("D four")),
        Indexed(1, TextDelta(" ignored")),
    ]
    completion = sdk_accumulate(await sse(events, n=2, stop=["END"]))
    assert [(c.message.content, c.finish_reason) for c in completion.choices] == [
        ("one ", "stop"),
        ("two ", "stop"),
    ]


def test_whole_answer_with_several_choices() -> None:
    writer = ResponseWriter(translated(n=2))
    events: list[Event] = [
        Indexed(0, TextDelta("x")),
        Indexed(1, TextDelta("y")),
        Indexed(0, Usage(2, 1)),
        Indexed(1, Usage(2, 1)),
    ]
    body = json.loads(writer.complete(events))
    assert [(c["index"], c["message"]["content"]) for c in body["choices"]] == [(0, "x"), (1, "y")]
    assert body["usage"]["total_tokens"] == 6


FORCED: Any = {
    "tools": [{"type": "function", "function": {"name": "wx", "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "function", "function": {"name": "wx"}},
}


async def test_forced_call_written_as_text_becomes_a_tool_call_in_a_stream() -> None:
    pieces = ['{"name":', ' "wx",', ' "arguments":', ' {"city":', ' "Paris"}}']
    data = await sse([TextDelta(p) for p in pieces], **FORCED)
    parsed = chunks(data)
    assert not any(c["choices"][0]["delta"].get("content") for c in parsed)
    completion = sdk_accumulate(data)
    call = completion.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("wx", {"city": "Paris"})
    assert call.id.startswith("call_")
    assert completion.choices[0].finish_reason == "tool_calls"


def test_forced_call_written_as_text_becomes_a_tool_call_in_a_whole_answer() -> None:
    writer = ResponseWriter(translated(**FORCED))
    body = json.loads(writer.complete([TextDelta('{"city": "Paris"}'), Finish("stop")]))
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"][0]["function"] == {"name": "wx", "arguments": '{"city":"Paris"}'}
    assert body["choices"][0]["finish_reason"] == "tool_calls"


async def test_text_is_not_recovered_without_a_forced_tool() -> None:
    tools = FORCED["tools"]
    data = await sse([TextDelta('{"name": "wx", "arguments": {}}')], tools=tools)
    completion = sdk_accumulate(data)
    assert completion.choices[0].message.content == '{"name": "wx", "arguments": {}}'
    assert not completion.choices[0].message.tool_calls


async def test_prose_under_a_forced_tool_streams_as_it_comes() -> None:
    data = await sse([TextDelta("I cannot"), TextDelta(" call it.")], **FORCED)
    contents = [c["choices"][0]["delta"].get("content") for c in chunks(data)]
    assert contents[1:3] == ["I cannot", " call it."]


async def test_plain_stream_skips_the_general_path() -> None:
    """One choice without stop or forced tools takes the plain loop (no per-choice state at all)."""
    writer = ResponseWriter(translated(stream=True))
    assert writer.stream(aiter([])).__qualname__.endswith("_plain_stream")  # type: ignore[attr-defined]
    shaped = ResponseWriter(translated(stream=True, stop=["x"]))
    assert shaped.stream(aiter([])).__qualname__.endswith("_stream_choices")  # type: ignore[attr-defined]
