"""The Responses API (`/v1/responses`) through the official openai SDK, on every backend kind.

`upstream` runs each test against Workers AI (legacy and OpenAI-shaped models), vLLM and the mock:
`responses.create`, `.stream` (whose accumulator enforces the event grammar), `.parse` with a
pydantic model, function-tool round trips (with `previous_response_id` and with the whole input
replayed), `max_output_tokens` cut-offs, errors in OpenAI's envelope before and after the first
event, the stored-response routes, key scoping, failover and limits, and two gateway replicas
sharing a real redis-server continuing each other's conversations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import openai
import pydantic
import pytest

from tests.e2e.conftest import (
    CF_ACCOUNT,
    CF_TOKEN,
    VLLM_KEY,
    VLLM_MODEL,
    cloudflare_backend,
    sdk_client,
    vllm_backend,
)
from tests.emulators.server import free_port

if TYPE_CHECKING:
    from tests.e2e.conftest import GatewayFactory
    from tests.emulators.vllm import VLLMEmulator
    from tests.emulators.workers_ai import WorkersAIEmulator
    from tests.redis_server import RedisServer

WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
MOCK_CONFIG: dict[str, Any] = {
    "backends": {"demo": {"kind": "mock", "token_delay_s": 0}},
    "models": {"mock-model": {"targets": [{"backend": "demo", "model": "mock"}]}},
}


def keyed_client(base_url: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=20)


def reference(item_id: str | None) -> Any:
    return {"type": "item_reference", "id": item_id}


class Country(pydantic.BaseModel):
    capital: str


@dataclass
class Upstream:
    name: str
    model: str
    emulator: WorkersAIEmulator | VLLMEmulator | None
    greeting: str
    """Text every plain answer contains."""
    city: str
    """The `city` argument the model calls `get_weather` with."""
    capital: str
    reasoning_tokens: int = 0

    def last_body(self) -> dict[str, Any]:
        assert self.emulator is not None
        body = [r for r in self.emulator.requests if r.method == "POST"][-1].body
        assert isinstance(body, dict)
        return body


@pytest.fixture(params=["workers-ai", "workers-ai-openai", "vllm", "vllm-v0.33", "mock"])
def upstream(request: pytest.FixtureRequest, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator) -> Upstream:
    name: str = request.param
    if name == "mock":
        return Upstream(name, "mock-model", None, "built-in mock backend", "example", "example")
    if name.startswith("workers-ai"):
        openai_shape = name == "workers-ai-openai"
        return Upstream(
            name,
            "qwen3-30b" if openai_shape else "llama-3.3-70b",
            workers_ai,
            "Hello from the emulator",
            "London",
            "capital",
            reasoning_tokens=5 if openai_shape else 0,
        )
    vllm.flavor = "v0.33" if name == "vllm-v0.33" else "v0.11"
    return Upstream(name, "vllm-llama", vllm, "Hello from the emulator", "London", "capital")


STREAM = pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])


def run(client: openai.OpenAI, *, stream: bool, **params: Any) -> Any:
    """A Response, created whole or streamed through `responses.stream` (its accumulator checks
    every event's order and identity) and returned as its final snapshot."""
    if not stream:
        return client.responses.create(**params)
    with client.responses.stream(**params) as events:
        seen = [event.type for event in events]
        final = events.get_final_response()
    assert seen[:2] == ["response.created", "response.in_progress"]
    assert seen[-1] == "response.completed"
    return final


# Text


@STREAM
def test_text_answer(client: openai.OpenAI, upstream: Upstream, stream: bool) -> None:
    response = run(client, stream=stream, model=upstream.model, input="Say hello please")
    assert response.id.startswith("resp_")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == upstream.model
    assert upstream.greeting in response.output_text
    message = next(item for item in response.output if item.type == "message")
    assert message.id.startswith("msg_")
    assert (message.status, message.role) == ("completed", "assistant")
    assert message.content[0].annotations == []
    assert response.usage is not None
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_raw_event_stream_has_strict_sequence_numbers(client: openai.OpenAI, upstream: Upstream) -> None:
    events = list(
        client.responses.create(
            model=upstream.model, input="Say hello please", instructions="Be brief.", stream=True
        )
    )
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == deltas
    assert events[-1].response.instructions == "Be brief."
    if upstream.emulator is not None:
        sent = upstream.last_body()
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
        assert sent.get("stream", False) is True


def test_max_output_tokens_is_incomplete(client: openai.OpenAI, upstream: Upstream) -> None:
    response = client.responses.create(
        model=upstream.model,
        input="Say a lot [[emu:words=40]] " + "and more " * 20,
        max_output_tokens=8 + upstream.reasoning_tokens,
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[-1].status == "incomplete"  # type: ignore[union-attr]


@STREAM
def test_parse_with_a_pydantic_model(client: openai.OpenAI, upstream: Upstream, stream: bool) -> None:
    if stream:
        with client.responses.stream(
            model=upstream.model, input="The capital of France?", text_format=Country
        ) as events:
            for _ in events:
                pass
            parsed = events.get_final_response().output_parsed
    else:
        parsed = client.responses.parse(
            model=upstream.model, input="The capital of France?", text_format=Country
        ).output_parsed
    assert parsed == Country(capital=upstream.capital)
    if upstream.emulator is not None:
        sent = upstream.last_body()
        assert "response_format" in sent


# Function tools


@STREAM
def test_function_tool_round_trip_with_previous_response_id(
    client: openai.OpenAI, upstream: Upstream, stream: bool
) -> None:
    first = run(
        client,
        stream=stream,
        model=upstream.model,
        input="What is the weather in Paris?",
        tools=[WEATHER_TOOL],
    )
    assert first.status == "completed"
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.id.startswith("fc_")
    assert call.call_id.startswith("call_")
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": upstream.city}
    second = run(
        client,
        stream=stream,
        model=upstream.model,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 21}'}],
        tools=[WEATHER_TOOL],
    )
    assert second.previous_response_id == first.id
    assert '{"temp_c": 21}' in second.output_text
    if upstream.emulator is not None:
        sent = upstream.last_body()
        assert sent["messages"][0]["role"] == "user"
        assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
        assert sent["messages"][2]["tool_call_id"] == call.call_id
        assert sent["tools"][0]["function"]["name"] == "get_weather"


def test_function_tool_round_trip_with_the_input_replayed(client: openai.OpenAI, upstream: Upstream) -> None:
    """As the Agents SDK does: earlier output items sent back verbatim, nothing stored."""
    history: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.responses.create(model=upstream.model, input=history, tools=[WEATHER_TOOL], store=False)
    history += [item.model_dump(exclude_none=True) for item in first.output]
    call = next(item for item in first.output if item.type == "function_call")
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny"})
    second = client.responses.create(model=upstream.model, input=history, tools=[WEATHER_TOOL], store=False)
    assert "sunny" in second.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)  # store: false keeps nothing


