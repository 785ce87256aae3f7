"""Upstream faults under concurrent load: a right answer or a clear error, within the deadline, and no leaks.

One gateway subprocess sits in front of faulty upstreams (emulators with a fault queued for every request,
and socket-level servers that reset, answer garbage or refuse) and healthy ones. Every faulty backend
serves two models: `<backend>-failover` (the faulty target first, a healthy one of the other kind second)
and `<backend>-single` (the faulty target alone). For each fault, streamed and not, both models get a burst
of concurrent requests from the official SDK. Every request must end with the healthy upstream's answer,
the OpenAI error the README's table documents, or (a fault after the first token) an in-band stream error;
none may outlive its model's deadline. Open fds, asyncio tasks and RSS are read from `/metrics` before and
after the whole run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from tests.e2e.conftest import CF_ACCOUNT, CF_TOKEN, VLLM_KEY, VLLM_MODEL, cloudflare_backend, vllm_backend
from tests.emulators.raw import GarbageServer, ResetServer, _RawServer
from tests.emulators.server import ServerThread, free_port
from tests.emulators.vllm import VLLMEmulator
from tests.emulators.workers_ai import WorkersAIEmulator
from tests.gateway_process import GatewayProcess
from tests.leaks import MIB, Footprint, footprint, settled_footprint
from tests.waiting import HANG_GUARD_S

WA_MODEL = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
PROMPT: Any = [{"role": "user", "content": "Say five words [[emu:words=5]]"}]
ANSWER = "alpha bravo café delta écho"
MODEL_DEADLINE_S = 3.0
BACKEND_TIMEOUT_S = 1.0
DEADLINE_SLACK_S = 5.0
"""Scheduling slack for 48 concurrent requests on a 2-core machine running two suites at once; a
request the deadline did not cut would take the client's 15 s."""
BURST = 12
"""Concurrent requests per (model, stream) pair: four pairs per fault, so 48 at once."""
HUGE_BYTES = 300_000


@dataclass(frozen=True)
class Outcome:
    kind: str
    """`answer`, `error` (an HTTP error status), `in_band` (an error event inside a stream) or `broken`."""
    status: int
    code: str | None
    text: str
    seconds: float

    def short(self) -> str:
        if self.kind == "answer":
            return "answer" if self.text == ANSWER else f"answer({len(self.text)} chars)"
        return f"{self.kind} {self.status} {self.code}"


ANSWERED = "answer"
IN_BAND = "in_band"
HUGE = "huge"
Expect = str | tuple[int, str]
"""`answer`, `in_band`, `huge` (a long answer) or (status, code) of the error."""


@dataclass(frozen=True)
class Fault:
    backend: str
    fault: str | None
    """Queued on the faulty emulator for every request; None for the socket-level servers."""
    single: tuple[Expect, Expect]
    """What `<backend>-single` gives (non-stream, stream)."""
    failover: tuple[Expect, Expect] = (ANSWERED, ANSWERED)

    @property
    def name(self) -> str:
        return f"{self.backend}:{self.fault}" if self.fault else self.backend


UPSTREAM_ERROR = (502, "upstream_error")
MALFORMED = (502, "upstream_malformed")
TRUNCATED = (502, "upstream_stream_truncated")
"""A stream that ended without `[DONE]` before its first token."""
CUT = (502, "upstream_cut")
"""The connection dropped after the answer's head."""
UNREACHABLE = (502, "upstream_unreachable")
TIMEOUT = (504, "upstream_timeout")
RATE_LIMITED = (429, "rate_limit_exceeded")

