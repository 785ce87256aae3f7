"""The rate limiter's contract, shared by the in-process (`memory.py`) and the Redis (`redis.py`) store.

Algorithm: a sliding window of `SLOTS` equal slots (60 one-second slots for the one-minute window). Each
admitted request adds 1 to the current slot of its requests counter and its token reservation to the
current slot of its tokens counter; a slot's amounts count until the whole slot has left the window,
so an amount admitted at time t counts from t until between t + window and t + window + one slot.
Hence no window of the window's length ever holds more than the limit (no 2x burst at window edges,
unlike fixed windows), and a burst into an idle key admits exactly the limit. Each counter is a
handful of integers whatever the traffic, and a decision costs O(1) amortised work.

Concurrency is a set of in-flight tickets, each a lease that expires unless renewed, so the slots held
by a crashed replica free themselves.
"""

from __future__ import annotations

import calendar
import hashlib
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final, Literal, Protocol

import msgspec

WINDOW_S: Final = 60.0
"""Per-minute limits: the window is one minute. Tests shorten it through the limiters' constructors."""
SLOTS: Final = 60
"""Slots per window: the resolution at which used capacity returns (one second for a minute)."""
LEASE_S: Final = 30.0
"""How long an in-flight ticket lives without renewal; its owner renews it every third of that."""
KEY_PREFIX: Final = "llmgw"

ScopeKind = Literal["key", "team", "model"]
Refusal = Literal["requests", "tokens", "concurrency", "budget"]


