"""What Workers AI lacks, done by the gateway: forced tool calls written as text, early stop, refusals.

Shared behaviour (n, stop, tool_choice modes on every backend) is in test_sdk_conformance.py.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import openai
import pytest
from structlog.testing import capture_logs

from tests.e2e.conftest import GatewayFactory, both_backends_config, workers_ai_config
from tests.waiting import wait_for

if TYPE_CHECKING:
    from tests.emulators.server import ServerThread
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
TIME_TOOL: Any = {**WEATHER_TOOL, "function": {**WEATHER_TOOL["function"], "name": "get_time"}}
FORCE_WEATHER: Any = {"type": "function", "function": {"name": "get_weather"}}


def ask(client: openai.OpenAI, stream: bool, **params: Any) -> Any:
    """A chat completion, through the SDK's stream helper when `stream`."""
    if stream:
        with client.chat.completions.stream(**params) as helper:
            for _ in helper:
                pass
            return helper.get_final_completion()
    return client.chat.completions.create(**params)


# A forced tool call written as text


@pytest.mark.parametrize("form", ["", "parameters", "bare", "fenced"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("model", ["llama-3.3-70b", "gpt-oss-120b"])
def test_forced_call_written_as_text_is_returned_as_a_tool_call(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator, form: str, stream: bool, model: str
) -> None:
    directive = f"[[emu:tool-in-text={form}]]" if form else "[[emu:tool-in-text]]"
    completion = ask(
        client,
        stream,
        model=model,
        messages=[{"role": "user", "content": f"Weather in Paris? {directive}"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice=FORCE_WEATHER,
    )
    choice = completion.choices[0]
    assert choice.message.content in (None, "")
    (call,) = choice.message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "London"})
    assert call.id.startswith("call_")
    assert choice.finish_reason == "tool_calls"


def test_the_text_streams_as_it_comes_when_it_is_not_the_call(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator
) -> None:
    """A forced tool but a prose answer: the prose is not held back to the end."""
    messages: Any = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny and warm today"},
    ]
    chunks = list(
        client.chat.completions.create(
            model="llama-3.3-70b",
            messages=messages,
            tools=[WEATHER_TOOL],
            tool_choice=FORCE_WEATHER,
            stream=True,
        )
    )
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(contents) == "The tool said: sunny and warm today"
    assert len(contents) > 1  # word by word, as the upstream sent it
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_required_with_one_tool_recovers_bare_arguments(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator
) -> None:
    completion = client.chat.completions.create(
        model="llama-3.3-70b",
        messages=[{"role": "user", "content": "Weather? [[emu:tool-in-text=bare]]"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
    )
    calls: Any = completion.choices[0].message.tool_calls
    assert [call.function.name for call in calls] == ["get_weather"]


@pytest.mark.parametrize(
    "tool_choice",
    [pytest.param("auto", id="auto"), pytest.param("required", id="required-two-tools-bare")],
)
def test_text_is_left_alone_unless_it_names_a_forced_tool(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator, tool_choice: Any
) -> None:
    """`auto` is never salvaged; with `required` and two tools a bare object could be either's."""
    completion = client.chat.completions.create(
        model="llama-3.3-70b",
        messages=[{"role": "user", "content": "Weather? [[emu:tool-in-text=bare]]"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice=tool_choice,
    )
    choice = completion.choices[0]
    assert choice.message.tool_calls is None
    assert json.loads(choice.message.content or "") == {"city": "London"}
    assert choice.finish_reason == "stop"


def test_legacy_function_call_is_recovered_too(client: openai.OpenAI, workers_ai: WorkersAIEmulator) -> None:
    completion = client.chat.completions.create(
        model="llama-3.3-70b",
        messages=[{"role": "user", "content": "Weather? [[emu:tool-in-text=parameters]]"}],
        functions=[WEATHER_TOOL["function"]],
        function_call={"name": "get_weather"},
    )
    choice = completion.choices[0]
    assert choice.message.function_call is not None
    assert choice.message.function_call.name == "get_weather"
    assert choice.finish_reason == "function_call"


# Stop sequences end the upstream call early


def test_a_stop_sequence_closes_the_upstream_stream(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator
) -> None:
    workers_ai.token_delay_s = 0.02  # the whole answer would take 4 s
    chunks = list(
        client.chat.completions.create(
            model="llama-3.3-70b",
            messages=[{"role": "user", "content": "count [[emu:words=200]]"}],
            stop=["delta"],
            stream=True,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "alpha bravo café "
    assert chunks[-1].choices[0].finish_reason == "stop"
    record = workers_ai.requests[-1]
    assert wait_for(lambda: record.disconnected)  # the gateway hung up: the upstream stops generating
    assert not record.finished


def test_with_several_choices_each_stopped_choice_closes_its_own_call(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator
) -> None:
    workers_ai.token_delay_s = 0.02
    completion = ask(
        client,
        True,
        model="llama-3.3-70b",
        messages=[{"role": "user", "content": "count [[emu:words=200]]"}],
        stop=[" café"],
        n=2,
    )
    assert [c.message.content for c in completion.choices] == ["alpha bravo", "alpha bravo"]
    records = workers_ai.requests[-2:]
    assert wait_for(lambda: all(r.disconnected for r in records))


# What cannot be honoured: a 400 naming the parameter and the model, or dropped with drop_unsupported

IMAGE: Any = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
AUDIO: Any = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
REFUSED: list[Any] = [
    pytest.param({"logprobs": True}, "logprobs", id="logprobs"),
    pytest.param({"logprobs": False, "top_logprobs": 2}, "top_logprobs", id="top_logprobs"),
    pytest.param({"logit_bias": {"1234": -100}}, "logit_bias", id="logit_bias"),
    pytest.param({"modalities": ["text", "audio"]}, "modalities", id="audio-output"),
    pytest.param({"web_search_options": {}}, "web_search_options", id="web_search_options"),
    pytest.param({"response_format": {"type": "json_object"}}, "response_format", id="no-json-mode"),
    pytest.param(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "what is it"}, IMAGE]}]},
        "messages[0].content",
        id="image-part",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "what is it"}, AUDIO]}]},
        "messages[0].content",
        id="audio-part",
    ),
]


