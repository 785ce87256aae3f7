"""Public model names → targets, and the failover boundary.

`Router.open` is the only place that decides whether another target may be tried: for a stream,
until the upstream's first event is in hand (nothing has reached the client yet); for a whole
answer, until it has been read completely. After that, failures belong to the writer, in-band.

For each request the targets are taken in config order (adjacent targets with a `weight` are
shuffled by weight, so equal replicas share load). A target is skipped while its backend fails its
health check or its circuit breaker is open; a backend at `max_concurrency` is passed over for the
next target and, if no target could take the request at once, waited for (first slot to free on any
of them). A failure that is the client's fault ends the request at once; any other failure moves on
to the next target. The model's `timeout_s` bounds everything before the answer begins: waiting for
a slot, every attempt, and a stream's first token. Once a stream has begun, only the backend's own
per-read `timeout_s` applies, so a long healthy answer is never cut.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Final, Literal

from adapters.base import HealthChecked
from adapters.errors import UpstreamError, UpstreamTimeout
from gateway.errors import InvalidRequestError, ModelNotFoundError, RoutingError, upstream_headers
from gateway.limits.base import Price
from gateway.observability.logs import get_logger
from gateway.routing import hedge
from gateway.routing.affinity import Rendezvous, session_key, session_of
from gateway.routing.breaker import Breaker
from gateway.routing.slots import Slots, acquire_any
from gateway.routing.window import RollingWindow
from gateway.timers import Deadline

if TYPE_CHECKING:
    from adapters.base import Adapter, UpstreamResponse
    from adapters.canonical import CanonicalRequest, Event
    from gateway.config import ModelConfig, Settings
    from gateway.context import RequestInfo
    from gateway.observability.metrics import Metrics
    from gateway.observability.tracing import Tracing
    from gateway.translation.translate import Translated

_END: Final = object()
MESSAGE_DETAIL_CHARS: Final = 300
"""Each target's part of an all-failed message is cut to this length (upstream messages can be long)."""
CONFIG_ERROR_CODES: Final = frozenset(
    {"model_not_found", "upstream_not_found", "upstream_credentials_rejected", "upstream_permission_denied"}
)
"""Upstream answers that mean the gateway's config is wrong: logged as errors, not warnings."""

ModelKind = Literal["chat", "embeddings"]
ENDPOINTS: Final[dict[str, str]] = {"chat": "/v1/chat/completions", "embeddings": "/v1/embeddings"}
"""Where each kind of model (`models.<name>.kind`) is served, for the wrong-endpoint error."""

FailureKind = Literal["timeout", "busy", "failed"]
"""timeout: no answer in time; busy: rate limited, overloaded or deliberately skipped; failed: the rest."""

log = get_logger("gateway.routing")
monotonic: Final = time.monotonic


class BackendState:
    """Per-process state of one backend: its concurrency slots and its last health-check verdict."""

    __slots__ = ("adapter", "health_error", "health_interval_s", "name", "slots")

    def __init__(self, name: str, adapter: Adapter, *, limit: int | None, health_interval_s: float) -> None:
        self.name = name
        self.adapter = adapter
        self.slots = Slots(limit)
        self.health_interval_s = health_interval_s
        self.health_error: UpstreamError | None = None
        """Set while the backend fails its health check (vLLM); None when healthy or never checked."""

    def set_health(self, error: UpstreamError | None) -> None:
        if error is None and self.health_error is not None:
            log.info("backend_healthy", backend=self.name)
        elif error is not None and self.health_error is None:
            log.warning("backend_unhealthy", backend=self.name, reason=error.message)
        self.health_error = error


class Route:
    """One target of a model: a backend and the model name it knows, with the target's breaker."""

    __slots__ = ("adapter", "backend", "breaker", "model", "price", "recent", "state", "weight")

    def __init__(
        self,
        state: BackendState,
        model: str,
        breaker: Breaker,
        weight: float | None,
        recent: RollingWindow | None = None,
        price: Price | None = None,
    ) -> None:
        self.state = state
        self.backend = state.name
        self.adapter = state.adapter
        self.model = model
        self.breaker = breaker
        self.recent = recent if recent is not None else RollingWindow()
        """The target's attempts over the last minutes (`/status`), shared like its breaker."""
        self.weight = weight
        self.price = price
        """What this target's answers cost (its own `price`, else its model's); None: nothing."""

    def healthy(self, now: float) -> bool:
        return self.state.health_error is None and not self.breaker.is_open(now)


