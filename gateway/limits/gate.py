"""Applies the limits to one request: which scopes, how many tokens to reserve, and what the client sees.

A request is subject to its key's limits and to its model's (`models.<name>.rpm/tpm`), each scope one
atomic store call; when a later scope refuses, the earlier reservations are given back. The store's
answers become OpenAI's `x-ratelimit-*` headers, or a 429 with `Retry-After` and OpenAI's error body.
When the store is unreachable, `rate_limit_failure_mode` decides: `open` serves without limits
(one warning per outage), `closed` answers 503.

Budgets ride on the same calls: a scope with a budget also reserves the request's most possible
cost (prompt estimate at the input price plus max output tokens at the output price, per choice, at
the model's highest target prices) in the same store call as its rate decision, and `settle`
replaces it by the real cost at the answering target's price. Scopes without a budget pass no cost
and touch no spend counter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Literal

from gateway.errors import (
    InsufficientQuotaError,
    RateLimitError,
    ServiceUnavailableError,
    TokenRateLimitError,
)
from gateway.ids import hex_id
from gateway.limits.base import MICRO_USD, LimiterUnavailable, Ticket, format_duration
from gateway.observability.logs import get_logger

if TYPE_CHECKING:
    from gateway.context import RequestInfo
    from gateway.limits.base import Limiter, Outcome, Price, Scope

MAX_RETRY_AFTER_S: Final = 60
"""The SDK honours `Retry-After` only up to 60 s (older versions) and falls back to short backoffs."""

log = get_logger("gateway.limits")

BUDGET_HEADER: Final = "x-gateway-budget-remaining-usd"
"""The tightest budget's remaining USD after this request's reservation (documented in control-plane.md)."""

_Held = tuple["Scope", "Outcome", int, int, Ticket | None]
"""A reservation: scope, the store's answer, tokens reserved, micro-USD reserved, ticket."""


class Grant:
    """An admitted request's reservations; `settle` charges its real usage and frees its slots."""

    __slots__ = ("_gate", "_held", "_info", "_requests", "headers", "settled")

    def __init__(self, gate: RateLimits, info: RequestInfo, requests: int = 1) -> None:
        self._gate = gate
        self._info = info
        self._requests = requests
        self._held: list[_Held] = []
        self.headers: dict[str, str] = {}
        """OpenAI's `x-ratelimit-*` headers (and the budget's) for the response."""
        self.settled = False

    async def settle(self, used_tokens: int) -> None:
        """Replace the token reservation by `used_tokens`, a cost reservation by the answer's real
        cost (at `info.price`, the answering target's: nothing when no target answered), and release
        concurrency. Idempotent."""
        if self.settled:
            return
        self.settled = True
        limiter = self._gate.limiter
        requests = self._requests
        used_cost = -1  # worked out on the first scope with a budget
        for position, (scope, outcome, reserved, reserved_cost, ticket) in enumerate(self._held):
            delta = _share(used_tokens, requests, position) - reserved if scope.tpm else 0
            cost_delta = 0
            if outcome.period is not None:
                if used_cost < 0:
                    used_cost = self._cost()
                cost_delta = _share(used_cost, requests, position) - reserved_cost
            if not delta and not cost_delta and ticket is None:
                continue
            try:
                await limiter.settle(
                    scope,
                    slot=outcome.slot,
                    requests=0,
                    tokens=delta,
                    ticket=ticket,
                    period=outcome.period,
                    cost=cost_delta,
                )
            except LimiterUnavailable as exc:
                self._gate.store_failed(exc)

    def _cost(self) -> int:
        """The answer's real cost in micro-USD, from its usage (or estimate) at the answering price."""
        info = self._info
        price = info.price
        if price is None:
            return 0
        return price.micro_usd(info.prompt_tokens, info.completion_tokens)

    async def _give_back(self) -> None:
        """Undo every reservation: the request is not going ahead."""
        self.settled = True
        for scope, outcome, reserved, reserved_cost, ticket in self._held:
            try:
                await self._gate.limiter.settle(
                    scope,
                    slot=outcome.slot,
                    requests=-1,
                    tokens=-reserved,
                    ticket=ticket,
                    period=outcome.period,
                    cost=-reserved_cost,
                )
            except LimiterUnavailable as exc:
                self._gate.store_failed(exc)


