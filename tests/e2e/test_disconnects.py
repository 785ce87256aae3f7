"""A client that goes away mid-stream or mid-request, on both backend kinds, with limits kept in Redis.

What must follow: the upstream call is cancelled (the emulator sees the gateway hang up), the key's only
concurrency slot is free again at once, and the key pays for what was consumed: the prompt and the tokens
relayed before the client left, never the whole `max_tokens` reservation.
(`test_keys_and_limits.py` checks the exact charge of a Workers AI stream with each store; this file
extends that to vLLM, to requests dropped before any answer, and to the concurrency slot.)
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.e2e.conftest import GatewayFactory, both_backends_config
from tests.leaks import footprint, settled_footprint
from tests.waiting import wait_for

if TYPE_CHECKING:
    from tests.emulators.common import RecordedRequest
    from tests.emulators.server import ServerThread
    from tests.emulators.vllm import VLLMEmulator
    from tests.emulators.workers_ai import WorkersAIEmulator
    from tests.redis_server import RedisServer

KEY = "sk-disconnect-test-3f7a9c1e5b2d4f60"
TPM = 100_000
MAX_TOKENS = 2000
MODELS = {"workers-ai": "llama-3.3-70b", "vllm": "vllm-llama"}


@pytest.fixture
def gateway(
    start_gateway: GatewayFactory,
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread],
    vllm_server: tuple[VLLMEmulator, ServerThread],
    redis_server: RedisServer,
) -> str:
    """A gateway whose one key may have a single request in flight, counted in Redis."""
    config = both_backends_config(workers_ai_server[1].url, vllm_server[1].url)
    key_id = "team-" + os.urandom(4).hex()  # the session's Redis outlives each gateway
    config["keys"] = [{"id": key_id, "key": KEY, "tpm": TPM, "max_concurrency": 1}]
    config["redis_url"] = redis_server.url
    return start_gateway(config)


@pytest.fixture(params=["workers-ai", "vllm"])
def backend(
    request: pytest.FixtureRequest, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator
) -> tuple[str, WorkersAIEmulator | VLLMEmulator]:
    emulator: WorkersAIEmulator | VLLMEmulator = workers_ai if request.param == "workers-ai" else vllm
    return MODELS[request.param], emulator


def body(model: str, text: str, *, stream: bool) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": MAX_TOKENS,
        "stream": stream,
    }


AUTH = {"authorization": f"Bearer {KEY}"}


def inference(emulator: WorkersAIEmulator | VLLMEmulator) -> list[RecordedRequest]:
    return [r for r in emulator.requests if r.method == "POST"]


UPSTREAM_DELAY_S = 15
"""An upstream answer this late is never waited for: the client's read timeout is 0.5 s."""


def follow_up(url: str, request: dict[str, Any]) -> httpx.Response:
    """The same request again, not streamed: with `max_concurrency: 1` it gets in only if the slot is free."""
    answer = httpx.post(
        f"{url}/v1/chat/completions", json={**request, "stream": False}, headers=AUTH, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return answer


def test_a_stream_dropped_mid_answer_cancels_the_upstream_frees_the_slot_and_pays_its_tokens(
    gateway: str, backend: tuple[str, WorkersAIEmulator | VLLMEmulator]
) -> None:
    model, emulator = backend
    request = body(model, "Tell a long story [[emu:words=400]] [[emu:fault=slow:0.02]]", stream=True)
    received = ""
    with httpx.stream("POST", f"{gateway}/v1/chat/completions", json=request, headers=AUTH) as answer:
        assert answer.status_code == 200
        before = int(answer.headers["x-ratelimit-remaining-tokens"])
        for line in answer.iter_lines():
            if '"content":"' in line:
                received += line.split('"content":"', 1)[1].split('"', 1)[0]
            if len(received) > 40:
                break
    (upstream,) = inference(emulator)
    assert wait_for(lambda: upstream.disconnected), "the upstream call was not cancelled"
    assert not upstream.finished
    after = follow_up(gateway, request)  # the slot is free at once: no 429 for concurrency
    # Same request, same reservation: the difference is what the dropped stream was charged.
    charged = before - int(after.headers["x-ratelimit-remaining-tokens"])
    prompt = TPM - before - MAX_TOKENS  # the first reservation was the prompt estimate + max_tokens
    relayed = len(received) // 6  # a token is a few characters: a floor for what reached the client
    assert prompt + relayed <= charged < prompt + 150, (prompt, relayed, charged)


@pytest.mark.parametrize("fault", [f"delay:{UPSTREAM_DELAY_S}", "hang"])
def test_a_request_dropped_before_its_answer_cancels_the_upstream_and_frees_the_slot(
    gateway: str, backend: tuple[str, WorkersAIEmulator | VLLMEmulator], fault: str
) -> None:
    model, emulator = backend
    request = body(model, "Answer slowly [[emu:words=5]]", stream=False)
    emulator.faults.push(fault)  # queued: the follow-up request is answered at once
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{gateway}/v1/chat/completions", json=request, headers=AUTH, timeout=httpx.Timeout(10, read=0.5)
        )
    (upstream,) = inference(emulator)
    assert wait_for(lambda: upstream.disconnected), "the upstream call was not cancelled"
    assert upstream.status is None  # it never answered
    after = follow_up(gateway, request)
    # Neither waited for the upstream's delay nor for its hang (a busy machine is slow, not 10 s slow).
    assert time.monotonic() - started < UPSTREAM_DELAY_S - 5
    # Only the follow-up's reservation (prompt estimate + max_tokens) and at most the dropped request's
    # prompt are counted: the dropped request's max_tokens reservation was given back.
    counted = TPM - int(after.headers["x-ratelimit-remaining-tokens"])
    assert MAX_TOKENS <= counted < MAX_TOKENS + 150, counted
    usage = after.json()["usage"]
    assert usage["completion_tokens"] == 5