class ResolvedModel:
    __slots__ = (
        "_groups",
        "_static_order",
        "_tiers",
        "config",
        "max_price",
        "name",
        "native",
        "routes",
        "timeout_s",
    )

    def __init__(self, name: str, config: ModelConfig, routes: list[Route]) -> None:
        self.name = name
        self.config = config
        self.routes = routes
        self.timeout_s = config.timeout_s
        prices = [route.price for route in routes if route.price is not None]
        self.max_price: Price | None = (
            Price(
                input_per_mtok=max(p.input_per_mtok for p in prices),
                output_per_mtok=max(p.output_per_mtok for p in prices),
            )
            if prices
            else None
        )
        """The highest price any target may charge: what a budget reserves before the target is known."""
        natives = [route.adapter.native for route in routes]
        self.native: frozenset[str] = frozenset.intersection(*natives) if natives else frozenset()
        """Parameters every target honours itself (`Adapter.native`): only these may be sent upstream."""
        self._tiers = _tiers(routes)
        # Most models have no weighted group: their order is fixed and costs nothing per request.
        self._static_order = routes if all(len(tier) == 1 for tier in self._tiers) else None
        self._groups = [tier[0] if len(tier) == 1 else Rendezvous(tier) for tier in self._tiers]
        """The tiers for requests with a session (`gateway.routing.affinity`)."""

    def order(self, session: str | None = None) -> list[Route]:
        """The targets to try for one request, in order; a session keeps its place in each group."""
        if self._static_order is not None:
            return self._static_order
        if session is not None:
            key = session_key(session)
            order: list[Route] = []
            for group in self._groups:
                if isinstance(group, Route):
                    order.append(group)
                else:
                    order.extend(group.order(key))
            return order
        order = []
        for tier in self._tiers:
            order.extend(tier if len(tier) == 1 else _weighted_shuffle(tier))
        return order


def _tiers(routes: list[Route]) -> list[list[Route]]:
    """Adjacent weighted targets form one group; every other target is a group of its own."""
    tiers: list[list[Route]] = []
    for route in routes:
        if route.weight is not None and tiers and tiers[-1][-1].weight is not None:
            tiers[-1].append(route)
        else:
            tiers.append([route])
    return tiers


def _weighted_shuffle(tier: list[Route]) -> list[Route]:
    """A random order in which each target comes first with probability weight / total weight."""
    keyed = [(random.random() ** (1.0 / (route.weight or 1.0)), route) for route in tier]
    keyed.sort(key=lambda pair: pair[0], reverse=True)
    return [route for _, route in keyed]


class Failure:
    """What happened to one target of a request that found no answer."""

    __slots__ = ("deadline", "error", "kind", "quota", "retry_after", "route", "summary")

    def __init__(
        self,
        route: Route,
        summary: str,
        kind: FailureKind,
        *,
        error: UpstreamError | None = None,
        retry_after: float | None = None,
        deadline: bool = False,
    ) -> None:
        self.route = route
        self.summary = summary
        self.kind = kind
        self.error = error
        self.retry_after = retry_after
        self.quota = error is not None and error.quota
        self.deadline = deadline
        """The model's deadline passed during this attempt: no other target may be tried."""

    @classmethod
    def of(cls, route: Route, error: UpstreamError) -> Failure:
        kind: FailureKind = "failed"
        if error.status_code == 504 or (isinstance(error, UpstreamTimeout) and error.status_code != 503):
            kind = "timeout"
        elif error.status_code in (429, 503):
            kind = "busy"
        code = f" ({error.code})" if error.code else ""
        summary = f"{error.summary}{code}: {error.message[:MESSAGE_DETAIL_CHARS]}"
        return cls(route, summary, kind, error=error, retry_after=error.retry_after)