FAULTS: tuple[Fault, ...] = (
    # Workers AI
    Fault("bad-cf", "status:500", (UPSTREAM_ERROR, UPSTREAM_ERROR)),
    Fault("bad-cf", "status:503", (UPSTREAM_ERROR, UPSTREAM_ERROR)),
    Fault("bad-cf", "status:429", (RATE_LIMITED, RATE_LIMITED)),
    Fault("bad-cf", "status:429:3036", ((429, "insufficient_quota"), (429, "insufficient_quota"))),
    Fault("bad-cf", "hang", (TIMEOUT, TIMEOUT)),
    Fault("bad-cf", "delay:5", (TIMEOUT, TIMEOUT)),
    Fault("bad-cf", "slow:5", (ANSWERED, TIMEOUT)),  # no first token within the backend's timeout
    Fault("bad-cf", "cut:0", (MALFORMED, TRUNCATED)),
    Fault("bad-cf", "cut:3", (MALFORMED, IN_BAND), (ANSWERED, IN_BAND)),
    Fault("bad-cf", "abort:0", (CUT, CUT)),
    Fault("bad-cf", "abort:3", (CUT, IN_BAND), (ANSWERED, IN_BAND)),
    Fault("bad-cf", "malformed", (MALFORMED, MALFORMED)),
    Fault("bad-cf", "invalid-utf8", (MALFORMED, MALFORMED)),
    Fault("bad-cf", "json-body", (ANSWERED, ANSWERED)),
    Fault("bad-cf", f"huge:{HUGE_BYTES}", (HUGE, HUGE), (HUGE, HUGE)),
    # vLLM
    Fault("bad-vllm", "status:500", (UPSTREAM_ERROR, UPSTREAM_ERROR)),
    Fault("bad-vllm", "status:503", ((503, "upstream_overloaded"), (503, "upstream_overloaded"))),
    Fault("bad-vllm", "hang", (TIMEOUT, TIMEOUT)),
    Fault("bad-vllm", "slow:5", (ANSWERED, TIMEOUT)),
    Fault("bad-vllm", "cut:3", (MALFORMED, IN_BAND), (ANSWERED, IN_BAND)),
    Fault("bad-vllm", "malformed", (MALFORMED, MALFORMED)),
    Fault("bad-vllm", "invalid-utf8", (MALFORMED, MALFORMED)),
    Fault("bad-vllm", "stream-error:3", (ANSWERED, IN_BAND), (ANSWERED, IN_BAND)),
    Fault("bad-vllm", f"huge:{HUGE_BYTES}", (HUGE, HUGE), (HUGE, HUGE)),
    # Sockets
    Fault("refused", None, (UNREACHABLE, UNREACHABLE)),
    Fault("reset", None, (UNREACHABLE, UNREACHABLE)),
    Fault("reset-mid-stream", None, (CUT, IN_BAND), (ANSWERED, IN_BAND)),
    Fault("garbage", None, (MALFORMED, MALFORMED)),
    Fault("stall", None, (TIMEOUT, IN_BAND), (ANSWERED, IN_BAND)),  # hangs after the first token
)


class StallServer(_RawServer):
    """Sends a 200 SSE head and one event, then nothing: an upstream that hangs after the first token.
    Counts the connections still open, so the test can see the gateway hang up on every one."""

    def __init__(self) -> None:
        super().__init__()
        self.open = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._read_head(reader)
        self.open += 1
        try:
            writer.write(ResetServer.PARTIAL_SSE)
            await writer.drain()
            while await reader.read(65536):  # until the gateway closes its end
                pass
        finally:
            self.open -= 1