@pytest.fixture
def strict_and_lenient(
    start_gateway: GatewayFactory, workers_ai_server: tuple[WorkersAIEmulator, ServerThread]
) -> str:
    """`plain` (json_mode: false) refuses; `lenient` (the same, drop_unsupported: true) drops."""
    config = workers_ai_config(workers_ai_server[1].url)
    target = [{"backend": "cloudflare", "model": "@cf/meta/llama-3.3-70b-instruct-fp8-fast"}]
    config["models"]["plain"] = {"targets": target, "json_mode": False}
    config["models"]["lenient"] = {"targets": target, "json_mode": False, "drop_unsupported": True}
    return start_gateway(config)


@pytest.mark.parametrize(("params", "param"), REFUSED)
def test_refused_parameters_name_the_parameter_and_the_model(
    strict_and_lenient: str, workers_ai: WorkersAIEmulator, params: dict[str, Any], param: str
) -> None:
    with (
        openai.OpenAI(base_url=f"{strict_and_lenient}/v1", api_key="k", max_retries=0) as client,
        pytest.raises(openai.BadRequestError) as info,
    ):
        client.chat.completions.create(**{"model": "plain", "messages": USER, **params})
    assert info.value.param == param
    assert info.value.code == "unsupported_parameter"
    assert "'plain'" in info.value.message
    assert workers_ai.requests == []  # refused before any upstream call


@pytest.mark.parametrize(("params", "param"), REFUSED)
def test_drop_unsupported_drops_them_and_logs_a_note(
    strict_and_lenient: str, workers_ai: WorkersAIEmulator, params: dict[str, Any], param: str
) -> None:
    with (
        capture_logs() as logs,
        openai.OpenAI(base_url=f"{strict_and_lenient}/v1", api_key="k", max_retries=0) as client,
    ):
        completion = client.chat.completions.create(**{"model": "lenient", "messages": USER, **params})
    assert completion.choices[0].message.content
    assert completion.choices[0].logprobs is None
    sent = workers_ai.requests[-1].body
    assert isinstance(sent, dict)
    assert not set(params) - {"messages"} & set(sent)
    assert all(isinstance(m["content"], str) for m in sent["messages"])
    notes = [entry for entry in logs if entry["event"] == "unsupported_parameters_dropped"]
    assert [note["params"] for note in notes] == [[param]]
    assert notes[0]["model"] == "lenient"


def test_json_mode_is_on_by_default(client: openai.OpenAI, workers_ai: WorkersAIEmulator) -> None:
    completion = client.chat.completions.create(
        model="llama-3.3-70b", messages=USER, response_format={"type": "json_object"}
    )
    assert json.loads(completion.choices[0].message.content or "")


# One call per choice: each with its own failover; one that cannot begin fails the request


def test_each_choice_fails_over_on_its_own(
    start_gateway: GatewayFactory,
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread],
    vllm_server: tuple[VLLMEmulator, ServerThread],
    workers_ai: WorkersAIEmulator,
    vllm: VLLMEmulator,
) -> None:
    config = both_backends_config(workers_ai_server[1].url, vllm_server[1].url)
    config["models"]["mixed"] = {
        "targets": [
            {"backend": "cloudflare", "model": "@cf/meta/llama-3.3-70b-instruct-fp8-fast"},
            {"backend": "vllm", "model": "meta-llama/Llama-3.3-70B-Instruct"},
        ]
    }
    url = start_gateway(config)
    workers_ai.faults.push("status:500")  # the first call to arrive fails; it alone moves to vLLM
    with openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="mixed", messages=[{"role": "user", "content": "hi [[emu:words=3]]"}], n=3
        )
    completion = raw.parse()
    assert [c.message.content for c in completion.choices] == ["alpha bravo café"] * 3
    assert raw.headers["x-gateway-attempts"] == "4"
    assert set(raw.headers["x-gateway-backend"].split(", ")) == {"cloudflare", "vllm"}
    assert len(workers_ai.requests) == 3
    (fallback,) = [r.body for r in vllm.requests if r.method == "POST"]
    assert "n" not in fallback


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_choice_that_cannot_begin_fails_the_whole_request(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator, stream: bool
) -> None:
    workers_ai.faults.push("status:400:5006")
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, stream, model="llama-3.3-70b", messages=USER, n=3)
    assert "backend 'cloudflare'" in info.value.message
    # The other calls are abandoned as soon as one fails: some may never have reached the upstream.
    assert 1 <= len(workers_ai.requests) <= 3
    assert wait_for(lambda: all(r.finished or r.disconnected for r in workers_ai.requests))
    again = client.chat.completions.create(model="llama-3.3-70b", messages=USER, n=3)
    assert len(again.choices) == 3


def test_a_choice_cut_after_the_answer_began_is_an_in_band_error(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator
) -> None:
    workers_ai.faults.push("cut:4")
    with pytest.raises(openai.APIError) as info:
        for _ in client.chat.completions.create(
            model="llama-3.3-70b",
            messages=[{"role": "user", "content": "count [[emu:words=30]]"}],
            n=2,
            stream=True,
        ):
            pass
    assert not isinstance(info.value, openai.APIStatusError)
    assert "backend 'cloudflare'" in str(info.value.message)
    assert wait_for(lambda: all(r.finished or r.disconnected for r in workers_ai.requests))
