"""`POST /v1/completions` (legacy text completions) through the official SDK, against every backend kind.

Workers AI gets its Prompt schema (`prompt`, `raw`, `lora`, sampling) and the gateway emulates `stop`,
`n` and `echo`; vLLM gets its own `/v1/completions` with `n` and `stop` passed natively; the mock
continues the prompt. Whatever the backend, the client sees OpenAI's `text_completion` objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from structlog.testing import capture_logs

from tests.e2e.conftest import GatewayFactory, both_backends_config

if TYPE_CHECKING:
    from tests.emulators.common import RecordedRequest
    from tests.emulators.server import ServerThread
    from tests.emulators.vllm import VLLMEmulator
    from tests.emulators.workers_ai import WorkersAIEmulator

WORDS = ["alpha", "bravo", "café", "delta", "écho", "foxtrot", "golf", "hôtel"]


@dataclass
class Backend:
    name: str
    model: str
    emulator: WorkersAIEmulator | VLLMEmulator | None

    def posts(self) -> list[RecordedRequest]:
        """The completion calls the upstream received (vLLM also sees health probes)."""
        if self.emulator is None:
            return []
        return [r for r in self.emulator.requests if r.method == "POST"]

    def last_body(self) -> dict[str, Any]:
        body = self.posts()[-1].body
        assert isinstance(body, dict)
        return body


@pytest.fixture(params=["workers-ai", "vllm", "vllm-v0.33", "mock"])
def backend(request: pytest.FixtureRequest, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator) -> Backend:
    name: str = request.param
    if name == "workers-ai":
        return Backend(name, "llama-3.3-70b", workers_ai)
    if name == "mock":
        return Backend(name, "mock-model", None)
    vllm.flavor = "v0.33" if name == "vllm-v0.33" else "v0.11"
    return Backend(name, "vllm-llama", vllm)


def prompt(words: int) -> str:
    return f"Once upon a time [[emu:words={words}]]"


def test_whole_completion(client: openai.OpenAI, backend: Backend) -> None:
    completion = client.completions.create(model=backend.model, prompt=prompt(5), max_tokens=50)
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    assert completion.model == backend.model
    (choice,) = completion.choices
    assert (choice.index, choice.logprobs, choice.finish_reason) == (0, None, "stop")
    assert choice.text
    assert completion.usage is not None
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    if backend.emulator is not None:
        assert choice.text == " ".join(WORDS[:5])
        sent = backend.last_body()
        assert sent["prompt"] == prompt(5)
        assert sent["max_tokens"] == 50
        assert "messages" not in sent


def test_max_tokens_defaults_to_16_as_at_openai(client: openai.OpenAI, backend: Backend) -> None:
    completion = client.completions.create(model=backend.model, prompt=prompt(40))
    assert completion.choices[0].finish_reason == "length"
    if backend.emulator is not None:
        assert backend.last_body()["max_tokens"] == 16
        assert len(completion.choices[0].text.split()) == 16


def test_stream_matches_the_whole_answer(client: openai.OpenAI, backend: Backend) -> None:
    whole = client.completions.create(model=backend.model, prompt=prompt(6), max_tokens=50)
    chunks = list(
        client.completions.create(
            model=backend.model,
            prompt=prompt(6),
            max_tokens=50,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len({c.id for c in chunks}) == 1
    assert all(c.object == "text_completion" for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert whole.usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    if backend.emulator is not None:
        assert backend.last_body()["stream"] is True


def test_echo_prepends_the_prompt(client: openai.OpenAI, backend: Backend) -> None:
    whole = client.completions.create(model=backend.model, prompt=prompt(3), echo=True, max_tokens=20)
    assert whole.choices[0].text.startswith(prompt(3))
    chunks = list(
        client.completions.create(
            model=backend.model, prompt=prompt(3), echo=True, max_tokens=20, stream=True
        )
    )
    assert chunks[0].choices[0].text == prompt(3)
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_stop_sequence_split_across_chunks(client: openai.OpenAI, backend: Backend, stream: bool) -> None:
    """A stop sequence spanning two streamed words: the text ends right before it, finish `stop`."""
    whole = client.completions.create(model=backend.model, prompt=prompt(8), max_tokens=50).choices[0].text
    words = whole.split()
    stop = f"{words[1][-2:]} {words[2][:3]}"  # e.g. `vo caf` across ` bravo` / ` café`
    if stream:
        chunks = list(
            client.completions.create(
                model=backend.model, prompt=prompt(8), stop=[stop], max_tokens=50, stream=True
            )
        )
        text = "".join(c.choices[0].text for c in chunks)
        finish = chunks[-1].choices[0].finish_reason
    else:
        choice = client.completions.create(
            model=backend.model, prompt=prompt(8), stop=[stop], max_tokens=50
        ).choices[0]
        text, finish = choice.text, choice.finish_reason
    assert (text, finish) == (whole[: whole.index(stop)], "stop")
    if backend.name == "workers-ai":
        assert "stop" not in backend.last_body()  # not in the Prompt schema: the gateway cuts the text
    elif backend.emulator is not None:
        assert backend.last_body()["stop"] == [stop]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_n_choices_per_prompt(client: openai.OpenAI, backend: Backend, stream: bool) -> None:
    """Two prompts x n=2: four choices numbered prompt index x n + sample, usage summed."""
    prompts = [prompt(2), "Say three words [[emu:words=3]]"]
    if stream:
        chunks = list(
            client.completions.create(
                model=backend.model,
                prompt=prompts,
                n=2,
                max_tokens=20,
                stream=True,
                stream_options={"include_usage": True},
                temperature=0.7,
                seed=11,
            )
        )
        texts: dict[int, str] = {}
        finishes: dict[int, str] = {}
        for chunk in chunks:
            for choice in chunk.choices:
                texts[choice.index] = texts.get(choice.index, "") + choice.text
                if choice.finish_reason:
                    finishes[choice.index] = choice.finish_reason
        usage = chunks[-1].usage
        assert finishes == dict.fromkeys(range(4), "stop")
    else:
        completion = client.completions.create(
            model=backend.model, prompt=prompts, n=2, max_tokens=20, temperature=0.7, seed=11
        )
        texts = {choice.index: choice.text for choice in completion.choices}
        usage = completion.usage
        assert [choice.index for choice in completion.choices] == [0, 1, 2, 3]
    assert sorted(texts) == [0, 1, 2, 3]
    assert usage is not None
    if backend.emulator is None:
        return
    assert texts == {0: "alpha bravo", 1: "alpha bravo", 2: "alpha bravo café", 3: "alpha bravo café"}
    assert usage.completion_tokens == 2 + 2 + 3 + 3
    posts = backend.posts()
    if backend.name == "workers-ai":
        calls = posts[-4:]
        assert sorted((c.body["prompt"], c.body["seed"]) for c in calls) == [
            (prompts[0], 11),
            (prompts[0], 12),
            (prompts[1], 11),
            (prompts[1], 12),
        ]
    else:
        sent = backend.last_body()
        assert (sent["prompt"], sent["n"], sent["seed"]) == (prompts, 2, 11)


def test_user_is_never_forwarded(client: openai.OpenAI, backend: Backend) -> None:
    client.completions.create(model=backend.model, prompt=prompt(2), user="end-user-42")
    if backend.emulator is not None:
        assert "user" not in backend.last_body()


@pytest.mark.parametrize(
    ("params", "param"),
    [
        pytest.param({"suffix": "and they lived happily"}, "suffix", id="suffix"),
        pytest.param({"logprobs": 2}, "logprobs", id="logprobs"),
        pytest.param({"best_of": 3}, "best_of", id="best_of"),
        pytest.param({"prompt": [1, 2, 3]}, "prompt", id="token-ids"),
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_the_parameter(
    client: openai.OpenAI, backend: Backend, params: dict[str, Any], param: str
) -> None:
    before = len(backend.posts())
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=backend.model, **{"prompt": prompt(2), **params})
    assert info.value.param == param
    assert info.value.code == "unsupported_parameter"
    assert f"'{backend.model}'" in info.value.message
    assert len(backend.posts()) == before  # refused before any upstream call


# Workers AI specifics


def test_raw_and_lora_reach_the_prompt_schema(client: openai.OpenAI, workers_ai: WorkersAIEmulator) -> None:
    raw_prompt = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    completion = client.completions.create(
        model="llama-3.3-70b",
        prompt=raw_prompt,
        max_tokens=30,
        extra_body={"raw": True, "lora": "my-finetune", "top_k": 80, "repetition_penalty": 1.1},
    )
    assert completion.choices[0].text
    sent = workers_ai.requests[-1].body
    assert sent == {
        "prompt": raw_prompt,
        "max_tokens": 30,
        "top_k": 50,
        "repetition_penalty": 1.1,
        "lora": "my-finetune",
        "raw": True,
    }


def test_workers_ai_extensions_are_refused_for_vllm(client: openai.OpenAI, vllm: VLLMEmulator) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="vllm-llama", prompt="x", extra_body={"raw": True})
    assert info.value.param == "raw"


def test_a_model_without_a_prompt_schema_answers_with_workers_ais_400(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator
) -> None:
    """qwen3 takes only `messages`: its schema error reaches the client as a 400, not a 5xx."""
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="qwen3-30b", prompt="Once upon a time")
    assert "backend 'cloudflare'" in info.value.message


def test_upstream_failure_after_the_first_token_is_in_band(
    client: openai.OpenAI, workers_ai: WorkersAIEmulator
) -> None:
    workers_ai.faults.push("cut:3")
    with pytest.raises(openai.APIError) as info:
        for _ in client.completions.create(model="llama-3.3-70b", prompt=prompt(20), stream=True):
            pass
    assert not isinstance(info.value, openai.APIStatusError)
    assert "backend 'cloudflare'" in str(info.value.message)


# Routing, failover and limits are the chat endpoint's own


def test_completions_fail_over_like_chat(
    start_gateway: GatewayFactory,
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread],
    vllm_server: tuple[VLLMEmulator, ServerThread],
    workers_ai: WorkersAIEmulator,
    vllm: VLLMEmulator,
) -> None:
    config = both_backends_config(workers_ai_server[1].url, vllm_server[1].url)
    config["models"]["story"] = {
        "targets": [
            {"backend": "cloudflare", "model": "@cf/meta/llama-3.3-70b-instruct-fp8-fast"},
            {"backend": "vllm", "model": "meta-llama/Llama-3.3-70B-Instruct"},
        ]
    }
    url = start_gateway(config)
    workers_ai.faults.push("status:500")
    with openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client:
        raw = client.completions.with_raw_response.create(model="story", prompt=prompt(2), max_tokens=20)
    assert raw.headers["x-gateway-backend"] == "vllm"
    assert raw.headers["x-gateway-attempts"] == "2"
    assert raw.parse().choices[0].text == "alpha bravo"


def test_each_choice_counts_against_the_rate_limit(
    start_gateway: GatewayFactory,
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread],
    vllm_server: tuple[VLLMEmulator, ServerThread],
    workers_ai: WorkersAIEmulator,
) -> None:
    config = both_backends_config(workers_ai_server[1].url, vllm_server[1].url)
    config["keys"] = [{"id": "writers", "key": "sk-writers-0123456789abcdef", "rpm": 4}]
    url = start_gateway(config)
    with openai.OpenAI(base_url=f"{url}/v1", api_key="sk-writers-0123456789abcdef", max_retries=0) as client:
        raw = client.completions.with_raw_response.create(model="llama-3.3-70b", prompt=prompt(1), n=3)
        assert raw.headers["x-ratelimit-remaining-requests"] == "1"
        calls = len(workers_ai.requests)
        with pytest.raises(openai.RateLimitError):
            client.completions.create(model="llama-3.3-70b", prompt=prompt(1), n=2)
        assert len(workers_ai.requests) == calls  # refused before any upstream call
        client.completions.create(model="llama-3.3-70b", prompt=prompt(1))


def test_drop_unsupported_drops_and_logs(
    start_gateway: GatewayFactory,
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread],
    vllm_server: tuple[VLLMEmulator, ServerThread],
    workers_ai: WorkersAIEmulator,
) -> None:
    config = both_backends_config(workers_ai_server[1].url, vllm_server[1].url)
    config["models"]["llama-3.3-70b"]["drop_unsupported"] = True
    url = start_gateway(config)
    with (
        capture_logs() as logs,
        openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client,
    ):
        completion = client.completions.create(
            model="llama-3.3-70b", prompt=prompt(2), suffix="the end", logprobs=1, best_of=2
        )
    assert completion.choices[0].text == "alpha bravo"
    assert completion.choices[0].logprobs is None
    sent = workers_ai.requests[-1].body
    assert isinstance(sent, dict)
    assert not {"suffix", "logprobs", "best_of"} & set(sent)
    notes = [entry for entry in logs if entry["event"] == "unsupported_parameters_dropped"]
    assert notes
    assert set(notes[0]["params"]) == {"suffix", "logprobs", "best_of"}
    assert notes[0]["model"] == "llama-3.3-70b"


def test_wrong_method_and_bad_bodies_get_openai_errors(gateway_url: str) -> None:
    wrong = httpx.get(f"{gateway_url}/v1/completions", timeout=10)
    assert wrong.status_code == 405
    assert set(wrong.json()["error"]) == {"message", "type", "param", "code"}
    malformed = httpx.post(f"{gateway_url}/v1/completions", content=b'{"model": ', timeout=10)
    assert malformed.status_code == 400
    assert "could not parse the JSON body" in malformed.json()["error"]["message"]
    chat_shaped = httpx.post(
        f"{gateway_url}/v1/completions",
        json={"model": "llama-3.3-70b", "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert chat_shaped.status_code == 400
    assert chat_shaped.json()["error"]["param"] in ("prompt", "messages")
    assert "x-request-id" in chat_shaped.headers
