"""Prometheus metrics (`GET /metrics`), with labels whose values all come from the config.

Label values are bounded by construction: `model` is a configured public name (or `-`), `key` a
configured key id (or `-`), `backend` a configured backend (or `-`), `route` one of a fixed set,
`status` a class (`2xx`...). A client sending random model names or paths cannot grow the series.

One process: a registry per app. Several worker processes (`gateway serve --workers N`): prometheus
client's multiprocess mode, switched on by `PROMETHEUS_MULTIPROC_DIR` (the CLI sets it), so a scrape
of any worker reports the sum (gauges: live sum, or live max for breaker states) over all of them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from adapters.transport import open_connections

# `*_created` samples double the exposition for a timestamp no dashboard uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

if TYPE_CHECKING:
    from gateway.context import RequestInfo

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
STORED_RESPONSES: Final = "stored_responses"
ROUTES: Final = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/responses": "responses",
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "messages_count_tokens",
    "/v1/models": "models",
}
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
FIRST_TOKEN_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BREAKER_STATES: Final = {"closed": 0, "half_open": 1, "open": 2}


def route_of(path: str) -> str:
    if path in ROUTES:
        return ROUTES[path]
    if path.startswith("/v1/models/"):
        return "models"
    if path.startswith("/v1/responses/"):
        return STORED_RESPONSES  # one label for every id: GET, DELETE, input_items, cancel
    return "other"


def status_class(status: int) -> str:
    return f"{status // 100}xx" if status else "none"


class Metrics:
    """Every metric the gateway records, created once per app."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # Multiprocess values live in files, not in a registry: register nowhere, collect from files.
        registry = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        self._registry = registry
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by route, key, model, backend and status class.",
            ["route", "key", "model", "backend", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Time from request to the end of the response.",
            ["route", "model", "backend", "stream"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.first_token = Histogram(
            "gateway_time_to_first_token_seconds",
            "Time from request to the first token sent (streams).",
            ["model", "backend"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self.upstream = Histogram(
            "gateway_upstream_duration_seconds",
            "Time spent in upstream calls until the answer began (the whole answer when not streamed).",
            ["model", "backend"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "gateway_tokens",
            "Tokens used, by key, model and kind (prompt or completion).",
            ["key", "model", "kind"],
            registry=registry,
        )
        self.failovers = Counter(
            "gateway_failovers",
            "Upstream attempts that failed or were skipped before another target was tried.",
            ["model", "backend", "reason"],
            registry=registry,
        )
        self.hedges = Counter(
            "gateway_hedges",
            "Hedged first tokens by hedge target: outcome started (every hedge), then won, lost or failed.",
            ["model", "backend", "outcome"],
            registry=registry,
        )
        self.resumes = Counter(
            "gateway_resumes",
            "Mid-stream failovers by the backend whose answer failed mid-way: outcome resumed (a "
            "continuation took over), failed (none could be opened), unavailable (no target can "
            "prefill) or exhausted (resume_max reached).",
            ["model", "backend", "outcome"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "gateway_rate_limit_refusals",
            "Requests refused by a rate limit or a budget, by key, model and limit.",
            ["key", "model", "limit"],
            registry=registry,
        )
        self.redis_errors = Counter(
            "gateway_rate_limit_store_errors",
            "Failed calls to the rate-limit store (Redis).",
            [],
            registry=registry,
        )
        self.breaker = Gauge(
            "gateway_breaker_state",
            "Circuit breaker per target: 0 closed, 1 half-open, 2 open.",
            ["backend", "upstream_model"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.breaker_remote_changes = Counter(
            "gateway_breaker_remote_changes",
            "Breaker changes applied from another gateway process (shared through Redis), by state.",
            ["backend", "upstream_model", "state"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "gateway_in_flight_requests",
            "Requests being handled, by route.",
            ["route"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.open_streams = Gauge(
            "gateway_open_streams",
            "Streamed answers being relayed.",
            [],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self._series: dict[tuple[str, str, str, str, int, bool], _Series] = {}
        self._in_flight = {
            route: self.in_flight.labels(route) for route in (*ROUTES.values(), STORED_RESPONSES, "other")
        }
        self._runtime = RuntimeCollector()
        if registry is not None:
            registry.register(self._runtime)
            ProcessCollector(registry=registry)

    def render(self) -> bytes:
        if self._registry is not None:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        # Not summed over workers: these describe the worker that answered the scrape.
        registry.register(self._runtime)
        ProcessCollector(registry=registry)
        return generate_latest(registry)

    def started(self, route: str) -> None:
        self._in_flight[route].inc()

    def finished(self, route: str, status: int, duration: float, info: RequestInfo) -> None:
        """Everything a finished request records, from its `RequestInfo`."""
        self._in_flight[route].dec()
        model = info.model or "-"
        backend = info.backend or "-"
        key = info.key_id or "-"
        # One dict lookup for every child this request touches (prometheus' .labels() takes a lock).
        series_key = (route, key, model, backend, status // 100, info.stream)
        series = self._series.get(series_key)
        if series is None:
            series = self._series[series_key] = _Series(self, route, key, model, backend, status, info.stream)
        series.requests.inc()
        series.duration.observe(duration)
        if info.backend is None:
            if info.rate_limit is not None and info.rate_limit.startswith("refused_"):
                self.rate_limited.labels(key, model, info.rate_limit.removeprefix("refused_")).inc()
            return
        if info.upstream_s is not None:
            series.upstream.observe(info.upstream_s)
        first_token = info.first_token_s
        if first_token is not None:
            series.first_token.observe(first_token)
        prompt, completion = info.prompt_tokens, info.completion_tokens
        if prompt:
            series.prompt_tokens.inc(prompt)
        if completion:
            series.completion_tokens.inc(completion)

    def stream_opened(self) -> None:
        self.open_streams.inc()

    def stream_closed(self) -> None:
        self.open_streams.dec()

    def failover(self, model: str, backend: str, reason: str) -> None:
        self.failovers.labels(model, backend, reason).inc()

    def hedge(self, model: str, backend: str, outcome: str) -> None:
        self.hedges.labels(model, backend, outcome).inc()

    def resume(self, model: str, backend: str, outcome: str) -> None:
        self.resumes.labels(model, backend, outcome).inc()

    def breaker_changed(self, backend: str, upstream_model: str, state: str) -> None:
        self.breaker.labels(backend, upstream_model).set(BREAKER_STATES[state])

    def breaker_remote(self, backend: str, upstream_model: str, state: str) -> None:
        self.breaker_remote_changes.labels(backend, upstream_model, state).inc()

    def store_error(self) -> None:
        self.redis_errors.inc()


class RuntimeCollector(Collector):
    """Leak indicators read at scrape time only: live asyncio tasks and upstream connections.

    Nothing on the request path touches them; a scrape walks the loop's task set and the live
    transports once (both small: a few per request in flight).
    """

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # no running loop (a scrape from another thread)
            tasks = 0
        yield GaugeMetricFamily(
            "gateway_asyncio_tasks", "Live asyncio tasks in this process's event loop.", value=tasks
        )
        open_total, idle = open_connections()
        connections = GaugeMetricFamily(
            "gateway_upstream_connections",
            "Connections open to upstreams in this process, by state (busy: an answer being read).",
            labels=["state"],
        )
        connections.add_metric(["busy"], open_total - idle)
        connections.add_metric(["idle"], idle)
        yield connections

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


class _Series:
    """The metric children one kind of request records into, looked up once and then reused."""

    __slots__ = ("completion_tokens", "duration", "first_token", "prompt_tokens", "requests", "upstream")

    def __init__(
        self, metrics: Metrics, route: str, key: str, model: str, backend: str, status: int, stream: bool
    ) -> None:
        self.requests = metrics.requests.labels(route, key, model, backend, status_class(status))
        self.duration = metrics.duration.labels(route, model, backend, "true" if stream else "false")
        self.upstream = metrics.upstream.labels(model, backend)
        self.first_token = metrics.first_token.labels(model, backend)
        self.prompt_tokens = metrics.tokens.labels(key, model, "prompt")
        self.completion_tokens = metrics.tokens.labels(key, model, "completion")


__all__ = ("CONTENT_TYPE", "Metrics", "route_of", "status_class")
