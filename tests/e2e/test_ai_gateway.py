"""Workers AI through Cloudflare AI Gateway: the gateway's route, its token, and no retries of its own.

The emulator serves AI Gateway's form of the Workers AI route (`/v1/{account}/{gateway}/workers-ai/
{model}`), checks `cf-aig-authorization`, and behaves like a gateway whose retry policy is 3 attempts:
without `cf-aig-max-attempts: 1` a failed model call would be retried there, and again by our failover.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import CF_ACCOUNT, CF_TOKEN, GatewayFactory, cloudflare_backend, sdk_client
from tests.emulators.server import ServerThread
from tests.emulators.workers_ai import WorkersAIEmulator

CF_MODEL = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
GATEWAY_ID = "team-gateway"
AIG_TOKEN = "cf-aig-token-3b9e0d41"
GATEWAY_RETRIES = 3
"""The emulated gateway's own retry policy (attempts), as a dashboard setting would make it."""
USER: Any = [{"role": "user", "content": "Say hello [[emu:words=5]]"}]


@pytest.fixture(scope="module")
def ai_gateway_server() -> Iterator[tuple[WorkersAIEmulator, str]]:
    emulator = WorkersAIEmulator(
        account_id=CF_ACCOUNT,
        api_token=CF_TOKEN,
        ai_gateway_id=GATEWAY_ID,
        ai_gateway_token=AIG_TOKEN,
        ai_gateway_max_attempts=GATEWAY_RETRIES,
    )
    server = ServerThread(emulator.app).start()
    yield emulator, server.url
    server.stop()


@pytest.fixture
def ai_gateway(ai_gateway_server: tuple[WorkersAIEmulator, str]) -> tuple[WorkersAIEmulator, str]:
    ai_gateway_server[0].reset()
    return ai_gateway_server


def config(url: str, *, token: str = AIG_TOKEN, fallback: bool = False) -> dict[str, Any]:
    backend = cloudflare_backend(
        url, ai_gateway={"gateway_id": GATEWAY_ID, "token": token, "base_url": f"{url}/v1"}
    )
    del backend["base_url"]
    backends: dict[str, Any] = {"cloudflare": backend}
    targets = [{"backend": "cloudflare", "model": CF_MODEL}]
    if fallback:
        backends["demo"] = {"kind": "mock", "token_delay_s": 0}
        targets.append({"backend": "demo", "model": "mock"})
    return {"backends": backends, "models": {"cf": {"targets": targets}}}


def test_requests_take_ai_gateways_route_with_its_token(
    start_gateway: GatewayFactory, ai_gateway: tuple[WorkersAIEmulator, str]
) -> None:
    emulator, url = ai_gateway
    gateway = start_gateway(config(url))
    with sdk_client(gateway) as client:
        whole = client.chat.completions.create(model="cf", messages=USER)
        streamed = list(client.chat.completions.create(model="cf", messages=USER, stream=True))
    assert len((whole.choices[0].message.content or "").split()) == 5
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices).split() == (
        (whole.choices[0].message.content or "").split()
    )
    assert len(emulator.requests) == 2
    for request in emulator.requests:
        assert request.path == f"/v1/{CF_ACCOUNT}/{GATEWAY_ID}/workers-ai/{CF_MODEL}"
        assert request.headers["cf-aig-authorization"] == f"Bearer {AIG_TOKEN}"
        assert request.headers["authorization"] == f"Bearer {CF_TOKEN}"
        assert request.headers["cf-aig-max-attempts"] == "1"
    assert emulator.ai_gateway_attempts == [1, 1]


def test_a_failed_call_is_not_retried_by_ai_gateway_but_fails_over(
    start_gateway: GatewayFactory, ai_gateway: tuple[WorkersAIEmulator, str]
) -> None:
    emulator, url = ai_gateway
    # What the gateway's retry policy does to a request that does not turn it off: it retries the 503.
    emulator.faults.push("status:503", times=1)
    direct = httpx.post(
        f"{url}/v1/{CF_ACCOUNT}/{GATEWAY_ID}/workers-ai/{CF_MODEL}",
        json={"messages": USER},
        headers={"authorization": f"Bearer {CF_TOKEN}", "cf-aig-authorization": f"Bearer {AIG_TOKEN}"},
    )
    assert direct.status_code == 200
    assert emulator.ai_gateway_attempts == [2]

    emulator.reset()
    emulator.faults.push("status:503", times=1)
    gateway = start_gateway(config(url, fallback=True))
    with sdk_client(gateway) as client:
        raw = client.chat.completions.with_raw_response.create(model="cf", messages=USER)
    assert raw.headers["x-gateway-backend"] == "demo"  # the 503 reached us at once: our failover served
    assert emulator.ai_gateway_attempts == [1]
    assert len(emulator.faults) == 0


def test_a_rejected_ai_gateway_token_is_a_credentials_error(
    start_gateway: GatewayFactory, ai_gateway: tuple[WorkersAIEmulator, str]
) -> None:
    emulator, url = ai_gateway
    gateway = start_gateway(config(url, token="cf-aig-wrong-token-77"))
    with sdk_client(gateway) as client, pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="cf", messages=USER)
    assert info.value.code == "upstream_credentials_rejected"
    assert "Unauthorized" in info.value.message
    assert "cf-aig-wrong-token-77" not in info.value.response.text
    assert CF_TOKEN not in info.value.response.text
    assert emulator.ai_gateway_attempts == []  # refused at the gateway, before any model call


@pytest.mark.parametrize(
    ("backend", "problem"),
    [
        (
            'base_url: "https://example.test/client/v4", ai_gateway: {gateway_id: g}',
            "backends.cf: set either base_url or ai_gateway (ai_gateway.base_url), not both",
        ),
        ('ai_gateway: {gateway_id: ""}', "backends.cf.ai_gateway.gateway_id: must not be empty"),
        ("ai_gateway: {gateway: g}", "backends.cf.ai_gateway.gateway: unknown key"),
    ],
)
def test_ai_gateway_config_problems(backend: str, problem: str) -> None:
    from gateway.config import ConfigError, parse_config

    text = f"""
backends:
  cf: {{kind: workers-ai, account_id: a, api_token: t, {backend}}}
models:
  m: {{targets: [{{backend: cf, model: "@cf/x"}}]}}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, environ={})
    assert info.value.problems == [problem]