class Answer:
    """An upstream answer that has begun well: the first event of a stream, or all events of a whole one."""

    __slots__ = (
        "_first",
        "_iterator",
        "_slots",
        "_upstream",
        "attempts",
        "collected",
        "route",
    )

    def __init__(
        self,
        route: Route,
        upstream: UpstreamResponse | None,
        *,
        attempts: int,
        collected: list[Event] | None = None,
        first: object = _END,
        iterator: AsyncIterator[Event] | None = None,
        slots: Slots | None = None,
    ) -> None:
        self.route = route
        self.attempts = attempts
        """Upstream calls made for this request, this one included (skipped targets are not calls)."""
        self.collected = collected
        self._upstream = upstream
        self._first = first
        self._iterator = iterator
        self._slots = slots

    @property
    def backend(self) -> str:
        """The backend that answered (for `x-gateway-backend`)."""
        return self.route.backend

    async def events(self) -> AsyncIterator[Event]:
        if self._first is _END or self._iterator is None:
            return
        first, self._first = self._first, _END
        yield first  # type: ignore[misc]
        try:
            async for event in self._iterator:
                yield event
        except UpstreamError as exc:
            # Past the failover boundary: the writer reports it in-band; here it is logged and counted.
            route = self.route
            log.warning(
                "stream_failed_after_first_byte",
                backend=route.backend,
                upstream_model=route.model,
                code=exc.code,
                message=exc.message,
            )
            if not exc.client_fault:
                route.breaker.failed(monotonic(), probe=False)
            raise

    async def aclose(self) -> None:
        if self._upstream is not None:
            upstream, self._upstream = self._upstream, None
            await upstream.aclose()
        if self._slots is not None:
            slots, self._slots = self._slots, None
            slots.release()


