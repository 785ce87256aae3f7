"""Mid-stream failover (`resume: true`), end to end: a real `gateway serve`, the Workers AI and vLLM
emulators cutting an answer after a few tokens (`cut:<n>`: the body ends without `[DONE]`;
`abort:<n>`: the connection drops), continued on the other backend (or the same one), the openai SDK
as the client."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import VLLM_MODEL, cloudflare_backend, vllm_backend
from tests.e2e.test_failover import FIRST_BYTE_TIMEOUT_S, target
from tests.emulators.common import paragraphs_text, tokenize, words_text
from tests.emulators.workers_ai import HERMES
from tests.gateway_process import GatewayProcess

if TYPE_CHECKING:
    from tests.emulators.common import RecordedRequest
    from tests.emulators.server import ServerThread
    from tests.emulators.vllm import VLLMEmulator
    from tests.emulators.workers_ai import WorkersAIEmulator

WORDS = 24
MESSAGES: Any = [{"role": "user", "content": f"Count with me [[emu:words={WORDS}]]"}]
ANSWER = words_text(WORDS)
CUT = 7
"""Events sent before the cut: the role (or empty) event, then `CUT - 1` tokens."""


class Upstreams:
    def __init__(self, workers_ai: WorkersAIEmulator, cf_url: str, vllm: VLLMEmulator, vllm_url: str) -> None:
        self.workers_ai, self.cf_url, self.vllm, self.vllm_url = workers_ai, cf_url, vllm, vllm_url

    def emulator(self, backend: str) -> WorkersAIEmulator | VLLMEmulator:
        return self.workers_ai if backend == "cloudflare" else self.vllm

    def config(self, *backends: str, timeout_s: float = 30, **model: Any) -> dict[str, Any]:
        """Model `chat` on `backends` in order, with `resume: true`; `plain` the same without it.
        `timeout_s`: each backend's per-read timeout (the longest wait between two events)."""
        targets = [target(b) if b == "cloudflare" else target(b, VLLM_MODEL) for b in backends]
        return {
            "backends": {
                "cloudflare": cloudflare_backend(self.cf_url, timeout_s=timeout_s),
                "vllm": vllm_backend(self.vllm_url, timeout_s=timeout_s),
            },
            "models": {
                "chat": {"targets": targets, "resume": True, **model},
                "plain": {"targets": targets},
            },
        }


@pytest.fixture
def upstreams(
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread],
    vllm_server: tuple[VLLMEmulator, ServerThread],
    workers_ai: WorkersAIEmulator,
    vllm: VLLMEmulator,
) -> Upstreams:
    return Upstreams(workers_ai, workers_ai_server[1].url, vllm, vllm_server[1].url)


