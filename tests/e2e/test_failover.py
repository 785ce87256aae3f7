"""Routing and failover through the official SDK, against real emulators, sockets and faults.

The main model has two targets: the Workers AI emulator first, the vLLM emulator second. Every fault
that happens before the first token on the first target must still give the client a correct answer
from the second; client faults must not fail over; a failure after the first token must be reported
in-band; breakers, health probes, `max_concurrency` and the model deadline are exercised with small
thresholds and timeouts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from structlog.testing import capture_logs

from adapters import VLLMConfig, create_adapter
from gateway.app import create_app
from gateway.routing.health import HealthProber
from gateway.routing.router import BackendState
from tests.e2e.conftest import (
    CF_ACCOUNT,
    CF_TOKEN,
    NO_BREAKER,
    VLLM_KEY,
    VLLM_MODEL,
    GatewayFactory,
    async_client,
    cloudflare_backend,
    sdk_client,
    settings_for,
    vllm_backend,
)
from tests.emulators.raw import GarbageServer, ResetServer
from tests.emulators.server import ServerThread, free_port
from tests.waiting import HANG_GUARD_S, wait_for

if TYPE_CHECKING:
    from tests.emulators.vllm import VLLMEmulator
    from tests.emulators.workers_ai import WorkersAIEmulator

CF_MODEL = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
FIRST_BYTE_TIMEOUT_S = 1.5
"""The first target's per-read timeout in these configs: hangs and slow starts fail over quickly, and a
healthy answer on a busy machine (two suites on two cores) is never mistaken for one."""
TOO_SLOW_S = 5
"""A first byte or token this late is well past `FIRST_BYTE_TIMEOUT_S`, however late its timer fires."""
USER: Any = [{"role": "user", "content": "Say hello please"}]
ANSWER = "Hello from the emulator. You said: Say hello please"
SECRETS = (CF_TOKEN, CF_ACCOUNT, VLLM_KEY)


def target(backend: str, model: str = CF_MODEL, **extra: Any) -> dict[str, Any]:
    return {"backend": backend, "model": model, **extra}


def cf_then_vllm(
    workers_ai_url: str, vllm_url: str, *, cloudflare: dict[str, Any] | None = None, **model: Any
) -> dict[str, Any]:
    """A gateway whose model `chat` tries Cloudflare, then vLLM."""
    return {
        "backends": {
            "cloudflare": cloudflare_backend(
                workers_ai_url, **{"timeout_s": FIRST_BYTE_TIMEOUT_S, **(cloudflare or {})}
            ),
            "vllm": vllm_backend(vllm_url),
        },
        "models": {"chat": {"targets": [target("cloudflare"), target("vllm", VLLM_MODEL)], **model}},
    }


class Asked:
    """What the client got: headers, the text, the finish reason."""

    def __init__(self, headers: Mapping[str, str], text: str, finish: str | None) -> None:
        self.headers = headers
        self.text = text
        self.finish = finish
        self.backend = headers.get("x-gateway-backend")
        self.attempts = int(headers.get("x-gateway-attempts", "0"))


def ask(client: openai.OpenAI, model: str, *, stream: bool, messages: Any = USER) -> Asked:
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model=model, messages=messages, stream=True
        ) as response:
            chunks = list(response.parse())
            headers = response.headers
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert len(finishes) == 1
        return Asked(headers, text, finishes[0])
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    completion = raw.parse()
    return Asked(
        raw.headers, completion.choices[0].message.content or "", completion.choices[0].finish_reason
    )


def chat_requests(emulator: WorkersAIEmulator | VLLMEmulator) -> int:
    return sum(1 for r in emulator.requests if r.method == "POST")


# One gateway for the failover matrix: breakers off, so each test sees only its own fault.


@pytest.fixture(scope="module")
def matrix_url(
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread], vllm_server: tuple[VLLMEmulator, ServerThread]
) -> Iterator[str]:
    with ResetServer() as reset, GarbageServer() as garbage:
        config = cf_then_vllm(workers_ai_server[1].url, vllm_server[1].url)
        config["backends"] |= {
            "refused": cloudflare_backend(f"http://127.0.0.1:{free_port()}"),
            "reset": cloudflare_backend(reset.url),
            "garbage": cloudflare_backend(garbage.url),
        }
        for name in ("refused", "reset", "garbage"):
            config["models"][f"{name}-first"] = {"targets": [target(name), target("vllm", VLLM_MODEL)]}
        config["models"]["vllm-first"] = {"targets": [target("vllm", VLLM_MODEL), target("cloudflare")]}
        config["models"]["unknown-upstream-first"] = {
            "targets": [target("vllm", "no/such-model"), target("cloudflare")]
        }
        server = ServerThread(create_app(settings_for(config)), lifespan="on").start()
        yield server.url
        server.stop()


@pytest.fixture
def matrix(matrix_url: str) -> Iterator[openai.OpenAI]:
    with sdk_client(matrix_url) as client:
        yield client


CF_FAULTS = [
    pytest.param("status:500", id="500"),
    pytest.param("status:502", id="502"),
    pytest.param("status:503", id="503"),
    pytest.param("status:429:3040", id="429-capacity"),
    pytest.param("status:429:3036", id="429-daily-quota"),
    pytest.param("status:408", id="408"),
    pytest.param("status:401:10000", id="401-credentials"),
    pytest.param("status:400:5007", id="unknown-upstream-model"),
    pytest.param("status:404:7003", id="no-route-wrong-account"),
    pytest.param("malformed", id="malformed"),
    pytest.param("cut:1", id="cut-before-first-token"),
    pytest.param("abort:1", id="abort-before-first-token"),
    pytest.param("invalid-utf8", id="invalid-utf8"),
    pytest.param("hang", id="hang"),
    pytest.param(f"delay:{TOO_SLOW_S}", id="first-byte-timeout"),
]


@pytest.mark.parametrize("fault", CF_FAULTS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_fault_on_first_target_is_answered_by_the_second(
    matrix: openai.OpenAI, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator, fault: str, stream: bool
) -> None:
    workers_ai.faults.push(fault)
    asked = ask(matrix, "chat", stream=stream)
    assert (asked.backend, asked.attempts) == ("vllm", 2)
    assert (asked.text, asked.finish) == (ANSWER, "stop")
    assert chat_requests(workers_ai) == 1
    assert chat_requests(vllm) == 1


@pytest.mark.parametrize("first", ["refused", "reset", "garbage"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_broken_first_backend_is_answered_by_the_second(
    matrix: openai.OpenAI, vllm: VLLMEmulator, first: str, stream: bool
) -> None:
    """Connection refused, TCP reset before any answer, and a non-HTTP answer all fail over."""
    asked = ask(matrix, f"{first}-first", stream=stream)
    assert (asked.backend, asked.attempts) == ("vllm", 2)
    assert (asked.text, asked.finish) == (ANSWER, "stop")


def test_slow_first_token_fails_over(
    matrix: openai.OpenAI, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator
) -> None:
    """A stream whose first token takes longer than the backend's read timeout counts as a hang."""
    workers_ai.faults.push(f"slow:{TOO_SLOW_S}")
    asked = ask(matrix, "chat", stream=True)
    assert (asked.backend, asked.attempts, asked.text) == ("vllm", 2, ANSWER)


