"""Breakers shared across replicas: `gateway serve` processes on one real Redis, two vLLM emulators.

Replica A trips the broken target's breaker; replica B, already running, learns it over pub/sub, and
replica C, started afterwards, reads it from the hash of open breakers when it subscribes. Neither
sends the broken target a single request: their first request goes straight to the fallback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.e2e.conftest import VLLM_KEY, VLLM_MODEL, vllm_backend
from tests.emulators.server import ServerThread
from tests.emulators.vllm import VLLMEmulator
from tests.gateway_process import GatewayProcess
from tests.waiting import wait_for

if TYPE_CHECKING:
    from tests.redis_server import RedisServer

THRESHOLD = 2
BODY: dict[str, Any] = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def emulators() -> Iterator[list[tuple[VLLMEmulator, str]]]:
    """Two vLLM emulators of their own (the test counts their requests), with their URLs."""
    with ExitStack() as stack:
        pair = []
        for _ in range(2):
            emulator = VLLMEmulator(api_key=VLLM_KEY, served_models=[VLLM_MODEL])
            server = ServerThread(emulator.app).start()
            stack.callback(server.stop)
            pair.append((emulator, server.url))
        yield pair


def config(redis_url: str, broken_url: str, fallback_url: str, run: str) -> dict[str, Any]:
    # Backend names unique to the run: the session's Redis is shared with other tests.
    breaker = {"failure_threshold": THRESHOLD, "cooldown_s": 120, "health_interval_s": 3600}
    return {
        "redis_url": redis_url,
        "backends": {
            f"broken-{run}": vllm_backend(broken_url, breaker=breaker),
            f"fallback-{run}": vllm_backend(fallback_url, breaker=breaker),
        },
        "models": {
            "chat": {
                "targets": [
                    {"backend": f"broken-{run}", "model": VLLM_MODEL},
                    {"backend": f"fallback-{run}", "model": VLLM_MODEL},
                ]
            }
        },
    }


def chat(gateway: GatewayProcess) -> httpx.Response:
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=BODY, timeout=20)
    assert response.status_code == 200, response.text
    return response


def logged(gateway: GatewayProcess, event: str, **match: Any) -> list[dict[str, Any]]:
    lines = gateway.log_lines(settle_s=0)
    return [line for line in lines if line.get("event") == event and match.items() <= line.items()]


def opened(gateway: GatewayProcess, source: str) -> list[dict[str, Any]]:
    return logged(gateway, "circuit_opened", source=source)


def calls(emulator: VLLMEmulator) -> int:
    return sum(1 for r in emulator.requests if r.path.endswith("/chat/completions"))


def test_a_breaker_opened_on_one_replica_is_skipped_by_the_others(
    redis_server: RedisServer, emulators: list[tuple[VLLMEmulator, str]], tmp_path: Path
) -> None:
    (broken, broken_url), (_, fallback_url) = emulators
    broken.faults.push("status:500", times=-1)
    run = os.urandom(3).hex()
    settings = config(redis_server.url, broken_url, fallback_url, run)
    with GatewayProcess(settings, tmp_path) as a, GatewayProcess(settings, tmp_path) as b:
        wait_for(lambda: logged(a, "breakers_resynced") and logged(b, "breakers_resynced"))
        for _ in range(THRESHOLD):
            assert chat(a).headers["x-gateway-backend"] == f"fallback-{run}"
        assert calls(broken) == THRESHOLD
        (local,) = wait_for(lambda: opened(a, "local"))
        (remote,) = wait_for(lambda: opened(b, "remote"))
        assert remote["target"] == local["target"] == f"broken-{run}/{VLLM_MODEL}"
        propagation = datetime.fromisoformat(remote["timestamp"]) - datetime.fromisoformat(local["timestamp"])
        print(f"breaker open propagated A -> B in {propagation.total_seconds() * 1000:.1f} ms")
        # B's first request goes to the fallback without calling the broken target.
        response = chat(b)
        assert (response.headers["x-gateway-backend"], response.headers["x-gateway-attempts"]) == (
            f"fallback-{run}",
            "1",
        )
        assert calls(broken) == THRESHOLD
        # A replica started now reads the open breaker when it subscribes.
        with GatewayProcess(settings, tmp_path) as c:
            wait_for(lambda: opened(c, "remote"))
            assert chat(c).headers["x-gateway-attempts"] == "1"
        assert calls(broken) == THRESHOLD
        metrics = httpx.get(f"{b.url}/metrics", timeout=5).text
        assert f'gateway_breaker_remote_changes_total{{backend="broken-{run}"' in metrics
