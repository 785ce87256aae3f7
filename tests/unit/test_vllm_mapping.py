"""vLLM answers → canonical events, errors → OpenAI terms, and the request body vLLM receives.

Fixtures are the shapes documented in the vLLM contract notes (captures and source reading).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from adapters.canonical import (
    ChatRequest,
    Extensions,
    Finish,
    FunctionDefinition,
    Indexed,
    Message,
    NamedFunction,
    NamedToolChoice,
    PromptRequest,
    ReasoningDelta,
    ResponseFormat,
    TextDelta,
    Tool,
    ToolCallDelta,
    Usage,
)
from adapters.errors import UpstreamProtocolError, UpstreamStatusError
from adapters.upstream import Fault
from adapters.vllm.answers import (
    answer_events,
    chunk_events,
    multi_answer_events,
    multi_chunk_events,
    multi_text_chunk_events,
    text_answer_events,
    text_chunk_events,
)
from adapters.vllm.errors import ERRORS, parse_error_body
from adapters.vllm.request import completion_body, upstream_body


def status_error(
    backend: str,
    status: int,
    message: str,
    upstream_type: str | None,
    param: str | None,
    retry_after: float | None,
    input_param: str = "messages",
) -> UpstreamStatusError:
    """vLLM's error table applied to what an error body said."""
    fault = Fault(message, type=upstream_type, param=param)
    return ERRORS.error(backend, status, fault, retry_after, input_param=input_param)


TOOL = Tool(FunctionDefinition("get_weather", "Weather", {"type": "object", "properties": {}}))


def request(**fields: Any) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content="hi")], max_tokens=16, **fields)


def body_of(req: ChatRequest) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(msgspec.json.encode(upstream_body(req, "served/model")))
    return decoded


def chunks(*payloads: dict[str, Any]) -> list[object]:
    return [event for p in payloads for event in chunk_events(json.dumps(p).encode(), "vllm")]


def choice(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, **extra}],
    }


# Request


def test_minimal_body_has_only_what_was_set() -> None:
    assert body_of(request()) == {
        "model": "served/model",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 16,
    }


