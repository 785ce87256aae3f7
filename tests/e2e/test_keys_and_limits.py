"""Team keys and rate limits through the official SDK, in front of the Workers AI emulator."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import httpx2
import openai
import pytest
from structlog.testing import capture_logs

from tests.e2e.conftest import CF_TOKEN, GatewayFactory, workers_ai_config
from tests.redis_server import RedisServer
from tests.waiting import wait_for

if TYPE_CHECKING:
    from tests.emulators.server import ServerThread
    from tests.emulators.workers_ai import WorkersAIEmulator

SEARCH_KEY = "sk-team-search-5d1c0e7a9b3f4e21aa07"
OTHER_KEY = "sk-team-other-8b2d4f6a1c3e5a7b9d11"
HASHED_KEY = "sk-team-hashed-0f9e8d7c6b5a49382716"
USER: Any = [{"role": "user", "content": "Say hello please"}]
RATE_HEADERS = [
    f"x-ratelimit-{kind}-{unit}"
    for unit in ("requests", "tokens")
    for kind in ("limit", "remaining", "reset")
]


def team(key: str = SEARCH_KEY, id: str = "team-search", **policy: Any) -> dict[str, Any]:
    return {"id": id, "key": key, **policy}


def config(emulator: ServerThread, *keys: dict[str, Any], **settings: Any) -> dict[str, Any]:
    base = workers_ai_config(emulator.url)
    for name, limits in settings.pop("model_limits", {}).items():
        base["models"][name].update(limits)
    if keys:
        base["keys"] = list(keys)
    return {**base, **settings}


def message(error: openai.APIStatusError) -> str:
    """The error body's own message (the exception's `message` is prefixed with the status)."""
    assert isinstance(error.body, dict)
    text = error.body["message"]
    assert isinstance(text, str)
    return text


def sdk(url: str, key: str = SEARCH_KEY, **options: Any) -> openai.OpenAI:
    options.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, timeout=20, **options)


@pytest.fixture
def emulator_server(
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread], workers_ai: WorkersAIEmulator
) -> ServerThread:
    """The session's Workers AI emulator server, its recordings cleared for this test."""
    return workers_ai_server[1]


# Keys


def test_a_valid_key_gets_an_answer_with_rate_limit_headers(
    start_gateway: GatewayFactory, emulator_server: ServerThread
) -> None:
    url = start_gateway(config(emulator_server, team(rpm=600, tpm=200_000)))
    with sdk(url) as client:
        raw = client.chat.completions.with_raw_response.create(model="llama-3.3-70b", messages=USER)
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-ratelimit-limit-requests"] == "600"
    assert raw.headers["x-ratelimit-remaining-requests"] == "599"
    assert raw.headers["x-ratelimit-reset-requests"].startswith("1m0")
    assert raw.headers["x-ratelimit-limit-tokens"] == "200000"
    assert 190_000 < int(raw.headers["x-ratelimit-remaining-tokens"]) < 200_000


def test_a_missing_key_is_a_401(start_gateway: GatewayFactory, emulator_server: ServerThread) -> None:
    url = start_gateway(config(emulator_server, team()))
    answer = httpx.post(f"{url}/v1/chat/completions", json={"model": "llama-3.3-70b", "messages": USER})
    assert answer.status_code == 401
    error = answer.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "invalid_request_error"
    assert "Authorization: Bearer" in error["message"]


def test_an_unknown_key_is_a_401_that_never_echoes_the_key(
    start_gateway: GatewayFactory, emulator_server: ServerThread, workers_ai: WorkersAIEmulator
) -> None:
    url = start_gateway(config(emulator_server, team()))
    wrong = "sk-wrong-key-123456789abcdefXYZ"
    with sdk(url, wrong) as client, pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="llama-3.3-70b", messages=USER)
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    assert message(info.value) == "Incorrect API key provided: sk-wr***YZ."
    assert "wrong-key-123456789abcdef" not in str(info.value.body)
    assert workers_ai.requests == []


