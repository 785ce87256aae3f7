"""In-process limits: the embedded default when `redis_url` is empty.

The same sliding window as the Redis store (see `base.py`), on the process's monotonic clock. Every
method runs without awaiting, so each decision is atomic on the event loop. The counts belong to this
process only: with several workers or replicas, configure `redis_url`.

Budgets count spend per period (`base.Periods`, on the wall clock) in one integer per scope and
period, checked and reserved in the same call as the scope's other limits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from gateway.limits.base import (
    SLOTS,
    SPEND_GRACE_S,
    WINDOW_S,
    Outcome,
    Period,
    Periods,
    Refusal,
    Scope,
    Ticket,
)


class _Window:
    __slots__ = ("amounts", "used")

    def __init__(self) -> None:
        self.amounts: dict[int, int] = {}
        """Slot index → amount, oldest first (slots are only ever added at the current index)."""
        self.used = 0


class MemoryLimiter:
    def __init__(
        self,
        *,
        window_s: float = WINDOW_S,
        slots: int = SLOTS,
        clock: Callable[[], float] = time.monotonic,
        periods: Periods | None = None,
    ) -> None:
        self._width = window_s / slots
        self._slots = slots
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._in_flight: dict[str, set[str]] = {}
        self._periods = periods or Periods()
        self._spend: dict[str, tuple[int, float]] = {}
        """Spend counter → (micro-USD counted, when it expires: its period's end plus a grace)."""

    async def acquire(self, scope: Scope, *, tokens: int, ticket: Ticket | None, cost: int = 0) -> Outcome:
        now = self._clock()
        cur = math.floor(now / self._width)
        first = cur - self._slots
        requests_key, tokens_key, flight_key = scope.keys
        requests = self._load(requests_key, first) if scope.rpm else None
        reserved = self._load(tokens_key, first) if scope.tpm else None
        flight = self._in_flight.get(flight_key) if scope.max_concurrency else None
        requests_used = requests.used if requests is not None else 0
        tokens_used = reserved.used if reserved is not None else 0
        in_flight = len(flight) if flight is not None else 0
        refused: Refusal | None = None
        wait = 0.0
        if scope.rpm and requests_used + 1 > scope.rpm:
            refused, wait = "requests", self._wait(requests, requests_used + 1 - scope.rpm, now, cur)
        if scope.tpm and tokens_used + tokens > scope.tpm:
            tokens_wait = self._wait(reserved, tokens_used + tokens - scope.tpm, now, cur)
            if refused is None or tokens_wait > wait:
                refused, wait = "tokens", tokens_wait
        full = scope.max_concurrency and in_flight + 1 > scope.max_concurrency
        if full and (refused is None or wait < 1.0):
            # Nothing says when a request in flight will finish: suggest a short pause.
            refused, wait = "concurrency", max(wait, 1.0)
        period: Period | None = None
        spent = 0
        spend_key = ""
        if scope.budget is not None:
            wall = self._periods.now()
            period = self._periods.current(scope.budget.period, wall)
            spend_key = scope.budget_keys(period.id)[3]
            spent = self._spent(spend_key, wall)
            if spent + cost > scope.budget_micro_usd:
                # Waiting a minute will not help: the budget refusal is the one the client hears of.
                refused, wait = "budget", period.end - wall
        if refused is None:
            if scope.rpm:
                requests = self._add(requests_key, requests, cur, 1)
                requests_used += 1
            if scope.tpm and tokens:
                reserved = self._add(tokens_key, reserved, cur, tokens)
                tokens_used += tokens
            if scope.max_concurrency and ticket is not None:
                self._in_flight.setdefault(flight_key, set()).add(ticket.id)
                in_flight += 1
            if period is not None and cost:
                spent += cost
                self._spend[spend_key] = (spent, period.end + SPEND_GRACE_S)
        return Outcome(
            admitted=refused is None,
            slot=cur,
            requests_used=requests_used,
            requests_reset_s=self._reset(requests, now, cur),
            tokens_used=tokens_used,
            tokens_reset_s=self._reset(reserved, now, cur),
            in_flight=in_flight,
            refused=refused,
            retry_after_s=wait,
            period=period,
            spent=spent,
        )

    async def settle(
        self,
        scope: Scope,
        *,
        slot: int,
        requests: int,
        tokens: int,
        ticket: Ticket | None,
        period: Period | None = None,
        cost: int = 0,
    ) -> None:
        requests_key, tokens_key, flight_key = scope.keys
        if ticket is not None and (flight := self._in_flight.get(flight_key)) is not None:
            flight.discard(ticket.id)
            if not flight:
                del self._in_flight[flight_key]
        if cost and period is not None and scope.budget is not None:
            # The reservation's own period, even when the next one has begun since.
            spend_key = scope.budget_keys(period.id)[3]
            counted = self._spend.get(spend_key)
            if counted is not None:
                self._spend[spend_key] = (max(0, counted[0] + cost), counted[1])
        if not (requests and scope.rpm) and not (tokens and scope.tpm):
            return
        cur = math.floor(self._clock() / self._width)
        if requests and scope.rpm:
            self._adjust(requests_key, slot, requests, cur)
        if tokens and scope.tpm:
            self._adjust(tokens_key, slot, tokens, cur)

    async def spent(self, scope: Scope) -> tuple[Period, int] | None:
        if scope.budget is None:
            return None
        now = self._periods.now()
        period = self._periods.current(scope.budget.period, now)
        return period, self._spent(scope.budget_keys(period.id)[3], now)

    async def aclose(self) -> None:
        return None

    def _spent(self, key: str, now: float) -> int:
        counted = self._spend.get(key)
        if counted is None:
            # A new period: forget the counters whose grace has passed (once per scope and period).
            for stale in [k for k, (_, expires) in self._spend.items() if expires <= now]:
                del self._spend[stale]
            return 0
        return counted[0]

    # The window

    def _load(self, key: str, first: int) -> _Window | None:
        """The key's window with the slots that left it dropped (None when nothing is counted)."""
        window = self._windows.get(key)
        if window is None:
            return None
        amounts = window.amounts
        while amounts:
            oldest = next(iter(amounts))
            if oldest >= first:
                return window
            window.used -= amounts.pop(oldest)
        del self._windows[key]
        return None

    def _add(self, key: str, window: _Window | None, cur: int, amount: int) -> _Window:
        if window is None:
            window = self._windows[key] = _Window()
        window.amounts[cur] = window.amounts.get(cur, 0) + amount
        window.used += amount
        return window

    def _adjust(self, key: str, slot: int, delta: int, cur: int) -> None:
        window = self._load(key, cur - self._slots)
        if window is not None and slot in window.amounts:
            old = window.amounts[slot]
            new = max(0, old + delta)
            window.amounts[slot] = new
            window.used += new - old
        elif delta > 0:
            # The reservation's slot has left the window: charge the excess now instead.
            self._add(key, window, cur, delta)

    def _wait(self, window: _Window | None, excess: int, now: float, cur: int) -> float:
        """Seconds until `excess` has left the window."""
        freed = 0
        if window is not None:
            for slot, amount in window.amounts.items():
                freed += amount
                if freed >= excess:
                    return (slot + self._slots + 1) * self._width - now
        return (cur + self._slots + 1) * self._width - now

    def _reset(self, window: _Window | None, now: float, cur: int) -> float:
        """Seconds until the oldest counted amount leaves the window."""
        if window is None or not window.amounts:
            return 0.0
        return (next(iter(window.amounts)) + self._slots + 1) * self._width - now


__all__ = ("MemoryLimiter",)
