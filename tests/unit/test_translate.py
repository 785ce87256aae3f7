"""OpenAI request → canonical request: what is mapped, and what is refused with a 400 naming the parameter."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from adapters.canonical import ChatRequest, ImagePart, NamedToolChoice, PromptRequest, TextPart
from gateway.api.chat import decode_chat_request, decode_request
from gateway.config import ModelConfig, Target
from gateway.errors import InvalidRequestError
from gateway.openai.requests import completion_request_decoder
from gateway.translation.translate import Translated, translate, translate_completion

MODEL = ModelConfig(targets=[Target(backend="b", model="m")], default_max_tokens=777)
VISION = ModelConfig(targets=[Target(backend="b", model="m")], vision=True)


def run(model: ModelConfig = MODEL, **body: Any) -> Translated[ChatRequest]:
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
    assert (
        request.top_k,
        request.repetition_penalty,
        request.extensions.lora,
        request.extensions.raw,
        request.seed,
    ) == (
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
        pytest.param({"prediction": {}}, "prediction", id="prediction"),
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


# n, capabilities and drop_unsupported

DROPPING = ModelConfig(targets=[Target(backend="b", model="m")], drop_unsupported=True)
NO_JSON = ModelConfig(targets=[Target(backend="b", model="m")], json_mode=False)
WEATHER: Any = [
    {"type": "function", "function": {"name": "wx"}},
    {"type": "function", "function": {"name": "tz"}},
]


def run_native(native: frozenset[str], **body: Any) -> Translated[ChatRequest]:
    payload = {"model": "pub", "messages": [{"role": "user", "content": "hi"}], **body}
    return translate(
        decode_chat_request(json.dumps(payload).encode()), public_model="pub", model=MODEL, native=native
    )


def test_n_is_sent_upstream_only_to_backends_that_generate_choices() -> None:
    fanned = run(n=3)
    assert (fanned.n, fanned.request.n) == (3, msgspec.UNSET)
    native = run_native(frozenset({"n"}), n=3)
    assert (native.n, native.request.n) == (3, 3)
    greedy = run_native(frozenset({"n"}), n=3, temperature=0)
    assert greedy.request.n is msgspec.UNSET  # vLLM refuses n > 1 when greedy: one call per choice


def test_logit_bias_goes_only_to_backends_that_honour_it() -> None:
    assert refused(logit_bias={"50256": -100}).param == "logit_bias"
    assert run_native(frozenset({"logit_bias"}), logit_bias={"50256": -100}).request.logit_bias == {
        "50256": -100
    }


def test_refusal_names_the_parameter_and_the_model() -> None:
    error = refused(logprobs=True)
    assert error.code == "unsupported_parameter"
    assert "'pub'" in error.message
    assert "logprobs" in error.message


def test_json_mode_is_refused_on_models_without_it() -> None:
    with pytest.raises(InvalidRequestError) as info:
        run(NO_JSON, response_format={"type": "json_object"})
    assert info.value.param == "response_format"
    assert "'pub'" in info.value.message
    assert run(NO_JSON, response_format={"type": "text"}).request.response_format is msgspec.UNSET


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({"logprobs": True, "top_logprobs": 2}, "logprobs", id="logprobs"),
        pytest.param({"logit_bias": {"1": 5}}, "logit_bias", id="logit_bias"),
        pytest.param({"modalities": ["text", "audio"], "audio": {"voice": "x"}}, "audio", id="audio"),
        pytest.param({"response_format": {"type": "json_object"}}, "response_format", id="response_format"),
        pytest.param(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is it"},
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                            {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}},
                        ],
                    }
                ]
            },
            "messages[0].content",
            id="image-and-audio-parts",
        ),
    ],
)
def test_drop_unsupported_drops_instead_of_refusing(body: dict[str, Any], param: str) -> None:
    model = ModelConfig(targets=[Target(backend="b", model="m")], drop_unsupported=True, json_mode=False)
    result = run(model, **body)
    assert param in result.dropped
    request = result.request
    assert request.logit_bias is msgspec.UNSET
    assert request.response_format is msgspec.UNSET
    assert request.messages[0].content in ("hi", "what is it")


def test_nothing_is_dropped_from_a_plain_request() -> None:
    assert run(DROPPING).dropped == ()


@pytest.mark.parametrize(
    ("choice", "recover"),
    [
        pytest.param({"type": "function", "function": {"name": "tz"}}, ("tz",), id="named"),
        pytest.param("required", ("wx", "tz"), id="required"),
        pytest.param("auto", (), id="auto"),
        pytest.param("none", (), id="none"),
    ],
)
def test_forced_tool_choices_allow_recovering_calls_written_as_text(
    choice: Any, recover: tuple[str, ...]
) -> None:
    assert run(tools=WEATHER, tool_choice=choice).recover_tools == recover


# Legacy completions


def complete(
    model: ModelConfig = MODEL, native: frozenset[str] = frozenset(), **body: Any
) -> Translated[PromptRequest]:
    payload = {"model": "pub", "prompt": "Once upon a time", **body}
    return translate_completion(
        decode_request(completion_request_decoder, json.dumps(payload).encode()),
        public_model="pub",
        model=model,
        native=native,
    )


def refused_completion(**body: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        complete(**body)
    return info.value


def test_completion_maps_onto_the_prompt_schema() -> None:
    result = complete(
        max_tokens=30,
        temperature=0.5,
        top_p=0.9,
        seed=7,
        stop="\n",
        presence_penalty=-0.5,
        raw=True,
        lora="x",
    )
    request = result.request
    assert request.prompt == "Once upon a time"
    assert (request.max_tokens, request.temperature, request.top_p, request.seed) == (30, 0.5, 0.9, 7)
    assert (request.stop, request.presence_penalty, request.extensions.raw, request.extensions.lora) == (
        ["\n"],
        -0.5,
        True,
        "x",
    )
    assert result.stop == ["\n"]
    assert (result.n, result.prompts, result.samples, result.echo) == (1, ("Once upon a time",), 1, False)


def test_completion_max_tokens_defaults_to_openais_16() -> None:
    assert complete().request.max_tokens == 16


def test_several_prompts_and_samples() -> None:
    result = complete(prompt=["a", "b"], n=3, echo=True)
    assert (result.n, result.samples, result.prompts, result.echo) == (6, 3, ("a", "b"), True)
    assert result.request.prompt == "a"
    assert result.request.n is msgspec.UNSET
    native = complete(native=frozenset({"n"}), prompt=["a", "b"], n=3)
    assert (native.request.prompt, native.request.n) == (["a", "b"], 3)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({"suffix": "the end"}, "suffix", id="suffix"),
        pytest.param({"logprobs": 0}, "logprobs", id="logprobs"),
        pytest.param({"best_of": 3}, "best_of", id="best_of-above-n"),
        pytest.param({"best_of": 1, "n": 2}, "best_of", id="best_of-below-n"),
        pytest.param({"logit_bias": {"1": 3}}, "logit_bias", id="logit_bias"),
        pytest.param({"prompt": [1, 2, 3]}, "prompt", id="token-ids"),
        pytest.param({"prompt": [[1, 2], [3]]}, "prompt", id="token-id-lists"),
        pytest.param({"prompt": ""}, "prompt", id="empty"),
        pytest.param({"prompt": []}, "prompt", id="empty-list"),
        pytest.param({"prompt": ["a", 1]}, "prompt", id="mixed"),
        pytest.param(
            {"stream_options": {"include_usage": True}}, "stream_options", id="stream_options-no-stream"
        ),
    ],
)
def test_completion_refusals_name_the_parameter(body: dict[str, Any], param: str) -> None:
    error = refused_completion(**body)
    assert (error.param, error.status_code) == (param, 400)


def test_completion_drop_unsupported() -> None:
    result = complete(DROPPING, suffix="x", logprobs=2, best_of=4)
    assert set(result.dropped) == {"suffix", "logprobs", "best_of"}
    assert complete(suffix="").dropped == ()  # an empty suffix asks for nothing


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        pytest.param(b'{"model": "m"}', "prompt", id="missing-prompt"),
        pytest.param(b'{"model": "m", "prompt": "x", "max_tokens": 0}', "max_tokens", id="max_tokens-zero"),
        pytest.param(b'{"model": "m", "prompt": "x", "messages": []}', "messages", id="chat-field"),
        pytest.param(b'{"model": "m", "prompt": "x", "n": 200}', "n", id="n-too-large"),
    ],
)
def test_completion_decode_errors_name_the_field(raw: bytes, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        decode_request(completion_request_decoder, raw)
    assert info.value.param == param