def test_forced_tool_choice(client: openai.OpenAI, upstream: Upstream) -> None:
    response = client.responses.create(
        model=upstream.model,
        input="What is the weather in Paris?",
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "name": "get_weather"},
    )
    assert [item.type for item in response.output if item.type == "function_call"] == ["function_call"]
    assert response.tool_choice.name == "get_weather"  # type: ignore[union-attr]


# Errors


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_upstream_error_before_the_first_event_is_an_http_error(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator, stream: bool
) -> None:
    workers_ai.faults.push("status:429:3040")
    with pytest.raises(openai.RateLimitError) as info:  # noqa: PT012 - a stream raises while it is read
        result = client.responses.create(model="llama-3.3-70b", input="hi", stream=stream)
        if stream:
            list(result)
    body = info.value.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert CF_TOKEN not in info.value.response.text
    assert CF_ACCOUNT not in info.value.response.text


def test_broken_stream_is_response_failed_then_error(client: openai.OpenAI, vllm: VLLMEmulator) -> None:
    vllm.faults.push("cut:3")
    seen: list[Any] = []
    with pytest.raises(openai.APIError) as info:  # noqa: PT012 - the error arrives mid-iteration
        for event in client.responses.create(
            model="vllm-llama", input="long answer [[emu:words=30]]", stream=True
        ):
            seen.append(event)
    # The SDK raises on the `error` frame (its nested `error` object), after `response.failed`.
    assert not isinstance(info.value, openai.APIStatusError)
    assert "backend 'vllm'" in info.value.message
    types = [e.type for e in seen]
    assert "response.output_text.delta" in types
    assert "response.completed" not in types
    failed = next(e for e in seen if e.type == "response.failed")
    assert failed.response.status == "failed"
    assert failed.response.error.code == "server_error"
    assert VLLM_KEY not in failed.response.error.message