def client_for(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-none", max_retries=0, timeout=20)


class Streamed:
    """What a streaming client got: ids, text, finish reasons, the usage chunk."""

    def __init__(self, client: openai.OpenAI, model: str = "chat", messages: Any = MESSAGES) -> None:
        chunks = list(
            client.chat.completions.create(
                model=model, messages=messages, stream=True, stream_options={"include_usage": True}
            )
        )
        self.ids = {chunk.id for chunk in chunks}
        self.text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.finishes = [
            c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
        ]
        usages = [chunk.usage for chunk in chunks if chunk.usage is not None]
        assert len(usages) == 1
        self.usage = usages[0]


def posts(emulator: WorkersAIEmulator | VLLMEmulator) -> list[RecordedRequest]:
    return [r for r in emulator.requests if r.method == "POST"]


def resume_metric(gateway: GatewayProcess, backend: str, outcome: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    pattern = rf'^gateway_resumes_total\{{[^}}]*backend="{backend}"[^}}]*outcome="{outcome}"[^}}]*\}} (\S+)$'
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


PAIRS = [("cloudflare", "vllm"), ("vllm", "cloudflare")]


@pytest.mark.parametrize("fault", ["cut", "abort", "stall"])
@pytest.mark.parametrize(("first", "second"), PAIRS, ids=["cf-then-vllm", "vllm-then-cf"])
def test_cut_stream_is_finished_by_the_next_target(
    upstreams: Upstreams, tmp_path: Path, first: str, second: str, fault: str
) -> None:
    """`cut`: the body ends without its end marker; `abort`: the connection drops; `stall`: no event
    within the backend's `timeout_s` (FIRST_BYTE_TIMEOUT_S here)."""
    config = upstreams.config(first, second, timeout_s=FIRST_BYTE_TIMEOUT_S)
    with GatewayProcess(config, tmp_path) as gateway, client_for(gateway) as client:
        whole = Streamed(client, "plain")
        assert whole.text == ANSWER
        upstreams.emulator(first).faults.push(f"{fault}:{CUT}")
        got = Streamed(client)
        assert got.text == ANSWER  # no text lost, none repeated
        assert len(got.ids) == 1
        assert got.finishes == ["stop"]
        assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (
            whole.usage.prompt_tokens,
            whole.usage.completion_tokens,
        )
        (continuation,) = [r for r in posts(upstreams.emulator(second)) if r.continued is not None]
        assert continuation.continued == "".join(re.findall(r"\s*\S+", ANSWER)[: CUT - 1])
        (line,) = gateway.requests_logged(resumes=1)
        assert (line["backend"], line["attempts"], line["status"]) == (first, 2, 200)
        assert resume_metric(gateway, first, "resumed") == 1


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=["cf-then-vllm", "vllm-then-cf"])
def test_whole_answer_cut_mid_body_is_finished_by_the_next_target(
    upstreams: Upstreams, tmp_path: Path, first: str, second: str
) -> None:
    """A non-streamed answer is read as a stream upstream, so a cut keeps its text and is continued."""
    with GatewayProcess(upstreams.config(first, second), tmp_path) as gateway, client_for(gateway) as client:
        whole = client.chat.completions.create(model="plain", messages=MESSAGES)
        upstreams.emulator(first).faults.push(f"abort:{CUT}")
        got = client.chat.completions.create(model="chat", messages=MESSAGES)
        assert got.choices[0].message.content == ANSWER
        assert got.choices[0].finish_reason == "stop"
        assert got.usage is not None
        assert whole.usage is not None
        assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (
            whole.usage.prompt_tokens,
            whole.usage.completion_tokens,
        )
        (first_call,) = posts(upstreams.emulator(first))[1:]
        assert first_call.body["stream"] is True
        (continuation,) = [r for r in posts(upstreams.emulator(second)) if r.continued is not None]
        assert ANSWER.startswith(continuation.continued or "-")
        gateway.requests_logged(resumes=1)


def test_a_lone_target_continues_its_own_answer(upstreams: Upstreams, tmp_path: Path) -> None:
    vllm = upstreams.vllm
    with GatewayProcess(upstreams.config("vllm"), tmp_path) as gateway, client_for(gateway) as client:
        vllm.faults.push(f"cut:{CUT}")
        got = Streamed(client)
        assert (got.text, got.finishes) == (ANSWER, ["stop"])
        calls = posts(vllm)
        assert len(calls) == 2
        assert calls[1].body["continue_final_message"] is True
        assert calls[1].body["add_generation_prompt"] is False
        assert calls[1].body["messages"][-1] == {"role": "assistant", "content": calls[1].continued}


def test_resume_max_bounds_the_continuations(upstreams: Upstreams, tmp_path: Path) -> None:
    """Every call is cut: one continuation (`resume_max: 1`), then today's in-band error."""
    vllm, workers_ai = upstreams.vllm, upstreams.workers_ai
    config = upstreams.config("vllm", "cloudflare", resume_max=1)
    with GatewayProcess(config, tmp_path) as gateway, client_for(gateway) as client:
        vllm.faults.push("cut:3")
        workers_ai.faults.push("cut:3")
        texts: list[str] = []

        def read() -> None:
            for chunk in client.chat.completions.create(model="chat", messages=MESSAGES, stream=True):
                texts.append((chunk.choices[0].delta.content or "") if chunk.choices else "")

        with pytest.raises(openai.APIError, match=r"truncated|cut|ended"):
            read()
        text = "".join(texts)
        assert ANSWER.startswith(text)
        assert len(text) > 0
        assert len(posts(vllm)) + len(posts(workers_ai)) == 2
        (line,) = gateway.requests_logged(resumes=1)
        assert line["status"] == 200
        assert resume_metric(gateway, "vllm", "resumed") == 1
        assert resume_metric(gateway, "cloudflare", "exhausted") == 1


def test_no_target_able_to_prefill_ends_with_the_in_band_error(upstreams: Upstreams, tmp_path: Path) -> None:
    """Hermes on Workers AI has no chat template the gateway knows: no continuation can be built."""
    workers_ai = upstreams.workers_ai
    config = upstreams.config("cloudflare")
    config["models"]["chat"]["targets"] = [target("cloudflare", HERMES)]
    with GatewayProcess(config, tmp_path) as gateway, client_for(gateway) as client:
        workers_ai.faults.push(f"cut:{CUT}")
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(model="chat", messages=MESSAGES, stream=True))
        assert len(posts(workers_ai)) == 1
        assert resume_metric(gateway, "cloudflare", "unavailable") == 1
        (line,) = gateway.requests_logged(resumes=0, model="chat")
        assert line["status"] == 200


