"""What real clients tripped on (issue 14), checked against a real `gateway serve` on the mock backend
(the first thing a newcomer meets on `make run`) and against the emulators:

- a streamed answer's headers, read off the raw wire: each once;
- every parameter of the current OpenAI request schemas accepted, `prompt_cache_key` sent upstream as
  `x-session-affinity`, truly unknown names still a 400;
- the mock's JSON mode with nested pydantic models through openai-python's `.parse()`, also after a
  tool result (an agent with tools and an output type);
- a refused request's log line with its `param` and error code;
- every `/v1` route also served without the prefix.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import httpx
import openai
import pydantic
import pytest

from tests.e2e.conftest import VLLM_MODEL, sdk_client
from tests.gateway_process import GatewayProcess

if TYPE_CHECKING:
    from tests.emulators.vllm import VLLMEmulator
    from tests.emulators.workers_ai import WorkersAIEmulator

CONFIG: dict[str, Any] = {
    "backends": {"demo": {"kind": "mock", "token_delay_s": 0}},
    "models": {"mock-model": {"targets": [{"backend": "demo", "model": "mock"}]}},
}
USER: Any = [{"role": "user", "content": "Describe a person."}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(CONFIG, tmp_path_factory.mktemp("clients")) as process:
        yield process


@pytest.fixture
def sdk(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with sdk_client(gateway.url) as client:
        yield client


# The wire: a streamed answer's headers, each once


def raw_post(url: str, path: str, body: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """One HTTP/1.1 request on a plain socket: (status line, headers as sent, body bytes)."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + payload)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    raw_head, _, rest = received.partition(b"\r\n\r\n")
    status, *lines = raw_head.decode("latin-1").split("\r\n")
    headers = [
        (name.strip().lower(), value.strip()) for name, value in (line.split(":", 1) for line in lines)
    ]
    return status, headers, rest


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/v1/chat/completions", {"messages": USER}, id="chat"),
        pytest.param("/v1/completions", {"prompt": "Once upon a time"}, id="completions"),
    ],
)
def test_a_streamed_answer_sends_each_header_once(gateway: GatewayProcess, path: str, body: Any) -> None:
    status, headers, rest = raw_post(gateway.url, path, {"model": "mock-model", "stream": True, **body})
    assert status == "HTTP/1.1 200 OK"
    names = [name for name, _ in headers]
    assert sorted(set(names)) == sorted(names), f"repeated headers: {names}"
    values = dict(headers)
    assert values["content-type"] == "text/event-stream"
    assert values["cache-control"] == "no-cache"
    assert values["x-accel-buffering"] == "no"
    assert b"data: [DONE]" in rest


# Parameters: every one of the SDK's schemas accepted


def test_the_current_openai_parameters_are_accepted(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="mock-model",
        messages=USER,
        prompt_cache_key="conversation-7",
        prompt_cache_retention="24h",
        prompt_cache_options={"mode": "implicit", "ttl": "30m"},
        moderation={"model": "omni-moderation-latest", "policy": {"output": {"mode": "score"}}},
        safety_identifier="hashed-user-1",
        verbosity="low",
        service_tier="auto",
        store=False,
        metadata={"team": "search"},
        modalities=["text"],
        prediction={"type": "content", "content": "A person."},
        user="alice",
        max_completion_tokens=200,
    )
    assert completion.choices[0].message.content
    text = sdk.completions.create(model="mock-model", prompt="Once", user="alice", best_of=1, suffix="")
    assert text.choices[0].text


def test_a_truly_unknown_parameter_is_still_refused(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="mock-model", messages=USER, extra_body={"prompt_cache_ttl": "1h"})
    error = info.value.body
    assert isinstance(error, dict)
    assert (error["param"], error["message"]) == (
        "prompt_cache_ttl",
        "Unrecognized request argument supplied: prompt_cache_ttl",
    )


def test_prompt_cache_key_reaches_workers_ai_and_vllm_as_session_affinity(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator
) -> None:
    for model in ("llama-3.3-70b", "vllm-llama"):
        client.chat.completions.create(model=model, messages=USER, prompt_cache_key="conv-42")
        client.chat.completions.create(model=model, messages=USER, prompt_cache_key="naïve key")
        client.chat.completions.create(model=model, messages=USER)
    for emulator in (workers_ai, vllm):
        sent = [r for r in emulator.requests if r.method == "POST"]
        affinity = [r.headers.get("x-session-affinity") for r in sent]
        assert affinity[0] == "conv-42"
        assert affinity[1] is not None
        assert affinity[1].startswith("sha256-")
        assert affinity[2] is None
        assert all("prompt_cache_key" not in r.body for r in sent)
    assert vllm.requests[-1].body["model"] == VLLM_MODEL


# The mock follows the request: nested pydantic models through `.parse()`


class Address(pydantic.BaseModel):
    city: str
    postcode: str | None


class Pet(pydantic.BaseModel):
    kind: Literal["cat", "dog"]
    name: str