def test_bad_requests_are_400s_naming_the_parameter(client: openai.OpenAI) -> None:
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"input": "hi", "bogus": 1}, "bogus"),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"type": "computer_call_output", "call_id": "x"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
        ({"input": "hi", "text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
        ({"input": "hi", "temperature": 9}, "temperature"),
        ({"input": "hi", "background": True}, "background"),
        ({}, "input"),
    ]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(model="mock-model", extra_body=extra)
        assert info.value.body["param"] == param, (extra, info.value.body)  # type: ignore[index]


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="no-such-model", input="hi")
    assert info.value.code == "model_not_found"


# Stored responses


def test_stored_response_routes(client: openai.OpenAI) -> None:
    first = client.responses.create(model="mock-model", input="one", metadata={"k": "v"})
    second = client.responses.create(
        model="mock-model",
        previous_response_id=first.id,
        input=[{"role": "user", "content": "two"}, {"role": "user", "content": "three"}],
    )
    fetched = client.responses.retrieve(second.id)
    assert (fetched.id, fetched.output_text) == (second.id, second.output_text)
    assert client.responses.retrieve(first.id).metadata == {"k": "v"}
    items = client.responses.input_items.list(second.id)
    texts = [item.content[0].text for item in items.data]  # type: ignore[union-attr,index]
    assert (texts[0], texts[1], texts[-1]) == ("three", "two", "one")  # newest first
    assert all(item.id for item in items.data)
    page = client.responses.input_items.list(second.id, limit=1, order="asc")
    assert page.has_more
    assert page.data[0].content[0].text == "one"  # type: ignore[union-attr,index]
    everything = [item.id for item in client.responses.input_items.list(second.id, limit=1, order="asc")]
    assert len(everything) == len(items.data) == 4  # one, its answer, two, three
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(second.id)
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="mock-model", previous_response_id=first.id, input="again")
    assert info.value.code == "previous_response_not_found"
    assert first.id in info.value.message


def test_item_reference_names_a_stored_item(client: openai.OpenAI) -> None:
    first = client.responses.create(model="mock-model", input="remember this")
    message = first.output[0]
    second = client.responses.create(
        model="mock-model",
        input=[
            {"role": "user", "content": "remember this"},
            reference(message.id),
            {"role": "user", "content": "what did you say?"},
        ],
    )
    assert second.status == "completed"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="mock-model", input=[{"type": "item_reference", "id": "msg_nothing"}])


def test_responses_are_visible_only_to_the_key_that_made_them(start_gateway: GatewayFactory) -> None:
    config = {
        **MOCK_CONFIG,
        "keys": [{"id": "alice", "key": "sk-alice-0123456789"}, {"id": "bob", "key": "sk-bob-0123456789"}],
    }
    url = start_gateway(config)
    with (
        keyed_client(url, "sk-alice-0123456789") as alice,
        keyed_client(url, "sk-bob-0123456789") as bob,
    ):
        made = alice.responses.create(model="mock-model", input="secret plans")
        assert alice.responses.retrieve(made.id).id == made.id
        with pytest.raises(openai.NotFoundError):
            bob.responses.retrieve(made.id)
        with pytest.raises(openai.NotFoundError) as info:
            bob.responses.create(model="mock-model", previous_response_id=made.id, input="tell me")
        assert info.value.code == "previous_response_not_found"
        with pytest.raises(openai.NotFoundError):
            bob.responses.delete(made.id)
        assert alice.responses.retrieve(made.id).id == made.id


