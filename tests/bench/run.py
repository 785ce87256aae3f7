"""`make bench`: the gateway's own cost, measured against a direct-to-upstream baseline in the same run.

Layout on a 2-core machine: the gateway (one worker) is pinned to core 0; the upstream emulator,
Redis and the load generators share core 1. Non-streamed load comes from wrk; streams (time to
first token, relayed chunks per second, memory with many open streams) from an asyncio client.
nginx as a plain reverse proxy (tests/bench/nginx.py), on the gateway's core, is the anchor row:
the same requests through it give the ratios that stay put from machine to machine.

    python -m tests.bench.run                 # full run, prints a table, writes .bench/results.json
    python -m tests.bench.run --tiny          # seconds-long smoke run (used by the test suite)
    python -m tests.bench.run --compare PATH  # also run the same load against another gateway
                                              # command (see tests/bench/litellm.py)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.bench.nginx import nginx_command
from tests.emulators.server import free_port

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
BIN_DIR = Path(PYTHON).parent
BENCH_KEY = "sk-bench-team-key-0123456789"
CHAT_BODY = {"model": "bench", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 64}
UPSTREAM_BODY = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 64}
UPSTREAM_PATH = "/client/v4/accounts/bench/ai/run/@cf/meta/llama-3.3-70b-instruct-fp8-fast"
STREAM_EVENTS = 300  # events in a streamed answer: "a few hundred", as a chat answer has


@dataclass
class Sizes:
    duration_s: float = 10.0
    ttft_samples: int = 300
    stream_seconds: float = 8.0
    stream_concurrency: int = 32
    open_streams: int = 5000
    warmup_s: float = 2.0
    budget: bool = False
    """The bench key has a budget (never reached) and the model Workers AI's price: budgets' cost."""


TINY = Sizes(
    duration_s=1.0, ttft_samples=10, stream_seconds=1.0, stream_concurrency=4, open_streams=50, warmup_s=0.3
)


@dataclass
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


@dataclass
class Report:
    machine: dict[str, Any]
    gateway: dict[str, LoadResult] = field(default_factory=dict)
    direct: dict[str, LoadResult] = field(default_factory=dict)
    nginx: dict[str, LoadResult] = field(default_factory=dict)
    streams: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    memory_nginx: dict[str, Any] = field(default_factory=dict)
    cpu_us_per_request: float = 0.0
    nginx_cpu_us_per_request: float = 0.0
    compare: dict[str, Any] = field(default_factory=dict)


# Processes


def cores() -> int:
    return len(os.sched_getaffinity(0))


def pinned(cmd: Sequence[str], core: int | str) -> list[str]:
    """Pin to a core (or a taskset list such as "0,1") when the machine has two or more cores and
    taskset exists; otherwise run as is."""
    if cores() >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(core), *cmd]
    return list(cmd)


class Proc:
    def __init__(
        self, name: str, cmd: Sequence[str], *, env: dict[str, str] | None = None, log: Path
    ) -> None:
        self.name = name
        self._log = log.open("wb")
        self.popen = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=ROOT
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def child_pid(self) -> int:
        """The process doing the work (taskset execs, so this is the same pid)."""
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


def wait_http(url: str, timeout: float = 30.0, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode} during start-up")
        try:
            with contextlib.closing(__import__("socket").create_connection(_host_port(url), 0.5)):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up within {timeout} s")


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return host, int(port)


def proc_stat(pid: int) -> tuple[float, int, int]:
    """(cpu seconds, VmRSS kB, VmHWM kB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return cpu, rss, hwm


# Load generation


def wrk(
    url: str, body: dict[str, Any], *, connections: int, duration: float, headers: dict[str, str]
) -> LoadResult:
    """Non-streamed load with wrk (or the asyncio client where wrk is not installed)."""
    if shutil.which("wrk") is None:
        return asyncio.run(_py_load(url, body, connections=connections, duration=duration, headers=headers))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(body))}"]
        lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
        script.write("\n".join(lines) + "\n")
    threads = 1  # core 1 also runs the upstream and Redis: a second wrk thread only adds contention
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "-s",
        script.name,
        url,
    ]
    out = subprocess.run(pinned(cmd, 1), capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    return LoadResult(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=_wrk_ms(out, "50%"),
        p99_ms=_wrk_ms(out, "99%"),
        requests=int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        errors=_wrk_errors(out),
    )


def _wrk_ms(out: str, label: str) -> float:
    value, unit = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _wrk_errors(out: str) -> int:
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return errors + (int(non2xx.group(1)) if non2xx else 0)


async def _py_load(
    url: str, body: dict[str, Any], *, connections: int, duration: float, headers: dict[str, str]
) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    data = json.dumps(body).encode()
    deadline = time.monotonic() + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            start = time.perf_counter()
            async with session.post(url, data=data, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - start)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        begun = time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        elapsed = time.monotonic() - begun
    return _summary(latencies, elapsed, errors)


def _summary(latencies: list[float], elapsed: float, errors: int) -> LoadResult:
    ordered = sorted(latencies) or [0.0]
    return LoadResult(
        rps=len(latencies) / elapsed if elapsed else 0.0,
        p50_ms=ordered[len(ordered) // 2] * 1000,
        p99_ms=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        requests=len(latencies),
        errors=errors,
    )


async def stream_ttft(
    url: str, body: dict[str, Any], *, samples: int, headers: dict[str, str]
) -> dict[str, float]:
    """Time to the first SSE data bytes, one stream at a time."""
    data = json.dumps({**body, "stream": True}).encode()
    ttfts: list[float] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(samples):
            start = time.perf_counter()
            async with session.post(url, data=data, headers=headers) as response:
                await response.content.readany()
                ttfts.append(time.perf_counter() - start)
                await response.read()
    ttfts.sort()
    return {
        "p50_ms": ttfts[len(ttfts) // 2] * 1000,
        "p99_ms": ttfts[min(len(ttfts) - 1, int(len(ttfts) * 0.99))] * 1000,
    }


async def stream_throughput(
    url: str, body: dict[str, Any], *, concurrency: int, seconds: float, headers: dict[str, str]
) -> dict[str, float]:
    """Relayed SSE events per second with `concurrency` streams running back to back."""
    data = json.dumps({**body, "stream": True}).encode()
    events = 0
    streams = 0
    deadline = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal events, streams
        while time.monotonic() < deadline:
            async with session.post(url, data=data, headers=headers) as response:
                payload = await response.read()
                events += payload.count(b"data: ")
                streams += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        begun = time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.monotonic() - begun
    return {"events_per_s": events / elapsed, "streams_per_s": streams / elapsed}


async def hold_streams(
    url: str, body: dict[str, Any], *, count: int, headers: dict[str, str], pid: int
) -> dict[str, Any]:
    """Open `count` slow streams at once, wait until each has produced a chunk, read the gateway's RSS."""
    data = json.dumps({**body, "stream": True}).encode()
    _, rss_before, _ = proc_stat(pid)
    started = asyncio.Event()
    opened = 0
    failed = 0
    release = asyncio.Event()

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal opened, failed
        try:
            async with session.post(url, data=data, headers=headers) as response:
                if response.status != 200:
                    failed += 1
                    return
                await response.content.readany()
                opened += 1
                if opened + failed >= count:
                    started.set()
                # Keep reading, as a real client does, until every stream is open and measured.
                while not release.is_set() and await response.content.readany():
                    pass
        except (aiohttp.ClientError, OSError):
            failed += 1
            if opened + failed >= count:
                started.set()

    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(count)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(started.wait(), 120)
        _, rss_open, hwm = proc_stat(pid)
        release.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "streams_requested": count,
        "streams_open": opened,
        "streams_failed": failed,
        "rss_idle_mb": round(rss_before / 1024, 1),
        "rss_with_streams_mb": round(rss_open / 1024, 1),
        "peak_rss_mb": round(hwm / 1024, 1),
    }


# The run


def gateway_config(upstream: str, redis_url: str, *, port: int, budget: bool = False) -> str:
    """The production configuration: keys, Redis rate limits, metrics and JSON logs on (and with
    `budget`, a budget on the bench key, charged at Workers AI's published price for the model)."""
    price = {"input_per_mtok": 0.293, "output_per_mtok": 2.253} if budget else None
    return json.dumps(
        {
            "listen": {"host": "127.0.0.1", "port": port},
            "log_format": "json",
            "log_level": "info",
            "backends": {
                "cloudflare": {
                    "kind": "workers-ai",
                    "account_id": "bench",
                    "api_token": "bench-token",
                    "base_url": f"{upstream}/client/v4",
                    "timeout_s": 60,
                }
            },
            "models": {
                "bench": {
                    "targets": [
                        {"backend": "cloudflare", "model": "@cf/meta/llama-3.3-70b-instruct-fp8-fast"}
                    ],
                    **({"price": price} if price else {}),
                }
            },
            **production_settings(redis_url, budget=budget),
        }
    )


def production_settings(redis_url: str, *, budget: bool = False) -> dict[str, Any]:
    """API keys and Redis limits far above the benchmark's load: checked on every request, never refusing."""
    keys: list[dict[str, Any]] = [
        {"id": f"team-{i}", "key": f"sk-bench-other-team-{i:04d}", "rpm": 1000} for i in range(50)
    ]
    keys.append({"id": "bench", "key": BENCH_KEY, "rpm": 100_000_000, "tpm": 10_000_000_000, "models": ["*"]})
    if budget:
        keys[-1]["budget"] = {"usd": 1_000_000_000, "period": "day"}
    settings: dict[str, Any] = {"keys": keys}
    if redis_url:
        settings["redis_url"] = redis_url
    return settings


@contextlib.contextmanager
def services(workdir: Path, sizes: Sizes) -> Iterator[dict[str, Any]]:
    procs: list[Proc] = []
    try:
        upstream_port, slow_port, redis_port, gateway_port = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        )
        upstream = Proc(
            "upstream",
            pinned(
                [
                    PYTHON,
                    "-m",
                    "tests.bench.upstream",
                    "--port",
                    str(upstream_port),
                    "--stream-tokens",
                    str(STREAM_EVENTS),
                ],
                1,
            ),
            log=workdir / "upstream.log",
        )
        procs.append(upstream)
        slow = Proc(
            "slow-upstream",
            pinned(
                [
                    PYTHON,
                    "-m",
                    "tests.bench.upstream",
                    "--port",
                    str(slow_port),
                    "--token-delay",
                    "1.0",
                    "--stream-tokens",
                    "120",
                ],
                1,
            ),
            log=workdir / "slow-upstream.log",
        )
        procs.append(slow)
        redis_url = ""
        if shutil.which("redis-server"):
            redis = Proc(
                "redis",
                pinned(
                    [
                        "redis-server",
                        "--port",
                        str(redis_port),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--bind",
                        "127.0.0.1",
                    ],
                    1,
                ),
                log=workdir / "redis.log",
            )
            procs.append(redis)
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        for proc, url in ((upstream, upstream_url), (slow, f"http://127.0.0.1:{slow_port}")):
            wait_http(url, proc=proc)
        config = workdir / "gateway.json.yaml"
        config.write_text(gateway_config(upstream_url, redis_url, port=gateway_port, budget=sizes.budget))
        slow_config = workdir / "gateway-slow.json.yaml"
        slow_config.write_text(
            gateway_config(f"http://127.0.0.1:{slow_port}", redis_url, port=free_port(), budget=sizes.budget)
        )
        yield {
            "upstream": upstream_url,
            "slow_upstream": f"http://127.0.0.1:{slow_port}",
            "config": config,
            "slow_config": slow_config,
            "gateway_port": gateway_port,
            "redis_url": redis_url,
            "procs": procs,
        }
    finally:
        for proc in reversed(procs):
            proc.stop()


def start_gateway(
    workdir: Path, config: Path, name: str, *, workers: int = 1, cpus: str = "0"
) -> tuple[Proc, str]:
    port = json.loads(config.read_text())["listen"]["port"]
    command = [PYTHON, "-m", "gateway", "serve", "--config", str(config), "--workers", str(workers)]
    proc = Proc(
        name,
        pinned(command, cpus),
        log=workdir / f"{name}.log",
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url, proc=proc)
    return proc, url


def start_nginx(workdir: Path, upstream: str, name: str, core: int = 0) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(
        name,
        pinned(nginx_command(workdir, upstream, port=port, name=name), core),
        log=workdir / f"{name}.log",
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url, proc=proc)
    return proc, url


def run(sizes: Sizes, workdir: Path) -> Report:
    report = Report(
        machine={
            "cpu": _cpu_model(),
            "cores": cores(),
            "python": platform.python_version(),
            "pinned": cores() >= 2 and shutil.which("taskset") is not None,
            "load_generator": "wrk" if shutil.which("wrk") else "asyncio client",
        }
    )
    auth = {"Authorization": f"Bearer {BENCH_KEY}", "Content-Type": "application/json"}
    with services(workdir, sizes) as env:
        direct_url = env["upstream"] + UPSTREAM_PATH
        nginx, nginx_base = start_nginx(workdir, env["upstream"], "nginx")
        try:
            nginx_url = nginx_base + UPSTREAM_PATH
            wrk(nginx_url, UPSTREAM_BODY, connections=8, duration=sizes.warmup_s, headers=auth)
            for label, connections in (("c1", 1), ("c32", 32)):
                cpu_before, _, _ = proc_stat(nginx.pid)
                report.nginx[label] = result = wrk(
                    nginx_url, UPSTREAM_BODY, connections=connections, duration=sizes.duration_s, headers=auth
                )
                cpu_after, _, _ = proc_stat(nginx.pid)
                if label == "c32" and result.requests:
                    report.nginx_cpu_us_per_request = round(
                        (cpu_after - cpu_before) / result.requests * 1e6, 1
                    )
            relay_nginx = asyncio.run(
                stream_throughput(
                    nginx_url,
                    UPSTREAM_BODY,
                    concurrency=sizes.stream_concurrency,
                    seconds=sizes.stream_seconds,
                    headers=auth,
                )
            )
        finally:
            nginx.stop()
        gateway, base = start_gateway(workdir, env["config"], "gateway")
        try:
            chat_url = f"{base}/v1/chat/completions"
            wrk(chat_url, CHAT_BODY, connections=8, duration=sizes.warmup_s, headers=auth)
            for label, connections in (("c1", 1), ("c32", 32)):
                report.direct[label] = wrk(
                    direct_url,
                    UPSTREAM_BODY,
                    connections=connections,
                    duration=sizes.duration_s,
                    headers=auth,
                )
                cpu_before, _, _ = proc_stat(gateway.pid)
                report.gateway[label] = result = wrk(
                    chat_url, CHAT_BODY, connections=connections, duration=sizes.duration_s, headers=auth
                )
                cpu_after, _, _ = proc_stat(gateway.pid)
                if label == "c32" and result.requests:
                    report.cpu_us_per_request = round((cpu_after - cpu_before) / result.requests * 1e6, 1)
            ttft_direct = asyncio.run(
                stream_ttft(direct_url, UPSTREAM_BODY, samples=sizes.ttft_samples, headers=auth)
            )
            ttft_gateway = asyncio.run(
                stream_ttft(chat_url, CHAT_BODY, samples=sizes.ttft_samples, headers=auth)
            )
            relay_direct = asyncio.run(
                stream_throughput(
                    direct_url,
                    UPSTREAM_BODY,
                    concurrency=sizes.stream_concurrency,
                    seconds=sizes.stream_seconds,
                    headers=auth,
                )
            )
            relay_gateway = asyncio.run(
                stream_throughput(
                    chat_url,
                    CHAT_BODY,
                    concurrency=sizes.stream_concurrency,
                    seconds=sizes.stream_seconds,
                    headers=auth,
                )
            )
            report.streams = {
                "ttft_direct": ttft_direct,
                "ttft_gateway": ttft_gateway,
                "ttft_overhead_p50_ms": round(ttft_gateway["p50_ms"] - ttft_direct["p50_ms"], 3),
                "relay_direct": relay_direct,
                "relay_gateway": relay_gateway,
                "relay_nginx": relay_nginx,
            }
        finally:
            gateway.stop()
        slow_gateway, slow_base = start_gateway(workdir, env["slow_config"], "gateway-streams")
        try:
            report.memory = asyncio.run(
                hold_streams(
                    f"{slow_base}/v1/chat/completions",
                    CHAT_BODY,
                    count=sizes.open_streams,
                    headers=auth,
                    pid=slow_gateway.pid,
                )
            )
        finally:
            slow_gateway.stop()
        slow_nginx, slow_nginx_base = start_nginx(workdir, env["slow_upstream"], "nginx-streams")
        try:
            report.memory_nginx = asyncio.run(
                hold_streams(
                    slow_nginx_base + UPSTREAM_PATH,
                    UPSTREAM_BODY,
                    count=sizes.open_streams,
                    headers=auth,
                    pid=slow_nginx.pid,
                )
            )
        finally:
            slow_nginx.stop()
    return report


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs else float("inf")


def table(report: Report) -> str:
    g, d, n = report.gateway, report.direct, report.nginx
    rows = [
        "| measure | direct upstream | nginx (1 worker) | gateway | gateway / nginx |",
        "|---|---|---|---|---|",
    ]
    for label, name in (("c1", "1 connection"), ("c32", "32 connections")):
        rows.append(
            f"| req/s, non-streamed, {name} | {d[label].rps:,.0f} | {n[label].rps:,.0f} "
            f"| {g[label].rps:,.0f} | {ratio(g[label].rps, n[label].rps):.2f}x |"
        )
        rows.append(
            f"| p50 / p99 latency, {name} (ms) | {d[label].p50_ms:.2f} / {d[label].p99_ms:.2f} "
            f"| {n[label].p50_ms:.2f} / {n[label].p99_ms:.2f} "
            f"| {g[label].p50_ms:.2f} / {g[label].p99_ms:.2f} | |"
        )
    added_nginx = n["c1"].p50_ms - d["c1"].p50_ms
    added_gateway = g["c1"].p50_ms - d["c1"].p50_ms
    rows.append(
        f"| added p50, 1 connection (ms) | | {added_nginx:+.3f} | {added_gateway:+.3f} "
        f"| {ratio(added_gateway, added_nginx):.1f}x |"
    )
    s = report.streams
    direct_ttft, gateway_ttft = s["ttft_direct"], s["ttft_gateway"]
    rows.append(
        f"| time to first token p50 / p99 (ms) | {direct_ttft['p50_ms']:.2f} / {direct_ttft['p99_ms']:.2f} "
        f"| | {gateway_ttft['p50_ms']:.2f} / {gateway_ttft['p99_ms']:.2f} "
        f"| {s['ttft_overhead_p50_ms']:+.2f} added (p50) |"
    )
    relay_n, relay_g = s["relay_nginx"]["events_per_s"], s["relay_gateway"]["events_per_s"]
    rows.append(
        f"| relayed stream events/s per core (32 streams of {STREAM_EVENTS}) "
        f"| {s['relay_direct']['events_per_s']:,.0f} | {relay_n:,.0f} | {relay_g:,.0f} "
        f"| {ratio(relay_g, relay_n):.2f}x |"
    )
    m, mn = report.memory, report.memory_nginx
    rows.append(
        f"| RSS holding {m['streams_open']:,} open streams (MB) | "
        f"| {mn['rss_with_streams_mb']:,.0f} (idle {mn['rss_idle_mb']:,.0f}) "
        f"| {m['rss_with_streams_mb']:,.0f} (idle {m['rss_idle_mb']:,.0f}) "
        f"| {ratio(m['rss_with_streams_mb'], mn['rss_with_streams_mb']):.1f}x |"
    )
    rows.append(
        f"| CPU per request, 32 connections (µs) | | {report.nginx_cpu_us_per_request:,.1f} "
        f"| {report.cpu_us_per_request:,.0f} "
        f"| {ratio(report.nginx_cpu_us_per_request, report.cpu_us_per_request):.2f}x (nginx's / ours) |"
    )
    errors = sum(r.errors for r in g.values())
    rows.append(f"| errors (non-2xx, socket) | | {sum(r.errors for r in n.values())} | {errors} | |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    parser.add_argument(
        "--json", default=str(ROOT / ".bench" / "results.json"), help="where to write the JSON report"
    )
    parser.add_argument("--duration", type=float, help="seconds per wrk run")
    parser.add_argument("--open-streams", type=int, help="concurrent open streams for the memory figure")
    parser.add_argument(
        "--budget", action="store_true", help="give the bench key a budget (and the model a price)"
    )
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else Sizes()
    if args.duration:
        sizes.duration_s = args.duration
    if args.open_streams:
        sizes.open_streams = args.open_streams
    sizes.budget = args.budget
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    report = run(sizes, workdir)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(asdict(report), indent=2))
    machine = report.machine
    print(
        f"\nMachine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
        f"gateway pinned to core 0: {machine['pinned']}, load: {machine['load_generator']}\n"
    )
    print(table(report))
    print(f"\nJSON: {args.json}   logs: {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