@dataclass
class Rig:
    gateway: GatewayProcess
    bad_cf: WorkersAIEmulator
    bad_vllm: VLLMEmulator
    good_cf: WorkersAIEmulator
    good_vllm: VLLMEmulator
    stall: StallServer


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    # `abort` faults raise inside the emulators on purpose: uvicorn would log a traceback for each.
    bad_cf = WorkersAIEmulator(account_id=CF_ACCOUNT, api_token=CF_TOKEN)
    good_cf = WorkersAIEmulator(account_id=CF_ACCOUNT, api_token=CF_TOKEN)
    bad_vllm = VLLMEmulator(api_key=VLLM_KEY, served_models=[VLLM_MODEL])
    good_vllm = VLLMEmulator(api_key=VLLM_KEY, served_models=[VLLM_MODEL])
    for emulator in (bad_cf, good_cf, bad_vllm, good_vllm):
        emulator.record_requests = False  # thousands of requests: keep the test process small
    servers = [ServerThread(e.app).start() for e in (bad_cf, good_cf, bad_vllm, good_vllm)]
    # `abort` faults raise inside the emulators on purpose: uvicorn would log a traceback for each.
    # (After the servers' start: uvicorn sets its loggers' levels when a server is configured.)
    uvicorn_errors = logging.getLogger("uvicorn.error")
    level = uvicorn_errors.level
    uvicorn_errors.setLevel(logging.CRITICAL)
    bad_cf_url, good_cf_url, bad_vllm_url, good_vllm_url = (s.url for s in servers)
    raw = {
        "reset": ResetServer(),
        "reset-mid-stream": ResetServer(send_before_reset=ResetServer.PARTIAL_SSE),
        "garbage": GarbageServer(),
        "stall": StallServer(),
    }
    raw_urls = {name: server.start() for name, server in raw.items()}
    raw_urls["refused"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    quick: dict[str, Any] = {"timeout_s": BACKEND_TIMEOUT_S}
    backends: dict[str, Any] = {
        "bad-cf": cloudflare_backend(bad_cf_url, **quick),
        "good-cf": cloudflare_backend(good_cf_url),
        "bad-vllm": vllm_backend(bad_vllm_url, **quick),
        "good-vllm": vllm_backend(good_vllm_url),
        **{name: cloudflare_backend(url, **quick) for name, url in raw_urls.items()},
    }
    healthy = {
        "cf": {"backend": "good-cf", "model": WA_MODEL},
        "vllm": {"backend": "good-vllm", "model": VLLM_MODEL},
    }
    models: dict[str, Any] = {
        "good-cf": {"targets": [healthy["cf"]]},
        "good-vllm": {"targets": [healthy["vllm"]]},
    }
    for name in backends.keys() - {"good-cf", "good-vllm"}:
        is_vllm = name == "bad-vllm"
        faulty = {"backend": name, "model": VLLM_MODEL if is_vllm else WA_MODEL}
        other = healthy["cf"] if is_vllm else healthy["vllm"]
        models[f"{name}-single"] = {"targets": [faulty], "timeout_s": MODEL_DEADLINE_S}
        models[f"{name}-failover"] = {"targets": [faulty, other], "timeout_s": MODEL_DEADLINE_S}
    # The faulty Workers AI emulator again, with default timeouts: producing four 40 MB answers at once
    # can take the emulator longer than the quick backends' timeout on a busy 2-core machine.
    backends["big-cf"] = cloudflare_backend(bad_cf_url)
    models["big-cf"] = {"targets": [{"backend": "big-cf", "model": WA_MODEL}]}
    config = {"backends": backends, "models": models, "log_level": "warning"}
    gateway = GatewayProcess(config, tmp_path_factory.mktemp("faults")).start()
    try:
        stall = raw["stall"]
        assert isinstance(stall, StallServer)
        yield Rig(gateway, bad_cf, bad_vllm, good_cf, good_vllm, stall)
    finally:
        gateway.stop()
        for server in servers:
            server.stop()
        for raw_server in raw.values():
            raw_server.stop()
        uvicorn_errors.setLevel(level)


async def ask(client: openai.AsyncOpenAI, model: str, stream: bool) -> Outcome:
    started = time.monotonic()
    try:
        if stream:
            text = ""
            async for chunk in await client.chat.completions.create(
                model=model, messages=PROMPT, stream=True
            ):
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
        else:
            completion = await client.chat.completions.create(model=model, messages=PROMPT)
            text = completion.choices[0].message.content or ""
        return Outcome(ANSWERED, 200, None, text, time.monotonic() - started)
    except openai.APIStatusError as error:
        code = error.body.get("code") if isinstance(error.body, dict) else None
        return Outcome("error", error.status_code, code, error.message, time.monotonic() - started)
    except openai.APIConnectionError as error:  # includes the SDK's own timeout: the gateway hung
        return Outcome("broken", 0, type(error).__name__, str(error), time.monotonic() - started)
    except openai.APIError as error:  # an error event inside the stream
        body = error.body if isinstance(error.body, dict) else {}
        code = body.get("code") or body.get("type")  # an upstream's 400 has OpenAI's null code
        return Outcome(IN_BAND, 200, code, error.message, time.monotonic() - started)


def matches(outcome: Outcome, expected: Expect) -> bool:
    if expected == ANSWERED:
        return outcome.kind == ANSWERED and outcome.text == ANSWER
    if expected == HUGE:
        return outcome.kind == ANSWERED and outcome.text.startswith(ANSWER) and len(outcome.text) > 100_000
    if expected == IN_BAND:
        return outcome.kind == IN_BAND and bool(outcome.code) and bool(outcome.text)
    assert isinstance(expected, tuple)
    return outcome.kind == "error" and (outcome.status, outcome.code) == expected


async def burst(client: openai.AsyncOpenAI, fault: Fault) -> dict[tuple[str, bool], list[Outcome]]:
    pairs = [
        (f"{fault.backend}-{kind}", stream) for kind in ("single", "failover") for stream in (False, True)
    ]
    calls = [ask(client, model, stream) for model, stream in pairs for _ in range(BURST)]
    outcomes = await asyncio.gather(*calls)
    return {pair: list(outcomes[i * BURST : (i + 1) * BURST]) for i, pair in enumerate(pairs)}


async def healthy_load(url: str) -> None:
    """The same healthy traffic before the baseline and before the final reading: pools of equal size."""
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=15) as client:
        calls = [ask(client, model, stream) for model in ("good-cf", "good-vllm") for stream in (False, True)]
        outcomes = await asyncio.gather(*(calls * BURST))
    assert all(o.kind == ANSWERED and o.text == ANSWER for o in outcomes), Counter(
        o.short() for o in outcomes
    )


