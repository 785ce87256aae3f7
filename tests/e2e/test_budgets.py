"""Budgets across three `gateway serve` replicas sharing one real Redis: a concurrent burst admits
exactly what the budget covers, answers settle their real cost (streams and disconnects too), and an
over-budget key gets OpenAI's `insufficient_quota` (the OpenAI SDK makes one request, no retry) or
Anthropic's error on /v1/messages."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import anthropic
import httpx
import httpx2
import openai
import pytest
import redis

from gateway.limits.base import budget_period
from gateway.limits.gate import BUDGET_HEADER
from tests import secret_scan
from tests.emulators.server import free_port
from tests.gateway_process import GatewayProcess
from tests.waiting import wait_for

if TYPE_CHECKING:
    from pathlib import Path

    from tests.redis_server import RedisServer

REPLICAS = 3
OUTPUT_PER_MTOK = 1000.0
"""USD per million output tokens: 1000 micro-USD per token. Input is free, so an answer's real cost is
exactly its output tokens' (the prompt estimate and the mock's prompt count differ)."""
MAX_TOKENS = 7
"""Below the mock's answer length: every answer is cut at exactly max_tokens, so its real cost equals
its reservation and settling changes nothing, whatever the order of events across replicas."""
RESERVATION = MAX_TOKENS * 1000  # micro-USD per request
BURST_BUDGET_USD = 0.05
BURST = 30
EXPECTED_ADMITTED = int(BURST_BUDGET_USD * 1_000_000) // RESERVATION  # 50_000 // 7_000 = 7
STREAM_MAX_TOKENS = 100
STREAM_RESERVATION = STREAM_MAX_TOKENS * 1000


ADMIN_KEY = "admin-key-for-budget-tests-0123456789abcdef"
TEAM_BUDGET_USD = 0.02
TEAM_BURST = 20


def key_for(name: str) -> str:
    return f"sk-budget-{name}-{'0123456789abcdef' * 2}"


def budget_config(redis_url: str, run: str) -> dict[str, Any]:
    price = {"input_per_mtok": 0, "output_per_mtok": OUTPUT_PER_MTOK}
    month = "month"  # the period least likely to end during a test run
    return {
        "log_level": "warning",
        "redis_url": redis_url,
        "admin": {"key": ADMIN_KEY},
        "backends": {
            "instant": {"kind": "mock", "token_delay_s": 0},
            "slow": {"kind": "mock", "token_delay_s": 0.2},
            # Nothing listens there: every call fails before any answer.
            "down": {"kind": "vllm", "base_url": f"http://127.0.0.1:{free_port()}/v1", "timeout_s": 5},
        },
        "models": {
            "priced": {"targets": [{"backend": "instant", "model": "mock"}], "price": price},
            "priced-slow": {"targets": [{"backend": "slow", "model": "mock"}], "price": price},
            "priced-down": {"targets": [{"backend": "down", "model": "mock"}], "price": price},
        },
        "keys": [
            {
                "id": f"{run}-burst",
                "key": key_for("burst"),
                "budget": {"usd": BURST_BUDGET_USD, "period": month},
            },
            {"id": f"{run}-streams", "key": key_for("streams"), "budget": {"usd": 1, "period": month}},
            {"id": f"{run}-tiny", "key": key_for("tiny"), "budget": {"usd": 0.001, "period": month}},
        ],
    }


@pytest.fixture(scope="module")
def replicas(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[str], str]]:
    """Three gateway processes on one config and one Redis; yields their URLs and the run's name."""
    run = "b" + os.urandom(3).hex()
    directory: Path = tmp_path_factory.mktemp("budgets")
    config = budget_config(redis_server.url, run)
    processes = [GatewayProcess(config, directory) for _ in range(REPLICAS)]
    try:
        for process in processes:
            process.start()
        yield [process.url for process in processes], run
    finally:
        for process in processes:
            process.stop()


def spent(redis_server: RedisServer, key_id: str) -> int:
    """The key's spend counter for this month, read from Redis."""
    period = budget_period("month", time.time())
    with redis.Redis.from_url(redis_server.url) as client:
        reply = client.get(f"llmgw:{{key:{key_id}}}:spend:{period.id}")
    return int(reply) if reply is not None else 0