class Router:
    def __init__(
        self,
        settings: Settings,
        adapters: dict[str, Adapter],
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        *,
        previous: Router | None = None,
    ) -> None:
        """`previous`: the router this one replaces (a config reload). A backend whose adapter is the
        same object as there (its config did not change) keeps its state (slots held by requests in
        flight, health verdict) and its targets keep their breakers and rolling windows; a model
        whose config and backends did not change is kept whole (with its hedging measurements)."""
        self._metrics = metrics
        self._tracing = tracing
        self.request_limits = settings.http
        """The `http:` limits the pipelines check on each decoded request."""
        kept = {
            name: state
            for name, state in (previous._backends.items() if previous is not None else ())
            if adapters.get(name) is state.adapter
        }
        self._backends: dict[str, BackendState] = {
            name: kept.get(name)
            or BackendState(
                name,
                adapters[name],
                limit=config.max_concurrency,
                health_interval_s=config.breaker.health_interval_s,
            )
            for name, config in settings.backends.items()
        }
        self.breakers: dict[tuple[str, str], Breaker] = {}
        """One per target, by (backend, upstream model): shared by the models that name that target."""
        breakers = self.breakers
        windows: dict[tuple[str, str], RollingWindow] = {}
        kept_breakers: dict[tuple[str, str], Breaker] = {}
        unchanged: dict[str, ResolvedModel] = {}
        if previous is not None:
            for model in previous._public:
                for route in model.routes:
                    if route.backend in kept:
                        kept_breakers[(route.backend, route.model)] = route.breaker
                        windows[(route.backend, route.model)] = route.recent
                if all(route.backend in kept for route in model.routes):
                    unchanged[model.name] = model
        self._models: dict[str, ResolvedModel] = {}
        self._public: list[ResolvedModel] = []
        self._hedging: dict[ResolvedModel, hedge.Hedging] = {}
        """Models with `hedge_after_ms` or `hedge_after` (gateway.routing.hedge)."""
        for name, config in settings.models.items():
            same = unchanged.get(name)
            if same is not None and same.config == config:
                self._add(same, previous._hedging.get(same) if previous is not None else None)
                breakers.update(((route.backend, route.model), route.breaker) for route in same.routes)
                continue
            routes = []
            for target in config.targets:
                key = (target.backend, target.model)
                breaker = breakers.get(key) or kept_breakers.get(key)
                if breaker is not None:
                    breakers[key] = breaker
                else:
                    breaker_config = settings.backends[target.backend].breaker
                    on_change = None
                    if metrics is not None:
                        on_change = functools.partial(metrics.breaker_changed, target.backend, target.model)
                    breaker = breakers[key] = Breaker(
                        f"{target.backend}/{target.model}", breaker_config, on_change
                    )
                window = windows.setdefault(key, RollingWindow())
                routes.append(
                    Route(
                        self._backends[target.backend],
                        target.model,
                        breaker,
                        target.weight,
                        window,
                        target.price or config.price,
                    )
                )
            resolved = ResolvedModel(name, config, routes)
            self._add(resolved, hedge.hedging_for(name, config, metrics))

    def _add(self, model: ResolvedModel, hedging: hedge.Hedging | None) -> None:
        if hedging is not None:
            self._hedging[model] = hedging
        self._public.append(model)
        self._models[model.name] = model
        for alias in model.config.aliases:
            self._models[alias] = model

    def resolve(self, name: str) -> ResolvedModel:
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFoundError(
                f"The model `{name}` does not exist or you do not have access to it.", param="model"
            ) from None

    def public_names(self) -> list[str]:
        """Every public model name and alias, each once, in config order."""
        return list(self._models)

    def models(self) -> list[ResolvedModel]:
        """Every configured model (not its aliases), in config order."""
        return list(self._public)

    def adapters(self) -> list[Adapter]:
        """Every backend's adapter (what a reload closes once no request uses it)."""
        return [state.adapter for state in self._backends.values()]

    def health_checked(self) -> list[BackendState]:
        """Backends that report their own health and are probed in the background."""
        return [state for state in self._backends.values() if isinstance(state.adapter, HealthChecked)]

    def models_without_healthy_target(self) -> list[str]:
        """Models whose every target is unhealthy or has an open breaker (for `/readyz`)."""
        now = monotonic()
        return [model.name for model in self._public if not any(r.healthy(now) for r in model.routes)]

    async def open(
        self,
        translated: Translated[CanonicalRequest],
        model: ResolvedModel,
        *,
        info: RequestInfo,
        record: bool = True,
        order: list[Route] | None = None,
    ) -> Answer:
        """The first target's answer that begins well; raises `RoutingError` when there is none.

        A client fault ends the request at once (another target would refuse it too): its error is
        raised as the client's answer. `record`: note the attempts and the answering target in `info`.
        `order`: the targets to try, in order, instead of the model's own (a resumed answer's).
        """
        request_id = info.request_id
        now = monotonic()
        deadline = now + model.timeout_s
        failures: list[Failure] = []
        waiting: list[Route] = []
        attempts = 0
        translated, session = session_of(translated, info)
        if order is None:
            order = model.order(session)
        hedging = self._hedging.get(model) if self._hedging else None
        race = None
        if hedging is not None:
            race = hedge.Race(
                hedging, self, translated, model, request_id, deadline, info if record else None
            )
        for position, route in enumerate(order):
            if now >= deadline or (failures and failures[-1].deadline):
                failures.extend(_too_late(later, model) for later in order[position:])
                break
            if race is not None and race.tried(route):
                continue  # already called as a hedge
            skipped = unavailable(route, now)
            if skipped is not None:
                failures.append(skipped)
                continue
            if not route.state.slots.try_acquire():
                waiting.append(route)
                continue
            attempts += 1
            if race is None:
                outcome = await self._traced(route, translated, model, attempts, request_id, deadline)
            else:
                outcome, attempts = await race.attempt(route, order, position, attempts, failures)
            if isinstance(outcome, Answer):
                self._record(outcome, model, failures, attempts, info if record else None)
                return outcome
            failures.append(outcome)
            now = monotonic()
        while waiting:
            remaining = 0.0 if failures and failures[-1].deadline else deadline - monotonic()
            slots = await acquire_any([route.state.slots for route in waiting], remaining)
            if slots is None:
                failures.extend(_full(route) for route in waiting)
                break
            route = next(route for route in waiting if route.state.slots is slots)
            waiting.remove(route)
            skipped = unavailable(route, monotonic())
            if skipped is not None:
                slots.release()
                failures.append(skipped)
                continue
            attempts += 1
            outcome = await self._traced(route, translated, model, attempts, request_id, deadline)
            if isinstance(outcome, Answer):
                self._record(outcome, model, failures, attempts, info if record else None)
                return outcome
            failures.append(outcome)
        self._record(None, model, failures, attempts, info if record else None)
        raise _routing_error(model, failures, attempts)

    def count_resume(self, model: ResolvedModel, backend: str, outcome: str) -> None:
        """One mid-stream failover of `model` after `backend` failed (gateway.routing.resume)."""
        if self._metrics is not None:
            self._metrics.resume(model.name, backend, outcome)

    def _record(
        self,
        answer: Answer | None,
        model: ResolvedModel,
        failures: list[Failure],
        attempts: int,
        info: RequestInfo | None,
    ) -> None:
        """Note the outcome for the request's log line (unless `info` is None) and the failover metrics."""
        if info is not None:
            info.attempts = attempts
            info.failovers = len(failures)
            if answer is not None:
                info.backend = answer.route.backend
                info.upstream_model = answer.route.model
                info.price = answer.route.price
        if failures and self._metrics is not None:
            for failure in failures:
                self._metrics.failover(model.name, failure.route.backend, failure.kind)

    async def _traced(
        self,
        route: Route,
        translated: Translated[CanonicalRequest],
        model: ResolvedModel,
        attempt: int,
        request_id: str,
        deadline: float,
    ) -> Answer | Failure:
        if self._tracing is None:
            return await self._attempt(route, translated, model, attempt, request_id, deadline)

        def call() -> Awaitable[Answer | Failure]:
            return self._attempt(route, translated, model, attempt, request_id, deadline)

        return await self._tracing.attempt(
            call,
            backend=route.backend,
            model=model.name,
            upstream_model=route.model,
            attempt=attempt,
        )

    async def _attempt(
        self,
        route: Route,
        translated: Translated[CanonicalRequest],
        model: ResolvedModel,
        attempt: int,
        request_id: str,
        deadline: float,
    ) -> Answer | Failure:
        """One upstream call, its slot already held; an `Answer`, or the `Failure` to report."""
        request = translated.request
        slots = route.state.slots
        probe = route.breaker.begin()
        started = monotonic()
        upstream: UpstreamResponse | None = None
        collected: list[Event] | None = None
        first: object = _END
        timer = Deadline(deadline - monotonic())
        timed_out = False
        try:
            try:
                # The request names its operation (chat, complete, ...): no branch here per surface.
                upstream = await request.open_on(
                    route.adapter, route.model, request_id=f"{request_id}-{attempt}"
                )
                iterator = upstream.events()
                if request.stream:
                    first = await anext(iterator, _END)
                else:
                    collected = [event async for event in iterator]
            finally:
                timed_out = timer.disarm()
        except UpstreamError as exc:
            await _close(upstream, slots)
            if timed_out:  # the deadline's cancellation, reported by the adapter in its own words
                route.breaker.released(probe)
                route.recent.record(monotonic() - started, error=True)
                return _past_deadline(route, model)
            if exc.client_fault:
                route.breaker.released(probe)
                raise from_upstream(exc, attempt) from exc
            now = monotonic()
            route.breaker.failed(now, probe)
            route.recent.record(now - started, error=True)
            _log_failure(route, exc, attempt=attempt)
            return Failure.of(route, exc)
        except BaseException as exc:
            await _close(upstream, slots)
            route.breaker.released(probe)
            if timed_out and isinstance(exc, asyncio.CancelledError):
                return _past_deadline(route, model)  # the deadline's own cancellation, withdrawn by disarm()
            raise
        route.breaker.succeeded(probe)
        route.recent.record(monotonic() - started, error=False)
        if collected is not None:
            await _close(upstream, slots)
            return Answer(route, None, attempts=attempt, collected=collected)
        return Answer(
            route,
            upstream,
            attempts=attempt,
            first=first,
            iterator=iterator,
            slots=slots,
        )