class Person(pydantic.BaseModel):
    name: str
    age: int = pydantic.Field(ge=18)
    home: Address
    pets: list[Pet]


def test_parse_gets_a_nested_pydantic_model(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.parse(model="mock-model", messages=USER, response_format=Person)
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person)
    assert isinstance(person.home, Address)
    assert person.age >= 18
    assert person.pets
    assert isinstance(person.pets[0], Pet)
    beta = sdk.beta.chat.completions.parse(model="mock-model", messages=USER, response_format=Person)
    assert beta.choices[0].message.parsed == person


def test_a_streamed_parse_gets_the_model_too(gateway: GatewayProcess) -> None:
    with (
        sdk_client(gateway.url) as sdk,
        sdk.chat.completions.stream(model="mock-model", messages=USER, response_format=Person) as stream,
    ):
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Person)


def lookup(city: str) -> str:
    return f"{city} has 3 parks"


def test_an_agent_with_tools_and_an_output_type(sdk: openai.OpenAI) -> None:
    """The Agents SDK's loop: call the tool, send its result, then expect the output type."""
    tools = [openai.pydantic_function_tool(Address, name="lookup_city", description="Facts about a city.")]
    messages: list[Any] = list(USER)
    first = sdk.chat.completions.parse(
        model="mock-model", messages=messages, tools=tools, response_format=Person
    )
    call = first.choices[0].message.tool_calls
    assert call
    assert first.choices[0].finish_reason == "tool_calls"
    arguments = call[0].function.parsed_arguments
    assert isinstance(arguments, Address)
    messages += [
        first.choices[0].message.model_dump(exclude_none=True, exclude={"parsed"}),
        {"role": "tool", "tool_call_id": call[0].id, "content": lookup(arguments.city)},
    ]
    final = sdk.chat.completions.parse(
        model="mock-model", messages=messages, tools=tools, response_format=Person
    )
    assert final.choices[0].finish_reason == "stop"
    assert isinstance(final.choices[0].message.parsed, Person)


def test_a_named_tool_gets_arguments_for_its_own_schema(sdk: openai.OpenAI) -> None:
    tools = [
        openai.pydantic_function_tool(Address, name="address"),
        openai.pydantic_function_tool(Person, name="person"),
    ]
    completion = sdk.chat.completions.parse(
        model="mock-model",
        messages=USER,
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "person"}},
    )
    (call,) = completion.choices[0].message.tool_calls or []
    assert call.function.name == "person"
    assert isinstance(call.function.parsed_arguments, Person)


# The log line of a refused request


def test_a_refused_request_logs_its_param_and_code(gateway: GatewayProcess) -> None:
    rid = f"test-{uuid.uuid4().hex[:12]}"
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "mock-model", "messages": USER, "logprobs": True},
        headers={"x-request-id": rid},
        timeout=30,
    )
    assert answer.status_code == 400
    (line,) = gateway.requests_logged(request_id=rid)
    assert (line["status"], line["error"], line["error_type"], line["error_code"], line["param"]) == (
        400,
        "unsupported_parameter",
        "invalid_request_error",
        "unsupported_parameter",
        "logprobs",
    )
    rid = f"test-{uuid.uuid4().hex[:12]}"
    httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "mock-model", "messages": [{"role": "user"}]},
        headers={"x-request-id": rid},
        timeout=30,
    )
    (line,) = gateway.requests_logged(request_id=rid)
    assert (line["error"], line["error_type"], line["error_code"], line["param"]) == (
        "invalid_request_error",
        "invalid_request_error",
        None,
        "messages[0].content",
    )


# Bare paths


def test_every_route_is_served_without_the_v1_prefix(gateway: GatewayProcess) -> None:
    with openai.OpenAI(base_url=gateway.url, api_key="k", max_retries=0, timeout=30) as bare:
        assert bare.chat.completions.create(model="mock-model", messages=USER).choices[0].message.content
        assert bare.completions.create(model="mock-model", prompt="Once").choices[0].text
        assert [m.id for m in bare.models.list()] == ["mock-model"]
        assert bare.models.retrieve("mock-model").id == "mock-model"
        streamed = list(bare.chat.completions.create(model="mock-model", messages=USER, stream=True))
        assert streamed[-1].choices[0].finish_reason == "stop"
        with pytest.raises(openai.NotFoundError):
            bare.models.retrieve("no-such-model")
    rid = f"test-{uuid.uuid4().hex[:12]}"
    httpx.get(f"{gateway.url}/models", headers={"x-request-id": rid}, timeout=30)
    (line,) = gateway.requests_logged(request_id=rid)
    assert (line["path"], line["status"]) == ("/models", 200)  # logged as the client sent it
    missing = httpx.post(f"{gateway.url}/nothing-here", json={}, timeout=30)
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "Invalid URL (POST /nothing-here)"
    assert httpx.get(f"{gateway.url}/healthz", timeout=30).json() == {"status": "ok"}
    wrong_method = httpx.get(f"{gateway.url}/chat/completions", timeout=30)
    assert wrong_method.status_code == 405