def test_a_large_request_dropped_before_its_answer_cancels_the_upstream(
    gateway: str, vllm: VLLMEmulator
) -> None:
    """Past 64 KiB of body the server pauses reading the socket; the leaving is still seen, though no
    task waits on `receive` any more (the server calls the gateway back, and reads on once the body
    is in)."""
    request = body(MODELS["vllm"], "Answer slowly [[emu:words=5]] " + "padding " * 16_000, stream=False)
    vllm.faults.push(f"delay:{UPSTREAM_DELAY_S}")
    # The client leaves after 3 s: time enough, on a busy machine, for the gateway to read the body
    # and call the upstream (which holds its answer for 15 s) before the leaving is seen.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{gateway}/v1/chat/completions", json=request, headers=AUTH, timeout=httpx.Timeout(10, read=3)
        )
    (upstream,) = inference(vllm)
    assert wait_for(lambda: upstream.disconnected), "the upstream call was not cancelled"
    assert upstream.status is None  # it never answered


def test_a_burst_of_dropped_streams_leaves_nothing_behind(
    gateway: str, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator
) -> None:
    """Twenty clients in turn drop their streams (both backends): every upstream call ends, and the
    gateway's tasks and upstream connections come back to where they were."""
    for model in MODELS.values():  # a finished request each first: lazily made clients and pools exist
        follow_up(gateway, body(model, "Hello [[emu:words=3]]", stream=False))
    baseline = footprint(gateway)
    workers_ai.reset()
    vllm.reset()
    for i in range(20):
        model = MODELS["vllm" if i % 2 else "workers-ai"]
        request = body(model, "Count [[emu:words=300]] [[emu:fault=slow:0.02]]", stream=True)
        with httpx.stream("POST", f"{gateway}/v1/chat/completions", json=request, headers=AUTH) as answer:
            assert answer.status_code == 200  # the previous dropped stream's slot is free again
            for line in answer.iter_lines():
                if '"content":"' in line:
                    break
    upstreams = inference(workers_ai) + inference(vllm)
    assert len(upstreams) == 20
    assert wait_for(lambda: all(r.disconnected and not r.finished for r in upstreams))
    after = settled_footprint(gateway, baseline)
    print(f"\n20 dropped streams: before {baseline.describe()}\n  after {after.describe()}")
    assert after.upstream_busy == 0
    assert after.tasks <= baseline.tasks


def test_a_client_that_leaves_while_queued_for_a_backend_slot_gives_up_its_place_and_its_lease(
    start_gateway: GatewayFactory,
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread],
    vllm_server: tuple[VLLMEmulator, ServerThread],
    workers_ai: WorkersAIEmulator,
    redis_server: RedisServer,
) -> None:
    """Workers AI takes one call at a time; the key two. B queues behind A and leaves: afterwards two
    requests at once are both admitted by the key (B's lease is gone) and both served (B's place in the
    backend's queue did not swallow the slot A freed)."""
    config = both_backends_config(workers_ai_server[1].url, vllm_server[1].url)
    config["backends"]["cloudflare"]["max_concurrency"] = 1
    config["keys"] = [{"id": "team-" + os.urandom(4).hex(), "key": KEY, "max_concurrency": 2}]
    config["redis_url"] = redis_server.url
    url = start_gateway(config)
    model = MODELS["workers-ai"]
    holder = body(model, "Count slowly [[emu:words=40]] [[emu:fault=slow:0.02]]", stream=True)
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=holder, headers=AUTH) as first:
        assert first.status_code == 200
        with pytest.raises(httpx.ReadTimeout):  # B: queued behind A, then gone
            httpx.post(
                f"{url}/v1/chat/completions",
                json=body(model, "Me next [[emu:words=3]]", stream=False),
                headers=AUTH,
                timeout=httpx.Timeout(10, read=0.3),
            )
        for _ in first.iter_lines():  # A reads its answer to the end
            pass
    assert len(inference(workers_ai)) == 1  # B never reached the upstream

    async def two_at_once() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as client:
            request = body(model, "Both of us [[emu:words=3]]", stream=False)
            answers = await asyncio.gather(
                *(client.post(f"{url}/v1/chat/completions", json=request, headers=AUTH) for _ in range(2))
            )
        return [answer.status_code for answer in answers]

    assert asyncio.run(two_at_once()) == [200, 200]
    assert len(inference(workers_ai)) == 3
