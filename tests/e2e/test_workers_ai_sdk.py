"""Workers AI specifics through the official `openai` SDK (shared behaviour: test_sdk_conformance.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest

from tests.e2e.conftest import CF_ACCOUNT, CF_TOKEN, GatewayFactory, workers_ai_config

if TYPE_CHECKING:
    from tests.emulators.workers_ai import WorkersAIEmulator

USER: Any = [{"role": "user", "content": "Say hello please"}]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def upstream_body(emulator: WorkersAIEmulator) -> dict[str, Any]:
    body = emulator.requests[-1].body
    assert isinstance(body, dict)
    return body


# Plain and streamed answers


def test_request_goes_to_the_model_route(client: openai.OpenAI, workers_ai: WorkersAIEmulator) -> None:
    client.chat.completions.create(model="llama-3.3-70b", messages=USER)
    sent = workers_ai.requests[-1]
    assert sent.path == f"/client/v4/accounts/{CF_ACCOUNT}/ai/run/@cf/meta/llama-3.3-70b-instruct-fp8-fast"
    assert sent.headers["authorization"] == f"Bearer {CF_TOKEN}"
    assert "model" not in upstream_body(workers_ai)


def test_alias_resolves_to_the_public_name(client: openai.OpenAI, workers_ai: WorkersAIEmulator) -> None:
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert completion.model == "llama-3.3-70b"


def test_reasoning_is_kept_apart_from_content(client: openai.OpenAI, workers_ai: WorkersAIEmulator) -> None:
    completion = client.chat.completions.create(model="qwen3-30b", messages=USER)
    message = completion.choices[0].message.model_dump()
    assert message["reasoning_content"]
    assert message["reasoning_content"] not in (message["content"] or "")
    chunks = list(client.chat.completions.create(model="qwen3-30b", messages=USER, stream=True))
    deltas = [c.choices[0].delta.model_dump() for c in chunks if c.choices]
    assert any(d.get("reasoning_content") for d in deltas)


def test_model_that_ignores_stream_still_streams(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator
) -> None:
    """gpt-oss answers a stream request with a JSON body; the client still gets a proper SSE stream."""
    chunks = list(client.chat.completions.create(model="gpt-oss-120b", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("directive", "content"),
    [
        pytest.param("[[emu:response=number]]", "42", id="number"),
        pytest.param("[[emu:result=string]]", None, id="bare-string"),
        pytest.param("[[emu:response=null]]", "", id="null"),
    ],
)
def test_odd_result_shapes(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator, directive: str, content: Any
) -> None:
    completion = client.chat.completions.create(
        model="llama-3.3-70b", messages=[{"role": "user", "content": f"hi {directive}"}]
    )
    got = completion.choices[0].message.content
    if content is None:
        assert got
    else:
        assert got == content
    assert completion.choices[0].finish_reason == "stop"


# Tools


def test_incremental_native_tool_stream(client: openai.OpenAI, workers_ai: WorkersAIEmulator) -> None:
    messages: Any = [{"role": "user", "content": "weather in Rome [[emu:toolstream=incremental]]"}]
    chunks = list(
        client.chat.completions.create(
            model="llama-3.3-70b", messages=messages, tools=[WEATHER_TOOL], stream=True
        )
    )
    headers = [
        t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or []) if t.id is not None
    ]
    assert len(headers) == 1
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_parallel_calls_and_the_single_call_switch(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator
) -> None:
    second_tool: Any = {**WEATHER_TOOL, "function": {**WEATHER_TOOL["function"], "name": "get_time"}}
    messages: Any = [{"role": "user", "content": "weather and time [[emu:parallel]]"}]
    both = client.chat.completions.create(
        model="llama-3.3-70b", messages=messages, tools=[WEATHER_TOOL, second_tool]
    )
    calls = both.choices[0].message.tool_calls or []
    assert len(calls) == 2
    assert len({c.id for c in calls}) == 2
    one = client.chat.completions.create(
        model="llama-3.3-70b", messages=messages, tools=[WEATHER_TOOL, second_tool], parallel_tool_calls=False
    )
    assert len(one.choices[0].message.tool_calls or []) == 1


def test_legacy_functions(client: openai.OpenAI, workers_ai: WorkersAIEmulator) -> None:
    completion = client.chat.completions.create(
        model="llama-3.3-70b",
        messages=[{"role": "user", "content": "weather?"}],
        functions=[WEATHER_TOOL["function"]],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.function_call is not None
    assert choice.message.function_call.name == "get_weather"
    sent = upstream_body(workers_ai)
    assert "functions" not in sent
    assert sent["tools"][0]["function"]["name"] == "get_weather"


def test_tool_choice_none_withholds_tools(client: openai.OpenAI, workers_ai: WorkersAIEmulator) -> None:
    completion = client.chat.completions.create(
        model="llama-3.3-70b", messages=USER, tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert completion.choices[0].message.tool_calls is None
    assert "tools" not in upstream_body(workers_ai)


# JSON mode, sampling, extensions


def test_sampling_is_narrowed_and_extensions_forwarded(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator
) -> None:
    client.chat.completions.create(
        model="llama-3.3-70b",
        messages=USER,
        top_p=0,
        frequency_penalty=-1,
        seed=0,
        max_completion_tokens=64,
        extra_body={"top_k": 7, "repetition_penalty": 1.2},
    )
    sent = upstream_body(workers_ai)
    assert (sent["top_p"], sent["frequency_penalty"], sent["max_tokens"]) == (0.001, 0, 64)
    assert 1 <= sent["seed"] <= 9_999_999_999
    assert (sent["top_k"], sent["repetition_penalty"]) == (7, 1.2)


def test_content_parts_flattened_and_developer_role_mapped(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator
) -> None:
    client.chat.completions.create(
        model="llama-3.3-70b",
        messages=[
            {"role": "developer", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        ],
    )
    assert upstream_body(workers_ai)["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "one\ntwo"},
    ]


def test_vision_model_accepts_images(client: openai.OpenAI, workers_ai: WorkersAIEmulator) -> None:
    content: Any = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    completion = client.chat.completions.create(
        model="llama-vision", messages=[{"role": "user", "content": content}]
    )
    assert completion.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="llama-3.3-70b", messages=[{"role": "user", "content": content}])
    assert info.value.code == "unsupported_parameter"


def test_stop_sequence_is_applied_by_the_gateway(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator
) -> None:
    full = (
        client.chat.completions.create(model="llama-3.3-70b", messages=USER).choices[0].message.content or ""
    )
    word = full.split()[3]
    cut = client.chat.completions.create(model="llama-3.3-70b", messages=USER, stop=[word])
    assert cut.choices[0].message.content == full[: full.index(word)]
    assert cut.choices[0].finish_reason == "stop"
    assert "stop" not in upstream_body(workers_ai)


# Errors


def test_bad_requests_are_400_in_openai_shape(client: openai.OpenAI, gateway_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="llama-3.3-70b", messages=USER, temperature=9)
    assert info.value.param == "temperature"
    raw = httpx.post(f"{gateway_url}/v1/chat/completions", content=b"{not json", timeout=5)
    assert raw.status_code == 400
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}
    missing = httpx.post(f"{gateway_url}/v1/chat/completions", json={"model": "llama-3.3-70b"}, timeout=5)
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "messages"


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-17", messages=USER)
    assert info.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("fault", "exception", "status", "code"),
    [
        pytest.param("status:429:3036", openai.RateLimitError, 429, "insufficient_quota", id="3036"),
        pytest.param("status:429:3021", openai.RateLimitError, 429, "rate_limit_exceeded", id="3021"),
        pytest.param("status:408", openai.InternalServerError, 504, "upstream_timeout", id="408"),
    ],
)
def test_workers_ai_error_codes_map_to_sdk_exceptions(
    client: openai.OpenAI,
    workers_ai: WorkersAIEmulator,
    fault: str,
    exception: type[openai.APIStatusError],
    status: int,
    code: str | None,
) -> None:
    workers_ai.faults.push(fault)
    with pytest.raises(exception) as info:
        client.chat.completions.create(model="llama-3.3-70b", messages=USER)
    assert info.value.status_code == status
    assert info.value.code == code
    assert "backend 'cloudflare'" in info.value.response.text
    assert CF_TOKEN not in info.value.response.text
    assert CF_ACCOUNT not in info.value.response.text


def test_quota_errors_tell_the_sdk_not_to_retry(gateway_url: str, workers_ai: WorkersAIEmulator) -> None:
    workers_ai.faults.push("status:429:3036")
    response = httpx.post(
        f"{gateway_url}/v1/chat/completions", json={"model": "llama-3.3-70b", "messages": USER}, timeout=5
    )
    assert response.status_code == 429
    assert response.headers["x-should-retry"] == "false"


def test_upstream_unknown_model_is_404(client: openai.OpenAI, workers_ai: WorkersAIEmulator) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-upstream", messages=USER)
    assert info.value.code == "model_not_found"


def test_wrong_gateway_credentials(start_gateway: GatewayFactory, workers_ai_server: Any) -> None:
    url = start_gateway(workers_ai_config(workers_ai_server[1].url, token="wrong-token-123"))
    with (
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
        pytest.raises(openai.APIStatusError) as info,
    ):
        client.chat.completions.create(model="llama-3.3-70b", messages=USER)
    assert info.value.status_code in (401, 403)
    assert "credentials were rejected" in info.value.message
    assert "wrong-token-123" not in info.value.response.text


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_invalid_utf8_before_the_first_token_is_a_502(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator, stream: bool
) -> None:
    """The emulator's bad bytes come before any token: nothing was sent, so it is a plain HTTP error."""
    workers_ai.faults.push("invalid-utf8")
    with pytest.raises(openai.InternalServerError) as info:  # noqa: PT012 - a stream raises while read
        result = client.chat.completions.create(model="llama-3.3-70b", messages=USER, stream=stream)
        if stream:
            list(result)
    assert info.value.status_code == 502
    assert info.value.code == "upstream_malformed"


def test_models_endpoints(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "llama-3.3-70b" in ids
    assert "gpt-4o-mini" in ids
    assert len(ids) == len(set(ids))
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_health_and_unknown_routes(gateway_url: str) -> None:
    assert httpx.get(f"{gateway_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway_url}/readyz").status_code == 200
    missing = httpx.post(f"{gateway_url}/v1/nothing-here", json={})
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "Invalid URL (POST /v1/nothing-here)"
