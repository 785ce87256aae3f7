"""`make bench-compare`: the gateway beside nginx, its peers and the emulator itself, in one run.

Every proxy runs one worker pinned to core 0 (the `--workers 2` row gets cores 0 and 1); the
emulator, Redis and the load generators run on core 1. Every row answers the same OpenAI-protocol
request from the same emulator process; the gateway rows use the production configuration (API
keys, Redis limits on a redis-server the run starts, JSON logs, metrics). nginx as a plain reverse
proxy (tests/bench/nginx.py) is the anchor: the ratios to it are what carry from machine to
machine. Streamed rows relay answers of a few hundred events. Peers are measured only where they
are installed: LiteLLM in `.bench/litellm-venv` (pinned, never 1.82.7 or 1.82.8, the malicious
releases) and the Portkey gateway in `.bench/portkey` (npm); a missing peer is a printed note.

    python -m tests.bench.compare [--duration 10] [--open-streams 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.run import (
    BENCH_KEY,
    CHAT_BODY,
    ROOT,
    STREAM_EVENTS,
    LoadResult,
    Proc,
    Sizes,
    gateway_config,
    hold_streams,
    pinned,
    proc_stat,
    production_settings,
    ratio,
    services,
    start_gateway,
    start_nginx,
    stream_throughput,
    wait_http,
    wrk,
)
from tests.emulators.server import free_port

LITELLM = ROOT / ".bench" / "litellm-venv" / "bin" / "litellm"
PORTKEY = (
    ROOT / ".bench" / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
)
AUTH = {"Authorization": f"Bearer {BENCH_KEY}", "Content-Type": "application/json"}


@dataclass
class Row:
    name: str
    c1: LoadResult
    c32: LoadResult
    events_per_s: float
    cores: int = 1
    cpu_us_per_request: float | None = None
    """CPU the proxy's processes used per request at 32 connections: unlike requests/s, barely moved by
    whatever else runs on the machine, so its ratio to nginx's is the steadier figure."""
    memory: dict[str, Any] = field(default_factory=dict)


def litellm_config(upstream: str) -> str:
    return json.dumps(
        {
            "model_list": [
                {
                    "model_name": "bench",
                    "litellm_params": {
                        "model": "openai/bench",
                        "api_base": f"{upstream}/v1",
                        "api_key": "upstream-key",
                    },
                }
            ],
            "general_settings": {"master_key": BENCH_KEY},
        }
    )


def vllm_config(upstream: str, redis_url: str, port: int) -> str:
    """This gateway in its production configuration, in front of the same OpenAI-protocol upstream."""
    config = json.loads(gateway_config(upstream, redis_url, port=port))
    config["backends"] = {"gpu": {"kind": "vllm", "base_url": f"{upstream}/v1", "api_key": "upstream-key"}}
    config["models"] = {"bench": {"targets": [{"backend": "gpu", "model": "bench"}]}}
    config.update(production_settings(redis_url))
    return json.dumps(config)


def cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its direct children (the workers of `--workers 2`)."""
    children = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return sum(proc_stat(each)[0] for each in (pid, *children))


def measure(
    name: str,
    url: str,
    sizes: Sizes,
    *,
    proc: Proc | None = None,
    headers: dict[str, str] = AUTH,
    cores: int = 1,
    c1: bool = True,
) -> Row:
    """Non-streamed requests/s at 32 connections (and CPU per request), latency at 1, stream events/s."""
    wrk(url, CHAT_BODY, connections=8, duration=sizes.warmup_s, headers=headers)
    cpu_before = cpu_seconds(proc.pid) if proc is not None else 0.0
    c32 = wrk(url, CHAT_BODY, connections=32, duration=sizes.duration_s, headers=headers)
    cpu_us = (
        round((cpu_seconds(proc.pid) - cpu_before) / c32.requests * 1e6, 1)
        if proc is not None and c32.requests
        else None
    )
    single = wrk(url, CHAT_BODY, connections=1, duration=sizes.duration_s, headers=headers) if c1 else c32
    relay = asyncio.run(
        stream_throughput(
            url,
            CHAT_BODY,
            concurrency=sizes.stream_concurrency,
            seconds=sizes.stream_seconds,
            headers=headers,
        )
    )
    return Row(name, single, c32, relay["events_per_s"], cores, cpu_us)


def held_streams(url: str, sizes: Sizes, pid: int) -> dict[str, Any]:
    return asyncio.run(hold_streams(url, CHAT_BODY, count=sizes.open_streams, headers=AUTH, pid=pid))


def with_proc(start: Callable[[], tuple[Proc, str]], use: Callable[[Proc, str], Row]) -> Row:
    proc, url = start()
    try:
        return use(proc, url)
    finally:
        proc.stop()


def start_litellm(workdir: Path, upstream: str) -> tuple[Proc, str]:
    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(litellm_config(upstream))
    command = [str(LITELLM), "--config", str(config), "--port", str(port), "--num_workers", "1"]
    proc = Proc("litellm", pinned(command, 0), log=workdir / "litellm.log")
    wait_http(f"http://127.0.0.1:{port}", timeout=120, proc=proc)
    time.sleep(2)  # LiteLLM accepts connections before its startup hooks finish
    return proc, f"http://127.0.0.1:{port}"


def start_portkey(workdir: Path) -> tuple[Proc, str]:
    port = free_port()
    command = ["node", str(PORTKEY), f"--port={port}", "--headless"]
    proc = Proc("portkey", pinned(command, 0), env={"NODE_ENV": "production"}, log=workdir / "portkey.log")
    wait_http(f"http://127.0.0.1:{port}", timeout=60, proc=proc)
    return proc, f"http://127.0.0.1:{port}"


def portkey_version() -> str:
    package = PORTKEY.parents[1] / "package.json"
    return str(json.loads(package.read_text()).get("version", "?"))


def run(sizes: Sizes, workdir: Path) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    notes: list[str] = []
    chat = "/v1/chat/completions"
    with services(workdir, sizes) as env:
        upstream, slow, redis_url = env["upstream"], env["slow_upstream"], env["redis_url"]
        rows.append(measure("the emulator directly", upstream + chat, sizes))

        def nginx_row(proc: Proc, url: str) -> Row:
            return measure("nginx as a plain reverse proxy (one worker)", url + chat, sizes, proc=proc)

        rows.append(with_proc(lambda: start_nginx(workdir, upstream, "nginx"), nginx_row))
        vllm = workdir / "gateway-vllm.yaml"
        vllm.write_text(vllm_config(upstream, redis_url, free_port()))
        rows.append(
            with_proc(
                lambda: start_gateway(workdir, vllm, "gateway-vllm"),
                lambda proc, url: measure("this gateway, vLLM target", url + chat, sizes, proc=proc),
            )
        )
        rows.append(
            with_proc(
                lambda: start_gateway(workdir, env["config"], "gateway-workers-ai"),
                lambda proc, url: measure("this gateway, Workers AI target", url + chat, sizes, proc=proc),
            )
        )
        rows.append(
            with_proc(
                lambda: start_gateway(workdir, vllm, "gateway-vllm-2", workers=2, cpus="0,1"),
                lambda proc, url: measure(
                    "this gateway, vLLM target, --workers 2 on two cores",
                    url + chat,
                    sizes,
                    proc=proc,
                    cores=2,
                    c1=False,
                ),
            )
        )
        if PORTKEY.exists():
            headers = {
                "Authorization": "Bearer upstream-key",
                "Content-Type": "application/json",
                "x-portkey-provider": "openai",
                "x-portkey-custom-host": f"{upstream}/v1",
            }
            rows.append(
                with_proc(
                    lambda: start_portkey(workdir),
                    lambda proc, url: measure(
                        f"Portkey gateway {portkey_version()} (Node)",
                        url + chat,
                        sizes,
                        proc=proc,
                        headers=headers,
                    ),
                )
            )
        else:
            notes.append(
                f"Portkey gateway not measured: {PORTKEY} is not installed (make bench-compare tries npm)"
            )
        if LITELLM.exists():
            rows.append(
                with_proc(
                    lambda: start_litellm(workdir, upstream),
                    lambda proc, url: measure("LiteLLM 1.106", url + chat, sizes, proc=proc),
                )
            )
        else:
            notes.append(f"LiteLLM not measured: {LITELLM} is not installed")
        slow_vllm = workdir / "gateway-vllm-slow.yaml"
        slow_vllm.write_text(vllm_config(slow, redis_url, free_port()))
        starters: list[tuple[int, Callable[[], tuple[Proc, str]]]] = [
            (1, lambda: start_nginx(workdir, slow, "nginx-streams")),
            (2, lambda: start_gateway(workdir, slow_vllm, "gateway-vllm-streams")),
        ]
        for index, start in starters:
            proc, url = start()
            try:
                rows[index].memory = held_streams(url + chat, sizes, proc.pid)
            finally:
                proc.stop()
    return rows, notes


def table(rows: Sequence[Row]) -> str:
    direct, nginx = rows[0], rows[1]
    base_p50 = direct.c1.p50_ms
    nginx_added = nginx.c1.p50_ms - base_p50
    lines = [
        "| setup | requests/s at 32 conns | added p50 at 1 conn | req/s / nginx | added p50 / nginx "
        "| CPU per request | nginx's CPU per request / this "
        f"| stream events/s per core ({STREAM_EVENTS}-event answers) | events/s / nginx |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        anchor = row is direct or row is nginx
        added = "—" if row is direct or row.cores > 1 else f"+{row.c1.p50_ms - base_p50:.2f} ms"
        added_ratio = (
            "" if anchor or row.cores > 1 else f"{ratio(row.c1.p50_ms - base_p50, nginx_added):.1f}x"
        )
        rps_ratio = "" if anchor else f"{ratio(row.c32.rps, nginx.c32.rps):.2f}x"
        cpu = "" if row.cpu_us_per_request is None else f"{row.cpu_us_per_request:,.0f} µs"
        cpu_ratio = (
            f"{ratio(nginx.cpu_us_per_request, row.cpu_us_per_request):.2f}x"
            if not anchor and row.cpu_us_per_request and nginx.cpu_us_per_request
            else ""
        )
        per_core = row.events_per_s / row.cores
        events_ratio = "" if anchor else f"{ratio(per_core, nginx.events_per_s):.2f}x"
        lines.append(
            f"| {row.name} | {row.c32.rps:,.0f} | {added} | {rps_ratio} | {added_ratio} | {cpu} "
            f"| {cpu_ratio} | {per_core:,.0f} | {events_ratio} |"
        )
    return "\n".join(lines)


def ratios(rows: Sequence[Row]) -> list[str]:
    by_name = {row.name: row for row in rows}
    vllm = by_name["this gateway, vLLM target"]
    workers_ai = by_name["this gateway, Workers AI target"]
    two = by_name["this gateway, vLLM target, --workers 2 on two cores"]
    nginx = rows[1]
    errors = {row.name: row.c1.errors + row.c32.errors for row in rows if row.c1.errors + row.c32.errors}
    lines = [
        f"- Workers AI target / vLLM target, requests/s: {ratio(workers_ai.c32.rps, vllm.c32.rps):.2f}x; "
        f"CPU per request: {workers_ai.cpu_us_per_request} / {vllm.cpu_us_per_request} µs",
        f"- `--workers 2` on two cores / one worker, requests/s: {ratio(two.c32.rps, vllm.c32.rps):.2f}x "
        "(the emulator and load generator share the second core with it)",
    ]
    for row in (nginx, vllm):
        m = row.memory
        if m:
            lines.append(
                f"- {row.name}, {m['streams_open']:,} of {m['streams_requested']:,} open streams: "
                f"RSS {m['rss_with_streams_mb']:,.0f} MB (idle {m['rss_idle_mb']:,.0f} MB)"
            )
    lines.append(f"- errors (non-2xx, socket): {errors or 'none'}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--stream-seconds", type=float, default=8.0, help="seconds of streamed load per row")
    parser.add_argument("--open-streams", type=int, default=5000)
    parser.add_argument("--json", default=str(ROOT / ".bench" / "compare.json"))
    args = parser.parse_args(argv)
    sizes = Sizes(
        duration_s=args.duration, stream_seconds=args.stream_seconds, open_streams=args.open_streams
    )
    workdir = Path(tempfile.mkdtemp(prefix="gateway-compare-"))
    rows, notes = run(sizes, workdir)
    print()
    print(table(rows))
    print()
    print("\n".join(ratios(rows)))
    for note in notes:
        print(f"note: {note}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps([asdict(row) for row in rows], indent=2))
    print(f"\nJSON: {args.json}   logs: {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
