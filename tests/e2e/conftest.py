"""Real servers for end-to-end tests: upstream emulators and the gateway, under uvicorn on free ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import openai
import pytest

from gateway.app import create_app
from gateway.config import Settings
from tests import secret_scan
from tests.emulators.server import ServerThread
from tests.emulators.vllm import VLLMEmulator
from tests.emulators.workers_ai import WorkersAIEmulator

CF_ACCOUNT = "acct-e2e-5f3a"
CF_TOKEN = "cf-secret-token-9d81c7"
VLLM_KEY = "vllm-secret-key-4c2e71"
VLLM_MODEL = "meta-llama/Llama-3.3-70B-Instruct"
VLLM_EMBEDDING_MODEL = "BAAI/bge-base-en-v1.5"
VLLM_MATRYOSHKA_MODEL = "Qwen/Qwen3-Embedding-0.6B"
NO_BREAKER: dict[str, Any] = {"failure_threshold": 1_000_000, "health_interval_s": 3600}
"""Shared gateways see many deliberate faults in a row: their breakers must never trip, and they probe
vLLM's health only at start-up (another test may make the shared emulator unhealthy for a moment)."""

WORKERS_AI_MODELS: dict[str, dict[str, Any]] = {
    "llama-3.3-70b": {"model": "@cf/meta/llama-3.3-70b-instruct-fp8-fast", "aliases": ["gpt-4o-mini"]},
    "hermes-2-pro": {"model": "@hf/nousresearch/hermes-2-pro-mistral-7b"},
    "qwen3-30b": {"model": "@cf/qwen/qwen3-30b-a3b-fp8"},
    "gpt-oss-120b": {"model": "@cf/openai/gpt-oss-120b"},
    "llama-vision": {"model": "@cf/meta/llama-3.2-11b-vision-instruct", "vision": True},
    "no-such-upstream": {"model": "@cf/nobody/does-not-exist"},
}


def settings_for(config: dict[str, Any]) -> Settings:
    secret_scan.register_config(config)
    return msgspec.convert(config, Settings)


def cloudflare_backend(emulator_url: str, *, token: str = CF_TOKEN, **backend: Any) -> dict[str, Any]:
    return {
        "kind": "workers-ai",
        "account_id": CF_ACCOUNT,
        "api_token": token,
        "base_url": f"{emulator_url}/client/v4",
        "timeout_s": 5,
        "breaker": NO_BREAKER,
        **backend,
    }


def vllm_backend(emulator_url: str, *, api_key: str = VLLM_KEY, **backend: Any) -> dict[str, Any]:
    return {
        "kind": "vllm",
        "base_url": f"{emulator_url}/v1",
        "api_key": api_key,
        "timeout_s": 5,
        "breaker": NO_BREAKER,
        **backend,
    }


def workers_ai_config(emulator_url: str, *, token: str = CF_TOKEN, **backend: Any) -> dict[str, Any]:
    models = {}
    for name, spec in WORKERS_AI_MODELS.items():
        entry: dict[str, Any] = {"targets": [{"backend": "cloudflare", "model": spec["model"]}]}
        if "aliases" in spec:
            entry["aliases"] = spec["aliases"]
        if spec.get("vision"):
            entry["vision"] = True
        models[name] = entry
    return {
        "backends": {
            "cloudflare": cloudflare_backend(emulator_url, token=token, **backend),
            "demo": {"kind": "mock", "token_delay_s": 0},
        },
        "models": {**models, "mock-model": {"targets": [{"backend": "demo", "model": "mock"}]}},
    }


def both_backends_config(workers_ai_url: str, vllm_url: str) -> dict[str, Any]:
    """Every Workers AI model, plus `vllm-llama` on the vLLM emulator."""
    config = workers_ai_config(workers_ai_url)
    config["backends"]["vllm"] = vllm_backend(vllm_url)
    config["models"]["vllm-llama"] = {"targets": [{"backend": "vllm", "model": VLLM_MODEL}]}
    config["models"]["vllm-unknown-upstream"] = {"targets": [{"backend": "vllm", "model": "no/such-model"}]}
    return config


@pytest.fixture(scope="session")
def workers_ai_server() -> Iterator[tuple[WorkersAIEmulator, ServerThread]]:
    emulator = WorkersAIEmulator(account_id=CF_ACCOUNT, api_token=CF_TOKEN)
    server = ServerThread(emulator.app).start()
    yield emulator, server
    server.stop()


@pytest.fixture
def workers_ai(workers_ai_server: tuple[WorkersAIEmulator, ServerThread]) -> WorkersAIEmulator:
    """The session's Workers AI emulator, with recorded requests and faults cleared for this test."""
    emulator = workers_ai_server[0]
    emulator.reset()
    emulator.token_delay_s = 0.0
    return emulator


@pytest.fixture(scope="session")
def vllm_server() -> Iterator[tuple[VLLMEmulator, ServerThread]]:
    emulator = VLLMEmulator(
        api_key=VLLM_KEY,
        served_models=[VLLM_MODEL],
        embedding_models={VLLM_EMBEDDING_MODEL: 768, VLLM_MATRYOSHKA_MODEL: 1024},
        matryoshka=frozenset({VLLM_MATRYOSHKA_MODEL}),
    )
    server = ServerThread(emulator.app).start()
    yield emulator, server
    server.stop()


@pytest.fixture
def vllm(vllm_server: tuple[VLLMEmulator, ServerThread]) -> Iterator[VLLMEmulator]:
    """The session's vLLM emulator (flavour v0.11), reset for this test and restored after it."""
    emulator = vllm_server[0]
    emulator.reset()
    emulator.token_delay_s = 0.0
    yield emulator
    emulator.flavor = "v0.11"
    emulator.max_model_len = 8192
    emulator.enable_auto_tool_choice = True
    emulator.reset()


GatewayFactory = Callable[[dict[str, Any]], str]


@pytest.fixture
def start_gateway() -> Iterator[GatewayFactory]:
    """Start a gateway for a config dict; returns its base URL. Stopped at the end of the test."""
    servers: list[ServerThread] = []

    def start(config: dict[str, Any]) -> str:
        server = ServerThread(create_app(settings_for(config)), lifespan="on").start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def gateway_url(
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread], vllm_server: tuple[VLLMEmulator, ServerThread]
) -> Iterator[str]:
    """One gateway for the session, in front of both emulators and the mock."""
    config = both_backends_config(workers_ai_server[1].url, vllm_server[1].url)
    server = ServerThread(create_app(settings_for(config)), lifespan="on").start()
    yield server.url
    server.stop()


@pytest.fixture
def client(gateway_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{gateway_url}/v1", api_key="sk-test-client", max_retries=0, timeout=20
    ) as client:
        yield client


def sdk_client(base_url: str, **options: Any) -> openai.OpenAI:
    """Use as `with sdk_client(url) as client:`; no SDK retries, so every upstream call is the gateway's."""
    return openai.OpenAI(
        base_url=f"{base_url}/v1", api_key="sk-test-client", **{"max_retries": 0, "timeout": 20, **options}
    )


def async_client(base_url: str) -> openai.AsyncOpenAI:
    """Use as `async with async_client(url) as client:` so it closes inside the test's event loop."""
    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="sk-test-client", max_retries=0, timeout=20)
