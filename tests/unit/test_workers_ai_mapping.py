"""Workers AI answers → canonical events, errors → OpenAI terms, and request narrowing.

Fixtures are the shapes documented in the Workers AI contract notes (captures and schemas).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from adapters.canonical import (
    ChatRequest,
    Event,
    Extensions,
    Finish,
    FunctionDefinition,
    Message,
    NamedFunction,
    NamedToolChoice,
    PromptRequest,
    ReasoningDelta,
    TextDelta,
    Tool,
    ToolCallDelta,
    Usage,
)
from adapters.errors import UpstreamStatusError
from adapters.upstream import Fault
from adapters.workers_ai import answers
from adapters.workers_ai.answers import StreamParser
from adapters.workers_ai.errors import ERRORS
from adapters.workers_ai.request import prompt_body, upstream_body


def result_events(result: Any, backend: str) -> list[Event]:
    """The events of a non-streamed `result` (given decoded, as the fixtures read best)."""
    return list(answers.result_events(msgspec.json.encode(result), backend))


def status_error(
    backend: str, status: int, cf_code: int | None, message: str, retry_after: float | None
) -> UpstreamStatusError:
    """The Workers AI error table applied to a status, a Cloudflare code and a message."""
    return ERRORS.error(backend, status, Fault(message, code=cf_code), retry_after)


def parse_stream(lines: list[dict[str, Any]]) -> list[object]:
    parser = StreamParser("cf")
    return [event for line in lines for event in parser.parse(json.dumps(line).encode())]


def test_native_stream_with_padding_empty_tool_calls_and_trailing_usage() -> None:
    """`p` padding and `tool_calls: []` are ignored; usage comes from the separate last event."""
    events = parse_stream(
        [
            {"response": "", "tool_calls": [], "p": "abdefghijklmnoprstuvxyz12"},
            {"response": "You", "tool_calls": [], "p": "abdefghijklmn"},
            {"response": "'re looking", "tool_calls": [], "p": "abdefgh"},
            {"tool_calls": [], "p": "abdefghijklmnoprstuvxyz1234567890abdefghi"},
            {"response": "", "usage": {"prompt_tokens": 169, "completion_tokens": 48, "total_tokens": 217}},
        ]
    )
    assert events == [TextDelta("You"), TextDelta("'re looking"), Usage(169, 48)]


def test_openai_chunks_followed_by_native_usage() -> None:
    """The glm/qwen capture: reasoning, incremental tool call, zero usage overwritten by the native event."""
    events = parse_stream(
        [
            {
                "choices": [
                    {"delta": {"content": "", "reasoning_content": None, "role": "assistant"}, "index": 0}
                ]
            },
            {"choices": [{"delta": {"content": None, "reasoning_content": "The user wants "}, "index": 0}]},
            {
                "choices": [
                    {
                        "delta": {
                            "content": None,
                            "tool_calls": [
                                {"function": {"arguments": "", "name": "add"}, "id": "call_538", "index": 0}
                            ],
                        },
                        "index": 0,
                    }
                ]
            },
            {
                "choices": [
                    {
                        "delta": {
                            "tool_calls": [{"function": {"arguments": '{"a": 2', "name": None}, "index": 0}]
                        }
                    }
                ]
            },
            {"choices": [{"delta": {"tool_calls": [{"function": {"arguments": ', "b": 3}'}, "index": 0}]}}]},
            {
                "choices": [
                    {"delta": {"reasoning_content": None}, "finish_reason": "tool_calls", "index": 0}
                ],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0},
            },
            {"response": "", "usage": {"prompt_tokens": 175, "completion_tokens": 17, "total_tokens": 192}},
        ]
    )
    assert events == [
        ReasoningDelta("The user wants "),
        ToolCallDelta(0, "add", ""),
        ToolCallDelta(0, None, '{"a": 2'),
        ToolCallDelta(0, None, ', "b": 3}'),
        Finish("tool_calls"),
        Usage(0, 0),
        Usage(175, 17),
    ]


def test_legacy_flat_tool_calls_get_sequential_indexes_and_string_arguments() -> None:
    events = parse_stream(
        [
            {"response": "", "tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]},
            {"response": "", "tool_calls": [{"name": "mul", "arguments": {"x": 3}}]},
        ]
    )
    assert events == [ToolCallDelta(0, "add", '{"a":1,"b":2}'), ToolCallDelta(1, "mul", '{"x":3}')]


def test_native_incremental_tool_calls_skip_the_null_sentinel() -> None:
    events = parse_stream(
        [
            {"tool_calls": [{"id": "x1", "type": "function", "index": 0, "function": {"name": "lookup"}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"q":'}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '"cats"}'}}]},
            {"tool_calls": [{"id": None, "type": None, "function": {"name": None, "arguments": ""}}]},
            {"finish_reason": "tool_calls"},
        ]
    )
    assert events == [
        ToolCallDelta(0, "lookup", ""),
        ToolCallDelta(0, None, '{"q":'),
        ToolCallDelta(0, None, '"cats"}'),
        Finish("tool_calls"),
    ]


def test_model_length_finish_maps_to_length() -> None:
    assert parse_stream([{"finish_reason": "model_length"}]) == [Finish("length")]


def test_gpt_oss_reasoning_field_in_deltas() -> None:
    events = parse_stream([{"choices": [{"delta": {"reasoning": "hmm", "content": "hi"}, "index": 0}]}])
    assert events == [ReasoningDelta("hmm"), TextDelta("hi")]


def test_malformed_event_is_a_protocol_error() -> None:
    parser = StreamParser("cf")
    with pytest.raises(Exception, match="not valid JSON"):
        list(parser.parse(b'{"response": "oops'))


def test_error_event_mid_stream_raises() -> None:
    with pytest.raises(UpstreamStatusError, match="failed mid-stream: boom"):
        parse_stream([{"errors": [{"code": 3040, "message": "boom"}]}])


# Non-streamed result shapes


def test_legacy_result_with_text_and_usage() -> None:
    events = list(
        result_events({"response": "Hello", "usage": {"prompt_tokens": 3, "completion_tokens": 1}}, "cf")
    )
    assert events == [TextDelta("Hello"), Usage(3, 1)]


def test_legacy_result_with_null_response_and_object_arguments() -> None:
    result = {
        "response": None,
        "tool_calls": [{"name": "get_weather", "arguments": {"location": "London"}}],
        "usage": {"prompt_tokens": 168, "completion_tokens": 23, "total_tokens": 191},
    }
    assert list(result_events(result, "cf")) == [
        ToolCallDelta(0, "get_weather", '{"location":"London"}'),
        Usage(168, 23),
    ]


def test_openai_form_tool_calls_in_legacy_result() -> None:
    result = {
        "tool_calls": [
            {
                "id": "chatcmpl-tool-b482",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location": "London"}'},
            }
        ],
        "usage": {"prompt_tokens": 179, "completion_tokens": 17, "total_tokens": 196},
    }
    assert next(iter(result_events(result, "cf"))) == ToolCallDelta(
        0, "get_weather", '{"location": "London"}'
    )


@pytest.mark.parametrize(
    ("response", "text"),
    [
        pytest.param(42, "42", id="number"),
        pytest.param(
            {"name": "India", "languages": ["Hindi"]}, '{"name":"India","languages":["Hindi"]}', id="object"
        ),
        pytest.param("plain", "plain", id="string"),
    ],
)
def test_odd_response_values_become_text(response: object, text: str) -> None:
    assert list(result_events({"response": response}, "cf")) == [TextDelta(text)]


def test_null_response_without_tool_calls_is_an_empty_answer() -> None:
    assert list(result_events({"response": None}, "cf")) == []


def test_bare_string_result() -> None:
    assert list(result_events("just text", "cf")) == [TextDelta("just text")]


def test_chat_completion_inside_result() -> None:
    result = {
        "id": "chatcmpl-2d65",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "reasoning_content": "\nOkay",
                    "content": "\n\n",
                    "tool_calls": [
                        {
                            "id": "chatcmpl-tool-c267",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"location": "London"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 169, "completion_tokens": 94, "total_tokens": 263},
    }
    assert list(result_events(result, "cf")) == [
        ReasoningDelta("\nOkay"),
        TextDelta("\n\n"),
        ToolCallDelta(0, "get_weather", '{"location": "London"}'),
        Finish("tool_calls"),
        Usage(169, 94),
    ]


def test_responses_style_output() -> None:
    result = {
        "output": [
            {"type": "reasoning", "content": [{"text": "thinking"}]},
            {"type": "message", "content": [{"text": "answer"}]},
        ]
    }
    assert list(result_events(result, "cf")) == [ReasoningDelta("thinking"), TextDelta("answer")]


def test_cached_tokens_are_kept() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 8}}
    assert list(result_events({"response": "x", "usage": usage}, "cf"))[-1] == Usage(10, 2, cached_tokens=8)


# Errors


@pytest.mark.parametrize(
    ("status", "code", "message", "client_status", "client_code"),
    [
        pytest.param(400, 5006, "AiError: Bad input", 400, None, id="5006-bad-input"),
        pytest.param(400, 5007, "No such model", 404, "model_not_found", id="5007-no-model"),
        pytest.param(403, 10000, "Authentication error", 403, "upstream_credentials_rejected", id="10000"),
        pytest.param(429, 3040, "No more data centers", 429, "rate_limit_exceeded", id="3040-capacity"),
        pytest.param(429, 3021, "per min rate reached", 429, "rate_limit_exceeded", id="3021-rpm"),
        pytest.param(429, 3036, "daily free allocation", 429, "insufficient_quota", id="3036-quota"),
        pytest.param(429, 4006, "daily free allocation", 429, "insufficient_quota", id="4006-quota"),
        pytest.param(500, None, "Internal", 502, "upstream_error", id="500"),
        pytest.param(503, None, "Unavailable", 502, "upstream_error", id="503"),
        pytest.param(408, 3007, "Request timeout", 504, "upstream_timeout", id="3007-timeout"),
        pytest.param(404, 7003, "Could not route", 502, "upstream_not_found", id="7003-no-route"),
    ],
)
def test_error_mapping(
    status: int, code: int | None, message: str, client_status: int, client_code: str
) -> None:
    error = status_error("cf", status, code, message, None)
    assert (error.status_code, error.code) == (client_status, client_code)
    assert "backend 'cf'" in error.message
    assert error.quota is (client_code == "insufficient_quota")
    assert error.client_fault is (client_status == 400)


# Request narrowing


def request(**fields: Any) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content="hi")], max_tokens=10, **fields)


def test_values_are_clamped_into_every_schema_range() -> None:
    body = upstream_body(
        request(top_p=0.0, frequency_penalty=-1.5, presence_penalty=2.0, top_k=80, temperature=1.9),
        stream=False,
    )
    assert (body.top_p, body.frequency_penalty, body.presence_penalty, body.top_k, body.temperature) == (
        0.001,
        0.0,
        2.0,
        50,
        1.9,
    )


@pytest.mark.parametrize(("seed", "sent"), [(0, 9_999_999_999), (-1, 9_999_999_998), (5, 5), (10**12, 100)])
def test_seeds_map_deterministically_into_range(seed: int, sent: int) -> None:
    assert upstream_body(request(seed=seed), stream=False).seed == sent


def test_tool_schema_is_completed_for_the_messages_schema() -> None:
    tool = Tool(
        FunctionDefinition(
            "f",
            "d",
            {
                "type": "object",
                "properties": {"a": {"type": ["string", "null"]}, "b": {"anyOf": [{"type": "integer"}]}},
            },
        )
    )
    body = upstream_body(request(tools=[tool]), stream=False)
    assert body.tools is not msgspec.UNSET
    properties = body.tools[0].function.parameters["properties"]
    assert properties["a"] == {"type": "string", "description": "a"}
    assert properties["b"]["type"] == "integer"


def test_tool_choice_none_withholds_tools_and_auto_is_not_sent() -> None:
    tool = Tool(FunctionDefinition("f", "d", {"type": "object", "properties": {}}))
    assert upstream_body(request(tools=[tool], tool_choice="none"), stream=False).tools is msgspec.UNSET
    assert upstream_body(request(tools=[tool], tool_choice="auto"), stream=False).tool_choice is msgspec.UNSET


def test_content_longer_than_the_schema_allows_is_a_client_error() -> None:
    long = ChatRequest(messages=[Message(role="user", content="x" * 131_073)], max_tokens=1)
    with pytest.raises(UpstreamStatusError) as info:
        upstream_body(long, stream=False)
    assert info.value.status_code == 400
    assert info.value.client_fault


def test_a_named_tool_choice_offers_only_that_tool() -> None:
    tools = [Tool(FunctionDefinition(name, "d", {"type": "object", "properties": {}})) for name in ("a", "b")]
    body = upstream_body(request(tools=tools, tool_choice=NamedToolChoice(NamedFunction("b"))), stream=False)
    assert body.tools is not msgspec.UNSET
    assert [tool.function.name for tool in body.tools] == ["b"]
    assert body.tool_choice == NamedToolChoice(NamedFunction("b"))
    required = upstream_body(request(tools=tools, tool_choice="required"), stream=False)
    assert required.tools is not msgspec.UNSET
    assert len(required.tools) == 2


@pytest.mark.parametrize(
    ("effort", "sent"), [("none", "low"), ("minimal", "low"), ("high", "high"), ("xhigh", "high")]
)
def test_reasoning_effort_is_narrowed_to_what_workers_ai_accepts(effort: str, sent: str) -> None:
    assert upstream_body(request(reasoning_effort=effort), stream=False).reasoning_effort == sent


def test_gateway_only_fields_are_never_sent() -> None:
    body = msgspec.json.decode(
        msgspec.json.encode(upstream_body(request(stop=["x"], n=2, parallel_tool_calls=False), stream=True))
    )
    assert body == {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, "stream": True}


def test_prompt_body_is_the_prompt_schema() -> None:
    prompt = PromptRequest(
        prompt="Once upon",
        max_tokens=16,
        stream=True,
        extensions=Extensions(raw=True, lora="my-adapter"),
        top_p=0.0,
        seed=0,
        stop=["\n"],
    )
    assert msgspec.json.decode(msgspec.json.encode(prompt_body(prompt))) == {
        "prompt": "Once upon",
        "max_tokens": 16,
        "stream": True,
        "top_p": 0.001,
        "seed": 9_999_999_999,
        "lora": "my-adapter",
        "raw": True,
    }


def test_prompt_longer_than_the_schema_allows_is_a_client_error() -> None:
    with pytest.raises(UpstreamStatusError) as info:
        prompt_body(PromptRequest(prompt="x" * 131_073, max_tokens=1))
    assert (info.value.status_code, info.value.param, info.value.client_fault) == (400, "prompt", True)
