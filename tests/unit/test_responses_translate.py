"""Responses request → chat request → canonical request: the bridge of contract §2.1, and its errors
named in Responses terms."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapters.canonical import NamedToolChoice
from gateway.api.chat import validation_error
from gateway.config import ModelConfig, Target
from gateway.errors import InvalidRequestError
from gateway.openai.responses_api import UnsupportedItemError, decode_items, responses_request_decoder
from gateway.translation.responses import translate_responses

MODEL = ModelConfig(targets=[Target(backend="b", model="m")])
TOOL: Any = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": True}


def bridge(model: ModelConfig = MODEL, **body: Any) -> Any:
    payload = responses_request_decoder.decode(json.dumps({"model": "m", **body}))
    raw = payload.input if isinstance(payload.input, list) else [{"role": "user", "content": payload.input}]
    try:
        items = decode_items(raw)
    except Exception as exc:
        if isinstance(exc, UnsupportedItemError):
            raise
        raise validation_error(str(exc)) from None
    origins = [f"input[{i}]" for i in range(len(items))]
    _, translated = translate_responses(payload, items, origins, public_model="m", model=model)
    return translated


def test_instructions_and_a_replayed_agent_turn() -> None:
    translated = bridge(
        instructions="Be brief.",
        tools=[TOOL],
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "use the tool"}],
            },
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}],
            },
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_a",
                "name": "get_weather",
                "arguments": "{}",
            },
            {"type": "function_call", "call_id": "call_b", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
            {
                "type": "function_call_output",
                "call_id": "call_b",
                "output": [{"type": "input_text", "text": "rain"}],
            },
        ],
    )
    messages = translated.request.messages
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "tool"]
    assert messages[0].content == "Be brief."
    assistant = messages[2]
    assert assistant.content == "Let me check."
    assert assistant.reasoning == "use the tool"
    assert [c.id for c in assistant.tool_calls] == ["call_a", "call_b"]
    assert (messages[3].tool_call_id, messages[3].content, messages[3].name) == (
        "call_a",
        "sunny",
        "get_weather",
    )
    assert messages[4].content == "rain"
    assert translated.request.tools[0].function.name == "get_weather"


def test_text_format_tool_choice_and_limits() -> None:
    schema = {"type": "object", "properties": {"capital": {"type": "string"}}}
    translated = bridge(
        input="hi",
        tools=[TOOL, {**TOOL, "name": "get_time"}],
        tool_choice={
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "get_time"}],
        },
        text={"format": {"type": "json_schema", "name": "country", "schema": schema, "strict": True}},
        max_output_tokens=77,
        reasoning={"effort": "max"},
        stream=True,
    )
    request = translated.request
    assert [t.function.name for t in request.tools] == ["get_time"]
    assert request.tool_choice == "required"
    assert request.response_format.json_schema == schema
    assert request.max_tokens == 77
    assert request.reasoning_effort is not None
    assert request.stream is True
    named = bridge(input="hi", tools=[TOOL], tool_choice={"type": "function", "name": "get_weather"})
    assert named.request.tool_choice == NamedToolChoice(named.request.tool_choice.function)
    assert named.recover_tools == ("get_weather",)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "image_url": "http://x/a.png"}]}
                ]
            },
            "input[0].content",
        ),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        (
            {"input": "hi", "tools": [TOOL], "tool_choice": {"type": "function", "name": "nope"}},
            "tool_choice",
        ),
        ({"input": "hi", "include": ["nonsense"]}, "include[0]"),
        ({"input": "hi", "include": ["message.output_text.logprobs"]}, "include"),
        ({"input": "hi", "conversation": "conv_1"}, "conversation"),
        (
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_file", "file_id": "f"}],
                    }
                ]
            },
            "input[0].output",
        ),
        (
            {"input": [{"role": "assistant", "content": "a"}, {"role": "user", "content": 3}]},
            "input[1].content",
        ),
    ],
)
def test_errors_name_the_responses_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        bridge(**body)
    assert info.value.param == param, info.value.message


def test_json_mode_refused_names_text_format() -> None:
    no_json = ModelConfig(targets=[Target(backend="b", model="m")], json_mode=False)
    with pytest.raises(InvalidRequestError) as info:
        bridge(no_json, input="hi", text={"format": {"type": "json_object"}})
    assert info.value.param == "text.format"
    assert "'text.format'" in info.value.message


def test_unsupported_item_types_are_named() -> None:
    with pytest.raises(UnsupportedItemError) as info:
        bridge(input=[{"role": "user", "content": "a"}, {"type": "web_search_call", "id": "ws_1"}])
    assert (info.value.where, info.value.kind) == ("input[1]", "web_search_call")


def test_hosted_tools_are_dropped_for_a_lenient_model() -> None:
    lenient = ModelConfig(targets=[Target(backend="b", model="m")], drop_unsupported=True)
    translated = bridge(lenient, input="hi", tools=[{"type": "web_search"}, TOOL])
    assert [t.function.name for t in translated.request.tools] == ["get_weather"]
