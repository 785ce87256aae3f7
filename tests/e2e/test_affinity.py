"""Session affinity end to end: a real `gateway serve`, a weighted group of three vLLM emulators, the
openai SDK. A session (`prompt_cache_key`, or the `x-session-affinity` header) stays on one replica,
sessions spread over all three, and a session whose replica fails moves to one other replica, stays
there, and comes back once its replica recovers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.e2e.conftest import VLLM_KEY, VLLM_MODEL, vllm_backend
from tests.emulators.server import ServerThread
from tests.emulators.vllm import VLLMEmulator
from tests.gateway_process import GatewayProcess
from tests.waiting import wait_for

REPLICAS = ("gpu-a", "gpu-b", "gpu-c")
USER: Any = [{"role": "user", "content": "hi"}]
SESSION = "conv-7f3a"


@pytest.fixture
def replicas() -> Iterator[dict[str, tuple[VLLMEmulator, str]]]:
    """Three vLLM emulators of their own (the test counts their requests), by backend name."""
    with ExitStack() as stack:
        found = {}
        for name in REPLICAS:
            emulator = VLLMEmulator(api_key=VLLM_KEY, served_models=[VLLM_MODEL])
            server = ServerThread(emulator.app).start()
            stack.callback(server.stop)
            found[name] = (emulator, server.url)
        yield found


def config(replicas: dict[str, tuple[VLLMEmulator, str]]) -> dict[str, Any]:
    breaker = {"failure_threshold": 1, "cooldown_s": 120, "health_interval_s": 0.2}
    return {
        "backends": {name: vllm_backend(url, breaker=breaker) for name, (_, url) in replicas.items()},
        "models": {
            "chat": {"targets": [{"backend": name, "model": VLLM_MODEL, "weight": 1} for name in REPLICAS]}
        },
    }


def ask(
    client: openai.OpenAI, *, session: str | None = None, cache_key: str | None = None
) -> tuple[str, str]:
    """The backend that answered and the attempts it took."""
    extra: dict[str, Any] = {}
    if session is not None:
        extra["extra_headers"] = {"x-session-affinity": session}
    if cache_key is not None:
        extra["prompt_cache_key"] = cache_key
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=USER, **extra)
    return raw.headers["x-gateway-backend"], raw.headers["x-gateway-attempts"]


def calls(replicas: dict[str, tuple[VLLMEmulator, str]]) -> Counter[str]:
    return Counter(
        {
            name: sum(1 for r in emu.requests if r.path.endswith("/chat/completions"))
            for name, (emu, _) in replicas.items()
        }
    )


def health_logged(gateway: GatewayProcess, event: str, backend: str) -> int:
    return sum(
        1
        for line in gateway.log_lines(settle_s=0)
        if (line.get("event"), line.get("backend")) == (event, backend)
    )


def test_a_session_stays_on_one_replica_and_moves_only_when_that_replica_fails(
    replicas: dict[str, tuple[VLLMEmulator, str]], tmp_path: Path
) -> None:
    with (
        GatewayProcess(config(replicas), tmp_path) as gateway,
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=20) as client,
    ):
        # Different sessions spread over the group; each stays where it landed.
        homes = {f"user-{i}": ask(client, cache_key=f"user-{i}")[0] for i in range(12)}
        assert len(set(homes.values())) == len(REPLICAS)
        assert all(ask(client, cache_key=key)[0] == home for key, home in list(homes.items())[:4])

        # One session, named by the header: every request on one replica, and the hint sent upstream.
        before = calls(replicas)
        home = ask(client, session=SESSION)[0]
        for _ in range(4):
            assert ask(client, session=SESSION) == (home, "1")
        assert calls(replicas) - before == Counter({home: 5})
        home_emulator = replicas[home][0]
        assert home_emulator.requests[-1].headers["x-session-affinity"] == SESSION

        # Its replica fails its health check: the session moves to one other replica and stays.
        home_emulator.healthy = False
        wait_for(lambda: health_logged(gateway, "backend_unhealthy", home))
        before = calls(replicas)
        second = ask(client, session=SESSION)[0]
        assert second != home
        for _ in range(3):
            assert ask(client, session=SESSION) == (second, "1")
        assert calls(replicas) - before == Counter({second: 4})
        # Sessions at home elsewhere did not move.
        assert all(ask(client, cache_key=key)[0] == h for key, h in homes.items() if h != home)

        # It recovers: the session comes back.
        home_emulator.healthy = True
        wait_for(lambda: health_logged(gateway, "backend_healthy", home))
        assert ask(client, session=SESSION) == (home, "1")
        # The header names the session on Anthropic Messages too (no `prompt_cache_key` there).
        with anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0, timeout=20) as claude:
            raw = claude.messages.with_raw_response.create(
                model="chat", max_tokens=16, messages=USER, extra_headers={"x-session-affinity": SESSION}
            )
        assert raw.headers["x-gateway-backend"] == home
        assert home_emulator.requests[-1].headers["x-session-affinity"] == SESSION

        # A failed request opens its breaker: that request fails over to the session's second choice,
        # and the next ones go there directly.
        home_emulator.faults.push("status:500")
        assert ask(client, session=SESSION) == (second, "2")
        assert ask(client, session=SESSION) == (second, "1")
