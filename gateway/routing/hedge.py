"""Hedged first tokens: a second call to the next target when the first is slow to begin.

A model with `hedge_after_ms` (a fixed threshold) or `hedge_after: p95` (the target's own measured
95th percentile) gets a `Hedging`. For each request the router asks it for a `Race`; each attempt of
that request then goes through `Race.attempt`:

- One timer (`loop.call_later`) is armed for the threshold while the attempt runs in the request's own
  task. Nothing else is created unless it fires, and with hedging off there is no `Race` at all.
- When it fires before the attempt's first event (a stream's first event; for a whole answer, the whole
  answer, since nothing earlier says the answer is good), the budget allows one, and a later target of
  the model's order is usable now (health, breaker, a free slot: nobody waits for a hedge), the same
  request is started on that target in a task of its own.
- The first of the two to produce its first event wins. If the hedge wins, the request's task is
  cancelled (exactly as the model's deadline cancels it) so the first attempt closes its upstream
  connection and releases its slot and its breaker; the cancellation is then withdrawn. If the first
  attempt wins, the hedge task is cancelled the same way. A cancelled attempt never counts against its
  breaker (`Breaker.released`). If either fails before its first event, the other is waited for; if
  both fail, the router goes on with the targets after them.
- The budget is a token bucket per model and process: each request adds `hedge_max_ratio` of a hedge
  (at most `BUDGET_REQUESTS * ratio`, at least one, saved up), each hedge started takes one. Over N
  requests at most `1 + ratio * N` hedges start.

p95 mode keeps, per target and per kind (stream or whole answer), the last `WINDOW` times from the
call to its first event. A first attempt cut short by a winning hedge is recorded with the time it
had run (a lower bound of its real time), so the percentile does not sink to the fast answers only.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from typing import TYPE_CHECKING, Final, Literal

from gateway.routing import router as routing

if TYPE_CHECKING:
    from adapters.canonical import CanonicalRequest
    from gateway.config import ModelConfig
    from gateway.context import RequestInfo
    from gateway.observability.metrics import Metrics
    from gateway.routing.router import Answer, Failure, ResolvedModel, Route, Router
    from gateway.translation.translate import Translated

P95_FLOOR_S: Final = 0.05
"""p95 mode never hedges sooner than this: a target answering in a few ms is not worth a second call."""
P95_MIN_SAMPLES: Final = 20
"""p95 mode hedges a target only once this many of its first events were measured."""
WINDOW: Final = 128
"""First-event times kept per target and kind (the most recent ones)."""
RECOMPUTE_EVERY: Final = 16
"""The percentile is recomputed after this many new samples, not on every request."""
BUDGET_REQUESTS: Final = 100
"""The bucket holds the hedges of this many requests (`ratio * 100`, at least one)."""

HedgeOutcome = Literal["won", "lost", "failed"]
"""won: the hedge's answer was used; lost: the first attempt answered first; failed: the hedge failed."""

monotonic: Final = time.monotonic


