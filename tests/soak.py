"""A bounded soak: steady mixed load with injected faults, and whether anything grows while it runs.

    python -m tests.soak --duration 120            # `make soak` runs it for a few minutes

Starts a `redis-server`, three upstream emulators and a gateway subprocess with a key whose limits live
in Redis, then keeps `--concurrency` official-SDK clients busy for `--duration` seconds: streamed and
non-streamed chat, on a failover model (Workers AI first, vLLM second) and on vLLM directly. A share of
the requests (`--fault-rate`) carries a fault: half are recoverable (a fault queued on the first
target: 5xx, 429, malformed or cut answers, a slow upstream; the client must still get an answer by
failover), half are not (a model with one target and a fault directive: a 502, or an in-band error
after the first token; these are expected to fail and are left out of the error rate).

Reported for the first and the last `--window` share of the run: requests, error rate, p50/p99
latency, and the gateway's RSS, open fds and asyncio tasks (from its `/metrics`). Then, once the
load has stopped and settled, fds, tasks and busy upstream connections against the same reading
taken before the load. Exits 1 if the error rate is above `--max-error-rate`, RSS grew more than
`--max-rss-growth-mib` between the windows, or fds, tasks or connections did not come back.

`tests/e2e/test_soak_short.py` runs the same code for ~20 s in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.e2e.conftest import CF_ACCOUNT, CF_TOKEN, VLLM_KEY, VLLM_MODEL, cloudflare_backend, vllm_backend
from tests.emulators.server import ServerThread
from tests.emulators.vllm import VLLMEmulator
from tests.emulators.workers_ai import WorkersAIEmulator
from tests.gateway_process import GatewayProcess
from tests.leaks import MIB, Footprint, footprint, settled_footprint
from tests.redis_server import RedisServer

WA_MODEL = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
KEY = "sk-soak-7c1e9a3f5b2d4e6a8c0b"
RECOVERABLE = ("status:500", "status:503", "status:429", "malformed", "cut:0", "abort:0", "delay:3")
"""Queued on the failover model's first target: the gateway must fail over and answer."""
UNRECOVERABLE = {False: "status:500", True: "cut:3"}
"""Directives on the single-target model, by `stream`: a 502, or an in-band error after the first token."""
BACKEND_TIMEOUT_S = 1.0
MODEL_DEADLINE_S = 5.0
SAMPLE_EVERY_S = 0.5


@dataclass(frozen=True)
class Result:
    started: float
    """Seconds since the measured run began (negative during the warm-up)."""
    seconds: float
    ok: bool
    expected_failure: bool
    detail: str


@dataclass(frozen=True)
class Window:
    name: str
    requests: int
    errors: int
    injected_failures: int
    p50_ms: float
    p99_ms: float
    rss_mib: float
    fds: int
    tasks: int

    @property
    def error_rate(self) -> float:
        counted = self.requests - self.injected_failures
        return self.errors / counted if counted else 0.0

    def line(self) -> str:
        return (
            f"{self.name:<6} requests {self.requests:>6}  errors {self.errors:>3} ({self.error_rate:.2%}, "
            f"besides {self.injected_failures} injected)  "
            f"p50 {self.p50_ms:7.1f} ms  p99 {self.p99_ms:7.1f} ms  "
            f"RSS {self.rss_mib:6.1f} MiB  fds {self.fds:>4}  tasks {self.tasks:>4}"
        )


@dataclass
class SoakReport:
    duration_s: float
    concurrency: int
    fault_rate: float
    requests: int
    faults_injected: int
    windows: list[Window]
    before: Footprint
    after: Footprint
    unexpected: Counter[str]
    problems: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [
            f"soak: {self.duration_s:.0f} s, concurrency {self.concurrency}, "
            f"fault rate {self.fault_rate:.0%}: "
            f"{self.requests} requests ({self.requests / self.duration_s:.0f}/s), "
            f"{self.faults_injected} faults injected",
            *(window.line() for window in self.windows),
            f"settled before the load: {self.before.describe()}",
            f"settled after the load:  {self.after.describe()}",
        ]
        if self.unexpected:
            lines.append(f"unexpected errors: {dict(self.unexpected.most_common(10))}")
        lines += [f"PROBLEM: {problem}" for problem in self.problems] or [
            "no growth, error rate within bounds"
        ]
        return "\n".join(lines)