class Scope:
    """One set of limits: an API key's, a team's (shared by its keys), or a public model's (shared by
    every key)."""

    __slots__ = (
        "_base",
        "_spend",
        "budget",
        "budget_micro_usd",
        "keys",
        "kind",
        "max_concurrency",
        "name",
        "rpm",
        "tpm",
    )

    def __init__(
        self,
        kind: ScopeKind,
        name: str,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        max_concurrency: int | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.kind: ScopeKind = kind
        self.budget = budget
        """The key's or team's spend cap, or None (models have none)."""
        self.budget_micro_usd = round(budget.usd * MICRO_USD) if budget is not None else 0
        self.name = name
        self.rpm = rpm or 0
        self.tpm = tpm or 0
        self.max_concurrency = max_concurrency or 0
        # One hash tag per scope: all of a scope's counters live in one Redis Cluster slot, so one
        # script can update them atomically, while different scopes spread over the cluster.
        tag = f"{kind}:{name}"
        if "{" in tag or "}" in tag:
            tag = f"{kind}#{hashlib.sha256(name.encode()).hexdigest()[:16]}"
        base = f"{KEY_PREFIX}:{{{tag}}}"
        self._base = base
        self.keys: tuple[str, str, str] = (f"{base}:rpm", f"{base}:tpm", f"{base}:inflight")
        """Store keys of the requests window, the tokens window and the in-flight leases."""
        self._spend: tuple[str, tuple[str, str, str, str]] | None = None

    def budget_keys(self, period_id: str) -> tuple[str, str, str, str]:
        """`keys` plus the spend counter of the period `period_id` (cached: it changes once a period)."""
        spend = self._spend
        if spend is None or spend[0] != period_id:
            spend = self._spend = (period_id, (*self.keys, f"{self._base}:spend:{period_id}"))
        return spend[1]

    @property
    def limited(self) -> bool:
        return bool(self.rpm or self.tpm or self.max_concurrency or self.budget is not None)

    @property
    def label(self) -> str:
        """How error messages name the scope (never a secret: key ids and model names only)."""
        return self.name if self.kind == "key" else f"{self.kind} {self.name}"

    def __repr__(self) -> str:
        return (
            f"Scope({self.kind}={self.name!r}, rpm={self.rpm}, tpm={self.tpm}, max={self.max_concurrency}, "
            f"budget={self.budget})"
        )


BudgetPeriod = Literal["day", "week", "month"]


class Budget(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A spend cap in USD per UTC calendar period, for a key or a team."""

    usd: Annotated[float, msgspec.Meta(ge=0)]
    """The most the key (or team) may spend per period, in US dollars."""
    period: BudgetPeriod
    """`day`, `week` (from Monday) or `month`, in UTC."""


MICRO_USD: Final = 1_000_000
"""Costs are counted in integer micro-dollars (exact sums in Redis, no float drift)."""

SPEND_GRACE_S: Final = 86_400
"""A period's spend counter outlives the period by a day: a request admitted just before the end
settles into it, and the status page can still show the period that just ended."""


class Period:
    """One budget period: its id (part of the spend counter's name) and when it ends (UTC)."""

    __slots__ = ("end", "ends_at", "id", "start")

    def __init__(self, id: str, starts_at: datetime, ends_at: datetime) -> None:
        self.id = id
        """`d20261202` (UTC day), `w2026-49` (ISO week, from Monday) or `m202612` (calendar month)."""
        self.ends_at = ends_at
        """The first instant of the next period: when the budget resets."""
        self.start = starts_at.timestamp()
        self.end = ends_at.timestamp()
        """`ends_at` as a Unix time."""


def budget_period(period: BudgetPeriod, now: float) -> Period:
    """The period containing `now` (a Unix time, UTC)."""
    moment = datetime.fromtimestamp(now, UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return Period(f"d{day:%Y%m%d}", day, day + timedelta(days=1))
    if period == "week":
        year, week, weekday = moment.isocalendar()
        monday = day - timedelta(days=weekday - 1)
        return Period(f"w{year}-{week:02d}", monday, monday + timedelta(days=7))
    first = day.replace(day=1)
    days = calendar.monthrange(moment.year, moment.month)[1]
    return Period(f"m{moment:%Y%m}", first, first + timedelta(days=days))


class Periods:
    """The current period of each kind on a wall clock, worked out once per period (a decision then
    costs one clock read and one comparison)."""

    __slots__ = ("_clock", "_current")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._current: dict[BudgetPeriod, Period] = {}

    def now(self) -> float:
        return self._clock()

    def current(self, period: BudgetPeriod, now: float) -> Period:
        known = self._current.get(period)
        if known is None or not (known.start <= now < known.end):
            known = self._current[period] = budget_period(period, now)
        return known


class Price(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What a model costs, in US dollars per million tokens."""

    input_per_mtok: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Per million prompt (input) tokens."""
    output_per_mtok: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Per million completion (output) tokens."""

    def micro_usd(self, input_tokens: int, output_tokens: int) -> int:
        """The cost of one answer in micro-dollars, rounded up (a budget never under-counts)."""
        # USD per million tokens is micro-USD per token.
        return math.ceil(input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok)


class Ticket:
    """Identifies one request's in-flight lease (only scopes with `max_concurrency` hand them out)."""

    __slots__ = ("id",)

    def __init__(self, id: str) -> None:
        self.id = id


class Outcome:
    """A store's answer for one scope. Usage figures include this request when it was admitted."""

    __slots__ = (
        "admitted",
        "budget_resets_at",
        "in_flight",
        "period",
        "refused",
        "requests_reset_s",
        "requests_used",
        "retry_after_s",
        "slot",
        "spent",
        "tokens_reset_s",
        "tokens_used",
    )

    def __init__(
        self,
        *,
        admitted: bool,
        slot: int,
        requests_used: int = 0,
        requests_reset_s: float = 0.0,
        tokens_used: int = 0,
        tokens_reset_s: float = 0.0,
        in_flight: int = 0,
        refused: Refusal | None = None,
        retry_after_s: float = 0.0,
        period: Period | None = None,
        spent: int = 0,
    ) -> None:
        self.admitted = admitted
        self.slot = slot
        """The slot the reservation went into; `settle` needs it to correct the right amount."""
        self.requests_used = requests_used
        self.requests_reset_s = requests_reset_s
        """Until the oldest counted request leaves the window (`remaining` next goes up)."""
        self.tokens_used = tokens_used
        self.tokens_reset_s = tokens_reset_s
        self.in_flight = in_flight
        self.refused = refused
        """Which limit refused the request (the one needing the longest wait), if any."""
        self.retry_after_s = retry_after_s
        """When refused: until the request would fit (every refusing limit considered)."""
        self.period = period
        """The budget period the cost was reserved in (None without a budget); `settle` needs it."""
        self.spent = spent
        """Micro-USD counted in the period, this request's reservation included when admitted."""


class LimiterUnavailable(Exception):
    """The shared store could not answer; the message says how, without secrets."""


class Limiter(Protocol):
    """A rate-limit store. `acquire` is one atomic check-and-reserve for one scope."""

    async def acquire(self, scope: Scope, *, tokens: int, ticket: Ticket | None, cost: int = 0) -> Outcome:
        """Admit one request reserving `tokens` and, when the scope has a budget, `cost` micro-USD in
        the current period; or refuse it and change nothing (all or nothing).

        Raises:
            LimiterUnavailable: the store cannot be reached.
        """
        ...

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
        """Correct an admitted request's counts by `requests`/`tokens`, its spend in `period` by `cost`
        micro-USD, and release its ticket.

        Raises:
            LimiterUnavailable: the store cannot be reached (the ticket is still released locally,
                so its lease expires on its own).
        """
        ...

    async def spent(self, scope: Scope) -> tuple[Period, int] | None:
        """The scope's current budget period and its spend so far in micro-USD (reservations of
        requests still in flight included); None without a budget. For the status page, never on
        the request path.

        Raises:
            LimiterUnavailable: the store cannot be reached.
        """
        ...

    async def aclose(self) -> None: ...


def format_duration(seconds: float) -> str:
    """A duration written the way OpenAI writes rate-limit resets: `12ms`, `1s`, `8.64s`, `6m0s`."""
    ms = max(0, round(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    minutes, ms = divmod(ms, 60_000)
    hours, minutes = divmod(minutes, 60)
    secs = f"{ms // 1000}" if ms % 1000 == 0 else f"{ms / 1000:.3f}".rstrip("0")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


__all__ = (
    "KEY_PREFIX",
    "LEASE_S",
    "MICRO_USD",
    "SLOTS",
    "SPEND_GRACE_S",
    "WINDOW_S",
    "Budget",
    "BudgetPeriod",
    "Limiter",
    "LimiterUnavailable",
    "Outcome",
    "Period",
    "Periods",
    "Price",
    "Refusal",
    "Scope",
    "ScopeKind",
    "Ticket",
    "budget_period",
    "format_duration",
)