def test_slow_but_steady_stream_is_not_abandoned(
    matrix: openai.OpenAI, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator
) -> None:
    workers_ai.faults.push("slow:0.1")
    asked = ask(matrix, "chat", stream=True, messages=[{"role": "user", "content": "hi [[emu:words=3]]"}])
    assert (asked.backend, asked.attempts, asked.text) == ("cloudflare", 1, "alpha bravo café")
    assert chat_requests(vllm) == 0


def test_unknown_upstream_model_fails_over_and_is_logged_as_a_config_error(
    matrix: openai.OpenAI, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator
) -> None:
    with capture_logs() as logs:
        asked = ask(matrix, "unknown-upstream-first", stream=False)
    assert (asked.backend, asked.attempts, asked.text) == ("cloudflare", 2, ANSWER)
    (entry,) = [e for e in logs if e["event"] == "upstream_config_error"]
    assert entry["log_level"] == "error"
    assert (entry["backend"], entry["upstream_model"], entry["code"]) == (
        "vllm",
        "no/such-model",
        "model_not_found",
    )


# What does not fail over


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_client_fault_is_not_retried_elsewhere(
    matrix: openai.OpenAI, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator, stream: bool
) -> None:
    workers_ai.faults.push("status:400:5006")
    with pytest.raises(openai.BadRequestError) as info:  # noqa: PT012 - a stream raises while it is read
        result = matrix.chat.completions.create(model="chat", messages=USER, stream=stream)
        if stream:
            list(result)
    assert info.value.response.headers["x-gateway-attempts"] == "1"
    assert chat_requests(vllm) == 0