def chat(model: str, max_tokens: int, *, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


@pytest.mark.anyio
async def test_a_burst_across_three_replicas_admits_exactly_what_the_budget_covers(
    replicas: tuple[list[str], str], redis_server: RedisServer
) -> None:
    urls, run = replicas
    headers = {"authorization": f"Bearer {key_for('burst')}"}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def one(i: int) -> httpx.Response:
            url = f"{urls[i % len(urls)]}/v1/chat/completions"
            return await client.post(url, json=chat("priced", MAX_TOKENS), headers=headers)

        responses = await asyncio.gather(*(one(i) for i in range(BURST)))
        statuses = [r.status_code for r in responses]
        assert sorted(set(statuses)) == [200, 429]
        admitted = [r for r in responses if r.status_code == 200]
        # budget 50_000 micro-USD, 7_000 reserved per request: 7 of 30 admitted, whatever the replica.
        assert len(admitted) == EXPECTED_ADMITTED == 7
        assert all(r.json()["usage"]["completion_tokens"] == MAX_TOKENS for r in admitted)
        remaining = sorted(float(r.headers[BUDGET_HEADER]) for r in admitted)
        assert remaining == [pytest.approx((50_000 - RESERVATION * k) / 1e6) for k in range(7, 0, -1)]
        for refused in (r for r in responses if r.status_code == 429):
            error = refused.json()["error"]
            assert (error["type"], error["code"], error["param"]) == ("insufficient_quota",) * 2 + (None,)
            assert refused.headers["x-should-retry"] == "false"
        assert spent(redis_server, f"{run}-burst") == EXPECTED_ADMITTED * RESERVATION  # 49_000
        # What is left (1_000) still fits exactly: one token's answer, on any replica.
        last = await client.post(f"{urls[2]}/v1/chat/completions", json=chat("priced", 1), headers=headers)
        assert last.status_code == 200
        assert last.headers[BUDGET_HEADER] == "0.000000"
        over = await client.post(f"{urls[0]}/v1/chat/completions", json=chat("priced", 1), headers=headers)
        assert over.status_code == 429
        assert spent(redis_server, f"{run}-burst") == 50_000


def streams_key(run: str, redis_server: RedisServer) -> tuple[str, int, dict[str, str]]:
    """The streams key's id, its spend so far, and the headers presenting it."""
    key_id = f"{run}-streams"
    return key_id, spent(redis_server, key_id), {"authorization": f"Bearer {key_for('streams')}"}


@pytest.mark.anyio
async def test_a_finished_stream_settles_its_real_cost(
    replicas: tuple[list[str], str], redis_server: RedisServer
) -> None:
    urls, run = replicas
    key_id, before, headers = streams_key(run, redis_server)
    async with httpx.AsyncClient(timeout=30) as client:
        url = f"{urls[1]}/v1/chat/completions"
        async with client.stream(
            "POST", url, json=chat("priced", STREAM_MAX_TOKENS, stream=True), headers=headers
        ) as r:
            assert r.status_code == 200
            assert float(r.headers[BUDGET_HEADER]) == pytest.approx(
                (1_000_000 - before - STREAM_RESERVATION) / 1e6
            )
            body = (await r.aread()).decode()
    assert body.endswith("data: [DONE]\n\n")
    usage_line = next(line for line in body.split("\n\n") if '"usage":{' in line)
    completion = int(usage_line.split('"completion_tokens":')[1].split(",")[0].split("}")[0])
    assert 0 < completion < STREAM_MAX_TOKENS
    # Settled before [DONE]: the unused part of the reservation is back already.
    assert spent(redis_server, key_id) == before + completion * 1000


@pytest.mark.anyio
async def test_a_client_disconnect_settles_what_was_produced(
    replicas: tuple[list[str], str], redis_server: RedisServer
) -> None:
    urls, run = replicas
    key_id, before, headers = streams_key(run, redis_server)
    async with httpx.AsyncClient(timeout=30) as client:
        url = f"{urls[0]}/v1/chat/completions"
        body = chat("priced-slow", STREAM_MAX_TOKENS, stream=True)
        async with client.stream("POST", url, json=body, headers=headers) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_bytes():
                if b'"content":' in chunk:
                    break  # the first words arrived; leave with about 25 still to come
            assert spent(redis_server, key_id) == before + STREAM_RESERVATION  # still reserved

    # The relay settles what was produced when it sees the client gone.
    def settled() -> int:
        charged = spent(redis_server, key_id) - before
        return charged if charged < STREAM_RESERVATION else 0

    charged = wait_for(settled)
    assert 0 < charged < STREAM_RESERVATION // 2


@pytest.mark.anyio
async def test_a_failed_upstream_call_gives_the_whole_reservation_back(
    replicas: tuple[list[str], str], redis_server: RedisServer
) -> None:
    urls, run = replicas
    key_id, before, headers = streams_key(run, redis_server)
    async with httpx.AsyncClient(timeout=30) as client:
        for stream in (False, True):
            url = f"{urls[2]}/v1/chat/completions"
            response = await client.post(
                url, json=chat("priced-down", STREAM_MAX_TOKENS, stream=stream), headers=headers
            )
            assert response.status_code in (502, 503), response.text
            assert spent(redis_server, key_id) == before  # no target answered: nothing to pay


def test_the_openai_sdk_gets_insufficient_quota_once_without_retrying(
    replicas: tuple[list[str], str],
) -> None:
    urls, run = replicas
    sent: list[httpx2.Request] = []
    http_client = httpx2.Client(event_hooks={"request": [sent.append]})  # the SDKs' own httpx
    # The SDK's default retries stay on: `x-should-retry: false` is what stops them.
    with (
        openai.OpenAI(base_url=f"{urls[0]}/v1", api_key=key_for("tiny"), http_client=http_client) as client,
        pytest.raises(openai.RateLimitError) as refused,
    ):
        client.chat.completions.create(
            model="priced", messages=[{"role": "user", "content": "hi"}], max_tokens=10
        )
    assert len(sent) == 1
    error = refused.value
    assert error.status_code == 429
    assert error.code == "insufficient_quota"
    assert error.type == "insufficient_quota"
    assert error.response.headers["x-should-retry"] == "false"
    assert error.response.headers[BUDGET_HEADER] == "0.001000"
    message = error.message
    assert f"key {run}-tiny" in message
    assert "may cost up to 0.010000 USD" in message
    resets = budget_period("month", time.time()).ends_at
    assert f"resets at {resets:%Y-%m-%d %H:%M} UTC" in message
    assert key_for("tiny") not in message


def test_the_anthropic_sdk_gets_its_own_error_envelope(replicas: tuple[list[str], str]) -> None:
    urls, run = replicas
    sent: list[httpx2.Request] = []
    http_client = httpx2.Client(event_hooks={"request": [sent.append]})
    with (
        anthropic.Anthropic(base_url=urls[1], api_key=key_for("tiny"), http_client=http_client) as client,
        pytest.raises(anthropic.RateLimitError) as refused,
    ):
        client.messages.create(model="priced", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert len(sent) == 1
    body = refused.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error"
    assert f"Budget exceeded for key {run}-tiny" in body["error"]["message"]
    assert refused.value.response.headers["x-should-retry"] == "false"


def team_with_two_keys(urls: list[str], team: str, run: str) -> list[str]:
    """A team with a budget and two keys in it, made through the admin API on one replica and known
    to every replica; returns the keys' secrets."""
    secrets = []
    with httpx.Client(
        base_url=f"{urls[0]}/admin/v1", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    ) as api:
        made = api.post("/teams", json={"id": team, "budget": {"usd": TEAM_BUDGET_USD, "period": "month"}})
        assert made.status_code == 201, made.text
        for name in ("one", "two"):
            response = api.post("/keys", json={"id": f"{run}-{name}", "team": team})
            assert response.status_code == 201, response.text
            secrets.append(response.json()["secret"])
            secret_scan.register(secrets[-1], f"API key {run}-{name}")

    def known_everywhere() -> bool:
        return all(
            httpx.get(f"{url}/v1/models", headers={"authorization": f"Bearer {secret}"}).status_code == 200
            for url in urls
            for secret in secrets
        )

    wait_for(known_everywhere)  # within a second (the keys' own tests)
    return secrets


@pytest.mark.anyio
async def test_a_team_budget_made_by_the_admin_api_is_shared_by_its_keys_across_replicas(
    replicas: tuple[list[str], str],
) -> None:
    urls, run = replicas
    team = f"{run}-team"
    secrets = team_with_two_keys(urls, team, run)
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(i: int) -> httpx.Response:
            headers = {"authorization": f"Bearer {secrets[i % 2]}"}
            url = f"{urls[i % len(urls)]}/v1/chat/completions"
            return await client.post(url, json=chat("priced", MAX_TOKENS), headers=headers)

        responses = await asyncio.gather(*(one(i) for i in range(TEAM_BURST)))
    # 20_000 micro-USD shared by both keys, 7_000 per request: exactly 2 of 20 on three replicas.
    assert sorted(r.status_code for r in responses) == [200] * 2 + [429] * (TEAM_BURST - 2)
    assert sorted(r.headers[BUDGET_HEADER] for r in responses if r.status_code == 200) == [
        "0.006000",
        "0.013000",
    ]
    refusal = next(r for r in responses if r.status_code == 429).json()["error"]
    assert refusal["code"] == "insufficient_quota"
    assert f"Budget exceeded for team {team}:" in refusal["message"]
