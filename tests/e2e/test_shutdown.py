"""Graceful shutdown: SIGTERM to a real `gateway serve` process while a stream is in flight.

The listening socket closes at once (new connections are refused), streams in flight run to their
`[DONE]`, and the process exits with status 0; a stream longer than `http.shutdown_grace_s` is cut
off when the grace period ends, and the process still exits, never hangs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from gateway.config import DEFAULT_SHUTDOWN_GRACE_S, Settings
from tests.e2e.conftest import workers_ai_config
from tests.gateway_process import GatewayProcess
from tests.waiting import HANG_GUARD_S, wait_for

if TYPE_CHECKING:
    from tests.emulators.server import ServerThread
    from tests.emulators.workers_ai import WorkersAIEmulator

EXIT_DEADLINE_S = 20.0
"""Generous: only "does not hang" is asserted, never how fast."""


def _config(emulator_url: str, grace_s: float) -> dict[str, Any]:
    config = workers_ai_config(emulator_url)
    config["http"] = {"shutdown_grace_s": grace_s}
    return config


def _stream_request(words: int) -> dict[str, Any]:
    return {
        "model": "llama-3.3-70b",
        "stream": True,
        "messages": [{"role": "user", "content": f"[[emu:words={words}]] drain me"}],
    }


@pytest.fixture
def emulator(
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread], workers_ai: WorkersAIEmulator
) -> Iterator[str]:
    yield workers_ai_server[1].url
    workers_ai.faults.clear()


def _refuses_connections(url: str, deadline_s: float = HANG_GUARD_S) -> bool:
    """True once a new connection is refused (polled: the server notices the signal on its next tick)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/healthz", timeout=1.0)
        except httpx.ConnectError:
            return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return False


def test_sigterm_lets_a_stream_in_flight_finish_then_exits_0(
    emulator: str, workers_ai: WorkersAIEmulator, tmp_path: Path
) -> None:
    workers_ai.faults.push("slow:0.1")  # 20 words: about 2 s of stream, well inside the grace period
    with GatewayProcess(_config(emulator, grace_s=15), tmp_path) as gateway:
        with (
            httpx.Client(timeout=20) as client,
            client.stream("POST", f"{gateway.url}/v1/chat/completions", json=_stream_request(20)) as answer,
        ):
            events = (line for line in answer.iter_lines() if line.startswith("data: "))
            first = next(events)
            signalled = time.monotonic()
            gateway.terminate()
            assert _refuses_connections(gateway.url), "new connections must be refused after SIGTERM"
            refused_after = time.monotonic() - signalled
            rest = list(events)
        assert json.loads(first[6:])["object"] == "chat.completion.chunk"
        assert rest[-1] == "data: [DONE]", rest[-3:]
        text = "".join(
            json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            for line in [first, *rest[:-1]]
            if json.loads(line[6:])["choices"]
        )
        assert len(text.split()) == 20
        status = gateway.wait(EXIT_DEADLINE_S)
        exited_after = time.monotonic() - signalled
    assert status == 0, gateway.output()[-2000:]
    assert "Traceback" not in gateway.output()
    print(f"\nshutdown: new connections refused after {refused_after:.2f} s, exit after {exited_after:.2f} s")


def test_a_stream_longer_than_the_grace_period_is_cut_and_the_process_exits(
    emulator: str, workers_ai: WorkersAIEmulator, tmp_path: Path
) -> None:
    workers_ai.faults.push("slow:0.1")  # 300 words: 30 s of stream against a 1 s grace period
    with GatewayProcess(_config(emulator, grace_s=1), tmp_path) as gateway:
        received: list[str] = []
        with (
            httpx.Client(timeout=20) as client,
            client.stream("POST", f"{gateway.url}/v1/chat/completions", json=_stream_request(300)) as answer,
        ):
            lines = answer.iter_lines()
            received.append(next(line for line in lines if line.startswith("data: ")))
            signalled = time.monotonic()
            gateway.terminate()
            # The stream ends without [DONE]: the connection closes mid-body.
            with pytest.raises(httpx.RemoteProtocolError):
                received.extend(line for line in lines if line.startswith("data: "))
        cut_after = time.monotonic() - signalled
        status = gateway.wait(EXIT_DEADLINE_S)
        exited_after = time.monotonic() - signalled
    assert "data: [DONE]" not in received
    assert 1 < len(received) < 300
    assert status == 0, gateway.output()[-2000:]
    # The upstream call was closed too, not left streaming to nobody.
    assert wait_for(lambda: workers_ai.requests[-1].disconnected)
    print(f"\nshutdown: stream cut after {cut_after:.2f} s (grace 1 s), exited after {exited_after:.2f} s")


def test_idle_gateway_exits_0_on_sigterm(emulator: str, tmp_path: Path) -> None:
    with GatewayProcess(_config(emulator, grace_s=30), tmp_path) as gateway:
        assert httpx.get(f"{gateway.url}/healthz").status_code == 200
        gateway.terminate()
        assert gateway.wait(EXIT_DEADLINE_S) == 0


def test_a_negative_grace_period_is_a_config_error(emulator: str, tmp_path: Path) -> None:
    assert Settings(backends={}, models={}).http.shutdown_grace_s == DEFAULT_SHUTDOWN_GRACE_S == 30.0
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(_config(emulator, grace_s=-1)))
    checked = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 1
    assert "http.shutdown_grace_s" in checked.stderr