class RateLimits:
    """The gateway's limits: the store, the per-model scopes, the failure mode and outage accounting."""

    def __init__(
        self,
        limiter: Limiter,
        *,
        models: dict[str, Scope],
        failure_mode: Literal["open", "closed"] = "open",
        store: str = "memory",
    ) -> None:
        self.limiter = limiter
        self.store = store
        """Where the counts live, for logs: `memory` or the Redis address without credentials."""
        self._models: dict[str, Scope] = {}
        self.set_model_scopes(models)
        self._fail_open = failure_mode == "open"
        self.store_failures = 0
        """Store calls that failed (decisions taken without the store, and lost settlements): a metric."""
        self.store_outages = 0
        """Outages seen (each logged once): a metric."""
        self.store_available = True
        self.on_store_failure: Callable[[], None] | None = None
        """Called on every failed store call (the metrics' counter)."""

    def set_model_scopes(self, models: dict[str, Scope]) -> None:
        """The per-model limits from now on (a config reload): one assignment, so a request sees
        the old scopes or the new ones, never a mix. Counts live in the store under the model's
        name, so a changed limit applies to what was already counted in the window."""
        self._models = {name: scope for name, scope in models.items() if scope.limited}

    async def admit(
        self,
        key_scopes: tuple[Scope, ...],
        model: str,
        *,
        prompt_tokens: int,
        max_tokens: int,
        explicit_max_tokens: bool,
        info: RequestInfo,
        requests: int = 1,
        price: Price | None = None,
    ) -> Grant | None:
        """Reserve capacity for a request in every scope that applies, before any upstream call.

        `key_scopes`: the limited scopes of the caller's key (its own, then its team's), or none.

        `requests` counts a request that makes several upstream calls (`n` choices) as that many
        requests, each reserving `prompt_tokens + max_tokens`; all or nothing, as for one.
        `price`: the model's highest target price; a scope with a budget reserves that many
        requests' most possible cost at it.
        Returns None when no limit applies (or the store is down and the failure mode is open).

        Raises:
            RateLimitError: a limit refused the request (429 with `Retry-After`).
            InsufficientQuotaError: a budget cannot cover the request (429, `x-should-retry: false`).
            ServiceUnavailableError: the store is down and the failure mode is closed (503).
        """
        model_scope = self._models.get(model)
        if not key_scopes and model_scope is None:
            return None
        scopes = [*key_scopes, model_scope] if model_scope is not None else key_scopes
        estimate = prompt_tokens + max_tokens
        grant = Grant(self, info, requests)
        try:
            for scope in scopes:
                cost = 0
                if scope.budget is not None and price is not None:
                    cost = price.micro_usd(prompt_tokens, max_tokens)
                reserve = 0
                if scope.tpm:
                    if prompt_tokens * requests > scope.tpm or (
                        explicit_max_tokens and estimate * requests > scope.tpm
                    ):
                        info.rate_limit = "too_large"
                        raise _too_large(scope, prompt_tokens, max_tokens, explicit_max_tokens, requests)
                    # Without an explicit max_tokens the default one may exceed a small limit: reserve
                    # at most the limit, and the real usage replaces the reservation afterwards.
                    reserve = min(estimate, scope.tpm // requests)
                for _ in range(requests):
                    ticket = Ticket(hex_id(8)) if scope.max_concurrency else None
                    outcome = await self.limiter.acquire(scope, tokens=reserve, ticket=ticket, cost=cost)
                    if not self.store_available:
                        # Recovery is the store answering, whatever it decided: a 429 counts too,
                        # or the next outage would go unreported.
                        self._recovered()
                    if not outcome.admitted:
                        await grant._give_back()
                        info.rate_limit = f"refused_{outcome.refused}"
                        if outcome.refused == "budget":
                            raise _over_budget(scope, outcome, cost)
                        raise _refusal(scope, outcome, reserve)
                    grant._held.append((scope, outcome, reserve, cost, ticket))
        except LimiterUnavailable as exc:
            await grant._give_back()
            self.store_failed(exc)
            info.rate_limit = "store_unavailable"
            if self._fail_open:
                return None
            raise ServiceUnavailableError(
                "Rate limits cannot be checked right now (the gateway's rate-limit store is unreachable), "
                "so the request was not processed. Please retry shortly.",
                code="rate_limit_store_unavailable",
                headers={"retry-after": "1"},
            ) from None
        info.rate_limit = "admitted"
        grant.headers = _headers(grant._held)
        return grant

    def store_failed(self, exc: LimiterUnavailable) -> None:
        self.store_failures += 1
        if self.on_store_failure is not None:
            self.on_store_failure()
        if self.store_available:
            self.store_available = False
            self.store_outages += 1
            log.warning(
                "rate_limit_store_unavailable",
                store=self.store,
                error=str(exc),
                failure_mode="open: serving without limits" if self._fail_open else "closed: answering 503",
            )

    def _recovered(self) -> None:
        self.store_available = True
        log.info("rate_limit_store_recovered", store=self.store, failed_calls=self.store_failures)

    async def aclose(self) -> None:
        await self.limiter.aclose()


def _headers(held: list[_Held]) -> dict[str, str]:
    """OpenAI's headers, for the scope closest to its limit when two apply."""
    headers: dict[str, str] = {}
    requests: tuple[int, Scope, Outcome] | None = None
    tokens: tuple[int, Scope, Outcome] | None = None
    budget_left: int | None = None
    for scope, outcome, _, _, _ in held:
        if outcome.period is not None:
            left = scope.budget_micro_usd - outcome.spent
            if budget_left is None or left < budget_left:
                budget_left = left
        if scope.rpm:
            left = scope.rpm - outcome.requests_used
            if requests is None or left < requests[0]:
                requests = (left, scope, outcome)
        if scope.tpm:
            left = scope.tpm - outcome.tokens_used
            if tokens is None or left < tokens[0]:
                tokens = (left, scope, outcome)
    if requests is not None:
        left, scope, outcome = requests
        headers["x-ratelimit-limit-requests"] = str(scope.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, left))
        headers["x-ratelimit-reset-requests"] = format_duration(outcome.requests_reset_s)
    if tokens is not None:
        left, scope, outcome = tokens
        headers["x-ratelimit-limit-tokens"] = str(scope.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, left))
        headers["x-ratelimit-reset-tokens"] = format_duration(outcome.tokens_reset_s)
    if budget_left is not None:
        headers[BUDGET_HEADER] = usd(max(0, budget_left))
    return headers


