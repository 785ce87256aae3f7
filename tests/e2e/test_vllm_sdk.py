"""vLLM specifics through the official `openai` SDK (shared behaviour: test_sdk_conformance.py).

What vLLM receives (OpenAI form, its sampling extras, usage always on, a unique X-Request-Id) and how
its quirks and error shapes reach the client.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from tests.e2e.conftest import VLLM_KEY, VLLM_MODEL, GatewayFactory, sdk_client, vllm_backend

if TYPE_CHECKING:
    from tests.emulators.common import RecordedRequest
    from tests.emulators.vllm import VLLMEmulator

MODEL = "vllm-llama"
USER: Any = [{"role": "user", "content": "Say hello please"}]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def chat_requests(vllm: VLLMEmulator) -> list[RecordedRequest]:
    """vLLM's chat requests (it also sees the gateway's background `GET /health` probes)."""
    return [r for r in vllm.requests if r.method == "POST"]


def sent(vllm: VLLMEmulator) -> dict[str, Any]:
    body = chat_requests(vllm)[-1].body
    assert isinstance(body, dict)
    return body


def test_request_reaches_the_served_model_with_the_api_key(client: openai.OpenAI, vllm: VLLMEmulator) -> None:
    client.chat.completions.create(model=MODEL, messages=USER)
    request = chat_requests(vllm)[-1]
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {VLLM_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert sent(vllm) == {"model": VLLM_MODEL, "messages": USER, "max_tokens": 4096}


def test_sampling_parameters_and_extras(client: openai.OpenAI, vllm: VLLMEmulator) -> None:
    """`top_p: 0` becomes a tiny positive value (vLLM refuses 0); extras pass as vLLM's own fields."""
    client.chat.completions.create(
        model=MODEL,
        messages=USER,
        temperature=0,
        top_p=0,
        frequency_penalty=-1.5,
        presence_penalty=0.5,
        seed=2**70,
        max_completion_tokens=64,
        stop=["END", "STOP"],
        reasoning_effort="minimal",
        extra_body={"top_k": 7, "repetition_penalty": 1.2},
    )
    body = sent(vllm)
    assert body["top_p"] == 1e-6
    assert (body["temperature"], body["frequency_penalty"], body["presence_penalty"]) == (0, -1.5, 0.5)
    assert (body["top_k"], body["repetition_penalty"], body["max_tokens"]) == (7, 1.2, 64)
    assert 0 <= body["seed"] < 2**63
    assert body["stop"] == ["END", "STOP"]
    assert body["reasoning_effort"] == "low"


def test_stop_is_applied_by_vllm_itself(client: openai.OpenAI, vllm: VLLMEmulator) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=USER, stop=["emulator"])
    assert completion.choices[0].message.content == "Hello from the "
    assert completion.choices[0].finish_reason == "stop"
    assert sent(vllm)["stop"] == ["emulator"]


def test_usage_is_always_requested_upstream_on_streams(client: openai.OpenAI, vllm: VLLMEmulator) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=USER, stream=True))
    assert sent(vllm)["stream_options"] == {"include_usage": True}
    assert all(c.usage is None for c in chunks)  # the client did not ask for it


def test_every_upstream_call_gets_its_own_request_id(gateway_url: str, vllm: VLLMEmulator) -> None:
    """vLLM uses X-Request-Id as its engine request id: a client reusing its id must not collide."""
    for _ in range(2):
        response = httpx.post(
            f"{gateway_url}/v1/chat/completions",
            json={"model": MODEL, "messages": USER},
            headers={"x-request-id": "req-reused"},
            timeout=10,
        )
        assert response.headers["x-request-id"] == "req-reused"
        assert not response.json()["id"].startswith("chatcmpl-req-reused")
    ids = [r.headers["x-request-id"] for r in chat_requests(vllm)]
    assert len(set(ids)) == 2
    assert all(i.startswith("req-reused-1-") for i in ids)


