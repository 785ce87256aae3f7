"""The scrape-time leak indicators count what really exists: live tasks, open upstream connections."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.transport import H1Transport
from gateway.observability.metrics import Metrics
from tests.emulators.server import serve
from tests.emulators.workers_ai import WorkersAIEmulator


def scraped(metrics: Metrics) -> dict[str, float]:
    values = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            state = sample.labels.get("state")
            values[f"{sample.name}{'.' + state if state else ''}"] = sample.value
    return values


@pytest.mark.anyio
async def test_live_tasks_are_counted_at_scrape_time() -> None:
    metrics = Metrics()
    base = scraped(metrics)["gateway_asyncio_tasks"]
    sleepers = [asyncio.create_task(asyncio.sleep(10)) for _ in range(3)]
    assert scraped(metrics)["gateway_asyncio_tasks"] == base + 3
    for task in sleepers:
        task.cancel()
    await asyncio.gather(*sleepers, return_exceptions=True)
    assert scraped(metrics)["gateway_asyncio_tasks"] == base
    assert scraped(metrics)["process_open_fds"] > 0


@pytest.mark.anyio
async def test_upstream_connections_are_busy_while_read_then_idle_in_the_pool() -> None:
    metrics = Metrics()
    with serve(WorkersAIEmulator().app) as server:
        transport = H1Transport(max_connections=4, connect_timeout=2, read_timeout=2, pool_timeout=2)
        async with httpx.AsyncClient(transport=transport) as client:
            before = scraped(metrics)
            async with client.stream("GET", f"{server.url}/__emulator/faults") as response:
                during = scraped(metrics)
                await response.aread()
            after = scraped(metrics)
    assert during["gateway_upstream_connections.busy"] == before["gateway_upstream_connections.busy"] + 1
    assert after["gateway_upstream_connections.busy"] == before["gateway_upstream_connections.busy"]
    assert after["gateway_upstream_connections.idle"] == before["gateway_upstream_connections.idle"] + 1
