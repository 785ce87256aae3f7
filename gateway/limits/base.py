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

import hashlib
import math
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
Refusal = Literal["requests", "tokens", "concurrency"]


class Scope:
    """One set of limits: an API key's, a team's (shared by its keys), or a public model's (shared by
    every key)."""

    __slots__ = ("budget", "keys", "kind", "max_concurrency", "name", "rpm", "tpm")

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
        self.keys: tuple[str, str, str] = (f"{base}:rpm", f"{base}:tpm", f"{base}:inflight")
        """Store keys of the requests window, the tokens window and the in-flight leases."""

    @property
    def limited(self) -> bool:
        return bool(self.rpm or self.tpm or self.max_concurrency)

    @property
    def label(self) -> str:
        """How error messages name the scope (never a secret: key ids and model names only)."""
        return self.name if self.kind == "key" else f"{self.kind} {self.name}"

    def __repr__(self) -> str:
        return f"Scope({self.kind}={self.name!r}, rpm={self.rpm}, tpm={self.tpm}, max={self.max_concurrency})"


BudgetPeriod = Literal["day", "week", "month"]


class Budget(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A spend cap in USD per UTC calendar period, for a key or a team."""

    usd: Annotated[float, msgspec.Meta(ge=0)]
    """The most the key (or team) may spend per period, in US dollars."""
    period: BudgetPeriod
    """`day`, `week` (from Monday) or `month`, in UTC."""


MICRO_USD: Final = 1_000_000
"""Costs are counted in integer micro-dollars (exact sums in Redis, no float drift)."""


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
        "in_flight",
        "refused",
        "requests_reset_s",
        "requests_used",
        "retry_after_s",
        "slot",
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


class LimiterUnavailable(Exception):
    """The shared store could not answer; the message says how, without secrets."""


class Limiter(Protocol):
    """A rate-limit store. `acquire` is one atomic check-and-reserve for one scope."""

    async def acquire(self, scope: Scope, *, tokens: int, ticket: Ticket | None) -> Outcome:
        """Admit one request reserving `tokens`, or refuse it and change nothing (all or nothing).

        Raises:
            LimiterUnavailable: the store cannot be reached.
        """
        ...

    async def settle(
        self, scope: Scope, *, slot: int, requests: int, tokens: int, ticket: Ticket | None
    ) -> None:
        """Correct an admitted request's counts by `requests`/`tokens` and release its ticket.

        Raises:
            LimiterUnavailable: the store cannot be reached (the ticket is still released locally,
                so its lease expires on its own).
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
    "WINDOW_S",
    "Budget",
    "BudgetPeriod",
    "Limiter",
    "LimiterUnavailable",
    "Outcome",
    "Price",
    "Refusal",
    "Scope",
    "ScopeKind",
    "Ticket",
    "format_duration",
)
