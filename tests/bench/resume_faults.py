"""Answers completed when a share of streams is cut mid-way, with and without `resume`.

    .venv/bin/python -m tests.bench.resume_faults [--requests 200] [--cut-share 0.2]

Target A (the Workers AI emulator) is first in the model's order; on a `--cut-share` of the requests
(the same requests in both runs: a seeded draw) its stream is cut after a few tokens, half of them
by a clean end without `[DONE]` (`cut`), half by a dropped connection (`abort`), at a random point
of the answer. Target B (the vLLM emulator) is healthy. The same requests go, one at a time, through
a real `gateway serve` without `resume`, then with `resume: true`; the client (the openai SDK) counts
the answers it got whole (the exact deterministic text, finish `stop`), and those that ended with
the in-band error.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import openai

from tests.bench.hedge_ttft import CF_MODEL
from tests.e2e.conftest import CF_ACCOUNT, CF_TOKEN, VLLM_KEY, VLLM_MODEL, cloudflare_backend, vllm_backend
from tests.emulators.common import words_text
from tests.emulators.server import ServerThread
from tests.emulators.vllm import VLLMEmulator
from tests.emulators.workers_ai import WorkersAIEmulator
from tests.gateway_process import GatewayProcess

WORDS = 40
MESSAGES: Any = [{"role": "user", "content": f"Count [[emu:words={WORDS}]]"}]
ANSWER = words_text(WORDS)


class Tally:
    def __init__(self) -> None:
        self.whole = self.errors = self.wrong = 0
        self.seconds = 0.0


def run(url: str, first: WorkersAIEmulator, plan: list[str | None]) -> Tally:
    tally = Tally()
    started = time.perf_counter()
    with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30) as client:
        for fault in plan:
            if fault is not None:
                first.faults.push(fault)
            text, finish = "", None
            try:
                for chunk in client.chat.completions.create(model="chat", messages=MESSAGES, stream=True):
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
                        finish = chunk.choices[0].finish_reason or finish
            except openai.APIError:
                tally.errors += 1
                continue
            if text == ANSWER and finish == "stop":
                tally.whole += 1
            else:
                tally.wrong += 1
    tally.seconds = time.perf_counter() - started
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--cut-share", type=float, default=0.2)
    args = parser.parse_args()
    draw = random.Random(19)
    plan: list[str | None] = []
    for _ in range(args.requests):
        cut = draw.random() < args.cut_share
        plan.append(f"{draw.choice(('cut', 'abort'))}:{draw.randint(2, WORDS - 2)}" if cut else None)
    workers_ai = WorkersAIEmulator(account_id=CF_ACCOUNT, api_token=CF_TOKEN)
    vllm = VLLMEmulator(api_key=VLLM_KEY, served_models=[VLLM_MODEL])
    workers_ai.record_requests = vllm.record_requests = False
    results: dict[str, Tally] = {}
    with tempfile.TemporaryDirectory() as directory:
        a, b = ServerThread(workers_ai.app).start(), ServerThread(vllm.app).start()
        try:
            for name, resume in (("off", False), ("resume: true", True)):
                targets = [{"backend": "a", "model": CF_MODEL}, {"backend": "b", "model": VLLM_MODEL}]
                config: dict[str, Any] = {
                    "log_level": "warning",
                    "backends": {"a": cloudflare_backend(a.url), "b": vllm_backend(b.url)},
                    "models": {"chat": {"targets": targets, "resume": resume}},
                }
                with GatewayProcess(config, Path(directory)) as gateway:
                    results[name] = run(gateway.url, workers_ai, plan)
        finally:
            a.stop()
            b.stop()
    cuts = sum(fault is not None for fault in plan)
    print(f"{args.requests} streamed answers of {WORDS} tokens, {cuts} cut mid-way on target A")
    print(f"{'resume':<14} {'whole':>6} {'in-band error':>14} {'wrong text':>11} {'seconds':>8}")
    for name, tally in results.items():
        print(f"{name:<14} {tally.whole:6d} {tally.errors:14d} {tally.wrong:11d} {tally.seconds:8.2f}")


if __name__ == "__main__":
    main()
