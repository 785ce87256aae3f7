"""`make bench-compare`: the same load against this gateway and a pinned LiteLLM proxy, in one run.

Both proxies run one worker pinned to core 0, both forward to the same upstream emulator process on
core 1 over the same OpenAI-style protocol, both check an API key; wrk sends identical requests.
LiteLLM lives in its own virtualenv (`.bench/litellm-venv`, created by the Makefile with a pinned
version that is neither 1.82.7 nor 1.82.8, the two malicious releases).

    python -m tests.bench.compare [--litellm .bench/litellm-venv/bin/litellm] [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from tests.bench.run import (
    BENCH_KEY,
    CHAT_BODY,
    PYTHON,
    ROOT,
    LoadResult,
    Proc,
    gateway_config,
    pinned,
    production_settings,
    wait_http,
    wrk,
)
from tests.emulators.server import free_port

LITELLM = ROOT / ".bench" / "litellm-venv" / "bin" / "litellm"


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


def our_config(upstream: str, port: int) -> str:
    """This gateway in its production configuration, in front of the same OpenAI-protocol upstream."""
    config = json.loads(gateway_config(upstream, "", port=port))
    config["backends"] = {"gpu": {"kind": "vllm", "base_url": f"{upstream}/v1", "api_key": "upstream-key"}}
    config["models"] = {"bench": {"targets": [{"backend": "gpu", "model": "bench"}]}}
    config.update(production_settings(config.get("redis_url", "")))
    return json.dumps(config)


def measure(url: str, duration: float) -> dict[str, LoadResult]:
    headers = {"Authorization": f"Bearer {BENCH_KEY}", "Content-Type": "application/json"}
    wrk(url, CHAT_BODY, connections=8, duration=2, headers=headers)
    return {
        "c1": wrk(url, CHAT_BODY, connections=1, duration=duration, headers=headers),
        "c32": wrk(url, CHAT_BODY, connections=32, duration=duration, headers=headers),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--litellm", default=str(LITELLM))
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--json", default=str(ROOT / ".bench" / "compare.json"))
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-compare-"))
    upstream_port = free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    upstream = Proc(
        "upstream",
        pinned([PYTHON, "-m", "tests.bench.upstream", "--port", str(upstream_port)], 1),
        log=workdir / "up.log",
    )
    results: dict[str, dict[str, LoadResult]] = {}
    try:
        wait_http(upstream_url, proc=upstream)
        ours_port = free_port()
        config = workdir / "gateway.yaml"
        config.write_text(our_config(upstream_url, ours_port))
        ours = Proc(
            "gateway",
            pinned([PYTHON, "-m", "gateway", "serve", "--config", str(config)], 0),
            log=workdir / "gw.log",
        )
        try:
            wait_http(f"http://127.0.0.1:{ours_port}", proc=ours)
            results["gateway"] = measure(f"http://127.0.0.1:{ours_port}/v1/chat/completions", args.duration)
        finally:
            ours.stop()
        theirs_port = free_port()
        litellm_yaml = workdir / "litellm.yaml"
        litellm_yaml.write_text(litellm_config(upstream_url))
        theirs = Proc(
            "litellm",
            pinned(
                [
                    args.litellm,
                    "--config",
                    str(litellm_yaml),
                    "--port",
                    str(theirs_port),
                    "--num_workers",
                    "1",
                ],
                0,
            ),
            log=workdir / "litellm.log",
        )
        try:
            wait_http(f"http://127.0.0.1:{theirs_port}", timeout=120, proc=theirs)
            time.sleep(2)  # LiteLLM accepts connections before its startup hooks finish
            results["litellm"] = measure(f"http://127.0.0.1:{theirs_port}/v1/chat/completions", args.duration)
        finally:
            theirs.stop()
    finally:
        upstream.stop()
    ours_r, theirs_r = results["gateway"], results["litellm"]
    print("\n| measure | this gateway | LiteLLM 1.106.0 | ratio ours/theirs |")
    print("|---|---|---|---|")
    for label, name in (("c32", "32 connections"), ("c1", "1 connection")):
        ratio = ours_r[label].rps / theirs_r[label].rps if theirs_r[label].rps else float("inf")
        print(f"| req/s, {name} | {ours_r[label].rps:,.0f} | {theirs_r[label].rps:,.0f} | {ratio:.1f}x |")
        print(
            f"| p50 / p99 ms, {name} | {ours_r[label].p50_ms:.2f} / {ours_r[label].p99_ms:.2f} "
            f"| {theirs_r[label].p50_ms:.2f} / {theirs_r[label].p99_ms:.2f} "
            f"| {theirs_r[label].p50_ms / ours_r[label].p50_ms:.1f}x lower p50 |"
        )
    errors = {name: sum(r.errors for r in result.values()) for name, result in results.items()}
    print(f"| errors | {errors['gateway']} | {errors['litellm']} | |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps({name: {k: asdict(v) for k, v in r.items()} for name, r in results.items()}, indent=2)
    )
    print(f"\nJSON: {args.json}   logs: {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