def test_tools_are_sent_in_openai_form(client: openai.OpenAI, vllm: VLLMEmulator) -> None:
    client.chat.completions.create(
        model=MODEL,
        messages=USER,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    body = sent(vllm)
    assert body["tools"] == [WEATHER_TOOL]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False


def test_tool_choice_none_withholds_tools(client: openai.OpenAI, vllm: VLLMEmulator) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=USER, tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert completion.choices[0].message.tool_calls is None
    assert "tools" not in sent(vllm)
    assert "tool_choice" not in sent(vllm)


@pytest.mark.parametrize("tool_choice", ["required", "named"])
def test_forced_tool_choice_is_reported_as_tool_calls(
    client: openai.OpenAI, vllm: VLLMEmulator, tool_choice: str
) -> None:
    """vLLM 0.11 answers a forced choice with `content: ""` and finish `stop`; clients see OpenAI's form."""
    choice: Any = (
        "required" if tool_choice == "required" else {"type": "function", "function": {"name": "get_weather"}}
    )
    completion = client.chat.completions.create(
        model=MODEL, messages=USER, tools=[WEATHER_TOOL], tool_choice=choice
    )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    calls = [c for c in message.tool_calls or [] if isinstance(c, ChatCompletionMessageFunctionToolCall)]
    assert [c.function.name for c in calls] == ["get_weather"]


def test_earlier_reasoning_is_not_mixed_into_content(client: openai.OpenAI, vllm: VLLMEmulator) -> None:
    messages: Any = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "reasoning_content": "They greeted me."},
        {"role": "user", "content": "Again"},
    ]
    client.chat.completions.create(model=MODEL, messages=messages)
    assert sent(vllm)["messages"][1] == {
        "role": "assistant",
        "content": "Hello!",
        "reasoning": "They greeted me.",
    }


@pytest.mark.parametrize("flavor", ["v0.11", "v0.33"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_reasoning_arrives_as_reasoning_content(
    client: openai.OpenAI, vllm: VLLMEmulator, flavor: Any, stream: bool
) -> None:
    """vLLM calls it `reasoning_content` (≤ 0.15) or `reasoning` (≥ 0.16): clients always get the former."""
    vllm.flavor = flavor
    messages: Any = [{"role": "user", "content": "Think first [[emu:reasoning]]"}]
    if stream:
        chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True))
        deltas = [c.choices[0].delta.model_dump() for c in chunks if c.choices]
        reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
        content = "".join(d.get("content") or "" for d in deltas)
    else:
        completion = client.chat.completions.create(model=MODEL, messages=messages)
        message = completion.choices[0].message.model_dump()
        reasoning, content = message["reasoning_content"], message["content"]
    assert reasoning == "Let me think about this."
    assert content.startswith("Hello from the emulator")


def test_json_mode_uses_the_openai_envelope(client: openai.OpenAI, vllm: VLLMEmulator) -> None:
    client.chat.completions.create(model=MODEL, messages=USER, response_format={"type": "json_object"})
    assert sent(vllm)["response_format"] == {"type": "json_object"}


def test_workers_ai_extensions_are_refused(client: openai.OpenAI, vllm: VLLMEmulator) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=USER, extra_body={"lora": "my-adapter"})
    assert (info.value.code, info.value.param) == ("unsupported_parameter", "lora")
    assert chat_requests(vllm) == []


# Errors in vLLM's own shapes


@pytest.mark.parametrize("flavor", ["legacy", "v0.11", "v0.33"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_context_length_errors_become_context_length_exceeded(
    client: openai.OpenAI, vllm: VLLMEmulator, flavor: Any, stream: bool
) -> None:
    vllm.flavor = flavor
    vllm.max_model_len = 64
    with pytest.raises(openai.BadRequestError) as info:  # noqa: PT012 - a stream raises while it is read
        result = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 100}], stream=stream
        )
        if stream:
            list(result)
    error = info.value.response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "messages"
    assert error["type"] == "invalid_request_error"
    assert "context length" in error["message"]
    assert not error["message"].endswith("None")