def gateway_config(primary_url: str, single_url: str, vllm_url: str, redis_url: str) -> dict[str, Any]:
    quick: dict[str, Any] = {"timeout_s": BACKEND_TIMEOUT_S}
    return {
        "backends": {
            "cloudflare": cloudflare_backend(primary_url, **quick),
            "cloudflare-single": cloudflare_backend(single_url, **quick),
            "vllm": vllm_backend(vllm_url),
        },
        "models": {
            "soak-failover": {
                "targets": [
                    {"backend": "cloudflare", "model": WA_MODEL},
                    {"backend": "vllm", "model": VLLM_MODEL},
                ],
                "timeout_s": MODEL_DEADLINE_S,
            },
            "soak-vllm": {
                "targets": [{"backend": "vllm", "model": VLLM_MODEL}],
                "timeout_s": MODEL_DEADLINE_S,
            },
            "soak-single": {
                "targets": [{"backend": "cloudflare-single", "model": WA_MODEL}],
                "timeout_s": MODEL_DEADLINE_S,
            },
        },
        "keys": [{"id": "soak", "key": KEY, "rpm": 1_000_000, "tpm": 100_000_000, "max_concurrency": 1000}],
        "redis_url": redis_url,
        "log_level": "warning",
    }


class Load:
    def __init__(self, url: str, primary: WorkersAIEmulator, fault_rate: float, seed: int) -> None:
        self.url = url
        self.primary = primary
        self.fault_rate = fault_rate
        self.random = random.Random(seed)
        self.results: list[Result] = []
        self.faults_injected = 0
        self.origin = 0.0

    async def one(self, client: openai.AsyncOpenAI) -> None:
        stream = self.random.random() < 0.5
        words = self.random.randint(5, 60)
        text = f"Tell me something [[emu:words={words}]]"
        expected_failure = False
        roll = self.random.random()
        if roll < self.fault_rate / 2:
            self.primary.faults.push(self.random.choice(RECOVERABLE))
            model = "soak-failover"
            self.faults_injected += 1
        elif roll < self.fault_rate:
            model = "soak-single"
            text += f" [[emu:fault={UNRECOVERABLE[stream]}]]"
            expected_failure = True
            self.faults_injected += 1
        else:
            model = self.random.choice(("soak-failover", "soak-vllm"))
        messages: Any = [{"role": "user", "content": text}]
        started = time.monotonic()
        ok, detail = False, ""
        try:
            if stream:
                answer = ""
                async for chunk in await client.chat.completions.create(
                    model=model, messages=messages, stream=True
                ):
                    if chunk.choices:
                        answer += chunk.choices[0].delta.content or ""
            else:
                completion = await client.chat.completions.create(model=model, messages=messages)
                answer = completion.choices[0].message.content or ""
            ok = len(answer.split()) == words
            detail = "" if ok else f"{model}: wrong answer"
        except openai.APIStatusError as error:
            detail = f"{model} stream={stream}: HTTP {error.status_code}"
        except openai.APIConnectionError as error:
            detail = f"{model} stream={stream}: {type(error).__name__}"
        except openai.APIError:
            detail = f"{model} stream={stream}: in-band error"
        self.results.append(
            Result(started - self.origin, time.monotonic() - started, ok, expected_failure, detail)
        )

    async def worker(self, client: openai.AsyncOpenAI, until: float) -> None:
        while time.monotonic() < until:
            await self.one(client)


async def sample(url: str, until: float, origin: float, samples: list[tuple[float, Footprint]]) -> None:
    while time.monotonic() < until:
        reading = await asyncio.to_thread(footprint, url)
        samples.append((time.monotonic() - origin, reading))
        await asyncio.sleep(SAMPLE_EVERY_S)


def window(
    name: str, results: list[Result], samples: list[tuple[float, Footprint]], start: float, end: float
) -> Window:
    inside = [r for r in results if start <= r.started < end]
    latencies = sorted(r.seconds * 1000 for r in inside) or [0.0]
    readings = [f for t, f in samples if start <= t < end] or [samples[-1][1]]
    return Window(
        name=name,
        requests=len(inside),
        errors=sum(1 for r in inside if not r.ok and not r.expected_failure),
        injected_failures=sum(1 for r in inside if r.expected_failure),
        p50_ms=statistics.median(latencies),
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        rss_mib=statistics.median(f.rss_bytes for f in readings) / MIB,
        fds=int(statistics.median(f.fds_besides_pool for f in readings)),
        tasks=int(statistics.median(f.tasks for f in readings)),
    )


async def drive(
    load: Load, *, duration_s: float, warmup_s: float, concurrency: int
) -> list[tuple[float, Footprint]]:
    samples: list[tuple[float, Footprint]] = []
    async with openai.AsyncOpenAI(
        base_url=f"{load.url}/v1",
        api_key=KEY,
        max_retries=0,
        timeout=15,
    ) as client:
        now = time.monotonic()
        load.origin = now + warmup_s
        until = load.origin + duration_s
        await asyncio.gather(
            sample(load.url, until, load.origin, samples),
            *(load.worker(client, until) for _ in range(concurrency)),
        )
    return samples