def inject(rig: Rig, fault: Fault) -> None:
    for emulator in (rig.bad_cf, rig.bad_vllm):
        emulator.faults.clear()
    if fault.fault is not None:
        emulator = rig.bad_vllm if fault.backend == "bad-vllm" else rig.bad_cf
        emulator.faults.push(fault.fault, times=-1)


def test_every_fault_gets_an_answer_or_a_clear_error_in_time_and_leaks_nothing(rig: Rig) -> None:
    url = rig.gateway.url
    asyncio.run(healthy_load(url))
    before = settled_footprint(url, footprint(url))
    started = time.monotonic()
    problems: list[str] = []
    requests = 0
    slowest = 0.0
    for fault in FAULTS:
        inject(rig, fault)

        async def run(fault: Fault = fault) -> dict[tuple[str, bool], list[Outcome]]:
            async with openai.AsyncOpenAI(
                base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=15
            ) as client:
                return await burst(client, fault)

        for (model, stream), outcomes in asyncio.run(run()).items():
            requests += len(outcomes)
            expectations = fault.failover if model.endswith("-failover") else fault.single
            expected = expectations[stream]
            seen = Counter(o.short() for o in outcomes)
            if not all(matches(o, expected) for o in outcomes):
                problems.append(
                    f"{fault.name} {model} stream={stream}: expected {expected}, got {dict(seen)}"
                )
            late = max(o.seconds for o in outcomes)
            slowest = max(slowest, late)
            if late > MODEL_DEADLINE_S + DEADLINE_SLACK_S:
                problems.append(f"{fault.name} {model} stream={stream}: a request took {late:.2f} s")
    inject(rig, Fault("none", None, (ANSWERED, ANSWERED)))
    elapsed = time.monotonic() - started
    asyncio.run(healthy_load(url))
    after = settled_footprint(url, before)
    print(
        f"\nfaults under load: {len(FAULTS)} faults x 4 (model, stream) pairs x {BURST} concurrent = "
        f"{requests} requests in {elapsed:.1f} s, slowest {slowest:.2f} s "
        f"(deadline {MODEL_DEADLINE_S} s)\n  before: {before.describe()}\n  after:  {after.describe()}"
    )
    assert not problems, "\n".join(problems)
    assert_no_leak(before, after)
    assert rig.stall.connections == BURST * 4
    assert rig.stall.open == 0  # the gateway hung up on every stalled upstream