@pytest.mark.parametrize("flavor", ["legacy", "v0.11", "v0.33"])
def test_rejections_keep_vllms_message_and_never_a_numeric_code(
    client: openai.OpenAI, vllm: VLLMEmulator, flavor: Any
) -> None:
    """A server started without a tool parser refuses tools; the client gets a 400 that says why."""
    vllm.flavor = flavor
    vllm.enable_auto_tool_choice = False
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=USER, tools=[WEATHER_TOOL])
    error = info.value.response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", None)
    assert "--enable-auto-tool-choice" in error["message"]
    assert "backend 'vllm' rejected the request" in error["message"]


def test_unauthorized_is_rewritten_without_the_key(
    start_gateway: GatewayFactory, vllm_server: Any, vllm: VLLMEmulator
) -> None:
    config = {
        "backends": {"vllm": vllm_backend(vllm_server[1].url, api_key="wrong-vllm-key-77")},
        "models": {MODEL: {"targets": [{"backend": "vllm", "model": VLLM_MODEL}]}},
    }
    with sdk_client(start_gateway(config)) as client, pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model=MODEL, messages=USER)
    error = info.value.response.json()["error"]
    assert error["code"] == "upstream_credentials_rejected"
    assert "backend 'vllm'" in error["message"]
    assert "wrong-vllm-key-77" not in info.value.response.text
    assert VLLM_KEY not in info.value.response.text


def test_unknown_upstream_model_is_model_not_found(client: openai.OpenAI, vllm: VLLMEmulator) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="vllm-unknown-upstream", messages=USER)
    assert info.value.code == "model_not_found"
    assert "does not serve the configured upstream model" in info.value.message


def test_overloaded_vllm_is_503_with_retry_after(client: openai.OpenAI, vllm: VLLMEmulator) -> None:
    vllm.faults.push("status:503:retry-after=2")
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=MODEL, messages=USER)
    assert (info.value.status_code, info.value.code) == (503, "upstream_overloaded")
    assert info.value.response.headers["retry-after"] == "2"


@pytest.mark.parametrize("flavor", ["legacy", "v0.11", "v0.33"])
def test_error_inside_the_stream_is_relayed_in_band_without_done(
    gateway_url: str, vllm: VLLMEmulator, flavor: Any
) -> None:
    """vLLM sends `data: {"error": ...}` (or a flat legacy object), then `[DONE]`; the client gets no DONE."""
    vllm.flavor = flavor
    vllm.faults.push("stream-error:4")
    response = httpx.post(
        f"{gateway_url}/v1/chat/completions",
        json={
            "model": MODEL,
            "stream": True,
            "messages": [{"role": "user", "content": "hi [[emu:words=9]]"}],
        },
        timeout=10,
    )
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert "[DONE]" not in events
    error = json.loads(events[-1])["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Emulated error while streaming" in error["message"]
    assert isinstance(error["code"], str | None)
    assert sum('"content"' in e for e in events) >= 2


def test_finish_reason_is_moved_to_its_own_final_chunk(gateway_url: str, vllm: VLLMEmulator) -> None:
    """vLLM puts finish_reason on the last content chunk; OpenAI sends it with an empty delta."""
    response = httpx.post(
        f"{gateway_url}/v1/chat/completions",
        json={
            "model": MODEL,
            "stream": True,
            "messages": [{"role": "user", "content": "hi [[emu:words=3]]"}],
        },
        timeout=10,
    )
    chunks = [
        json.loads(line.removeprefix("data: "))
        for line in response.text.splitlines()
        if line.startswith("data: {")
    ]
    finishes = [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks]
    assert finishes[-1] == ({}, "stop")
    assert all(reason is None for _, reason in finishes[:-1])
    assert response.text.endswith("data: [DONE]\n\n")
    assert all("token_ids" not in json.dumps(c) and "stop_reason" not in json.dumps(c) for c in chunks)