def test_the_api_key_header_and_hashed_keys_authenticate(
    start_gateway: GatewayFactory, emulator_server: ServerThread
) -> None:
    hashed = {"id": "team-hashed", "key_sha256": hashlib.sha256(HASHED_KEY.encode()).hexdigest()}
    url = start_gateway(config(emulator_server, team(), hashed))
    body = {"model": "llama-3.3-70b", "messages": USER}
    assert httpx.post(f"{url}/v1/chat/completions", json=body, headers={"api-key": SEARCH_KEY}).is_success
    with sdk(url, HASHED_KEY) as client:
        assert client.chat.completions.create(model="llama-3.3-70b", messages=USER).choices


def test_a_model_the_key_may_not_use_is_a_404_like_an_unknown_model(
    start_gateway: GatewayFactory, emulator_server: ServerThread, workers_ai: WorkersAIEmulator
) -> None:
    url = start_gateway(config(emulator_server, team(models=["gpt-4o-mini", "qwen3-30b"])))
    with sdk(url) as client:
        assert client.chat.completions.create(model="llama-3.3-70b", messages=USER).choices  # via its alias
        with pytest.raises(openai.NotFoundError) as forbidden:
            client.chat.completions.create(model="hermes-2-pro", messages=USER)
        with pytest.raises(openai.NotFoundError) as unknown:
            client.chat.completions.create(model="no-such-model", messages=USER)
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("hermes-2-pro")
    assert forbidden.value.code == unknown.value.code == "model_not_found"
    assert message(forbidden.value) == message(unknown.value).replace("no-such-model", "hermes-2-pro")
    assert len(workers_ai.requests) == 1


def test_models_list_requires_a_key_and_shows_only_allowed_models(
    start_gateway: GatewayFactory, emulator_server: ServerThread
) -> None:
    url = start_gateway(config(emulator_server, team(models=["llama-3.3-70b"]), team(OTHER_KEY, "team-all")))
    with sdk(url) as client:
        assert sorted(m.id for m in client.models.list()) == ["gpt-4o-mini", "llama-3.3-70b"]
        assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with sdk(url, OTHER_KEY) as client:
        assert len(client.models.list().data) > 2
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.get(f"{url}/v1/models/llama-3.3-70b").status_code == 401
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert httpx.get(f"{url}/readyz").status_code == 200


def test_the_clients_credentials_are_never_forwarded_upstream(
    start_gateway: GatewayFactory, emulator_server: ServerThread, workers_ai: WorkersAIEmulator
) -> None:
    url = start_gateway(config(emulator_server, team()))
    with sdk(url) as client:
        client.chat.completions.create(model="llama-3.3-70b", messages=USER)
        list(client.chat.completions.create(model="llama-3.3-70b", messages=USER, stream=True))
    body = {"model": "llama-3.3-70b", "messages": USER}
    httpx.post(f"{url}/v1/chat/completions", json=body, headers={"api-key": SEARCH_KEY})
    assert len(workers_ai.requests) == 3
    for recorded in workers_ai.requests:
        assert recorded.headers["authorization"] == f"Bearer {CF_TOKEN}"
        assert "api-key" not in recorded.headers
        assert all(SEARCH_KEY not in value for value in recorded.headers.values())
        assert SEARCH_KEY.encode() not in recorded.raw_body