def test_streams_always_ask_for_usage() -> None:
    body = body_of(request(stream=True))
    assert (body["stream"], body["stream_options"]) == (True, {"include_usage": True})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({"top_p": 0.0}, {"top_p": 1e-6}, id="top_p-zero"),
        pytest.param({"top_p": 0.5}, {"top_p": 0.5}, id="top_p-kept"),
        pytest.param({"top_k": 0}, {}, id="top_k-off"),
        pytest.param({"top_k": 40}, {"top_k": 40}, id="top_k"),
        pytest.param({"seed": -(2**70)}, {"seed": (-(2**70)) % (2**63 - 1)}, id="seed-out-of-int64"),
        pytest.param({"seed": -3}, {"seed": -3}, id="seed-negative-in-range"),
        pytest.param({"repetition_penalty": 0.0}, {}, id="repetition-penalty-zero"),
        pytest.param({"repetition_penalty": 1.1}, {"repetition_penalty": 1.1}, id="repetition-penalty"),
        pytest.param({"reasoning_effort": "xhigh"}, {"reasoning_effort": "high"}, id="effort-xhigh"),
        pytest.param({"reasoning_effort": "medium"}, {"reasoning_effort": "medium"}, id="effort-medium"),
        pytest.param({"frequency_penalty": -2.0}, {"frequency_penalty": -2.0}, id="negative-penalty"),
        pytest.param({"stop": ["###"]}, {"stop": ["###"]}, id="stop"),
    ],
)
def test_values_are_narrowed_to_what_vllm_accepts(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    body = body_of(request(**fields))
    extra = {k: v for k, v in body.items() if k not in ("model", "messages", "max_tokens")}
    assert extra == expected


def test_json_mode_uses_the_openai_envelope() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert body_of(request(response_format=ResponseFormat("json_schema", json_schema=schema)))[
        "response_format"
    ] == {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    assert body_of(request(response_format=ResponseFormat("json_object")))["response_format"] == {
        "type": "json_object"
    }


def test_tools_and_choices_in_openai_form() -> None:
    named = NamedToolChoice(NamedFunction("get_weather"))
    body = body_of(request(tools=[TOOL], tool_choice=named))
    assert body["tools"] == [
        {
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": TOOL.function.parameters,
            },
            "type": "function",
        }
    ]
    assert body["tool_choice"] == {"function": {"name": "get_weather"}, "type": "function"}
    assert "tools" not in body_of(request(tools=[TOOL], tool_choice="none"))


@pytest.mark.parametrize("field", ["lora", "raw"])
def test_workers_ai_extensions_are_client_faults(field: str) -> None:
    value: Any = "adapter" if field == "lora" else True
    with pytest.raises(UpstreamStatusError) as info:
        upstream_body(request(extensions=Extensions(**{field: value})), "m")
    assert (info.value.client_fault, info.value.code, info.value.param) == (
        True,
        "unsupported_parameter",
        field,
    )


# Streams


def test_role_chunk_then_finish_on_the_last_content_chunk_then_usage() -> None:
    events = chunks(
        {**choice({"role": "assistant", "content": ""}), "prompt_token_ids": None},
        choice({"content": "Hi"}, token_ids=None),
        choice({"content": "!"}, "stop", stop_reason=None, token_ids=None),
        {
            "id": "x",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": {"prompt_tokens": 12, "total_tokens": 20, "completion_tokens": 8},
        },
    )
    assert events == [TextDelta("Hi"), TextDelta("!"), Finish("stop"), Usage(12, 8)]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_under_either_name(field: str) -> None:
    events = chunks(choice({"role": "assistant", "content": "", field: None}), choice({field: "Let"}))
    assert events == [ReasoningDelta("Let")]


def test_tool_call_header_without_arguments_then_fragments() -> None:
    """Capture A (qwen3, named tool) and capture B's finish chunk with `content: ""`."""
    events = chunks(
        choice({"role": "assistant", "content": "", "reasoning_content": None}),
        choice(
            {
                "reasoning_content": None,
                "tool_calls": [
                    {
                        "id": "chatcmpl-tool-ae05",
                        "type": "function",
                        "index": 0,
                        "function": {"name": "query-count"},
                    }
                ],
            }
        ),
        choice({"tool_calls": [{"index": 0, "function": {"arguments": '{"query": "'}}]}),
        choice({"tool_calls": [{"index": 0, "function": {"arguments": 'x"}'}}]}),
        choice({"content": ""}, "tool_calls", stop_reason=None),
    )
    assert events == [
        ToolCallDelta(0, "query-count", ""),
        ToolCallDelta(0, None, '{"query": "'),
        ToolCallDelta(0, None, 'x"}'),
        Finish("tool_calls"),
    ]


def test_empty_closing_arguments_delta_is_dropped() -> None:
    events = chunks(choice({"tool_calls": [{"index": 0, "function": {"arguments": ""}}]}, "tool_calls"))
    assert events == [Finish("tool_calls")]


def test_continuous_usage_on_every_chunk_keeps_the_last() -> None:
    events = chunks(
        {
            **choice({"content": "a"}),
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        },
        {**choice({"content": "b"}, "length"), "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    )
    assert events == [TextDelta("a"), Usage(3, 1), TextDelta("b"), Finish("length"), Usage(3, 2)]


@pytest.mark.parametrize("reason", ["abort", "error"])
def test_aborted_answers_are_never_a_normal_end(reason: str) -> None:
    with pytest.raises(UpstreamProtocolError) as info:
        chunks(choice({"content": "a"}, reason))
    assert info.value.code == "upstream_aborted"


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b'{"choices": [{"delta": {"content": "oops', id="truncated"),
        pytest.param(b'{"choices": [{"delta": {"content": 42}}]}', id="wrong-type"),
        pytest.param(b'{"choices": "nope"}', id="choices-not-a-list"),
        pytest.param(b'{"choices":[{"delta":{"content":"\xff\xfe"}}]}', id="invalid-utf8"),
    ],
)
def test_malformed_chunks_are_protocol_errors(payload: bytes) -> None:
    with pytest.raises(UpstreamProtocolError) as info:
        chunk_events(payload, "vllm")
    assert info.value.code == "upstream_malformed"


@pytest.mark.parametrize(
    ("payload", "client_fault"),
    [
        pytest.param(
            {"error": {"message": "boom", "type": "InternalServerError", "param": None, "code": 500}},
            False,
            id="nested-500",
        ),
        pytest.param(
            {"object": "error", "message": "bad", "type": "BadRequestError", "param": None, "code": 400},
            True,
            id="flat-400",
        ),
        pytest.param({"error": "Something failed"}, False, id="string"),
    ],
)
def test_in_stream_errors_are_raised(payload: dict[str, Any], client_fault: bool) -> None:
    with pytest.raises(UpstreamStatusError) as info:
        chunk_events(json.dumps(payload).encode(), "vllm")
    assert info.value.client_fault is client_fault
    assert "backend 'vllm'" in info.value.message


# Whole answers


