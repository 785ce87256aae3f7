"""Limits stay exact across replicas: three `gateway serve` processes sharing one Redis (or a Cluster)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from tests.emulators.server import free_port

if TYPE_CHECKING:
    from tests.redis_server import RedisClusterServers, RedisServer

REPLICAS = 3
RPM_LIMITS = (7, 25, 60)
MODEL_RPM = 15
MAX_CONCURRENCY = 4
BURST = 3  # requests sent per unit of limit


def key_for(name: str) -> str:
    return f"sk-{name}-{'0123456789abcdef' * 2}"


def replica_config(redis_url: str, run: str) -> dict[str, Any]:
    keys: list[dict[str, Any]] = [
        {"id": f"{run}-rpm-{limit}", "key": key_for(f"rpm-{limit}"), "rpm": limit} for limit in RPM_LIMITS
    ]
    keys.append({"id": f"{run}-streams", "key": key_for("streams"), "max_concurrency": MAX_CONCURRENCY})
    keys.append({"id": f"{run}-free", "key": key_for("free")})
    # Model scopes are named by model: a fresh name per run keeps runs apart in a shared Redis.
    return {
        "log_level": "warning",
        "redis_url": redis_url,
        "backends": {
            "instant": {"kind": "mock", "token_delay_s": 0},
            "slow": {"kind": "mock", "token_delay_s": 0.05},
        },
        "models": {
            "mock": {"targets": [{"backend": "instant", "model": "mock"}]},
            "slow-mock": {"targets": [{"backend": "slow", "model": "mock"}]},
            f"guarded-{run}": {"targets": [{"backend": "instant", "model": "mock"}], "rpm": MODEL_RPM},
        },
        "keys": keys,
    }


@pytest.fixture
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[list[str], str]]:
    """Three gateway processes on one config; yields their base URLs and the run's name."""
    store: RedisServer | RedisClusterServers = request.getfixturevalue(request.param)
    run = "r" + os.urandom(3).hex()
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(replica_config(store.url, run)))
    ports = [free_port() for _ in range(REPLICAS)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        deadline = time.monotonic() + 30
        for process, url in zip(processes, urls, strict=True):
            while True:
                assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"replica {url} did not become ready"
                time.sleep(0.05)
        yield urls, run
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()


async def burst(
    urls: list[str], key: str, model: str, count: int, *, stream: bool = False
) -> list[httpx.Response]:
    """`count` concurrent requests, spread round-robin over the replicas; each read to its end."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    headers = {"authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def one(i: int) -> httpx.Response:
            url = f"{urls[i % len(urls)]}/v1/chat/completions"
            async with client.stream("POST", url, json=body, headers=headers) as response:
                await response.aread()
                return response

        return await asyncio.gather(*(one(i) for i in range(count)))


def admitted(responses: list[httpx.Response]) -> int:
    statuses = {r.status_code for r in responses}
    assert statuses <= {200, 429}, statuses
    for refused in (r for r in responses if r.status_code == 429):
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(refused.headers["retry-after"]) >= 1
    return sum(1 for r in responses if r.status_code == 200)


@pytest.mark.parametrize(
    "replicas",
    [pytest.param("redis_server", id="redis"), pytest.param("redis_cluster", id="redis-cluster")],
    indirect=True,
)
@pytest.mark.anyio
async def test_limits_hold_exactly_across_three_replicas(replicas: tuple[list[str], str]) -> None:
    urls, run = replicas
    figures: list[str] = []
    for limit in RPM_LIMITS:
        responses = await burst(urls, key_for(f"rpm-{limit}"), "mock", BURST * limit)
        figures.append(f"key rpm {limit}: {admitted(responses)} of {len(responses)} admitted")
        assert admitted(responses) == limit
        assert {r.headers["x-ratelimit-limit-requests"] for r in responses} == {str(limit)}
        assert sorted(
            int(r.headers["x-ratelimit-remaining-requests"]) for r in responses if r.status_code == 200
        ) == list(range(limit))
    responses = await burst(urls, key_for("free"), f"guarded-{run}", BURST * MODEL_RPM)
    figures.append(f"model rpm {MODEL_RPM}: {admitted(responses)} of {len(responses)} admitted")
    assert admitted(responses) == MODEL_RPM
    responses = await burst(urls, key_for("streams"), "slow-mock", BURST * MAX_CONCURRENCY, stream=True)
    figures.append(f"max_concurrency {MAX_CONCURRENCY}: {admitted(responses)} of {len(responses)} admitted")
    assert admitted(responses) == MAX_CONCURRENCY
    assert all(b"data: [DONE]" in r.content for r in responses if r.status_code == 200)
    print("\n" + "\n".join(figures))
