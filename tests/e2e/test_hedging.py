"""Hedged first tokens, end to end: a real `gateway serve`, the Workers AI emulator as the first target
(made slow to its first event with `first-delay`), the vLLM emulator as the second, the openai SDK."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest

from gateway.config import ConfigError, load_config
from tests.e2e.conftest import VLLM_MODEL, cloudflare_backend, vllm_backend
from tests.e2e.test_failover import ANSWER, ask, chat_requests, target
from tests.gateway_process import GatewayProcess
from tests.waiting import wait_for

if TYPE_CHECKING:
    from tests.emulators.common import RecordedRequest
    from tests.emulators.server import ServerThread
    from tests.emulators.vllm import VLLMEmulator
    from tests.emulators.workers_ai import WorkersAIEmulator

CLIENT_KEY = "sk-hedge-client-5d0b93"
RPM = 1000
SLOW_S = 2
"""The slow target's delay before its first event: far beyond the 100 ms hedge threshold."""


class Upstreams:
    """The session's two emulators (reset for the test) and where they listen."""

    def __init__(self, workers_ai: WorkersAIEmulator, cf_url: str, vllm: VLLMEmulator, vllm_url: str) -> None:
        self.workers_ai, self.cf_url, self.vllm, self.vllm_url = workers_ai, cf_url, vllm, vllm_url

    def config(self, **model: Any) -> dict[str, Any]:
        """Model `chat`: Cloudflare first, vLLM second; one key with a requests-per-minute limit."""
        return {
            "backends": {"cloudflare": cloudflare_backend(self.cf_url), "vllm": vllm_backend(self.vllm_url)},
            "models": {"chat": {"targets": [target("cloudflare"), target("vllm", VLLM_MODEL)], **model}},
            "keys": [{"id": "hedger", "key": CLIENT_KEY, "rpm": RPM}],
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
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def chat_calls(emulator: WorkersAIEmulator | VLLMEmulator) -> list[RecordedRequest]:
    return [r for r in emulator.requests if r.method == "POST"]


def logged(gateway: GatewayProcess, **match: Any) -> list[dict[str, Any]]:
    """The request lines logged so far with these values (the log is flushed now and then)."""
    lines = gateway.log_lines(settle_s=0)
    return [line for line in lines if line.get("event") == "request" and match.items() <= line.items()]


def hedge_metric(gateway: GatewayProcess, backend: str, outcome: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    pattern = rf'^gateway_hedges_total\{{[^}}]*backend="{backend}"[^}}]*outcome="{outcome}"[^}}]*\}} (\S+)$'
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_slow_first_token_is_beaten_by_a_hedge(upstreams: Upstreams, tmp_path: Path, stream: bool) -> None:
    workers_ai, vllm = upstreams.workers_ai, upstreams.vllm
    config = upstreams.config(hedge_after_ms=100, hedge_max_ratio=1.0)
    with GatewayProcess(config, tmp_path) as gateway, client_for(gateway) as client:
        workers_ai.faults.push(f"first-delay:{SLOW_S}")
        hedged = ask(client, "chat", stream=stream)
        assert (hedged.backend, hedged.text, hedged.attempts) == ("vllm", ANSWER, 2)
        # The slow target's upstream connection was closed as soon as the hedge won.
        slow = chat_calls(workers_ai)
        assert len(slow) == 1
        wait_for(lambda: slow[0].disconnected)
        assert not slow[0].finished
        # Charged once: the key's request counter moved by one for the two upstream calls ...
        assert hedged.headers["x-ratelimit-remaining-requests"] == str(RPM - 1)
        plain = ask(client, "chat", stream=stream)
        assert (plain.backend, plain.attempts) == ("cloudflare", 1)
        assert plain.headers["x-ratelimit-remaining-requests"] == str(RPM - 2)
        assert chat_requests(vllm) == 1
        (line,) = gateway.requests_logged(hedged="won")
        assert (line["backend"], line["attempts"], line["status"]) == ("vllm", 2, 200)
        assert hedge_metric(gateway, "vllm", "started") == 1
        assert hedge_metric(gateway, "vllm", "won") == 1


@pytest.mark.parametrize(
    ("hedge_fault", "outcome"),
    [("hang", "lost"), ("status:500", "failed")],
    ids=["hedge-hangs", "hedge-fails"],
)
def test_first_target_answers_when_the_hedge_does_not(
    upstreams: Upstreams, tmp_path: Path, hedge_fault: str, outcome: str
) -> None:
    """The hedge hangs (it loses, and its upstream call is closed) or fails (the first is waited for)."""
    workers_ai, vllm = upstreams.workers_ai, upstreams.vllm
    config = upstreams.config(hedge_after_ms=100, hedge_max_ratio=1.0)
    with GatewayProcess(config, tmp_path) as gateway, client_for(gateway) as client:
        workers_ai.faults.push("first-delay:0.6")
        vllm.faults.push(hedge_fault)
        asked = ask(client, "chat", stream=True)
        assert (asked.backend, asked.text, asked.attempts) == ("cloudflare", ANSWER, 2)
        hedge = wait_for(lambda: chat_calls(vllm))
        assert len(hedge) == 1
        if outcome == "lost":
            wait_for(lambda: hedge[0].disconnected)
        (line,) = gateway.requests_logged(hedged=outcome)
        assert line["backend"] == "cloudflare"
        assert hedge_metric(gateway, "vllm", outcome) == 1


def test_hedge_max_ratio_bounds_the_hedges(upstreams: Upstreams, tmp_path: Path) -> None:
    """20 requests all slow on the first target, ratio 0.2: 1 + 0.2 * 20 = 5 hedges at most."""
    workers_ai, vllm = upstreams.workers_ai, upstreams.vllm
    config = upstreams.config(hedge_after_ms=100, hedge_max_ratio=0.2)
    with GatewayProcess(config, tmp_path) as gateway, client_for(gateway) as client:
        workers_ai.faults.push("first-delay:0.4", times=20)
        backends = [ask(client, "chat", stream=True).backend for _ in range(20)]
        hedges = chat_requests(vllm)
        assert 4 <= hedges <= 5
        # A hedge usually wins, but on a busy machine one may lose to the slow target: count both.
        assert backends.count("vllm") <= hedges
        wait_for(lambda: sum(1 for line in logged(gateway) if line["hedged"] is not None) == hedges)


def test_p95_mode_learns_the_threshold(upstreams: Upstreams, tmp_path: Path) -> None:
    workers_ai, vllm = upstreams.workers_ai, upstreams.vllm
    config = upstreams.config(hedge_after="p95", hedge_max_ratio=1.0)
    with GatewayProcess(config, tmp_path) as gateway, client_for(gateway) as client:
        # Nothing measured yet: a slow first token is waited for, not hedged.
        workers_ai.faults.push("first-delay:0.5")
        assert ask(client, "chat", stream=True).backend == "cloudflare"
        for _ in range(19):  # 20 samples in all, 19 of them fast: the p95 is a fast one
            assert ask(client, "chat", stream=True).backend == "cloudflare"
        assert chat_requests(vllm) == 0
        workers_ai.faults.push(f"first-delay:{SLOW_S}")
        hedged = ask(client, "chat", stream=True)
        assert (hedged.backend, hedged.text) == ("vllm", ANSWER)
        wait_for(lambda: chat_calls(workers_ai)[-1].disconnected)
        assert len(gateway.requests_logged(hedged="won")) == 1


def test_without_hedging_there_is_no_second_request(upstreams: Upstreams, tmp_path: Path) -> None:
    workers_ai, vllm = upstreams.workers_ai, upstreams.vllm
    with GatewayProcess(upstreams.config(), tmp_path) as gateway, client_for(gateway) as client:
        workers_ai.faults.push("first-delay:0.5")
        asked = ask(client, "chat", stream=True)
        assert (asked.backend, asked.attempts) == ("cloudflare", 1)
        assert chat_requests(vllm) == 0
        (line,) = gateway.requests_logged(backend="cloudflare")
        assert line["hedged"] is None


def test_both_hedge_settings_at_once_are_refused(tmp_path: Path) -> None:
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(
        "backends: {demo: {kind: mock}}\n"
        "models: {chat: {targets: [{backend: demo, model: m}], hedge_after_ms: 100, hedge_after: p95}}\n"
    )
    with pytest.raises(ConfigError, match="set one of hedge_after_ms and hedge_after, not both"):
        load_config(config_path)