def test_without_keys_the_gateway_is_open_and_says_so_once(
    start_gateway: GatewayFactory, emulator_server: ServerThread
) -> None:
    with capture_logs() as logs:
        url = start_gateway(config(emulator_server))
    warnings = [entry for entry in logs if entry["event"] == "no_api_keys"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    answer = httpx.post(f"{url}/v1/chat/completions", json={"model": "llama-3.3-70b", "messages": USER})
    assert answer.is_success
    assert not any(name in answer.headers for name in RATE_HEADERS)


# Limits


def test_the_sdk_sees_a_rate_limit_error_with_openais_headers_and_body(
    start_gateway: GatewayFactory, emulator_server: ServerThread, workers_ai: WorkersAIEmulator
) -> None:
    url = start_gateway(config(emulator_server, team(rpm=2)))
    with sdk(url) as client:
        for _ in range(2):
            client.chat.completions.create(model="llama-3.3-70b", messages=USER)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="llama-3.3-70b", messages=USER)
    error = info.value
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    assert error.type == "requests"
    assert message(error).startswith(
        "Rate limit reached for team-search on requests per min (RPM): Limit 2, Used 2, Requested 1. "
        "Please try again in "
    )
    headers = error.response.headers
    assert 55 <= int(headers["retry-after"]) <= 60
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert len(workers_ai.requests) == 2


def test_streams_carry_the_rate_limit_headers(
    start_gateway: GatewayFactory, emulator_server: ServerThread
) -> None:
    url = start_gateway(config(emulator_server, team(rpm=100, tpm=100_000)))
    body = {"model": "llama-3.3-70b", "messages": USER, "stream": True}
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {SEARCH_KEY}"}
    ) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert all(name in answer.headers for name in RATE_HEADERS)
        assert answer.headers["x-ratelimit-remaining-requests"] == "99"
        assert b"data: [DONE]" in answer.read()


def test_a_request_too_large_for_the_token_limit_is_refused_for_good(
    start_gateway: GatewayFactory, emulator_server: ServerThread, workers_ai: WorkersAIEmulator
) -> None:
    url = start_gateway(config(emulator_server, team(tpm=1000)))
    with sdk(url) as client:
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="llama-3.3-70b", messages=USER, max_tokens=2000)
        # Without max_tokens the model's default (4096) exceeds the limit: reserve the limit instead.
        assert client.chat.completions.create(model="llama-3.3-70b", messages=USER).choices
    assert info.value.type == "tokens"
    assert message(info.value).startswith("Request too large for team-search on tokens per min (TPM)")
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(workers_ai.requests) == 1


def test_tokens_are_reserved_before_forwarding(
    start_gateway: GatewayFactory, emulator_server: ServerThread, workers_ai: WorkersAIEmulator
) -> None:
    """While a stream holds its reservation, a request that cannot fit is refused before any upstream call."""
    url = start_gateway(config(emulator_server, team(tpm=3000)))
    slow: Any = [{"role": "user", "content": "Count slowly [[emu:words=40]] [[emu:fault=slow:0.02]]"}]
    with sdk(url) as client:
        stream = client.chat.completions.create(
            model="llama-3.3-70b", messages=slow, max_tokens=2000, stream=True
        )
        first = next(iter(stream))
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="llama-3.3-70b", messages=USER, max_tokens=2000)
        assert len(workers_ai.requests) == 1
        assert first.choices
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        # The stream has ended and paid its real usage: the same request now fits.
        assert client.chat.completions.create(model="llama-3.3-70b", messages=USER, max_tokens=2000).choices
    assert info.value.type == "tokens"
    assert "on tokens per min (TPM): Limit 3000" in message(info.value)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings for each kind of rate-limit store."""
    if request.param == "memory":
        return {}
    server: RedisServer = request.getfixturevalue("redis_server")
    return {"redis_url": server.url}


def fresh_team(**policy: Any) -> dict[str, Any]:
    """A key whose id no earlier test used: the session's Redis outlives each gateway."""
    return team(id="team-" + os.urandom(4).hex(), **policy)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_real_usage_replaces_the_reservation(
    start_gateway: GatewayFactory, emulator_server: ServerThread, store: dict[str, str], stream: bool
) -> None:
    url = start_gateway(config(emulator_server, fresh_team(tpm=100_000), **store))
    messages: Any = [{"role": "user", "content": "Say hello [[emu:words=30]]"}]
    with sdk(url) as client:
        if stream:
            raw_stream = client.chat.completions.with_raw_response.create(
                model="llama-3.3-70b",
                messages=messages,
                max_tokens=500,
                stream=True,
                stream_options={"include_usage": True},
            )
            before = int(raw_stream.headers["x-ratelimit-remaining-tokens"])
            chunks = list(raw_stream.parse())
            usage = chunks[-1].usage
        else:
            raw = client.chat.completions.with_raw_response.create(
                model="llama-3.3-70b", messages=messages, max_tokens=500
            )
            before = int(raw.headers["x-ratelimit-remaining-tokens"])
            usage = raw.parse().usage
        after = client.chat.completions.with_raw_response.create(
            model="llama-3.3-70b", messages=messages, max_tokens=500
        )
    assert usage is not None
    assert usage.completion_tokens == 30
    # Same request, same reservation: the difference is exactly what the first answer used.
    assert before - int(after.headers["x-ratelimit-remaining-tokens"]) == usage.total_tokens


