"""Anthropic's Messages API through the official `anthropic` SDK, on the mock and both emulators.

The gateway runs under its real server in front of the Workers AI and vLLM emulators; the SDK's own
parsers (its stream accumulator and partial-JSON tool input) judge every answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import anthropic
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import (
    VLLM_MODEL,
    GatewayFactory,
    cloudflare_backend,
    vllm_backend,
    workers_ai_config,
)

if TYPE_CHECKING:
    from tests.emulators.server import ServerThread
    from tests.emulators.vllm import VLLMEmulator
    from tests.emulators.workers_ai import WorkersAIEmulator

KEY = "sk-team-claude-3f6a9c0d2e4b7a1c5e80"
MODELS = ["mock-model", "llama-3.3-70b", "vllm-llama"]
"""The mock, a Workers AI model and a vLLM model."""
EMULATED = ["llama-3.3-70b", "vllm-llama"]
USER: Any = [{"role": "user", "content": "Say hello please"}]
ANSWER = "Hello from the emulator. You said: Say hello please"
WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "The city"}},
        "required": ["location"],
    },
}


def sdk(url: str, **options: Any) -> anthropic.Anthropic:
    options.setdefault("api_key", KEY)
    return anthropic.Anthropic(base_url=url, max_retries=0, timeout=20, **options)


@pytest.fixture
def messages(gateway_url: str) -> Iterator[anthropic.Anthropic]:
    with sdk(gateway_url, api_key="sk-test-client") as client:
        yield client


@pytest.fixture
def emulators(workers_ai: WorkersAIEmulator, vllm: VLLMEmulator) -> tuple[WorkersAIEmulator, VLLMEmulator]:
    """Both session emulators, reset for this test."""
    return workers_ai, vllm


def error_of(exc: anthropic.APIStatusError) -> dict[str, Any]:
    """The Anthropic envelope's `error` object (and a check that the envelope is Anthropic's)."""
    body = exc.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["request_id"].startswith("req_")
    error: dict[str, Any] = body["error"]
    return error


def raw_events(client: anthropic.Anthropic, **params: Any) -> list[Any]:
    with client.messages.create(stream=True, **params) as stream:
        return list(stream)


def assert_grammar(events: list[Any]) -> None:
    """message_start, then blocks 0..n-1 each start → deltas → stop, then message_delta, message_stop."""
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    open_index: int | None = None
    next_index = 0
    for event in events[1:-2]:
        if event.type == "content_block_start":
            assert open_index is None
            assert event.index == next_index
            open_index, next_index = event.index, next_index + 1
        elif event.type == "content_block_delta":
            assert event.index == open_index
        elif event.type == "content_block_stop":
            assert event.index == open_index
            open_index = None
        else:
            assert event.type == "ping"
    assert open_index is None


# Answers


@pytest.mark.parametrize("model", MODELS)
def test_create_answers_a_message(
    messages: anthropic.Anthropic, emulators: tuple[WorkersAIEmulator, VLLMEmulator], model: str
) -> None:
    message = messages.messages.create(model=model, max_tokens=200, messages=USER)
    assert message.id.startswith("msg_")
    assert (message.type, message.role, message.model) == ("message", "assistant", model)
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    [block] = message.content
    assert block.type == "text"
    if model != "mock-model":
        assert block.text == ANSWER
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_stream_text_through_the_accumulator(
    messages: anthropic.Anthropic, emulators: tuple[WorkersAIEmulator, VLLMEmulator], model: str
) -> None:
    with messages.messages.stream(model=model, max_tokens=200, messages=USER) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 3  # token by token, not one lump
    [block] = final.content
    assert block.type == "text"
    assert block.text == "".join(pieces)
    if model != "mock-model":
        assert block.text == ANSWER
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    assert_grammar(raw_events(messages, model=model, max_tokens=200, messages=USER))


@pytest.mark.parametrize("model", MODELS)
def test_tool_use_streams_input_json_and_round_trips(
    messages: anthropic.Anthropic, emulators: tuple[WorkersAIEmulator, VLLMEmulator], model: str
) -> None:
    ask: Any = [{"role": "user", "content": "What is the weather in London?"}]
    params: Any = {"model": model, "max_tokens": 200, "tools": [WEATHER], "messages": ask}
    with messages.messages.stream(**params) as stream:
        fragments = [event.partial_json for event in stream if event.type == "input_json"]
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    [call] = final.content
    assert call.type == "tool_use"
    assert call.id.startswith("toolu_")
    assert call.name == "get_weather"
    expected = {"location": "example"} if model == "mock-model" else {"location": "London"}
    assert call.input == expected
    assert json.loads("".join(fragments)) == expected
    if model == "vllm-llama":
        assert len(fragments) >= 2  # the upstream's own fragments, passed on as they came
    events = raw_events(messages, **params)
    assert_grammar(events)
    start = next(event for event in events if event.type == "content_block_start")
    assert start.content_block.input == {}

    history: Any = [
        *ask,
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in final.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"}],
        },
    ]
    answer = messages.messages.create(model=model, max_tokens=200, tools=[WEATHER], messages=history)
    assert answer.stop_reason == "end_turn"
    text = answer.content[0]
    assert text.type == "text"
    assert "Sunny, 21 C" in text.text


def test_tool_history_reaches_the_upstream_as_chat_tool_messages(
    messages: anthropic.Anthropic, vllm: VLLMEmulator
) -> None:
    history: Any = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"location": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01A",
                    "content": [{"type": "text", "text": "Rain"}],
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    messages.messages.create(model="vllm-llama", max_tokens=50, tools=[WEATHER], messages=history)
    sent = vllm.requests[-1].body
    assert sent is not None
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["user", "assistant", "tool", "user"]
    assistant, tool, user = sent["messages"][1:]
    assert assistant["content"] == "Checking."
    [call] = assistant["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"location": "Oslo"}
    assert (tool["tool_call_id"], tool["content"]) == (call["id"], "Rain")
    assert user["content"] == "And tomorrow?"
    assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]


def test_forced_tool_and_single_call(messages: anthropic.Anthropic, workers_ai: WorkersAIEmulator) -> None:
    other: Any = {**WEATHER, "name": "get_time", "description": "The time"}
    message = messages.messages.create(
        model="llama-3.3-70b",
        max_tokens=100,
        tools=[WEATHER, other],
        tool_choice={"type": "tool", "name": "get_time", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "Tell me [[emu:parallel]]"}],
    )
    assert [block.type for block in message.content] == ["tool_use"]
    assert message.content[0].type == "tool_use"
    assert message.content[0].name == "get_time"


def test_system_blocks_with_cache_control_become_one_system_message(
    messages: anthropic.Anthropic, workers_ai: WorkersAIEmulator
) -> None:
    messages.messages.create(
        model="llama-3.3-70b",
        max_tokens=50,
        system=[
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Answer in English.", "cache_control": {"type": "ephemeral"}},
        ],
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}],
            }
        ],
    )
    sent = workers_ai.requests[-1].body
    assert sent is not None
    assert sent["messages"] == [
        {"role": "system", "content": "You are terse.\n\nAnswer in English."},
        {"role": "user", "content": "Hi"},
    ]
    assert sent["max_tokens"] == 50


@pytest.mark.parametrize("model", EMULATED)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_stop_sequences_end_the_answer_and_are_named(
    messages: anthropic.Anthropic,
    emulators: tuple[WorkersAIEmulator, VLLMEmulator],
    model: str,
    stream: bool,
) -> None:
    params: Any = {"model": model, "max_tokens": 100, "messages": USER, "stop_sequences": ["emulator", "zzz"]}
    if stream:
        with messages.messages.stream(**params) as events:
            message = events.get_final_message()
    else:
        message = messages.messages.create(**params)
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello from the "
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "emulator")


@pytest.mark.parametrize("model", MODELS)
def test_max_tokens_is_the_stop_reason_of_a_cut_answer(
    messages: anthropic.Anthropic, emulators: tuple[WorkersAIEmulator, VLLMEmulator], model: str
) -> None:
    ask: Any = [{"role": "user", "content": "Talk [[emu:words=40]] at length, please, for a while"}]
    with messages.messages.stream(model=model, max_tokens=5, messages=ask) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 5


def test_thinking_streams_as_thinking_deltas(
    messages: anthropic.Anthropic, workers_ai: WorkersAIEmulator
) -> None:
    params: Any = {
        "model": "qwen3-30b",
        "max_tokens": 4096,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": USER,
    }
    events = raw_events(messages, **params)
    assert_grammar(events)
    deltas = [event.delta.type for event in events if event.type == "content_block_delta"]
    assert "thinking_delta" in deltas
    assert "text_delta" in deltas
    message = messages.messages.create(**params)
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].type == "thinking"
    assert message.content[0].thinking == "Let me think about this."
    assert workers_ai.requests[-1].body is not None
    assert workers_ai.requests[-1].body["reasoning_effort"] == "low"
    # Without `thinking`, the model's reasoning is not answered as blocks.
    plain = messages.messages.create(model="qwen3-30b", max_tokens=200, messages=USER)
    assert [block.type for block in plain.content] == ["text"]


def test_the_2023_06_01_version_forwards_sampling(gateway_url: str, vllm: VLLMEmulator) -> None:
    with sdk(gateway_url, default_headers={"anthropic-version": "2023-06-01"}) as client:
        client.messages.create(
            model="vllm-llama", max_tokens=20, messages=USER, extra_body={"temperature": 0.3, "top_k": 5}
        )
    sent = vllm.requests[-1].body
    assert sent is not None
    assert (sent["temperature"], sent["top_k"]) == (0.3, 5)


def test_the_2026_10_21_version_refuses_sampling(messages: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        messages.messages.create(model="mock-model", max_tokens=20, messages=USER, extra_body={"top_p": 0.5})
    assert error_of(info.value) == {
        "type": "invalid_request_error",
        "message": "top_p: Extra inputs are not permitted",
    }


def test_count_tokens(messages: anthropic.Anthropic) -> None:
    short = messages.messages.count_tokens(model="mock-model", messages=USER)
    longer = messages.messages.count_tokens(
        model="mock-model", messages=USER, system="Be brief. " * 50, tools=[WEATHER]
    )
    assert 0 < short.input_tokens < longer.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        messages.messages.count_tokens(model="no-such-model", messages=USER)


# Errors


def test_request_errors_are_in_anthropics_envelope(messages: anthropic.Anthropic, gateway_url: str) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        messages.messages.create(model="no-such-model", max_tokens=10, messages=USER)
    assert error_of(missing.value)["type"] == "not_found_error"
    robot: Any = [{"role": "robot", "content": "x"}]
    with pytest.raises(anthropic.BadRequestError) as bad:
        messages.messages.create(model="mock-model", max_tokens=10, messages=robot)
    assert error_of(bad.value)["type"] == "invalid_request_error"
    assert "messages.0.role" in error_of(bad.value)["message"]

    headers = {"x-api-key": "any", "anthropic-version": "2023-06-01", "content-type": "application/json"}
    cases: list[tuple[bytes, str]] = [
        (b'{"model": "mock-model", "max_tokens"', "We could not parse the JSON body"),
        (b'{"model": "mock-model", "messages": []}', "max_tokens: Field required"),
        (b'{"model": "mock-model", "max_tokens": 5, "messages": [], "colour": 1}', "colour: Extra inputs"),
    ]
    for body, text in cases:
        answer = httpx.post(f"{gateway_url}/v1/messages", content=body, headers=headers)
        assert answer.status_code == 400
        payload = answer.json()
        assert payload["type"] == "error"
        assert payload["error"]["type"] == "invalid_request_error"
        assert payload["error"]["message"].startswith(text)
    without_version = {"x-api-key": "any"}
    answer = httpx.post(f"{gateway_url}/v1/messages", json={}, headers=without_version)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "anthropic-version: header is required"
    answer = httpx.get(f"{gateway_url}/v1/messages/batches", headers=headers)
    assert (answer.status_code, answer.json()["error"]["type"]) == (404, "not_found_error")
    # Other routes keep OpenAI's envelope.
    answer = httpx.post(f"{gateway_url}/v1/chat/completions", content=b"{", headers=headers)
    assert "type" not in answer.json()


def test_upstream_errors_map_to_anthropic_types(messages: anthropic.Anthropic, vllm: VLLMEmulator) -> None:
    vllm.faults.push("status:503")
    with pytest.raises(anthropic.APIStatusError) as busy:
        messages.messages.create(model="vllm-llama", max_tokens=10, messages=USER)
    assert busy.value.status_code == 503
    assert error_of(busy.value)["type"] == "overloaded_error"
    vllm.max_model_len = 20
    with pytest.raises(anthropic.BadRequestError) as too_long:
        messages.messages.create(
            model="vllm-llama", max_tokens=10, messages=[{"role": "user", "content": "x" * 400}]
        )
    assert error_of(too_long.value)["message"].startswith("prompt is too long: ")
    assert " tokens > 20 maximum" in error_of(too_long.value)["message"]


@pytest.mark.parametrize("model", EMULATED)
def test_a_failure_mid_stream_is_an_in_band_error_event(
    messages: anthropic.Anthropic, emulators: tuple[WorkersAIEmulator, VLLMEmulator], model: str
) -> None:
    emulator = emulators[0] if model == "llama-3.3-70b" else emulators[1]
    emulator.faults.push("abort:4")
    seen: list[str] = []
    stream = messages.messages.create(model=model, max_tokens=100, messages=USER, stream=True)
    with pytest.raises(anthropic.APIStatusError) as info, stream:
        seen.extend(event.type for event in stream)
    assert seen[0] == "message_start"
    assert "content_block_delta" in seen
    assert "message_stop" not in seen
    assert error_of(info.value)["type"] == "api_error"


# Keys, limits, failover


def keyed(emulator_url: str, **key: Any) -> dict[str, Any]:
    config = workers_ai_config(emulator_url)
    config["keys"] = [{"id": "team-claude", "key": KEY, **key}]
    config["models"]["llama-3.3-70b"]["aliases"] = ["gpt-4o-mini", "claude-sonnet-4-6", "claude-haiku-4-5"]
    return config


def test_keys_authenticate_as_x_api_key_or_bearer(
    start_gateway: GatewayFactory, workers_ai_server: tuple[WorkersAIEmulator, ServerThread]
) -> None:
    url = start_gateway(keyed(workers_ai_server[1].url))
    with sdk(url) as client:  # the 2.x SDK sends `Authorization: Bearer`
        assert client.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=USER).content
    with sdk(url, api_key=None, default_headers={"x-api-key": KEY}) as client:
        assert client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=USER).content
    headers = {"x-api-key": KEY, "authorization": "Bearer not-the-key", "anthropic-version": "2023-06-01"}
    body = {"model": "mock-model", "max_tokens": 10, "messages": USER}
    assert httpx.post(f"{url}/v1/messages", json=body, headers=headers).status_code == 200
    with (
        sdk(url, api_key="sk-wrong-key-000000000000000") as client,
        pytest.raises(anthropic.AuthenticationError) as wrong,
    ):
        client.messages.create(model="mock-model", max_tokens=10, messages=USER)
    assert error_of(wrong.value)["type"] == "authentication_error"
    assert "sk-wrong-key-000000000000000" not in str(wrong.value.body)
    answer = httpx.post(f"{url}/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert (answer.status_code, answer.json()["error"]["type"]) == (401, "authentication_error")


def test_a_key_limit_is_a_rate_limit_error_with_anthropics_headers(
    start_gateway: GatewayFactory, workers_ai_server: tuple[WorkersAIEmulator, ServerThread]
) -> None:
    url = start_gateway(keyed(workers_ai_server[1].url, rpm=1, tpm=100_000))
    with sdk(url) as client:
        count = client.messages.count_tokens(model="mock-model", messages=USER).input_tokens
        first = client.messages.with_raw_response.create(model="mock-model", max_tokens=300, messages=USER)
        with pytest.raises(anthropic.RateLimitError) as info:
            client.messages.create(model="mock-model", max_tokens=300, messages=USER)
    # count_tokens is what the limiter reserves for the prompt (plus max_tokens).
    assert first.headers["anthropic-ratelimit-tokens-remaining"] == str(100_000 - count - 300)
    assert first.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert first.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert first.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert first.headers["request-id"].startswith("req_")
    assert "x-ratelimit-limit-requests" not in first.headers
    error = info.value
    assert error_of(error)["type"] == "rate_limit_error"
    assert 1 <= int(error.response.headers["retry-after"]) <= 60
    assert error.response.headers["anthropic-ratelimit-requests-limit"] == "1"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_failover_before_the_first_block_is_invisible(
    start_gateway: GatewayFactory,
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread],
    vllm_server: tuple[VLLMEmulator, ServerThread],
    emulators: tuple[WorkersAIEmulator, VLLMEmulator],
    stream: bool,
) -> None:
    config = {
        "backends": {
            "cloudflare": cloudflare_backend(workers_ai_server[1].url),
            "vllm": vllm_backend(vllm_server[1].url),
        },
        "models": {
            "chat": {
                "targets": [
                    {"backend": "cloudflare", "model": "@cf/meta/llama-3.3-70b-instruct-fp8-fast"},
                    {"backend": "vllm", "model": VLLM_MODEL},
                ]
            }
        },
    }
    url = start_gateway(config)
    emulators[0].faults.push("status:503")
    with sdk(url) as client:
        if stream:
            raw = client.messages.with_raw_response.create(
                model="chat", max_tokens=100, messages=USER, stream=True
            )
            backend = raw.headers["x-gateway-backend"]
            with raw.parse() as parsed:
                events = list(parsed)
            assert_grammar(events)  # no frame of the failed attempt, no error event
            text = "".join(
                e.delta.text
                for e in events
                if e.type == "content_block_delta" and e.delta.type == "text_delta"
            )
        else:
            raw_answer = client.messages.with_raw_response.create(model="chat", max_tokens=100, messages=USER)
            backend = raw_answer.headers["x-gateway-backend"]
            message = raw_answer.parse()
            assert message.content[0].type == "text"
            text = message.content[0].text
    assert (backend, text) == ("vllm", ANSWER)
    assert len(emulators[0].requests) == 1


def test_a_claude_code_like_session(
    start_gateway: GatewayFactory, workers_ai_server: tuple[WorkersAIEmulator, ServerThread]
) -> None:
    """What Claude Code sends: `?beta=true`, betas, x-api-key, a billing system block, cached system
    blocks, many tools, thinking, metadata, beta body fields; then a tool round trip with the thinking
    and tool_use blocks it got sent back."""
    config = keyed(workers_ai_server[1].url)
    config["models"]["qwen3-30b"]["aliases"] = ["claude-opus-4-6"]
    url = start_gateway(config)
    headers = {
        "x-api-key": KEY,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": ",".join(
            (
                "claude-code-20250219",
                "interleaved-thinking-2025-05-14",
                "fine-grained-tool-streaming-2025-05-14",
            )
        ),
        "user-agent": "claude-cli/2.1.126 (external, cli)",
        "x-claude-code-session-id": "7d3c1d2e-0000-4000-8000-000000000001",
    }
    tools: Any = [
        {
            "name": f"mcp__tools__tool_{i}",
            "description": f"Tool number {i}",
            "input_schema": {
                "type": "object",
                "properties": {"path": {"type": "string", "description": "A file"}},
                "required": ["path"],
                "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#",
            },
            **({"cache_control": {"type": "ephemeral"}} if i == 29 else {}),
        }
        for i in range(30)
    ]
    system: Any = [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.126; cc_entrypoint=cli"},
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Use the tools.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ]
    body: dict[str, Any] = {
        "model": "claude-opus-4-6",
        "max_tokens": 32000,
        "stream": True,
        "system": system,
        "tools": tools,
        "thinking": {"type": "adaptive"},
        "metadata": {"user_id": "user_abc_account_def_session_123"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                    {"type": "text", "text": "Read the file", "cache_control": {"type": "ephemeral"}},
                ],
            }
        ],
    }
    with anthropic.Anthropic(
        base_url=url, api_key=None, default_headers=headers, max_retries=0, timeout=20
    ) as client:
        params: Any = {
            key: value for key, value in body.items() if key not in {"stream", "context_management"}
        }
        with client.messages.stream(
            **params,
            extra_query={"beta": "true"},
            extra_body={"context_management": body["context_management"]},
        ) as stream:
            final = stream.get_final_message()
        assert [block.type for block in final.content] == ["thinking", "tool_use"]
        call = final.content[1]
        assert call.type == "tool_use"
        assert (call.name, call.input) == ("mcp__tools__tool_0", {"path": "path"})
        assert final.stop_reason == "tool_use"
        count = client.messages.count_tokens(
            model="claude-opus-4-6",
            system=system,
            tools=tools,
            messages=body["messages"],
            extra_query={"beta": "true"},
        )
        assert count.input_tokens > 30 * 20  # the tool schemas count
        history: Any = [
            *body["messages"],
            {
                "role": "assistant",
                "content": [block.model_dump(exclude_none=True) for block in final.content],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "line 1\nline 2"}],
            },
        ]
        with client.messages.stream(
            **{**params, "messages": history}, extra_query={"beta": "true"}
        ) as stream:
            answer = stream.get_final_message()
    assert answer.stop_reason == "end_turn"
    assert [block.type for block in answer.content] == ["thinking", "text"]
    text = answer.content[1]
    assert text.type == "text"
    assert "line 1\nline 2" in text.text


def test_a_client_leaving_mid_stream_closes_the_upstream_and_frees_its_slot(
    start_gateway: GatewayFactory,
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread],
    vllm_server: tuple[VLLMEmulator, ServerThread],
    vllm: VLLMEmulator,
) -> None:
    config = keyed(workers_ai_server[1].url, max_concurrency=1, tpm=100_000)
    config["backends"]["vllm"] = vllm_backend(vllm_server[1].url)
    config["models"]["vllm-llama"] = {"targets": [{"backend": "vllm", "model": VLLM_MODEL}]}
    url = start_gateway(config)
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    request: Any = {
        "model": "vllm-llama",
        "max_tokens": 1000,
        "stream": True,
        "messages": [
            {"role": "user", "content": "Tell a long story [[emu:words=400]] [[emu:fault=slow:0.02]]"}
        ],
    }
    deltas = 0
    with httpx.stream("POST", f"{url}/v1/messages", json=request, headers=headers, timeout=20) as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            deltas += line == "event: content_block_delta"
            if deltas == 5:
                break
    [upstream] = [r for r in vllm.requests if r.method == "POST"]
    deadline = time.monotonic() + 5
    while not upstream.disconnected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.disconnected, "the upstream call was not closed"
    assert not upstream.finished
    follow: Any = {**request, "stream": False, "messages": USER}
    again = httpx.post(f"{url}/v1/messages", json=follow, headers=headers, timeout=20)
    assert again.status_code == 200, again.text  # max_concurrency 1: the slot was given back


json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=6)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
block = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                [
                    "text",
                    "image",
                    "tool_use",
                    "tool_result",
                    "thinking",
                    "document",
                    "search_result",
                    "redacted_thinking",
                    "other",
                ]
            )
        },
        optional={
            "text": json_value,
            "id": json_value,
            "name": json_value,
            "input": json_value,
            "tool_use_id": json_value,
            "content": json_value,
            "source": json_value,
            "thinking": json_value,
            "citations": json_value,
            "data": json_value,
        },
    ),
    json_value,
)
message_param = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "tool"]),
        "content": st.one_of(st.text(max_size=10), st.lists(block, max_size=3)),
    }
)
messages_body = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["mock-model", "nope", 3]),
        "max_tokens": st.sampled_from([1, 50, 0, -1, "x"]),
        "messages": st.lists(message_param, max_size=3),
    },
    optional={
        "system": st.one_of(st.text(max_size=5), st.lists(block, max_size=2)),
        "tools": st.lists(
            st.fixed_dictionaries(
                {"name": json_value}, optional={"input_schema": json_value, "type": json_value}
            ),
            max_size=2,
        ),
        "tool_choice": st.one_of(
            json_value,
            st.fixed_dictionaries(
                {"type": st.sampled_from(["auto", "any", "tool", "none", "x"])}, optional={"name": json_value}
            ),
        ),
        "thinking": st.one_of(
            json_value,
            st.fixed_dictionaries(
                {"type": st.sampled_from(["enabled", "adaptive", "disabled"])},
                optional={"budget_tokens": st.integers(0, 3000)},
            ),
        ),
        "stop_sequences": json_value,
        "stream": st.booleans(),
        "output_config": json_value,
        "metadata": json_value,
    },
)


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(body=messages_body, path=st.sampled_from(["/v1/messages", "/v1/messages/count_tokens"]))
def test_any_body_gets_an_answer_or_an_anthropic_4xx(
    gateway_url: str, body: dict[str, Any], path: str
) -> None:
    headers = {"anthropic-version": "2023-06-01", "x-api-key": "any"}
    if path.endswith("count_tokens"):
        body = {
            k: v for k, v in body.items() if k not in ("max_tokens", "stream", "stop_sequences", "metadata")
        }
    answer = httpx.post(f"{gateway_url}{path}", json=body, headers=headers, timeout=20)
    assert answer.status_code < 500, answer.text
    if answer.status_code != 200:
        payload = answer.json()
        assert payload["type"] == "error"
        assert payload["error"]["type"] in {"invalid_request_error", "not_found_error"}
        assert payload["error"]["message"]
    elif answer.headers["content-type"].startswith("text/event-stream"):
        assert answer.text.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')
