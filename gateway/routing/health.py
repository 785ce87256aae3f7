"""Background health probes for backends that report their own health (vLLM's `GET /health`).

One task per such backend, started and stopped by the app's lifespan. A failed probe marks the
backend unhealthy, so its targets are skipped without costing a request an attempt; the next passing
probe clears it. Backends without a health endpoint (Workers AI) are judged by live traffic only, and
so is a backend whose health endpoint cannot be used (hidden or guarded by a proxy in front of it):
that is logged once, rather than keeping a working backend out of service.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from adapters.base import HealthChecked
from adapters.errors import UpstreamError, UpstreamProtocolError
from gateway.observability.logs import get_logger

if TYPE_CHECKING:
    from gateway.routing.router import BackendState

log = get_logger("gateway.health")

UNUSABLE_STATUSES: Final = frozenset({401, 403, 404, 405})
"""Health answers that say nothing about the backend, only that the endpoint is not reachable as such."""


class HealthProber:
    def __init__(self, backends: list[BackendState]) -> None:
        self._backends = backends
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(state), name=f"health-{state.name}") for state in self._backends
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, state: BackendState) -> None:
        adapter = state.adapter
        assert isinstance(adapter, HealthChecked)
        warned = False
        while True:
            error = await probe(adapter, state.name)
            if error is not None and error.upstream_status in UNUSABLE_STATUSES:
                if not warned:
                    log.warning(
                        "health_endpoint_unusable",
                        backend=state.name,
                        upstream_status=error.upstream_status,
                        detail="judging this backend by live traffic only; check base_url or the proxy",
                    )
                    warned = True
                error = None
            state.set_health(error)
            await asyncio.sleep(state.health_interval_s)


async def probe(adapter: HealthChecked, backend: str) -> UpstreamError | None:
    """None if the backend says it is healthy, else why not."""
    try:
        await adapter.check_health()
    except UpstreamError as exc:
        return exc
    except Exception as exc:  # a bug in a probe must not stop probing, nor mark a backend healthy
        log.error("health_probe_failed", backend=backend, exc_info=exc)
        return UpstreamProtocolError(backend, f"health probe of backend '{backend}' failed: {exc!r}")
    return None


__all__ = ("HealthProber", "probe")