def test_v011_body_with_empty_tool_calls_and_null_reasoning() -> None:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello",
                    "refusal": None,
                    "tool_calls": [],
                    "reasoning_content": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": None,
                "token_ids": None,
            }
        ],
        "usage": {
            "prompt_tokens": 5,
            "total_tokens": 7,
            "completion_tokens": 2,
            "prompt_tokens_details": None,
        },
        "prompt_logprobs": None,
        "kv_transfer_params": None,
    }
    assert answer_events(json.dumps(body).encode(), "vllm") == [
        TextDelta("Hello"),
        Finish("stop"),
        Usage(5, 2),
    ]


def test_v033_tool_call_body_with_reasoning_and_cached_tokens() -> None:
    """The vLLM 0.27 capture from the contract notes, trimmed."""
    body = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "chatcmpl-tool-8364",
                            "type": "function",
                            "function": {"name": "say", "arguments": '{"text": "привет"}'},
                        }
                    ],
                    "reasoning": "thinking",
                },
                "finish_reason": "tool_calls",
                "routed_experts": None,
            }
        ],
        "usage": {
            "prompt_tokens": 311,
            "total_tokens": 411,
            "completion_tokens": 100,
            "prompt_tokens_details": {"cached_tokens": 300},
        },
    }
    assert answer_events(json.dumps(body).encode(), "vllm") == [
        ReasoningDelta("thinking"),
        ToolCallDelta(0, "say", '{"text": "привет"}'),
        Finish("tool_calls"),
        Usage(311, 100, cached_tokens=300),
    ]


def test_answer_without_choices_is_malformed() -> None:
    with pytest.raises(UpstreamProtocolError):
        answer_events(b'{"id": "x", "choices": []}', "vllm")


# Errors


CONTEXT_MESSAGES = [
    "This model's maximum context length is 4096 tokens. However, your request has 5000 input tokens. "
    "Please reduce the length of the input messages. None",
    "'max_tokens' or 'max_completion_tokens' is too large: 1000. This model's maximum context length is "
    "4096 tokens and your request has 3500 input tokens (1000 > 4096 - 3500). None",
    "You passed 1015 input tokens and requested 10 output tokens. However, the model's context length is "
    "only 1024 tokens, resulting in a maximum input length of 1014 tokens. Please reduce the length of the "
    "input prompt. (parameter=input_tokens, value=1015)",
    "Input length (37184) exceeds model's maximum context length (32768).",
    "This model's maximum context length is 2048 tokens. However, you requested 2100 tokens (2000 in the "
    "messages, 100 in the completion). Please reduce the length of the messages or completion.",
]


@pytest.mark.parametrize("message", CONTEXT_MESSAGES)
def test_every_context_length_wording_is_context_length_exceeded(message: str) -> None:
    error = status_error("vllm", 400, message, "BadRequestError", "input_tokens", None)
    assert (error.status_code, error.code, error.param) == (400, "context_length_exceeded", "messages")
    assert error.client_fault
    assert not error.message.endswith("None")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b'{"error":"Unauthorized"}', ("Unauthorized", None, None, None), id="unauthorized"),
        pytest.param(
            b'{"object":"error","message":"m","type":"BadRequestError","param":null,"code":400}',
            ("m", "BadRequestError", None, 400),
            id="flat",
        ),
        pytest.param(
            b'{"error":{"message":"m","type":"BadRequestError","param":"body.temperature","code":400}}',
            ("m", "BadRequestError", "body.temperature", 400),
            id="nested",
        ),
        pytest.param(b'{"detail":"Not Found"}', ("Not Found", None, None, None), id="fastapi"),
        pytest.param(b"upstream connect error", ("upstream connect error", None, None, None), id="text"),
    ],
)
def test_error_shapes(raw: bytes, expected: tuple[Any, ...]) -> None:
    info = parse_error_body(raw)
    assert (info.message, info.type, info.param, info.status) == expected


@pytest.mark.parametrize(
    ("status", "upstream_type", "message", "expected"),
    [
        pytest.param(401, None, "Unauthorized", (401, "upstream_credentials_rejected", False), id="401"),
        pytest.param(
            404,
            "NotFoundError",
            "The model `x` does not exist.",
            (404, "model_not_found", False),
            id="404-model",
        ),
        pytest.param(404, None, "Not Found", (502, "upstream_not_found", False), id="404-route"),
        pytest.param(429, None, "Too Many Requests", (429, "rate_limit_exceeded", False), id="429"),
        pytest.param(408, None, "Request Timeout", (504, "upstream_timeout", False), id="408"),
        pytest.param(503, "ServiceUnavailableError", "busy", (503, "upstream_overloaded", False), id="503"),
        pytest.param(500, "InternalServerError", "boom", (502, "upstream_error", False), id="500"),
        pytest.param(413, None, "too large", (413, "request_too_large", True), id="413"),
        pytest.param(422, "UnprocessableEntityError", "bad", (400, None, True), id="422"),
        pytest.param(405, None, "Method Not Allowed", (502, "upstream_error", False), id="405"),
    ],
)
def test_status_mapping(
    status: int, upstream_type: str | None, message: str, expected: tuple[Any, ...]
) -> None:
    error = status_error("vllm", status, message, upstream_type, None, None)
    assert (error.status_code, error.code, error.client_fault) == expected
    assert error.upstream_status == status
    assert "backend 'vllm'" in error.message