def test_two_replicas_sharing_redis_continue_each_others_conversations(
    start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    config = {**MOCK_CONFIG, "redis_url": redis_server.url}
    one, two = start_gateway(config), start_gateway(config)
    tools = [WEATHER_TOOL]
    with sdk_client(one) as first_replica, sdk_client(two) as second_replica:
        with first_replica.responses.stream(model="mock-model", input="weather?", tools=tools) as events:
            for _ in events:
                pass
            started = events.get_final_response()
        call = next(item for item in started.output if item.type == "function_call")
        continued = second_replica.responses.create(
            model="mock-model",
            previous_response_id=started.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rainy"}],
            tools=tools,
        )
        assert "rainy" in continued.output_text
        assert first_replica.responses.retrieve(continued.id).output_text == continued.output_text
        referenced = first_replica.responses.create(
            model="mock-model",
            input=[
                reference(continued.output[0].id),
                {"role": "user", "content": "ok?"},
            ],
        )
        assert referenced.status == "completed"
        second_replica.responses.delete(started.id)
        with pytest.raises(openai.NotFoundError):
            first_replica.responses.retrieve(started.id)


def test_unreachable_redis_fails_only_stateful_requests(start_gateway: GatewayFactory) -> None:
    url = start_gateway({**MOCK_CONFIG, "redis_url": f"redis://127.0.0.1:{free_port()}"})
    with sdk_client(url) as client:
        fresh = client.responses.create(model="mock-model", input="hello")  # its store write fails quietly
        assert fresh.status == "completed"
        with pytest.raises(openai.InternalServerError) as info:
            client.responses.create(model="mock-model", previous_response_id=fresh.id, input="more")
        assert info.value.status_code == 503
        assert info.value.code == "store_unavailable"


# Failover and limits, as for chat


@STREAM
def test_failover_before_the_first_event(
    start_gateway: GatewayFactory,
    workers_ai_server: Any,
    vllm_server: Any,
    vllm: VLLMEmulator,
    workers_ai: WorkersAIEmulator,
    stream: bool,
) -> None:
    url = start_gateway(
        {
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
    )
    workers_ai.faults.push("status:500")
    with sdk_client(url) as client:
        if stream:
            with client.responses.with_streaming_response.create(
                model="chat", input="Say hello please", stream=True
            ) as raw:
                events = list(raw.parse())
                headers = raw.headers
            assert events[-1].type == "response.completed"
            text = events[-1].response.output_text
        else:
            raw_response = client.responses.with_raw_response.create(model="chat", input="Say hello please")
            headers = raw_response.headers
            text = raw_response.parse().output_text
    assert (headers["x-gateway-backend"], headers["x-gateway-attempts"]) == ("vllm", "2")
    assert "Hello from the emulator" in text


def test_key_limits_apply_as_for_chat(start_gateway: GatewayFactory) -> None:
    url = start_gateway({**MOCK_CONFIG, "keys": [{"id": "tiny", "key": "sk-tiny-0123456789", "rpm": 2}]})
    with keyed_client(url, "sk-tiny-0123456789") as client:
        client.responses.create(model="mock-model", input="one")
        client.chat.completions.create(model="mock-model", messages=[{"role": "user", "content": "two"}])
        with pytest.raises(openai.RateLimitError) as info:
            client.responses.create(model="mock-model", input="three")
    assert info.value.code == "rate_limit_exceeded"
    assert set(info.value.response.json()["error"]) == {"message", "type", "param", "code"}


@STREAM
def test_reasoning_becomes_a_reasoning_item_before_the_message(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator, stream: bool
) -> None:
    response = run(client, stream=stream, model="qwen3-30b", input="Say hello please")
    kinds = [item.type for item in response.output]
    assert kinds == ["reasoning", "message"]
    reasoning = response.output[0]
    assert reasoning.id.startswith("rs_")
    assert reasoning.summary[0].text
    # Replayed as the Agents SDK does, it reaches the model as the assistant turn's reasoning.
    history: list[Any] = [{"role": "user", "content": "Say hello please"}]
    history += [item.model_dump(exclude_none=True) for item in response.output]
    history.append({"role": "user", "content": "Again"})
    client.responses.create(model="qwen3-30b", input=history, store=False)
    sent = [r for r in workers_ai.requests if r.method == "POST"][-1].body
    assert isinstance(sent, dict)
    assistant = sent["messages"][1]
    assert assistant["role"] == "assistant"
    assert reasoning.summary[0].text in str(assistant)


@STREAM
def test_a_response_above_the_size_cap_is_not_stored_and_says_so(
    start_gateway: GatewayFactory, stream: bool
) -> None:
    url = start_gateway({**MOCK_CONFIG, "responses": {"max_stored_bytes": 8192}})
    long_input = "many words " * 1000
    with sdk_client(url) as client:
        if stream:
            with client.responses.stream(model="mock-model", input=long_input) as events:
                for _ in events:
                    pass
                final = events.get_final_response()
            kept = final.model_dump()["store"]
            response_id = final.id
        else:
            raw = client.responses.with_raw_response.create(model="mock-model", input=long_input)
            kept, response_id = raw.http_response.json()["store"], raw.parse().id
        assert kept is False
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response_id)
        small = client.responses.create(model="mock-model", input="short")
        assert client.responses.retrieve(small.id).id == small.id