def assert_no_leak(before: Footprint, after: Footprint) -> None:
    assert after.upstream_busy == 0
    assert after.tasks <= before.tasks, f"asyncio tasks: {before.tasks} -> {after.tasks}"
    assert after.fds_besides_pool <= before.fds_besides_pool + 3, (before, after)
    assert after.rss_bytes - before.rss_bytes < 30 * MIB, (before, after)


def test_clients_that_give_up_during_a_hung_first_attempt_cancel_it_and_never_fail_over(rig: Rig) -> None:
    """The first target hangs; every client leaves before the backend's timeout would move the request to
    the healthy second target. Each upstream call is dropped, none reaches the second target, and the
    gateway's tasks and connections come back."""
    url = rig.gateway.url
    before = settled_footprint(url, footprint(url))
    for emulator in (rig.bad_cf, rig.good_vllm):
        emulator.reset()
        emulator.record_requests = True
    rig.bad_cf.faults.push("hang", times=-1)

    async def give_up() -> list[Outcome]:
        async with openai.AsyncOpenAI(
            base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=0.4
        ) as client:
            calls = [ask(client, "bad-cf-failover", stream) for stream in (False, True) for _ in range(BURST)]
            return await asyncio.gather(*calls)

    try:
        outcomes = asyncio.run(give_up())
        assert {o.kind for o in outcomes} == {"broken"}  # the SDK's own timeout: the client left
        hung = rig.bad_cf.requests
        deadline = time.monotonic() + HANG_GUARD_S
        while not (len(hung) == 2 * BURST and all(r.disconnected for r in hung)):
            assert time.monotonic() < deadline, (
                f"{sum(r.disconnected for r in hung)} of {len(hung)} cancelled"
            )
            time.sleep(0.05)
        time.sleep(BACKEND_TIMEOUT_S)  # when a forgotten attempt would have timed out and failed over
        assert [r for r in rig.good_vllm.requests if r.method == "POST"] == []
        after = settled_footprint(url, before)
    finally:
        for emulator in (rig.bad_cf, rig.good_vllm):
            emulator.faults.clear()
            emulator.record_requests = False
            emulator.reset()
    print(
        f"\n{2 * BURST} clients gave up mid-attempt:"
        f"\n  before: {before.describe()}\n  after:  {after.describe()}"
    )
    assert_no_leak(before, after)


def test_answers_larger_than_the_gateway_reads_are_refused_and_their_memory_given_back(rig: Rig) -> None:
    """Non-streamed answers are read whole, up to 32 MiB (`adapters/http.py` MAX_RESPONSE_BODY): a 40 MB
    answer is a clear 502, also with a few at once, and RSS comes back down (big buffers are returned)."""
    url = rig.gateway.url
    before = settled_footprint(url, footprint(url))
    rig.bad_cf.faults.push("huge:40000000", times=-1)

    async def oversized() -> list[Outcome]:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=30) as client:
            return await asyncio.gather(*(ask(client, "big-cf", False) for _ in range(4)))

    try:
        outcomes = asyncio.run(oversized())
    finally:
        rig.bad_cf.faults.clear()
    after = settled_footprint(url, before)
    print(f"\n4 answers of 40 MB at once:\n  before: {before.describe()}\n  after:  {after.describe()}")
    assert {(o.status, o.code) for o in outcomes} == {(502, "upstream_too_large")}
    assert_no_leak(before, after)


def test_the_gateway_logged_no_unhandled_exception(rig: Rig) -> None:
    """Runs after the load: every fault was turned into an answer or an error, never a traceback."""
    output = rig.gateway.output()
    assert "Traceback" not in output
    assert "Exception in ASGI application" not in output