def test_cut_tool_call_is_generated_again_whole(upstreams: Upstreams, tmp_path: Path) -> None:
    """Tool-call deltas are held until the call's finish: a call cut mid-way was never sent, and the
    next target generates it again, whole."""
    vllm, workers_ai = upstreams.vllm, upstreams.workers_ai
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                    "required": ["city", "unit"],
                },
            },
        }
    ]
    with (
        GatewayProcess(upstreams.config("vllm", "cloudflare"), tmp_path) as gateway,
        client_for(gateway) as client,
    ):
        vllm.faults.push("abort:3")  # role, the call's name, one fragment of its arguments
        chunks = list(
            client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "Weather?"}], tools=tools, stream=True
            )
        )
        calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
        names = [call.function.name for call in calls if call.function and call.function.name]
        assert names == ["get_weather"]
        arguments = "".join(call.function.arguments or "" for call in calls if call.function)
        assert set(json.loads(arguments)) == {"city", "unit"}
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
            "tool_calls"
        ]
        assert posts(workers_ai)[0].continued is None  # restarted: nothing of the answer was sent
        gateway.requests_logged(resumes=1)


def test_text_completion_stream_is_resumed(upstreams: Upstreams, tmp_path: Path) -> None:
    vllm = upstreams.vllm
    vllm.continue_prompts = True
    try:
        with GatewayProcess(upstreams.config("vllm"), tmp_path) as gateway, client_for(gateway) as client:
            prompt = f"Count with me [[emu:words={WORDS}]]"
            whole = "".join(
                c.choices[0].text
                for c in client.completions.create(model="plain", prompt=prompt, stream=True, max_tokens=64)
            )
            vllm.faults.push(f"cut:{CUT}")
            chunks = list(client.completions.create(model="chat", prompt=prompt, stream=True, max_tokens=64))
            assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
            assert len({c.id for c in chunks}) == 1
            (continuation,) = [r for r in posts(vllm) if r.continued is not None]
            assert continuation.body["prompt"] == prompt + (continuation.continued or "-")
            # A completion stream has no role event: all `CUT` events were tokens, not asked again.
            assert continuation.body["max_tokens"] == 64 - CUT
    finally:
        vllm.continue_prompts = False


def test_responses_stream_is_resumed(upstreams: Upstreams, tmp_path: Path) -> None:
    """The Responses API is written from the same canonical stream: it gets the whole answer too."""
    vllm = upstreams.vllm
    with (
        GatewayProcess(upstreams.config("vllm", "cloudflare"), tmp_path) as gateway,
        client_for(gateway) as client,
    ):
        vllm.faults.push(f"abort:{CUT}")
        events = list(client.responses.create(model="chat", input=MESSAGES[0]["content"], stream=True))
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text == ANSWER
        (done,) = [e for e in events if e.type == "response.completed"]
        assert done.response.output_text == ANSWER
        gateway.requests_logged(resumes=1)


def test_anthropic_messages_stream_is_resumed(upstreams: Upstreams, tmp_path: Path) -> None:
    workers_ai = upstreams.workers_ai
    config = upstreams.config("cloudflare", "vllm")
    with GatewayProcess(config, tmp_path) as gateway:
        workers_ai.faults.push(f"cut:{CUT}")
        with (
            anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0, timeout=20) as client,
            client.messages.stream(model="chat", max_tokens=200, messages=MESSAGES) as stream,
        ):
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text == ANSWER
        assert final.stop_reason == "end_turn"
        gateway.requests_logged(resumes=1)


def test_whole_answer_that_cannot_be_continued_starts_again_elsewhere(
    upstreams: Upstreams, tmp_path: Path
) -> None:
    """Nothing of a non-streamed answer was sent: with no target able to continue it, it is restarted
    on the next target, as without `resume`."""
    workers_ai = upstreams.workers_ai
    config = upstreams.config("cloudflare")
    config["backends"]["cloudflare-2"] = cloudflare_backend(upstreams.cf_url)
    config["models"]["chat"]["targets"] = [target("cloudflare", HERMES), target("cloudflare-2", HERMES)]
    with GatewayProcess(config, tmp_path) as gateway, client_for(gateway) as client:
        workers_ai.faults.push(f"cut:{CUT}")
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
        got = raw.parse()
        assert (got.choices[0].message.content, got.choices[0].finish_reason) == (ANSWER, "stop")
        assert (raw.headers["x-gateway-backend"], raw.headers["x-gateway-attempts"]) == ("cloudflare-2", "2")
        assert [r.continued for r in posts(workers_ai)] == [None, None]
        assert resume_metric(gateway, "cloudflare", "unavailable") == 1