async def _close(upstream: UpstreamResponse | None, slots: Slots) -> None:
    try:
        if upstream is not None:
            await upstream.aclose()
    finally:
        slots.release()


def require_kind(model: ResolvedModel, name: str, kind: ModelKind) -> None:
    """A 400 naming the right endpoint unless `model` serves `kind` (checked after the key's allow-list,
    so a key learns nothing of models it may not use)."""
    served = model.config.kind
    if served != kind:
        raise InvalidRequestError(
            f"The model `{name}` is {'an embeddings' if served == 'embeddings' else 'a chat'} model "
            f"and is not served on this endpoint: call it on {ENDPOINTS[served]}.",
            param="model",
            code="wrong_model_kind",
        )


def unavailable(route: Route, now: float) -> Failure | None:
    state = route.state
    if state.health_error is not None:
        return Failure(
            route,
            f"skipped: failing its health check ({state.health_error.summary})",
            "busy",
            retry_after=state.health_interval_s,
        )
    breaker = route.breaker
    if not breaker.available(now):
        if breaker.probing and now >= breaker.open_until:
            summary = "skipped: circuit half-open, a probe request is in flight"
        else:
            summary = (
                f"skipped: circuit open after {breaker.failures} consecutive failures "
                f"(retry in {breaker.retry_after(now):.0f} s)"
            )
        return Failure(route, summary, "busy", retry_after=breaker.retry_after(now) or 1.0)
    return None