@pytest.mark.parametrize("flavor", ["legacy", "v0.11", "v0.33"])
def test_context_length_error_is_not_retried_elsewhere(
    matrix: openai.OpenAI, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator, flavor: Any
) -> None:
    vllm.flavor = flavor
    vllm.max_model_len = 64
    with pytest.raises(openai.BadRequestError) as info:
        matrix.chat.completions.create(model="vllm-first", messages=[{"role": "user", "content": "x" * 400}])
    assert (info.value.code, info.value.param) == ("context_length_exceeded", "messages")
    assert chat_requests(workers_ai) == 0


def test_failure_after_the_first_token_is_in_band_and_not_retried(
    matrix_url: str, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator
) -> None:
    workers_ai.faults.push("cut:4")
    body = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": "hi [[emu:words=30]]"}]}
    with capture_logs() as logs:
        response = httpx.post(f"{matrix_url}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 200
    assert response.headers["x-gateway-backend"] == "cloudflare"
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert "[DONE]" not in events
    assert '"content":"alpha"' in events[1]
    assert '"error"' in events[-1]
    assert "upstream_stream_truncated" in events[-1]
    assert not any('"finish_reason":"' in event for event in events)
    assert chat_requests(vllm) == 0
    assert any(e["event"] == "stream_failed_after_first_byte" for e in logs)


# When every target fails


def test_all_targets_failing_gives_one_error_listing_each(
    matrix: openai.OpenAI, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator
) -> None:
    workers_ai.faults.push("status:500")
    vllm.faults.push("status:500")
    with pytest.raises(openai.InternalServerError) as info:
        matrix.chat.completions.create(model="chat", messages=USER)
    assert (info.value.status_code, info.value.code) == (502, "upstream_error")
    message = info.value.message
    assert "No backend could answer for model 'chat' (2 targets)" in message
    assert "1) cloudflare: HTTP 500" in message
    assert "2) vllm: HTTP 500" in message
    assert info.value.response.headers["x-gateway-attempts"] == "2"
    for secret in SECRETS:
        assert secret not in info.value.response.text


def test_all_targets_rate_limited_is_503_with_the_last_retry_after(
    matrix: openai.OpenAI, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator
) -> None:
    workers_ai.faults.push("status:429:3040:retry-after=7")
    vllm.faults.push("status:429:retry-after=3")
    with pytest.raises(openai.InternalServerError) as info:
        matrix.chat.completions.create(model="chat", messages=USER)
    assert (info.value.status_code, info.value.code) == (503, "upstream_unavailable")
    assert info.value.response.headers["retry-after"] == "3"
    assert "x-should-retry" not in info.value.response.headers


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_deadline_bounds_all_attempts_together(
    start_gateway: GatewayFactory,
    workers_ai_server: Any,
    vllm_server: Any,
    workers_ai: WorkersAIEmulator,
    vllm: VLLMEmulator,
    stream: bool,
) -> None:
    """Both hang: Cloudflare times out after 1 s, vLLM (5 s) is cut by the model's 3 s deadline."""
    config = cf_then_vllm(
        workers_ai_server[1].url, vllm_server[1].url, cloudflare={"timeout_s": 1}, timeout_s=3
    )
    workers_ai.faults.push("hang")
    vllm.faults.push("hang")
    with sdk_client(start_gateway(config)) as client:
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as info:  # noqa: PT012 - a stream raises while read
            result = client.chat.completions.create(model="chat", messages=USER, stream=stream)
            if stream:
                list(result)
        elapsed = time.monotonic() - started
    assert (info.value.status_code, info.value.code) == (504, "upstream_timeout")
    assert "1) cloudflare: timeout" in info.value.message
    assert "2) vllm: no answer within the model's 3 s deadline" in info.value.message
    assert info.value.response.headers["x-gateway-attempts"] == "2"
    # Without the deadline the answer would take Cloudflare's 1 s plus vLLM's 5 s timeout.
    assert 2.95 <= elapsed < 6.0


def test_targets_left_untried_at_the_deadline_are_listed(
    start_gateway: GatewayFactory, workers_ai_server: Any, vllm_server: Any, workers_ai: WorkersAIEmulator
) -> None:
    config = cf_then_vllm(
        workers_ai_server[1].url, vllm_server[1].url, cloudflare={"timeout_s": 5}, timeout_s=0.3
    )
    workers_ai.faults.push("hang")
    with sdk_client(start_gateway(config)) as client, pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="chat", messages=USER)
    assert (info.value.status_code, info.value.code) == (504, "upstream_timeout")
    assert "2) vllm: not tried: the model's 0.3 s deadline had passed" in info.value.message
    assert info.value.response.headers["x-gateway-attempts"] == "1"