def test_failure_after_the_finish_ends_the_answer_whole(upstreams: Upstreams, tmp_path: Path) -> None:
    """vLLM's finish rides on the last token's chunk: a cut before the usage chunk loses nothing."""
    vllm = upstreams.vllm
    with GatewayProcess(upstreams.config("vllm"), tmp_path) as gateway, client_for(gateway) as client:
        vllm.faults.push(f"cut:{WORDS + 1}")  # the role event and every token, not the usage
        got = Streamed(client)
        assert (got.text, got.finishes) == (ANSWER, ["stop"])
        assert got.usage.completion_tokens > 0
        assert len(posts(vllm)) == 1
        (line,) = gateway.requests_logged(model="chat")
        assert (line["resumes"], line["error"]) == (0, None)


PARAGRAPHS = 12
SPACED: Any = [{"role": "user", "content": f"Write paragraphs [[emu:paragraphs={PARAGRAPHS}]]"}]
SPACED_ANSWER = paragraphs_text(PARAGRAPHS)
SPACED_TOKENS = tokenize(SPACED_ANSWER)


@pytest.mark.parametrize("blank", ["\n\n", " "], ids=["line-break", "space"])
@pytest.mark.parametrize(
    ("first", "second"), [*PAIRS, ("vllm", "vllm")], ids=["cf-then-vllm", "vllm-then-cf", "vllm"]
)
def test_cut_right_after_a_whitespace_token_repeats_and_loses_nothing(
    upstreams: Upstreams, tmp_path: Path, first: str, second: str, blank: str
) -> None:
    """Llama 3's chat template trims the message vLLM continues: the prefill is sent without its
    trailing whitespace, and the continuation's repeat of it (the client has it) is not relayed."""
    cut = SPACED_TOKENS.index(blank) + 2  # the role event, the tokens up to and with the blank one
    config = upstreams.config(first) if first == second else upstreams.config(first, second)
    with GatewayProcess(config, tmp_path) as gateway, client_for(gateway) as client:
        whole = Streamed(client, "plain", SPACED)
        assert whole.text == SPACED_ANSWER
        upstreams.emulator(first).faults.push(f"cut:{cut}")
        got = Streamed(client, messages=SPACED)
        assert got.text == SPACED_ANSWER
        assert got.finishes == ["stop"]
        assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (
            whole.usage.prompt_tokens,
            whole.usage.completion_tokens,
        )
        (continuation,) = [r for r in posts(upstreams.emulator(second)) if r.continued is not None]
        assert continuation.continued == "".join(SPACED_TOKENS[: cut - 2])  # no trailing whitespace
        gateway.requests_logged(resumes=1)


def test_workers_ai_continuation_is_written_as_its_template_trims(
    upstreams: Upstreams, tmp_path: Path
) -> None:
    """Workers AI's raw Llama 3 prompt trims each turn, as the template the first call went through."""
    workers_ai = upstreams.workers_ai
    messages: Any = [
        {"role": "system", "content": " Be brief.\n"},
        {"role": "user", "content": SPACED[0]["content"] + "\n\n"},
    ]
    with GatewayProcess(upstreams.config("cloudflare"), tmp_path) as gateway, client_for(gateway) as client:
        workers_ai.faults.push(f"cut:{SPACED_TOKENS.index(chr(10) * 2) + 2}")
        got = Streamed(client, messages=messages)
        assert got.text == SPACED_ANSWER
        (continuation,) = [r for r in posts(workers_ai) if r.continued is not None]
        assert continuation.body["prompt"].startswith(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            f"<|start_header_id|>user<|end_header_id|>\n\n{SPACED[0]['content']}<|eot_id|>"
        )
        gateway.requests_logged(resumes=1)


def test_text_with_special_tokens_is_not_continued_in_a_raw_prompt(
    upstreams: Upstreams, tmp_path: Path
) -> None:
    """`<|eot_id|>` typed by the client would be a control token in Workers AI's raw prompt: that
    continuation is refused, and the answer ends with today's in-band error."""
    workers_ai = upstreams.workers_ai
    messages: Any = [{"role": "user", "content": f"Stop at <|eot_id|> please [[emu:words={WORDS}]]"}]
    with GatewayProcess(upstreams.config("cloudflare"), tmp_path) as gateway, client_for(gateway) as client:
        workers_ai.faults.push(f"cut:{CUT}")
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(model="chat", messages=messages, stream=True))
        assert len(posts(workers_ai)) == 1
        assert resume_metric(gateway, "cloudflare", "unavailable") == 1