def _past_deadline(route: Route, model: ResolvedModel) -> Failure:
    summary = f"no answer within the model's {model.timeout_s:g} s deadline"
    return Failure(route, summary, "timeout", deadline=True)


def _too_late(route: Route, model: ResolvedModel) -> Failure:
    return Failure(route, f"not tried: the model's {model.timeout_s:g} s deadline had passed", "timeout")


def _full(route: Route) -> Failure:
    limit = route.state.slots.limit
    return Failure(
        route, f"skipped: at max_concurrency ({limit} requests in flight)", "busy", retry_after=1.0
    )


def _log_failure(route: Route, exc: UpstreamError, *, attempt: int) -> None:
    # The request's id and model come with every line logged for it (gateway.context).
    fields = {
        "backend": route.backend,
        "upstream_model": route.model,
        "attempt": attempt,
        "code": exc.code,
        "upstream_status": exc.upstream_status,
        "message": exc.message,
    }
    if exc.code in CONFIG_ERROR_CODES:
        # Not a passing fault: every request to this target fails until the config is fixed.
        log.error("upstream_config_error", **fields)
    else:
        log.warning("upstream_attempt_failed", **fields)


def from_upstream(error: UpstreamError, attempts: int) -> RoutingError:
    """One upstream error as the client sees it (status, type, code, Retry-After, x-should-retry)."""
    headers = {"x-gateway-attempts": str(attempts), **upstream_headers(error)}
    return RoutingError(
        error.message,
        status_code=error.status_code,
        error_type=error.error_type,
        code=error.code,
        param=error.param,
        headers=headers,
    )


def _routing_error(model: ResolvedModel, failures: list[Failure], attempts: int) -> RoutingError:
    if len(failures) == 1 and failures[0].error is not None:
        return from_upstream(failures[0].error, attempts)  # one target: its own error says it best
    headers = {"x-gateway-attempts": str(attempts)}
    kinds = {failure.kind for failure in failures}
    if kinds == {"timeout"}:
        status, error_type, code = 504, "timeout", "upstream_timeout"
    elif kinds <= {"timeout", "busy"}:
        status, error_type, code = 503, "service_unavailable", "upstream_unavailable"
    else:
        status, error_type, code = 502, "upstream_error", "upstream_error"
    last_retry_after = failures[-1].retry_after
    if last_retry_after is not None:
        headers["retry-after"] = str(max(1, round(last_retry_after)))
    if all(failure.quota for failure in failures):
        headers["x-should-retry"] = "false"
    backends = [failure.route.backend for failure in failures]
    parts = []
    for i, failure in enumerate(failures, start=1):
        route = failure.route
        name = route.backend if backends.count(route.backend) == 1 else f"{route.backend} ({route.model})"
        parts.append(f"{i}) {name}: {failure.summary}")
    noun = "target" if len(failures) == 1 else "targets"
    message = f"No backend could answer for model '{model.name}' ({len(failures)} {noun}). " + " ".join(parts)
    return RoutingError(message, status_code=status, error_type=error_type, code=code, headers=headers)


__all__ = (
    "Answer",
    "BackendState",
    "Failure",
    "ResolvedModel",
    "Route",
    "Router",
    "from_upstream",
    "require_kind",
)