def test_a_client_that_disconnects_mid_stream_pays_what_it_consumed(
    start_gateway: GatewayFactory,
    emulator_server: ServerThread,
    workers_ai: WorkersAIEmulator,
    store: dict[str, str],
) -> None:
    url = start_gateway(config(emulator_server, fresh_team(tpm=100_000), **store))
    max_tokens = 1000
    messages = [{"role": "user", "content": "Tell a long story [[emu:words=400]] [[emu:fault=slow:0.02]]"}]
    body = {"model": "llama-3.3-70b", "messages": messages, "max_tokens": max_tokens, "stream": True}
    auth = {"authorization": f"Bearer {SEARCH_KEY}"}
    received = ""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=auth) as answer:
        before = int(answer.headers["x-ratelimit-remaining-tokens"])
        for line in answer.iter_lines():
            if '"content":"' in line:
                received += line.split('"content":"', 1)[1].split('"', 1)[0]
            if len(received) > 40:
                break
    wait_for(lambda: workers_ai.requests[-1].disconnected)  # the gateway settles, then closes the upstream
    after = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": False}, headers=auth)
    charged = before - int(after.headers["x-ratelimit-remaining-tokens"])
    prompt = 100_000 - before - max_tokens  # the reservation was the prompt estimate + max_tokens
    assert prompt + len(received) // 4 <= charged < prompt + 100
    assert not workers_ai.requests[0].finished


def test_a_failed_upstream_call_releases_its_slot_and_tokens(
    start_gateway: GatewayFactory, emulator_server: ServerThread, workers_ai: WorkersAIEmulator
) -> None:
    url = start_gateway(config(emulator_server, team(max_concurrency=1, tpm=10_000)))
    with sdk(url) as client:
        workers_ai.faults.push("status:500")
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="llama-3.3-70b", messages=USER, max_tokens=4000)
        raw = client.chat.completions.with_raw_response.create(
            model="llama-3.3-70b", messages=USER, max_tokens=4000
        )
    assert info.value.status_code == 502
    # Only the second request's reservation is counted.
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) > 10_000 - 4100


def test_the_sdks_own_backoff_gets_through(
    start_gateway: GatewayFactory, emulator_server: ServerThread
) -> None:
    """A 429 for concurrency carries Retry-After: 1; the SDK waits and its retry succeeds."""
    url = start_gateway(config(emulator_server, team(max_concurrency=1)))
    statuses: list[int] = []
    streamed = threading.Event()

    def hold_a_slot() -> None:
        with sdk(url) as client:
            slow: Any = [{"role": "user", "content": "hi [[emu:words=20]] [[emu:fault=slow:0.02]]"}]
            stream = client.chat.completions.create(model="llama-3.3-70b", messages=slow, stream=True)
            next(iter(stream))
            streamed.set()
            for _ in stream:
                pass

    holder = threading.Thread(target=hold_a_slot)
    holder.start()
    assert streamed.wait(10)
    http_client = httpx2.Client(event_hooks={"response": [lambda r: statuses.append(r.status_code)]})
    with sdk(url, max_retries=2, http_client=http_client) as client:
        completion = client.chat.completions.create(model="llama-3.3-70b", messages=USER)
    holder.join(10)
    assert completion.choices[0].message.content
    assert statuses[0] == 429
    assert statuses[-1] == 200


