"""p99 time to first token with one slow target, with and without hedging.

    .venv/bin/python -m tests.bench.hedge_ttft [--requests 200] [--slow-share 0.1] [--slow-s 1]

Target A (the Workers AI emulator) is first in the model's order and delays its first event by
`--slow-s` on a `--slow-share` of the requests (the same requests in both runs: a seeded draw);
target B (the vLLM emulator) is always fast. The same requests go, one at a time, through a real
`gateway serve` without hedging, then through one with `hedge_after_ms: 100`; the client (the openai
SDK) measures the time to the first content token.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import openai

from tests.e2e.conftest import CF_ACCOUNT, CF_TOKEN, VLLM_KEY, VLLM_MODEL, cloudflare_backend, vllm_backend
from tests.emulators.server import ServerThread
from tests.emulators.vllm import VLLMEmulator
from tests.emulators.workers_ai import WorkersAIEmulator
from tests.gateway_process import GatewayProcess

CF_MODEL = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def run(url: str, slow_a: WorkersAIEmulator, plan: list[bool], slow_s: float) -> list[float]:
    times = []
    with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30) as client:
        for slow in plan:
            if slow:
                slow_a.faults.push(f"first-delay:{slow_s}")
            started = time.perf_counter()
            first: float | None = None
            stream = client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "Say hello"}], stream=True
            )
            for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - started
            assert first is not None
            times.append(first)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--slow-share", type=float, default=0.1)
    parser.add_argument("--slow-s", type=float, default=1.0)
    args = parser.parse_args()
    plan = [random.Random(7 + i).random() < args.slow_share for i in range(args.requests)]
    workers_ai = WorkersAIEmulator(account_id=CF_ACCOUNT, api_token=CF_TOKEN)
    vllm = VLLMEmulator(api_key=VLLM_KEY, served_models=[VLLM_MODEL])
    workers_ai.record_requests = vllm.record_requests = False
    with tempfile.TemporaryDirectory() as directory:
        cf, fast = ServerThread(workers_ai.app).start(), ServerThread(vllm.app).start()
        try:
            results: dict[str, list[float]] = {}
            for name, model in (
                ("off", {}),
                ("hedge_after_ms=100", {"hedge_after_ms": 100, "hedge_max_ratio": 0.2}),
            ):
                config: dict[str, Any] = {
                    "log_level": "warning",
                    "backends": {"a": cloudflare_backend(cf.url), "b": vllm_backend(fast.url)},
                    "models": {
                        "chat": {
                            "targets": [
                                {"backend": "a", "model": CF_MODEL},
                                {"backend": "b", "model": VLLM_MODEL},
                            ],
                            **model,
                        }
                    },
                }
                with GatewayProcess(config, Path(directory)) as gateway:
                    results[name] = run(gateway.url, workers_ai, plan, args.slow_s)
        finally:
            cf.stop()
            fast.stop()
    print(f"{args.requests} streamed requests, {sum(plan)} slow by {args.slow_s:g} s on target A")
    print(f"{'hedging':<20} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8}")
    for name, times in results.items():
        row = [
            percentile(times, 0.5),
            percentile(times, 0.9),
            percentile(times, 0.99),
            max(times),
            statistics.mean(times),
        ]
        print(f"{name:<20} " + " ".join(f"{value * 1000:8.1f}" for value in row))


if __name__ == "__main__":
    main()