def test_deadline_does_not_cut_a_stream_that_has_begun(
    start_gateway: GatewayFactory, workers_ai_server: Any, vllm_server: Any, workers_ai: WorkersAIEmulator
) -> None:
    config = cf_then_vllm(workers_ai_server[1].url, vllm_server[1].url, timeout_s=1.5)
    workers_ai.faults.push("slow:0.4")  # first token after 0.4 s, the whole answer after about 2.4 s
    with sdk_client(start_gateway(config)) as client:
        asked = ask(client, "chat", stream=True, messages=[{"role": "user", "content": "hi [[emu:words=6]]"}])
    assert (asked.backend, asked.finish) == ("cloudflare", "stop")
    assert len(asked.text.split()) == 6


# Circuit breakers


COOLDOWN_S = 3.0
"""Long enough that a breaker tripped by one request is certainly still open for the next few, on a
busy machine; the tests wait for its end on `/readyz`, not for a guessed time."""


def breaker_config(workers_ai_server: Any, vllm_server: Any, **breaker: Any) -> dict[str, Any]:
    """`chat` (Cloudflare, then vLLM) plus `cf-only`, whose one target shares Cloudflare's breaker, so
    `/readyz` shows while it is open."""
    config = cf_then_vllm(workers_ai_server[1].url, vllm_server[1].url, cloudflare={"breaker": breaker})
    config["models"]["cf-only"] = {"targets": [target("cloudflare")]}
    return config


def breaker_is_open(url: str, model: str = "cf-only") -> bool:
    ready = httpx.get(f"{url}/readyz", timeout=30)
    return ready.status_code == 503 and model in ready.json()["models_without_healthy_target"]


def wait_for_cooldown(url: str, model: str = "cf-only") -> None:
    """Until the breaker lets its probe through (it was open when this was called)."""
    assert breaker_is_open(url, model)
    wait_for(lambda: not breaker_is_open(url, model), timeout=COOLDOWN_S + HANG_GUARD_S)


def test_breaker_opens_after_consecutive_failures_and_closes_after_a_good_probe(
    start_gateway: GatewayFactory,
    workers_ai_server: Any,
    vllm_server: Any,
    workers_ai: WorkersAIEmulator,
    vllm: VLLMEmulator,
) -> None:
    config = breaker_config(workers_ai_server, vllm_server, failure_threshold=2, cooldown_s=COOLDOWN_S)
    workers_ai.faults.push("status:500", times=2)
    url = start_gateway(config)
    with sdk_client(url) as client:
        for _ in range(2):
            asked = ask(client, "chat", stream=False)
            assert (asked.backend, asked.attempts) == ("vllm", 2)
        skipped = ask(client, "chat", stream=True)
        assert (skipped.backend, skipped.attempts, skipped.text) == ("vllm", 1, ANSWER)
        assert chat_requests(workers_ai) == 2
        wait_for_cooldown(url)
        probe = ask(client, "chat", stream=True)
        assert (probe.backend, probe.attempts) == ("cloudflare", 1)
        assert ask(client, "chat", stream=False).backend == "cloudflare"
    assert chat_requests(workers_ai) == 4


def test_failed_probe_opens_the_breaker_again(
    start_gateway: GatewayFactory,
    workers_ai_server: Any,
    vllm_server: Any,
    workers_ai: WorkersAIEmulator,
    vllm: VLLMEmulator,
) -> None:
    config = breaker_config(workers_ai_server, vllm_server, failure_threshold=1, cooldown_s=COOLDOWN_S)
    workers_ai.faults.push("status:500")
    url = start_gateway(config)
    with sdk_client(url) as client:
        assert ask(client, "chat", stream=False).attempts == 2
        assert ask(client, "chat", stream=False).attempts == 1
        wait_for_cooldown(url)
        workers_ai.faults.push("status:503")
        assert ask(client, "chat", stream=False).attempts == 2  # the probe, then vLLM
        assert ask(client, "chat", stream=False).attempts == 1  # skipped again at once
        assert breaker_is_open(url)  # with the full cooldown again
    assert chat_requests(workers_ai) == 2


