"""OpenAI request → canonical request: what is mapped, and what is refused with a 400 naming the parameter."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from adapters.canonical import ImagePart, NamedToolChoice, TextPart
from gateway.chat import decode_chat_request
from gateway.config import ModelConfig, Target
from gateway.errors import InvalidRequestError
from gateway.translate import Translated, translate

MODEL = ModelConfig(targets=[Target(backend="b", model="m")], default_max_tokens=777)
VISION = ModelConfig(targets=[Target(backend="b", model="m")], vision=True)


def run(model: ModelConfig = MODEL, **body: Any) -> Translated:
    payload = {"model": "pub", "messages": [{"role": "user", "content": "hi"}], **body}
    return translate(decode_chat_request(json.dumps(payload).encode()), public_model="pub", model=model)


def refused(**body: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        run(**body)
    return info.value


def test_roles_and_content_flattening() -> None:
    messages = [
        {"role": "developer", "content": "be brief"},
        {"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "user", "content": [{"type": "text", "text": "question"}]},
    ]
    request = run(messages=messages).request
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "be brief"),
        ("system", "a\nb"),
        ("user", "question"),
    ]


def test_tool_history_is_carried_with_names_and_empty_assistant_content() -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "wx", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"t": 20}'},
    ]
    request = run(messages=messages).request
    assistant, tool = request.messages[1], request.messages[2]
    assert assistant.content == ""
    assert assistant.tool_calls is not msgspec.UNSET
    assert assistant.tool_calls[0].id == "call_1"
    assert (tool.role, tool.tool_call_id, tool.name, tool.content) == ("tool", "call_1", "wx", '{"t": 20}')


def test_legacy_functions_become_tools_and_function_messages_become_tool_results() -> None:
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "function", "name": "f", "content": "42"},
    ]
    result = run(
        messages=messages,
        functions=[{"name": "f", "parameters": {"type": "object", "properties": {}}}],
        function_call={"name": "f"},
    )
    assert result.legacy_functions
    assert result.single_tool_call
    request = result.request
    assert request.tools is not msgspec.UNSET
    assert request.tools[0].function.name == "f"
    assert request.tool_choice == NamedToolChoice(request.tool_choice.function)  # type: ignore[union-attr]
    call_id = request.messages[1].tool_calls[0].id  # type: ignore[index]
    assert request.messages[2].tool_call_id == call_id
    assert request.messages[2].role == "tool"


def test_tools_get_a_description_and_default_parameters() -> None:
    tool = run(tools=[{"type": "function", "function": {"name": "ping"}}]).request.tools[0]  # type: ignore[index]
    assert tool.function.description == "ping"
    assert tool.function.parameters == {"type": "object", "properties": {}}


def test_max_tokens_always_set() -> None:
    assert run().request.max_tokens == 777
    assert run(max_tokens=5).request.max_tokens == 5
    assert run(max_completion_tokens=9, max_tokens=5).request.max_tokens == 9


def test_json_schema_is_unwrapped_to_the_bare_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = run(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}).request
    assert fmt.response_format is not msgspec.UNSET
    assert fmt.response_format.type == "json_schema"
    assert fmt.response_format.json_schema == schema
    assert run(response_format={"type": "text"}).request.response_format is msgspec.UNSET


def test_extensions_pass_through() -> None:
    request = run(top_k=5, repetition_penalty=1.1, lora="my-lora", raw=True, seed=3).request
    assert (request.top_k, request.repetition_penalty, request.lora, request.raw, request.seed) == (
        5,
        1.1,
        "my-lora",
        True,
        3,
    )


def test_images_need_a_vision_model() -> None:
    content = [
        {"type": "text", "text": "what is it"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
    ]
    error = refused(messages=[{"role": "user", "content": content}])
    assert error.param == "messages[0].content"
    assert "does not accept images" in error.message
    parts = run(VISION, messages=[{"role": "user", "content": content}]).request.messages[0].content
    assert isinstance(parts, list)
    assert isinstance(parts[0], TextPart)
    assert isinstance(parts[1], ImagePart)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({"n": 2}, "n", id="n"),
        pytest.param({"logprobs": True}, "logprobs", id="logprobs"),
        pytest.param({"top_logprobs": 3, "logprobs": False}, "top_logprobs", id="top_logprobs"),
        pytest.param({"logit_bias": {"1": 5}}, "logit_bias", id="logit_bias"),
        pytest.param({"modalities": ["text", "audio"]}, "modalities", id="audio"),
        pytest.param(
            {"stream_options": {"include_usage": True}}, "stream_options", id="stream_options-no-stream"
        ),
        pytest.param({"tool_choice": "auto"}, "tool_choice", id="tool_choice-without-tools"),
        pytest.param(
            {
                "tools": [{"type": "function", "function": {"name": "a"}}],
                "tool_choice": {"type": "function", "function": {"name": "b"}},
            },
            "tool_choice",
            id="unknown-named-tool",
        ),
        pytest.param({"stop": [""]}, "stop", id="empty-stop"),
    ],
)
def test_refusals_name_the_parameter(body: dict[str, Any], param: str) -> None:
    error = refused(**body)
    assert error.param == param
    assert error.status_code == 400


@pytest.mark.parametrize(
    ("raw", "param", "fragment"),
    [
        pytest.param(
            b'{"messages": [{"role": "user", "content": "x"}]}',
            "model",
            "Missing required parameter",
            id="missing-model",
        ),
        pytest.param(b'{"model": "x"}', "messages", "Missing required parameter", id="missing-messages"),
        pytest.param(b'{"model": "x", "messages": "hi"}', "messages", "Invalid type", id="messages-type"),
        pytest.param(b'{"model": "x", "messages": []}', "messages", "Invalid value", id="empty-messages"),
        pytest.param(
            b'{"model": "x", "messages": [{"role": "robot", "content": "hi"}]}',
            "messages[0].role",
            "Invalid value",
            id="bad-role",
        ),
        pytest.param(
            b'{"model": "x", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}',
            "temperature",
            "Invalid type",
            id="temperature-type",
        ),
        pytest.param(
            b'{"model": "x", "messages": [{"role": "user", "content": "hi"}], "foo": 1}',
            "foo",
            "Unrecognized request argument",
            id="unknown-argument",
        ),
        pytest.param(b"[1, 2]", None, "must be a JSON object", id="not-an-object"),
        pytest.param(b'{"model": ', None, "could not parse the JSON body", id="malformed"),
    ],
)
def test_decode_errors_name_the_field(raw: bytes, param: str | None, fragment: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        decode_chat_request(raw)
    assert info.value.param == param
    assert fragment in info.value.message


def test_stream_options_with_stream_turns_on_usage() -> None:
    assert run(stream=True, stream_options={"include_usage": True}).include_usage
    assert not run(stream=True).include_usage