def warm_up(url: str) -> None:
    """One answered request per model, so that what is made once (the limiter's lease-renewal task, the
    upstream pools) exists before the reading the end is compared with."""
    for model in ("soak-failover", "soak-vllm", "soak-single"):
        answer = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hello [[emu:words=3]]"}]},
            headers={"authorization": f"Bearer {KEY}"},
            timeout=10,
        )
        answer.raise_for_status()


def run_soak(
    *,
    duration_s: float,
    concurrency: int = 16,
    fault_rate: float = 0.05,
    window_share: float = 0.2,
    warmup_s: float = 3.0,
    max_error_rate: float = 0.01,
    max_rss_growth_mib: float = 30.0,
    seed: int = 7,
) -> SoakReport:
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        redis = stack.enter_context(RedisServer())
        primary = WorkersAIEmulator(account_id=CF_ACCOUNT, api_token=CF_TOKEN)
        single = WorkersAIEmulator(account_id=CF_ACCOUNT, api_token=CF_TOKEN)
        vllm = VLLMEmulator(api_key=VLLM_KEY, served_models=[VLLM_MODEL])
        urls: list[str] = []
        for emulator in (primary, single, vllm):
            emulator.record_requests = False
            server = ServerThread(emulator.app).start()
            stack.callback(server.stop)
            urls.append(server.url)
        # `abort` faults raise inside the emulators on purpose: no traceback per fault on stderr.
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
        config = gateway_config(urls[0], urls[1], urls[2], redis.url)
        gateway = GatewayProcess(config, directory).start()
        stack.callback(gateway.stop)
        warm_up(gateway.url)
        before = settled_footprint(gateway.url, footprint(gateway.url))
        load = Load(gateway.url, primary, fault_rate, seed)
        samples = asyncio.run(drive(load, duration_s=duration_s, warmup_s=warmup_s, concurrency=concurrency))
        primary.faults.clear()
        after = settled_footprint(gateway.url, before)
        output = gateway.output()

    measured = [r for r in load.results if r.started >= 0]
    span = duration_s * window_share
    windows = [
        window("start", measured, samples, 0, span),
        window(
            "end", measured, samples, duration_s - span, duration_s + 60
        ),  # the last requests may end late
    ]
    report = SoakReport(
        duration_s=duration_s,
        concurrency=concurrency,
        fault_rate=fault_rate,
        requests=len(measured),
        faults_injected=load.faults_injected,
        windows=windows,
        before=before,
        after=after,
        unexpected=Counter(r.detail for r in measured if not r.ok and not r.expected_failure),
    )
    start, end = windows
    for w in windows:
        if w.error_rate > max_error_rate:
            report.problems.append(f"{w.name}: error rate {w.error_rate:.2%} > {max_error_rate:.2%}")
        if w.requests == 0:
            report.problems.append(f"{w.name}: no requests")
    if end.rss_mib - start.rss_mib > max_rss_growth_mib:
        report.problems.append(f"RSS grew {end.rss_mib - start.rss_mib:.1f} MiB under load")
    if end.fds > start.fds + 5:
        report.problems.append(f"open fds grew under load: {start.fds} -> {end.fds} (upstream pool aside)")
    # Settled, the Redis client's pool may hold up to one connection per concurrent request more than after
    # the warm-up; a leak grows with the number of requests (thousands), far past this.
    if after.fds_besides_pool > before.fds_besides_pool + concurrency:
        report.problems.append(f"open fds {before.fds_besides_pool} -> {after.fds_besides_pool} (pool aside)")
    if after.tasks > before.tasks:
        report.problems.append(f"asyncio tasks {before.tasks} -> {after.tasks}")
    if after.upstream_busy:
        report.problems.append(f"{after.upstream_busy} upstream connections still busy")
    if "Traceback" in output:
        report.problems.append("the gateway logged a traceback")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="measured seconds (default 120)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--fault-rate", type=float, default=0.05, help="share of requests with a fault")
    parser.add_argument("--window", type=float, default=0.2, help="share of the run in each reported window")
    parser.add_argument("--max-error-rate", type=float, default=0.01)
    parser.add_argument("--max-rss-growth-mib", type=float, default=30.0)
    args = parser.parse_args(argv)
    report = run_soak(
        duration_s=args.duration,
        concurrency=args.concurrency,
        fault_rate=args.fault_rate,
        window_share=args.window,
        max_error_rate=args.max_error_rate,
        max_rss_growth_mib=args.max_rss_growth_mib,
    )
    print(report.render())
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