class FirstEventTimes:
    """A ring of recent times to first event, and their 95th percentile (recomputed now and then)."""

    __slots__ = ("_fresh", "_next", "_samples", "p95")

    def __init__(self) -> None:
        self._samples = array("d")
        self._next = 0
        self._fresh = 0
        self.p95: float | None = None
        """None until `P95_MIN_SAMPLES` were measured."""

    def add(self, seconds: float) -> None:
        samples = self._samples
        if len(samples) < WINDOW:
            samples.append(seconds)
        else:
            samples[self._next] = seconds
            self._next = (self._next + 1) % WINDOW
        self._fresh += 1
        count = len(samples)
        if count >= P95_MIN_SAMPLES and (self.p95 is None or self._fresh >= RECOMPUTE_EVERY):
            self._fresh = 0
            ordered = sorted(samples)
            self.p95 = ordered[min(count - 1, -(-95 * count // 100) - 1)]  # nearest rank


class HedgeBudget:
    """At most `ratio` of the requests start a hedge: a token bucket refilled per request."""

    __slots__ = ("capacity", "credit", "ratio")

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio
        self.capacity = max(1.0, ratio * BUDGET_REQUESTS)
        self.credit = 1.0 if ratio > 0 else 0.0

    def request(self) -> None:
        self.credit = min(self.capacity, self.credit + self.ratio)

    def available(self) -> bool:
        return self.credit >= 1.0 - 1e-9  # ratio steps such as 0.2 do not add up exactly

    def take(self) -> None:
        self.credit -= 1.0


class Hedging:
    """One model's hedging: its threshold (fixed, or learned per target) and its budget."""

    __slots__ = ("_fixed_s", "_metrics", "_times", "budget", "learning", "model")

    def __init__(self, model: str, config: ModelConfig, metrics: Metrics | None) -> None:
        self.model = model
        self._metrics = metrics
        self._fixed_s = config.hedge_after_ms / 1000 if config.hedge_after_ms is not None else None
        self.learning = config.hedge_after == "p95"
        self._times: dict[tuple[Route, bool], FirstEventTimes] = {}
        self.budget = HedgeBudget(config.hedge_max_ratio)

    def threshold(self, route: Route, stream: bool) -> float | None:
        """Seconds to wait for `route`'s first event before hedging; None: do not hedge it (yet)."""
        if self._fixed_s is not None:
            return self._fixed_s
        times = self._times.get((route, stream))
        if times is None or times.p95 is None:
            return None
        return max(P95_FLOOR_S, times.p95)

    def observe(self, route: Route, stream: bool, seconds: float) -> None:
        """One time to first event of `route` (p95 mode only)."""
        key = (route, stream)
        times = self._times.get(key)
        if times is None:
            times = self._times[key] = FirstEventTimes()
        times.add(seconds)

    def count(self, route: Route, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.hedge(self.model, route.backend, outcome)


def hedging_for(model: str, config: ModelConfig, metrics: Metrics | None) -> Hedging | None:
    """The model's `Hedging`, or None when it does not hedge (then nothing is paid per request)."""
    if config.hedge_after_ms is None and config.hedge_after is None:
        return None
    return Hedging(model, config, metrics)


class Race:
    """One request's attempts, each raced against at most one hedge (made per request by the router)."""

    __slots__ = (
        "_deadline",
        "_hedge",
        "_hedge_task",
        "_hedging",
        "_info",
        "_model",
        "_primary",
        "_primary_done",
        "_request_id",
        "_router",
        "_translated",
        "_tried",
        "_won",
    )

    def __init__(
        self,
        hedging: Hedging,
        router: Router,
        translated: Translated[CanonicalRequest],
        model: ResolvedModel,
        request_id: str,
        deadline: float,
        info: RequestInfo | None,
    ) -> None:
        hedging.budget.request()  # every request adds its share, hedged or not
        self._hedging = hedging
        self._router = router
        self._translated = translated
        self._model = model
        self._request_id = request_id
        self._deadline = deadline
        self._info = info
        self._tried: list[Route] | None = None
        self._primary: asyncio.Task[object] | None = None
        self._primary_done = True
        self._hedge: Route | None = None
        self._hedge_task: asyncio.Task[Answer | Failure] | None = None
        self._won = False

    def tried(self, route: Route) -> bool:
        """`route` was already called as a hedge: the router must not call it again."""
        return self._tried is not None and route in self._tried

    async def _timed(self, route: Route, attempt: int) -> Answer | Failure:
        """One attempt, its first-event time recorded in p95 mode."""
        started = monotonic()
        outcome = await self._router._traced(
            route, self._translated, self._model, attempt, self._request_id, self._deadline
        )
        if self._hedging.learning and isinstance(outcome, routing.Answer):
            self._hedging.observe(route, self._translated.request.stream, monotonic() - started)
        return outcome

    async def attempt(
        self, route: Route, order: list[Route], position: int, attempt: int, failures: list[Failure]
    ) -> tuple[Answer | Failure, int]:
        """Call `route` (`order[position]`, its slot held), hedged on a later target if it is slow to
        begin. The outcome to report last (other failures are appended to `failures`) and the number
        of upstream calls made so far."""
        hedging = self._hedging
        stream = self._translated.request.stream
        threshold = hedging.threshold(route, stream)
        started = monotonic()
        if (
            threshold is None
            or position + 1 >= len(order)
            or started + threshold >= self._deadline
            or not hedging.budget.available()
        ):
            return await self._timed(route, attempt), attempt
        task = asyncio.current_task()
        assert task is not None
        self._primary, self._primary_done, self._won = task, False, False
        self._hedge = self._hedge_task = None
        timer = asyncio.get_running_loop().call_later(threshold, self._fire, order, position, attempt + 1)
        try:
            outcome = await self._router._traced(
                route, self._translated, self._model, attempt, self._request_id, self._deadline
            )
        except asyncio.CancelledError:
            self._primary_done = True
            timer.cancel()
            if self._won and task.uncancel() == 0:
                if hedging.learning:  # cut short: it would have taken at least this long
                    hedging.observe(route, stream, monotonic() - started)
                return self._hedge_won(), attempt + 1
            await self._drop_hedge(None)
            raise
        except BaseException:
            self._primary_done = True
            timer.cancel()
            await self._drop_hedge(None)
            raise
        self._primary_done = True
        timer.cancel()
        answered = isinstance(outcome, routing.Answer)
        if answered and hedging.learning:
            hedging.observe(route, stream, monotonic() - started)
        hedge_task = self._hedge_task
        if hedge_task is None:
            return outcome, attempt
        if self._won:  # our cancellation reached the attempt too late, or was swallowed on the way
            task.uncancel()
            if isinstance(outcome, routing.Answer):
                await outcome.aclose()
            return self._hedge_won(), attempt + 1
        if isinstance(outcome, routing.Answer):
            await self._drop_hedge(failures)
            outcome.attempts = attempt + 1  # the hedge was an upstream call too
            return outcome, attempt + 1
        # The first attempt failed before its first event: the hedge may still answer.
        failures.append(outcome)
        hedged = await hedge_task
        self._settle("won" if isinstance(hedged, routing.Answer) else "failed")
        return hedged, attempt + 1

    def _fire(self, order: list[Route], position: int, attempt: int) -> None:
        """The threshold passed with no first event: start the hedge, if a target can take it now."""
        if self._primary_done or monotonic() >= self._deadline or not self._hedging.budget.available():
            return
        now = monotonic()
        for candidate in order[position + 1 :]:
            if self.tried(candidate) or routing.unavailable(candidate, now) is not None:
                continue
            if candidate.state.slots.try_acquire():
                break
        else:
            return
        self._hedging.budget.take()
        self._hedge = candidate
        if self._tried is None:
            self._tried = []
        self._tried.append(candidate)
        self._hedging.count(candidate, "started")
        hedge_task = asyncio.get_running_loop().create_task(self._timed(candidate, attempt))
        self._hedge_task = hedge_task
        hedge_task.add_done_callback(self._hedge_done)

    def _hedge_done(self, hedge_task: asyncio.Task[Answer | Failure]) -> None:
        if hedge_task.cancelled() or hedge_task.exception() is not None:
            return  # an exception is the hedge's own client fault: the first attempt decides
        if self._primary_done or not isinstance(hedge_task.result(), routing.Answer):
            return  # a failed hedge: keep waiting on the first attempt
        self._won = True
        assert self._primary is not None
        self._primary.cancel()  # withdrawn in `attempt` once the first attempt has cleaned up

    def _hedge_won(self) -> Answer:
        assert self._hedge_task is not None
        answer = self._hedge_task.result()
        assert isinstance(answer, routing.Answer)
        self._settle("won")
        return answer

    async def _drop_hedge(self, failures: list[Failure] | None) -> None:
        """Close the hedge (cancelled, or its answer closed); its failure goes to `failures`."""
        hedge_task = self._hedge_task
        if hedge_task is None:
            return
        if not hedge_task.done():
            hedge_task.cancel()
            await asyncio.wait((hedge_task,))
        if hedge_task.cancelled():
            self._settle("lost")
        elif hedge_task.exception() is not None:
            self._settle("failed")
        else:
            outcome = hedge_task.result()
            if isinstance(outcome, routing.Answer):
                await outcome.aclose()
                self._settle("lost")
            else:
                if failures is not None:
                    failures.append(outcome)
                self._settle("failed")

    def _settle(self, outcome: HedgeOutcome) -> None:
        assert self._hedge is not None
        self._hedging.count(self._hedge, outcome)
        if self._info is not None:
            self._info.hedged = outcome


__all__ = ("FirstEventTimes", "HedgeBudget", "Hedging", "Race", "hedging_for")
