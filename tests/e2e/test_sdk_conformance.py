"""The official `openai` SDK against the gateway, the same tests for every backend and wire flavour.

`upstream` runs each test against Workers AI (legacy and OpenAI-shaped models) and vLLM (its legacy,
v0.11 and v0.33 wire flavours): whatever the backend, the client must see identical OpenAI behaviour.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import openai
import pytest

from tests.e2e.conftest import CF_ACCOUNT, CF_TOKEN, VLLM_KEY, async_client

if TYPE_CHECKING:
    from tests.emulators.common import RecordedRequest
    from tests.emulators.vllm import VLLMEmulator
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
SCHEMA: Any = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"]}


@dataclass
class Upstream:
    """One backend as the tests see it: which public model reaches it and how it speaks."""

    name: str
    model: str
    emulator: WorkersAIEmulator | VLLMEmulator
    auth_header: str
    secrets: tuple[str, ...]
    faults: dict[str, tuple[str, type[openai.APIStatusError], int, str | None]]
    """Generic fault → (this emulator's spec, SDK exception, gateway status, gateway code)."""
    reasoning_tokens: int = 0
    """Completion tokens the model spends reasoning before it answers."""
    json_mode_streams: bool = True
    """Whether a streamed JSON-mode request is streamed upstream too."""
    upstream_response_format: Callable[[dict[str, Any]], dict[str, Any]] = field(
        default=lambda schema: {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    )

    def last_request(self) -> RecordedRequest:
        """The last chat request (vLLM also sees the gateway's background `GET /health` probes)."""
        return [r for r in self.emulator.requests if r.method == "POST"][-1]

    def last_body(self) -> dict[str, Any]:
        body = self.last_request().body
        assert isinstance(body, dict)
        return body


WORKERS_AI_FAULTS: dict[str, tuple[str, type[openai.APIStatusError], int, str | None]] = {
    "bad-request": ("status:400:5006", openai.BadRequestError, 400, None),
    "rate-limited": ("status:429:3040", openai.RateLimitError, 429, "rate_limit_exceeded"),
    "server-error": ("status:500", openai.InternalServerError, 502, "upstream_error"),
    "credentials": ("status:403:10000", openai.PermissionDeniedError, 403, "upstream_credentials_rejected"),
    "malformed": ("malformed", openai.InternalServerError, 502, "upstream_malformed"),
}
VLLM_FAULTS: dict[str, tuple[str, type[openai.APIStatusError], int, str | None]] = {
    "bad-request": ("status:400", openai.BadRequestError, 400, None),
    "rate-limited": ("status:429", openai.RateLimitError, 429, "rate_limit_exceeded"),
    "server-error": ("status:500", openai.InternalServerError, 502, "upstream_error"),
    "credentials": ("status:401", openai.AuthenticationError, 401, "upstream_credentials_rejected"),
    "malformed": ("malformed", openai.InternalServerError, 502, "upstream_malformed"),
}


@pytest.fixture(params=["workers-ai", "workers-ai-openai", "vllm", "vllm-v0.33", "vllm-legacy"])
def upstream(request: pytest.FixtureRequest, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator) -> Upstream:
    name: str = request.param
    if name.startswith("workers-ai"):
        openai_shape = name == "workers-ai-openai"
        return Upstream(
            name=name,
            model="qwen3-30b" if openai_shape else "llama-3.3-70b",
            emulator=workers_ai,
            auth_header=f"Bearer {CF_TOKEN}",
            secrets=(CF_TOKEN, CF_ACCOUNT),
            faults=WORKERS_AI_FAULTS,
            reasoning_tokens=5 if openai_shape else 0,
            json_mode_streams=False,
            upstream_response_format=lambda schema: {"type": "json_schema", "json_schema": schema},
        )
    vllm.flavor = {"vllm": "v0.11", "vllm-v0.33": "v0.33", "vllm-legacy": "legacy"}[name]  # type: ignore[assignment]
    return Upstream(
        name=name,
        model="vllm-llama",
        emulator=vllm,
        auth_header=f"Bearer {VLLM_KEY}",
        secrets=(VLLM_KEY,),
        faults=VLLM_FAULTS,
    )


# Plain and streamed answers


def test_plain_completion(client: openai.OpenAI, upstream: Upstream) -> None:
    completion = client.chat.completions.create(model=upstream.model, messages=USER)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == upstream.model
    assert completion.choices[0].message.role == "assistant"
    assert "Hello from the emulator" in (completion.choices[0].message.content or "")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert upstream.last_request().headers["authorization"] == upstream.auth_header
    assert upstream.last_body()["max_tokens"] == 4096


def test_headers_name_the_backend_and_count_attempts(client: openai.OpenAI, upstream: Upstream) -> None:
    raw = client.chat.completions.with_raw_response.create(model=upstream.model, messages=USER)
    expected = "cloudflare" if upstream.name.startswith("workers-ai") else "vllm"
    assert raw.headers["x-gateway-backend"] == expected
    assert raw.headers["x-gateway-attempts"] == "1"
    assert raw.headers["x-request-id"]
    assert raw.parse().choices[0].message.content


@pytest.mark.anyio
async def test_async_client_plain_and_stream(gateway_url: str, upstream: Upstream) -> None:
    async with async_client(gateway_url) as client:
        completion = await client.chat.completions.create(model=upstream.model, messages=USER)
        assert completion.choices[0].message.content
        stream = await client.chat.completions.create(model=upstream.model, messages=USER, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == completion.choices[0].message.content


def test_stream_framing_through_the_sdk(client: openai.OpenAI, upstream: Upstream) -> None:
    chunks = list(
        client.chat.completions.create(
            model=upstream.model,
            messages=[{"role": "user", "content": "Say hello [[emu:words=12]]"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len({c.id for c in chunks}) == 1
    roles = [c.choices[0].delta.role for c in chunks if c.choices and c.choices[0].delta.role]
    assert roles == ["assistant"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 12
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    final_choice = next(c for c in reversed(chunks) if c.choices)
    assert final_choice.choices[0].finish_reason == "stop"
    assert final_choice.choices[0].delta.content is None  # finish rides on its own chunk, as at OpenAI
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12 + upstream.reasoning_tokens
    assert upstream.last_body()["stream"] is True


def test_usage_chunk_only_when_asked_for(client: openai.OpenAI, upstream: Upstream) -> None:
    chunks = list(client.chat.completions.create(model=upstream.model, messages=USER, stream=True))
    assert chunks[-1].choices
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_stream_helper_accumulates(client: openai.OpenAI, upstream: Upstream) -> None:
    with client.chat.completions.stream(
        model=upstream.model,
        messages=[{"role": "user", "content": "Say hello [[emu:words=5]]"}],
        stream_options={"include_usage": True},
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.choices[0].message.content is not None
    assert len(final.choices[0].message.content.split()) == 5
    assert final.usage is not None
    assert final.usage.completion_tokens == 5 + upstream.reasoning_tokens


def test_max_tokens_truncation_is_finish_length(client: openai.OpenAI, upstream: Upstream) -> None:
    completion = client.chat.completions.create(
        model=upstream.model,
        messages=[{"role": "user", "content": "Say a lot [[emu:words=40]]"}],
        max_tokens=8 + upstream.reasoning_tokens,
    )
    assert completion.choices[0].finish_reason == "length"
    assert len((completion.choices[0].message.content or "").split()) == 8


# Tools


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_tool_round_trip(client: openai.OpenAI, upstream: Upstream, stream: bool) -> None:
    """call → tool result → answer, with ids that survive the round trip."""
    model = upstream.model
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first: Any
    if stream:
        with client.chat.completions.stream(model=model, messages=messages, tools=[WEATHER_TOOL]) as s:
            for _ in s:
                pass
            first = s.get_final_completion()
    else:
        first = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"city": "London"}
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'})
    second = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    assert '{"temp_c": 21}' in (second.choices[0].message.content or "")
    assert second.choices[0].finish_reason == "stop"
    sent = upstream.last_body()
    assert sent["messages"][1]["tool_calls"][0]["id"] == call.id
    assert sent["messages"][1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent["messages"][2] == {
        "role": "tool",
        "content": '{"temp_c": 21}',
        "tool_call_id": call.id,
        "name": "get_weather",
    }
    assert sent["tools"][0]["function"]["name"] == "get_weather"


def test_parallel_tool_calls_get_dense_indexes_and_fresh_ids(
    client: openai.OpenAI, upstream: Upstream
) -> None:
    second_tool: Any = {**WEATHER_TOOL, "function": {**WEATHER_TOOL["function"], "name": "get_time"}}
    chunks = list(
        client.chat.completions.create(
            model=upstream.model,
            messages=[{"role": "user", "content": "weather and time [[emu:parallel]]"}],
            tools=[WEATHER_TOOL, second_tool],
            stream=True,
        )
    )
    headers = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or [] if t.id]
    assert [h.index for h in headers] == [0, 1]
    assert [h.function.name for h in headers if h.function] == ["get_weather", "get_time"]
    assert all(h.id and h.id.startswith("call_") for h in headers)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


# JSON mode


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_json_mode_with_schema(client: openai.OpenAI, upstream: Upstream, stream: bool) -> None:
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "country", "schema": SCHEMA}}
    if stream:
        chunks = list(
            client.chat.completions.create(
                model=upstream.model, messages=USER, response_format=response_format, stream=True
            )
        )
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        completion = client.chat.completions.create(
            model=upstream.model, messages=USER, response_format=response_format
        )
        content = completion.choices[0].message.content or ""
    assert json.loads(content) == {"capital": "capital"}
    sent = upstream.last_body()
    assert sent["response_format"] == upstream.upstream_response_format(SCHEMA)
    assert sent.get("stream", False) is (stream and upstream.json_mode_streams)


# Errors


@pytest.mark.parametrize("fault", list(VLLM_FAULTS))
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_upstream_errors_map_to_sdk_exceptions(
    client: openai.OpenAI, upstream: Upstream, fault: str, stream: bool
) -> None:
    spec, exception, status, code = upstream.faults[fault]
    upstream.emulator.faults.push(spec)
    with pytest.raises(exception) as info:  # noqa: PT012 - a stream raises while it is read
        result = client.chat.completions.create(model=upstream.model, messages=USER, stream=stream)
        if stream:
            list(result)
    assert info.value.status_code == status
    assert info.value.code == code
    body = info.value.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    backend = "cloudflare" if upstream.name.startswith("workers-ai") else "vllm"
    assert f"backend '{backend}'" in body["error"]["message"]
    assert info.value.response.headers["x-gateway-attempts"] == "1"
    for secret in upstream.secrets:
        assert secret not in info.value.response.text


@pytest.mark.parametrize("fault", ["cut:3", "abort:3"])
def test_broken_stream_after_first_byte_is_an_in_band_error(
    client: openai.OpenAI, upstream: Upstream, fault: str
) -> None:
    """No fake `stop`: the SDK raises on the in-band error instead of ending normally."""
    upstream.emulator.faults.push(fault)
    deltas: list[Any] = []
    with pytest.raises(openai.APIError) as info:  # noqa: PT012 - the error arrives mid-iteration
        for chunk in client.chat.completions.create(
            model=upstream.model,
            messages=[{"role": "user", "content": "long answer [[emu:words=30]]"}],
            stream=True,
        ):
            deltas.extend(chunk.choices)
    assert not isinstance(info.value, openai.APIStatusError)  # in-band: the HTTP status was 200
    assert deltas  # the answer had begun
    assert all(choice.finish_reason is None for choice in deltas)
    backend = "cloudflare" if upstream.name.startswith("workers-ai") else "vllm"
    assert f"backend '{backend}'" in str(info.value.message)


# Several choices, stop sequences, tool_choice modes, fields never forwarded


def n_calls(upstream: Upstream) -> list[dict[str, Any]]:
    """Bodies of the chat calls since the test began (vLLM also sees health probes)."""
    return [r.body for r in upstream.emulator.requests if r.method == "POST" and isinstance(r.body, dict)]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_n_choices(client: openai.OpenAI, upstream: Upstream, stream: bool) -> None:
    """n=3: three choices indexed 0..2, usage summed; vLLM generates them, Workers AI gets 3 calls."""
    messages: Any = [{"role": "user", "content": "Say four words [[emu:words=4]]"}]
    if stream:
        with client.chat.completions.stream(
            model=upstream.model, messages=messages, n=3, stream_options={"include_usage": True}
        ) as helper:
            chunks = [event.chunk for event in helper if event.type == "chunk"]
            completion: Any = helper.get_final_completion()
        indexes = [c.choices[0].index for c in chunks if c.choices]
        assert indexes[:3] == [0, 1, 2]  # each choice first appears in index order
        assert {i for i in indexes} == {0, 1, 2}
    else:
        completion = client.chat.completions.create(model=upstream.model, messages=messages, n=3)
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    for choice in completion.choices:
        assert choice.message.content == "alpha bravo café delta"
        assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3 * (4 + upstream.reasoning_tokens)
    calls = n_calls(upstream)
    if upstream.name.startswith("workers-ai"):
        assert len(calls) == 3
        assert all("n" not in body for body in calls)
    else:
        assert len(calls) == 1
        assert calls[0]["n"] == 3


def test_n_choices_get_distinct_seeds_on_workers_ai(client: openai.OpenAI, upstream: Upstream) -> None:
    client.chat.completions.create(model=upstream.model, messages=USER, n=3, seed=41)
    seeds = sorted(body["seed"] for body in n_calls(upstream))
    assert seeds == ([41, 42, 43] if upstream.name.startswith("workers-ai") else [41])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_stop_sequence_split_across_chunks(client: openai.OpenAI, upstream: Upstream, stream: bool) -> None:
    """`vo caf` spans the streamed ` bravo` / ` café` tokens: the answer ends right before it."""
    messages: Any = [{"role": "user", "content": "words [[emu:words=8]]"}]
    if stream:
        chunks = list(
            client.chat.completions.create(
                model=upstream.model, messages=messages, stop=["vo caf"], stream=True
            )
        )
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = chunks[-1].choices[0].finish_reason
    else:
        choice = client.chat.completions.create(
            model=upstream.model, messages=messages, stop=["vo caf"]
        ).choices[0]
        content, finish = choice.message.content or "", choice.finish_reason
    assert (content, finish) == ("alpha bra", "stop")


TIME_TOOL: Any = {**WEATHER_TOOL, "function": {**WEATHER_TOOL["function"], "name": "get_time"}}


@pytest.mark.parametrize(
    ("tool_choice", "called"),
    [
        pytest.param("auto", "get_weather", id="auto"),
        pytest.param("required", "get_weather", id="required"),
        pytest.param({"type": "function", "function": {"name": "get_time"}}, "get_time", id="named"),
        pytest.param("none", None, id="none"),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_tool_choice_modes(
    client: openai.OpenAI, upstream: Upstream, tool_choice: Any, called: str | None, stream: bool
) -> None:
    messages: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    tools = [WEATHER_TOOL, TIME_TOOL]
    if stream:
        with client.chat.completions.stream(
            model=upstream.model, messages=messages, tools=tools, tool_choice=tool_choice
        ) as helper:
            for _ in helper:
                pass
            completion: Any = helper.get_final_completion()
    else:
        completion = client.chat.completions.create(
            model=upstream.model, messages=messages, tools=tools, tool_choice=tool_choice
        )
    choice = completion.choices[0]
    sent = upstream.last_body()
    if called is None:
        assert choice.message.tool_calls in (None, [])
        assert choice.message.content
        assert "tools" not in sent
        return
    assert [call.function.name for call in choice.message.tool_calls] == [called]
    assert choice.finish_reason == "tool_calls"
    offered = [tool["function"]["name"] for tool in sent["tools"]]
    if upstream.name.startswith("workers-ai") and isinstance(tool_choice, dict):
        assert offered == ["get_time"]  # only the forced tool is offered
    else:
        assert offered == ["get_weather", "get_time"]


def test_user_and_metadata_are_never_forwarded(client: openai.OpenAI, upstream: Upstream) -> None:
    client.chat.completions.create(
        model=upstream.model, messages=USER, user="end-user-42", metadata={"ticket": "T-1"}, store=False
    )
    sent = upstream.last_body()
    assert not {"user", "metadata", "store"} & set(sent)


def test_reasoning_effort_is_forwarded_in_the_targets_terms(
    client: openai.OpenAI, upstream: Upstream
) -> None:
    client.chat.completions.create(model=upstream.model, messages=USER, reasoning_effort="minimal")
    assert upstream.last_body()["reasoning_effort"] == "low"


def test_earlier_reasoning_travels_apart_from_content(client: openai.OpenAI, upstream: Upstream) -> None:
    messages: Any = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "reasoning_content": "They greeted me."},
        {"role": "user", "content": "Again"},
    ]
    client.chat.completions.create(model=upstream.model, messages=messages)
    assert upstream.last_body()["messages"][1] == {
        "role": "assistant",
        "content": "Hello!",
        "reasoning": "They greeted me.",
    }
