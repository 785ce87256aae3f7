"""uvicorn (what `gateway serve` runs) against granian on the same app, config and core: an evaluation.

Both serve `gateway.cli:app_from_environment` (the factory `--workers N` uses) with the vLLM-target
production configuration of `make bench-compare`, one worker pinned to core 0. granian is given its
own head bounds (`--http1-buffer-size`, `--http1-header-read-timeout`) at the gateway's defaults;
it does not answer an oversized or malformed head with the gateway's OpenAI-style envelope, which
`gateway/edge/server.py` does for uvicorn. granian is not a dependency: install it into .venv first.

    .venv/bin/python -m pip install granian && .venv/bin/python -m tests.bench.servers [--duration 5]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from gateway.config import DEFAULT_HEADER_TIMEOUT_S, DEFAULT_MAX_HEADER_BYTES
from tests.bench.compare import Row, measure, vllm_config
from tests.bench.run import BIN_DIR, Proc, Sizes, pinned, services, start_gateway, wait_http
from tests.emulators.server import free_port

GRANIAN = BIN_DIR / "granian"


def start_granian(workdir: Path, config: Path, port: int) -> tuple[Proc, str]:
    command = [
        str(GRANIAN),
        "--interface",
        "asgi",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--runtime-threads",
        "1",
        "--loop",
        "uvloop",
        "--no-ws",
        "--log-level",
        "warning",
        "--http1-buffer-size",
        str(DEFAULT_MAX_HEADER_BYTES),
        "--http1-header-read-timeout",
        str(round(DEFAULT_HEADER_TIMEOUT_S * 1000)),
        "gateway.cli:app_from_environment",
    ]
    proc = Proc(
        "granian", pinned(command, 0), env={"GATEWAY_CONFIG": str(config)}, log=workdir / "granian.log"
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url, proc=proc)
    return proc, url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both servers")
    args = parser.parse_args(argv)
    if not GRANIAN.exists() and shutil.which("granian") is None:
        print(f"granian is not installed ({GRANIAN}): .venv/bin/python -m pip install granian")
        return 1
    sizes = Sizes(duration_s=args.duration, stream_seconds=args.duration)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-servers-"))
    rows: list[Row] = []
    with services(workdir, sizes) as env:
        port = free_port()
        config = workdir / "gateway-vllm.yaml"
        config.write_text(vllm_config(env["upstream"], env["redis_url"], port))
        for _ in range(args.rounds):
            for name in ("uvicorn", "granian"):
                proc, url = (
                    start_gateway(workdir, config, "uvicorn")
                    if name == "uvicorn"
                    else start_granian(workdir, config, port)
                )
                try:
                    rows.append(measure(name, f"{url}/v1/chat/completions", sizes, proc=proc))
                finally:
                    proc.stop()
    print("\n| server | requests/s at 32 conns | CPU per request | p50 at 1 conn | stream events/s |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row.name} | {row.c32.rps:,.0f} | {row.cpu_us_per_request} µs | {row.c1.p50_ms:.2f} ms "
            f"| {row.events_per_s:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