def test_client_faults_do_not_trip_the_breaker(
    start_gateway: GatewayFactory,
    workers_ai_server: Any,
    vllm_server: Any,
    workers_ai: WorkersAIEmulator,
    vllm: VLLMEmulator,
) -> None:
    config = breaker_config(workers_ai_server, vllm_server, failure_threshold=1, cooldown_s=30)
    workers_ai.faults.push("status:400:5006", times=3)
    with sdk_client(start_gateway(config)) as client:
        for _ in range(3):
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(model="chat", messages=USER)
        assert ask(client, "chat", stream=False).backend == "cloudflare"


def test_open_breaker_on_every_target_is_a_503_and_not_ready(
    start_gateway: GatewayFactory, workers_ai_server: Any, workers_ai: WorkersAIEmulator
) -> None:
    config = {
        "backends": {
            "cloudflare": cloudflare_backend(
                workers_ai_server[1].url, breaker={"failure_threshold": 1, "cooldown_s": COOLDOWN_S}
            )
        },
        "models": {"solo": {"targets": [target("cloudflare")]}},
    }
    url = start_gateway(config)
    workers_ai.faults.push("status:500")
    with sdk_client(url) as client:
        with pytest.raises(openai.InternalServerError) as first:
            client.chat.completions.create(model="solo", messages=USER)
        assert (first.value.status_code, first.value.code) == (502, "upstream_error")
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "models_without_healthy_target": ["solo"]}
        with pytest.raises(openai.InternalServerError) as skipped:
            client.chat.completions.create(model="solo", messages=USER)
        assert (skipped.value.status_code, skipped.value.code) == (503, "upstream_unavailable")
        assert "circuit open" in skipped.value.message
        assert skipped.value.response.headers["x-gateway-attempts"] == "0"
        assert 1 <= int(skipped.value.response.headers["retry-after"]) <= round(COOLDOWN_S)
        assert chat_requests(workers_ai) == 1
        wait_for_cooldown(url, "solo")
        assert httpx.get(f"{url}/readyz").status_code == 200
        completion = client.chat.completions.create(model="solo", messages=USER)
        assert completion.choices[0].message.content == ANSWER


# vLLM health probes and readiness


def test_unhealthy_vllm_is_skipped_and_readiness_follows_its_health(
    start_gateway: GatewayFactory,
    workers_ai_server: Any,
    vllm_server: Any,
    workers_ai: WorkersAIEmulator,
    vllm: VLLMEmulator,
) -> None:
    config = {
        "backends": {
            "cloudflare": cloudflare_backend(workers_ai_server[1].url),
            "vllm": vllm_backend(vllm_server[1].url, breaker={**NO_BREAKER, "health_interval_s": 0.05}),
        },
        "models": {
            "vllm-first": {"targets": [target("vllm", VLLM_MODEL), target("cloudflare")]},
            "vllm-only": {"targets": [target("vllm", VLLM_MODEL)]},
        },
    }
    url = start_gateway(config)
    wait_for(lambda: any(r.path == "/health" for r in vllm.requests))
    assert httpx.get(f"{url}/readyz").status_code == 200
    vllm.healthy = False
    wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 503)
    assert httpx.get(f"{url}/readyz").json()["models_without_healthy_target"] == ["vllm-only"]
    with sdk_client(url) as client:
        asked = ask(client, "vllm-first", stream=True)
        assert (asked.backend, asked.attempts, asked.text) == ("cloudflare", 1, ANSWER)
        assert chat_requests(vllm) == 0
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="vllm-only", messages=USER)
        assert info.value.status_code == 503
        assert "failing its health check (HTTP 503)" in info.value.message
        vllm.healthy = True
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200)
        assert ask(client, "vllm-first", stream=False).backend == "vllm"


@pytest.mark.anyio
async def test_health_endpoint_hidden_by_a_proxy_does_not_take_the_backend_out(
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread],
) -> None:
    """A 404 on /health says nothing about vLLM itself: warn once, keep judging it by live traffic."""
    emulator = workers_ai_server[0]
    adapter = create_adapter("gpu", VLLMConfig(base_url=f"{workers_ai_server[1].url}/v1"))
    state = BackendState("gpu", adapter, limit=None, health_interval_s=0.01)
    prober = HealthProber([state])

    def probes() -> int:
        return sum(1 for r in emulator.requests if r.path == "/health")

    before = probes()
    with capture_logs() as logs:
        prober.start()
        deadline = time.monotonic() + HANG_GUARD_S
        # Several probes, however slow the machine (the emulator counts them in its own thread).
        while probes() < before + 3 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await prober.stop()
    assert probes() >= before + 3
    await adapter.aclose()
    assert state.health_error is None
    assert [e["event"] for e in logs].count("health_endpoint_unusable") == 1
    assert not any(e["event"] == "backend_unhealthy" for e in logs)


