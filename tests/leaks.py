"""Leak indicators of a running gateway, read from its `/metrics`: open fds, RSS, asyncio tasks, connections.

Shared by the fault-under-load tests, the disconnect tests and the soak runner, so they all measure alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.waiting import HANG_GUARD_S

MIB = 1024 * 1024


@dataclass(frozen=True)
class Footprint:
    fds: int
    rss_bytes: int
    tasks: int
    upstream_busy: int
    upstream_idle: int

    @property
    def fds_besides_pool(self) -> int:
        """Open fds minus idle keep-alive upstream connections (the pool may keep more after a burst)."""
        return self.fds - self.upstream_idle

    def describe(self) -> str:
        return (
            f"fds {self.fds} (idle upstream connections {self.upstream_idle}, busy {self.upstream_busy}), "
            f"RSS {self.rss_bytes / MIB:.1f} MiB, asyncio tasks {self.tasks}"
        )


def footprint(gateway_url: str) -> Footprint:
    """One scrape. The scrape itself is one task (its request) and one fd (its connection)."""
    text = httpx.get(f"{gateway_url}/metrics", timeout=5).text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gateway_upstream_connections":
                values[f"upstream_{sample.labels['state']}"] = sample.value
            elif sample.name in (
                "process_open_fds",
                "process_resident_memory_bytes",
                "gateway_asyncio_tasks",
            ):
                values[sample.name] = sample.value
    return Footprint(
        fds=int(values["process_open_fds"]),
        rss_bytes=int(values["process_resident_memory_bytes"]),
        tasks=int(values["gateway_asyncio_tasks"]),
        upstream_busy=int(values["upstream_busy"]),
        upstream_idle=int(values["upstream_idle"]),
    )


def settled_footprint(gateway_url: str, baseline: Footprint, *, timeout_s: float = HANG_GUARD_S) -> Footprint:
    """The footprint once in-flight work has wound down: polls until tasks and busy connections are back
    to the baseline's (or the time is up), so a slow-closing socket is not mistaken for a leak."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = footprint(gateway_url)
        settled = now.tasks <= baseline.tasks and now.upstream_busy <= baseline.upstream_busy
        if settled or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


__all__ = ("MIB", "Footprint", "footprint", "settled_footprint")