def _share(total: int, requests: int, position: int) -> int:
    """The part of `total` the reservation at `position` settles: a request counted n times (n
    choices) splits it evenly, the remainder going to the first ones."""
    if requests == 1:
        return total
    return total // requests + (position % requests < total % requests)


def usd(micro_usd: int) -> str:
    """Micro-USD as a USD amount with all its digits: `0.041234`."""
    return f"{micro_usd / MICRO_USD:.6f}"


def _over_budget(scope: Scope, outcome: Outcome, cost: int) -> InsufficientQuotaError:
    period = outcome.period
    per = scope.budget.period if scope.budget is not None else "period"
    resets = f"{period.ends_at:%Y-%m-%d %H:%M}" if period is not None else "the end of the period"
    who = f"key {scope.name}" if scope.kind == "key" else scope.label
    return InsufficientQuotaError(
        f"Budget exceeded for {who}: {usd(outcome.spent)} of its {usd(scope.budget_micro_usd)} USD per "
        f"{per} is spent or reserved, and this request may cost up to {usd(cost)} USD. The "
        f"budget resets at {resets} UTC.",
        # Retrying cannot help before the period ends: the OpenAI SDKs do not retry with this.
        headers={
            "x-should-retry": "false",
            BUDGET_HEADER: usd(max(0, scope.budget_micro_usd - outcome.spent)),
        },
    )


def _refusal(scope: Scope, outcome: Outcome, reserve: int) -> RateLimitError:
    wait = outcome.retry_after_s
    later = f"Please try again in {format_duration(wait)}."
    if outcome.refused == "tokens":
        message = (
            f"Rate limit reached for {scope.label} on tokens per min (TPM): Limit {scope.tpm}, "
            f"Used {outcome.tokens_used}, Requested {reserve}. {later}"
        )
    elif outcome.refused == "concurrency":
        message = (
            f"Concurrency limit reached for {scope.label}: Limit {scope.max_concurrency} requests in "
            f"flight, {outcome.in_flight} in flight. Please try again when one of them has finished."
        )
    else:
        message = (
            f"Rate limit reached for {scope.label} on requests per min (RPM): Limit {scope.rpm}, "
            f"Used {outcome.requests_used}, Requested 1. {later}"
        )
    headers = _headers([(scope, outcome, reserve, 0, None)])
    headers["retry-after"] = str(min(MAX_RETRY_AFTER_S, max(1, math.ceil(wait))))
    error_class = TokenRateLimitError if outcome.refused == "tokens" else RateLimitError
    return error_class(message, headers=headers)


def _too_large(
    scope: Scope, prompt_tokens: int, max_tokens: int, explicit: bool, requests: int = 1
) -> RateLimitError:
    requested = (prompt_tokens + max_tokens if explicit else prompt_tokens) * requests
    detail = f"about {prompt_tokens} prompt tokens" + (f" + max_tokens {max_tokens}" if explicit else "")
    if requests > 1:
        detail = f"{requests} choices of {detail}"
    return TokenRateLimitError(
        f"Request too large for {scope.label} on tokens per min (TPM): Limit {scope.tpm}, Requested "
        f"{requested} ({detail}). The input or max_tokens must be reduced for it to ever fit.",
        # Waiting will not help: tell the SDK not to retry.
        headers={"x-should-retry": "false"},
    )


__all__ = ("BUDGET_HEADER", "MAX_RETRY_AFTER_S", "Grant", "RateLimits", "usd")