@pytest.mark.parametrize(
    ("param", "expected"), [("body.temperature", "temperature"), ("top_p", "top_p"), ("body -> x", None)]
)
def test_vllm_param_names_become_openai_param_names(param: str, expected: str | None) -> None:
    assert status_error("vllm", 400, "bad", "BadRequestError", param, None).param == expected


def test_retry_after_is_kept_for_busy_answers() -> None:
    assert status_error("vllm", 503, "busy", None, None, 7.0).retry_after == 7.0
    assert status_error("vllm", 429, "slow down", None, None, 2.0).retry_after == 2.0


# Several choices and text completions


def test_n_and_logit_bias_are_sent_when_set() -> None:
    body = body_of(request(n=3, logit_bias={"42": -100.0}))
    assert (body["n"], body["logit_bias"]) == (3, {"42": -100.0})


def test_several_choices_arrive_indexed_with_one_usage() -> None:
    payloads = [
        {"choices": [{"index": 1, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}]},
        {"choices": [{"index": 1, "delta": {"content": "b"}, "finish_reason": "length"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    ]
    events = [e for p in payloads for e in multi_chunk_events(json.dumps(p).encode(), "vllm")]
    assert events == [
        Indexed(0, TextDelta("a")),
        Indexed(0, Finish("stop")),
        Indexed(1, TextDelta("b")),
        Indexed(1, Finish("length")),
        Usage(3, 2),
    ]
    whole = {
        "choices": [
            {"index": 0, "message": {"content": "x"}, "finish_reason": "stop"},
            {"index": 1, "message": {"content": "y"}, "finish_reason": "stop"},
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2},
    }
    assert multi_answer_events(json.dumps(whole).encode(), "vllm")[2:] == [
        Indexed(1, TextDelta("y")),
        Indexed(1, Finish("stop")),
        Usage(1, 2),
    ]


def test_completion_body_uses_the_same_narrowing() -> None:
    prompt = PromptRequest(
        prompt=["a", "b"], max_tokens=16, stream=True, n=2, top_p=0.0, top_k=0, stop=["\n"]
    )
    body = json.loads(msgspec.json.encode(completion_body(prompt, "served/model")))
    assert body == {
        "model": "served/model",
        "prompt": ["a", "b"],
        "max_tokens": 16,
        "stream": True,
        "stream_options": {"include_usage": True},
        "n": 2,
        "top_p": 1e-6,
        "stop": ["\n"],
    }
    with pytest.raises(UpstreamStatusError) as info:
        completion_body(PromptRequest(prompt="a", max_tokens=1, extensions=Extensions(raw=True)), "m")
    assert info.value.param == "raw"


def test_text_completion_chunks_and_bodies() -> None:
    chunk = {
        "object": "text_completion",
        "choices": [{"index": 0, "text": " there", "finish_reason": "length"}],
    }
    assert text_chunk_events(json.dumps(chunk).encode(), "vllm") == [TextDelta(" there"), Finish("length")]
    body = {
        "object": "text_completion",
        "choices": [{"index": 0, "text": "hi", "finish_reason": "stop", "stop_reason": None}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    }
    assert text_answer_events(json.dumps(body).encode(), "vllm") == [
        TextDelta("hi"),
        Finish("stop"),
        Usage(2, 1),
    ]
    multi = {"choices": [{"index": 2, "text": "z", "finish_reason": "stop"}]}
    assert multi_text_chunk_events(json.dumps(multi).encode(), "vllm") == [
        Indexed(2, TextDelta("z")),
        Indexed(2, Finish("stop")),
    ]
    with pytest.raises(UpstreamProtocolError):
        text_answer_events(b'{"object": "text_completion", "choices": []}', "vllm")


def test_context_length_on_completions_names_the_prompt() -> None:
    error = status_error(
        "vllm", 400, "This model's maximum context length is 8 tokens.", None, None, None, "prompt"
    )
    assert (error.code, error.param) == ("context_length_exceeded", "prompt")