def test_a_models_limit_is_shared_by_all_keys(
    start_gateway: GatewayFactory, emulator_server: ServerThread
) -> None:
    url = start_gateway(
        config(
            emulator_server,
            team(),
            team(OTHER_KEY, "team-other"),
            model_limits={"qwen3-30b": {"rpm": 2}},
        )
    )
    with sdk(url) as search, sdk(url, OTHER_KEY) as other:
        search.chat.completions.create(model="qwen3-30b", messages=USER)
        raw = other.chat.completions.with_raw_response.create(model="qwen3-30b", messages=USER)
        assert raw.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(openai.RateLimitError) as info:
            search.chat.completions.create(model="qwen3-30b", messages=USER)
        assert search.chat.completions.create(model="llama-3.3-70b", messages=USER).choices
    assert message(info.value).startswith("Rate limit reached for model qwen3-30b on requests per min (RPM)")


# Redis outages


@pytest.fixture
def lone_redis() -> Iterator[RedisServer]:
    """A Redis this test may stop and start again."""
    with RedisServer() as server:
        yield server


def test_fail_open_keeps_serving_warns_once_and_recovers(
    start_gateway: GatewayFactory, emulator_server: ServerThread, lone_redis: RedisServer
) -> None:
    url = start_gateway(config(emulator_server, team(rpm=1000), redis_url=lone_redis.url))
    with sdk(url) as client, capture_logs() as logs:
        first = client.chat.completions.with_raw_response.create(model="llama-3.3-70b", messages=USER)
        assert first.headers["x-ratelimit-remaining-requests"] == "999"
        lone_redis.stop()
        for _ in range(5):
            served = client.chat.completions.with_raw_response.create(model="llama-3.3-70b", messages=USER)
            assert served.parse().choices
            assert "x-ratelimit-remaining-requests" not in served.headers
        lone_redis.start()

        def limited_again() -> bool:
            raw = client.chat.completions.with_raw_response.create(model="llama-3.3-70b", messages=USER)
            return "x-ratelimit-remaining-requests" in raw.headers

        wait_for(limited_again)
    outages = [entry for entry in logs if entry["event"] == "rate_limit_store_unavailable"]
    assert len(outages) == 1
    assert outages[0]["log_level"] == "warning"
    assert "open" in outages[0]["failure_mode"]
    assert [entry["event"] for entry in logs].count("rate_limit_store_recovered") == 1


def test_fail_closed_answers_503_and_recovers(
    start_gateway: GatewayFactory,
    emulator_server: ServerThread,
    lone_redis: RedisServer,
    workers_ai: WorkersAIEmulator,
) -> None:
    url = start_gateway(
        config(emulator_server, team(rpm=1000), redis_url=lone_redis.url, rate_limit_failure_mode="closed")
    )
    with sdk(url) as client:
        client.chat.completions.create(model="llama-3.3-70b", messages=USER)
        lone_redis.stop()
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="llama-3.3-70b", messages=USER)
        assert len(workers_ai.requests) == 1
        lone_redis.start()

        def served() -> bool:
            try:
                return bool(client.chat.completions.create(model="llama-3.3-70b", messages=USER).choices)
            except openai.InternalServerError:
                return False

        wait_for(served)
    error = info.value
    assert error.status_code == 503
    assert error.code == "rate_limit_store_unavailable"
    assert "rate-limit store is unreachable" in message(error)
    assert error.response.headers["retry-after"] == "1"