def test_config_with_only_cloudflare_targets_is_ready(
    start_gateway: GatewayFactory, workers_ai_server: Any
) -> None:
    config = {
        "backends": {"cloudflare": cloudflare_backend(workers_ai_server[1].url)},
        "models": {"solo": {"targets": [target("cloudflare")]}},
    }
    response = httpx.get(f"{start_gateway(config)}/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ready"})


# Concurrency limits and weights


@pytest.mark.anyio
async def test_full_backend_is_passed_over_for_the_next_target(
    start_gateway: GatewayFactory,
    workers_ai_server: Any,
    vllm_server: Any,
    workers_ai: WorkersAIEmulator,
    vllm: VLLMEmulator,
) -> None:
    cloudflare = {"max_concurrency": 1, "timeout_s": 5}
    config = cf_then_vllm(workers_ai_server[1].url, vllm_server[1].url, cloudflare=cloudflare)
    url = start_gateway(config)
    workers_ai.faults.push("slow:0.3")  # the held stream lasts about 1.8 s, on any machine long enough
    async with async_client(url) as client:
        held = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi [[emu:words=6]]"}], stream=True
        )
        first = await anext(aiter(held))
        assert first.choices
        raw = await client.chat.completions.with_raw_response.create(model="chat", messages=USER)
        assert (raw.headers["x-gateway-backend"], raw.headers["x-gateway-attempts"]) == ("vllm", "1")
        rest = [chunk async for chunk in held]
        assert rest[-1].choices[0].finish_reason == "stop"
        again = await client.chat.completions.with_raw_response.create(model="chat", messages=USER)
        assert again.headers["x-gateway-backend"] == "cloudflare"  # the slot was given back


@pytest.mark.anyio
async def test_request_waits_for_a_slot_when_every_target_is_full(
    start_gateway: GatewayFactory, workers_ai_server: Any, workers_ai: WorkersAIEmulator
) -> None:
    config = {
        "backends": {"cloudflare": cloudflare_backend(workers_ai_server[1].url, max_concurrency=1)},
        "models": {
            "solo": {"targets": [target("cloudflare")]},
            "impatient": {"targets": [target("cloudflare")], "timeout_s": 0.2},
        },
    }
    url = start_gateway(config)
    workers_ai.faults.push("slow:0.5")  # the held stream would last about 3 s: it is closed long before
    async with async_client(url) as client:
        held = await client.chat.completions.create(
            model="solo", messages=[{"role": "user", "content": "hi [[emu:words=6]]"}], stream=True
        )
        await anext(aiter(held))
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="impatient", messages=USER)
        assert (info.value.status_code, info.value.code) == (503, "upstream_unavailable")
        assert "at max_concurrency (1 requests in flight)" in info.value.message
        assert info.value.response.headers["retry-after"] == "1"
        waiting = asyncio.ensure_future(client.chat.completions.create(model="solo", messages=USER))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await held.close()  # the client goes away: its slot passes to the waiting request
        completion = await asyncio.wait_for(waiting, HANG_GUARD_S)
        assert completion.choices[0].message.content == ANSWER


def test_weighted_targets_share_the_load(
    start_gateway: GatewayFactory, vllm_server: Any, vllm: VLLMEmulator
) -> None:
    config = {
        "backends": {
            "gpu-a": vllm_backend(vllm_server[1].url),
            "gpu-b": vllm_backend(vllm_server[1].url),
        },
        "models": {
            "chat": {
                "targets": [target("gpu-a", VLLM_MODEL, weight=1), target("gpu-b", VLLM_MODEL, weight=1)]
            }
        },
    }
    with sdk_client(start_gateway(config)) as client:
        backends = [ask(client, "chat", stream=False).backend for _ in range(40)]
    assert set(backends) == {"gpu-a", "gpu-b"}


def test_models_list_each_public_name_once(
    matrix: openai.OpenAI,
) -> None:
    ids = [m.id for m in matrix.models.list()]
    assert ids.count("chat") == 1
    assert len(ids) == len(set(ids))
