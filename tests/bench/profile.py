"""`make profile`: where the gateway's CPU goes under load, as flame graphs and a self-time table.

The `make bench` layout (gateway pinned to core 0 in its production configuration; emulator, Redis
and wrk on core 1), with py-spy sampling the gateway while wrk holds 32 connections of
non-streamed requests, once for a vLLM target and once for a Workers AI target. Writes
`.artifacts/profile-<target>.svg` (flame graph) and `.artifacts/profile-<target>.txt` (collapsed
stacks) and prints the functions with the most self time.

    python -m tests.bench.profile [--duration 15] [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from tests.bench.compare import AUTH, vllm_config
from tests.bench.run import BIN_DIR, CHAT_BODY, ROOT, Sizes, pinned, services, start_gateway, wrk
from tests.emulators.server import free_port

ARTIFACTS = ROOT / ".artifacts"
_LINE = re.compile(r":\d+\)$")


def self_time(collapsed: Path, top: int) -> list[tuple[float, str]]:
    """The leaf frames with the largest share of samples, from py-spy's collapsed ("raw") output."""
    leaves: collections.Counter[str] = collections.Counter()
    # py-spy names frames "function (file:line)": drop the line so a function's lines add up.
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        leaves[_LINE.sub(")", stack.rsplit(";", 1)[-1])] += samples
    return [(100 * samples / total, frame) for frame, samples in leaves.most_common(top)] if total else []


def profile(pid: int, url: str, name: str, duration: float) -> Path:
    py_spy = str(BIN_DIR / "py-spy")
    collapsed = ARTIFACTS / f"profile-{name}.txt"
    common = ["--pid", str(pid), "--duration", str(round(duration)), "--rate", "250", "--nonblocking"]
    load = threading.Thread(
        target=wrk,
        args=(url, CHAT_BODY),
        kwargs={"connections": 32, "duration": duration + 2, "headers": AUTH},
    )
    load.start()
    try:
        # Two recordings of the same load: the flame graph and the collapsed stacks for the table.
        svg = subprocess.Popen(
            pinned([py_spy, "record", *common, "--output", str(ARTIFACTS / f"profile-{name}.svg")], 1),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        subprocess.run(
            pinned([py_spy, "record", *common, "--format", "raw", "--output", str(collapsed)], 1),
            check=True,
            capture_output=True,
        )
        svg.wait()
    finally:
        load.join()
    return collapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds sampled per target")
    parser.add_argument("--top", type=int, default=25, help="functions listed per target")
    args = parser.parse_args(argv)
    ARTIFACTS.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-profile-"))
    with services(workdir, Sizes()) as env:
        vllm = workdir / "gateway-vllm.yaml"
        vllm.write_text(vllm_config(env["upstream"], env["redis_url"], free_port()))
        for name, config in (("vllm", vllm), ("workers-ai", env["config"])):
            gateway, base = start_gateway(workdir, config, f"gateway-{name}")
            try:
                url = f"{base}/v1/chat/completions"
                wrk(url, CHAT_BODY, connections=8, duration=2, headers=AUTH)
                collapsed = profile(gateway.pid, url, name, args.duration)
            finally:
                gateway.stop()
            print(f"\n{name}: self time, share of samples (flame graph: {collapsed.with_suffix('.svg')})")
            for share, frame in self_time(collapsed, args.top):
                print(f"  {share:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
