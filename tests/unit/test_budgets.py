"""Budgets: the spend counter checked and reserved with the rate decision, on the in-process store,
one real Redis and a real Redis Cluster; periods on an injected wall clock (no sleeps)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from adapters.canonical import Usage
from gateway.context import RequestInfo
from gateway.errors import InsufficientQuotaError
from gateway.limits import Grant, MemoryLimiter, RateLimits, Scope
from gateway.limits.base import Budget, BudgetPeriod, LimiterUnavailable, Periods, Price, budget_period
from gateway.limits.gate import BUDGET_HEADER
from gateway.translation.framing import AnswerStats
from tests.redis_server import RedisServer, command
from tests.unit.test_limits import scope

if TYPE_CHECKING:
    from tests.unit.conftest import LimiterFactory

pytestmark = pytest.mark.anyio

USD = 1_000_000  # micro-USD


def at(moment: str) -> float:
    return datetime.fromisoformat(moment).replace(tzinfo=UTC).timestamp()


class WallClock:
    """The limiter's wall clock, moved by the test."""

    def __init__(self, moment: str) -> None:
        self.now = at(moment)

    def __call__(self) -> float:
        return self.now


def budgeted(usd: float, period: BudgetPeriod = "day", **limits: int) -> Scope:
    return scope(budget=Budget(usd=usd, period=period), **limits)


@pytest.mark.parametrize(
    ("moment", "period", "id", "resets"),
    [
        ("2026-12-02T15:00:00", "day", "d20261202", "2026-12-03T00:00:00"),
        ("2026-12-02T23:59:59.999", "day", "d20261202", "2026-12-03T00:00:00"),
        ("2026-12-02T15:00:00", "week", "w2026-49", "2026-12-07T00:00:00"),  # a Wednesday
        ("2026-12-07T00:00:00", "week", "w2026-50", "2026-12-14T00:00:00"),  # Monday starts a week
        ("2027-01-03T12:00:00", "week", "w2026-53", "2027-01-04T00:00:00"),  # ISO year of the week
        ("2026-12-31T23:59:59", "month", "m202612", "2027-01-01T00:00:00"),
        ("2028-02-29T08:00:00", "month", "m202802", "2028-03-01T00:00:00"),
    ],
)
def test_periods_are_utc_days_iso_weeks_and_calendar_months(
    moment: str, period: BudgetPeriod, id: str, resets: str
) -> None:
    found = budget_period(period, at(moment))
    assert found.id == id
    assert found.end == at(resets)
    assert found.start <= at(moment) < found.end


async def test_a_burst_admits_exactly_what_the_budget_covers(make_limiter: LimiterFactory) -> None:
    clock = WallClock("2026-12-02T15:00:00")
    limiter = make_limiter(periods=Periods(clock))
    key = budgeted(1.0)
    outcomes = await asyncio.gather(
        *(limiter.acquire(key, tokens=0, ticket=None, cost=300_000) for _ in range(10))
    )
    admitted = [o for o in outcomes if o.admitted]
    assert sorted(o.spent for o in admitted) == [300_000, 600_000, 900_000]
    refused = [o for o in outcomes if not o.admitted]
    assert {o.refused for o in refused} == {"budget"}
    assert {o.spent for o in refused} == {900_000}
    assert refused[0].retry_after_s == pytest.approx(9 * 3600)  # until midnight UTC
    assert refused[0].period is not None
    assert refused[0].period.id == "d20261202"
    # A refusal reserved nothing: exactly the 100_000 left still fits, one micro-dollar more does not.
    assert (await limiter.acquire(key, tokens=0, ticket=None, cost=100_000)).spent == USD
    assert (await limiter.acquire(key, tokens=0, ticket=None, cost=1)).refused == "budget"
    assert (await limiter.acquire(key, tokens=0, ticket=None, cost=0)).admitted  # a free answer


async def test_settle_replaces_the_reservation_by_the_real_cost(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(periods=Periods(WallClock("2026-12-02T15:00:00")))
    key = budgeted(1.0, rpm=100)
    first = await limiter.acquire(key, tokens=0, ticket=None, cost=800_000)
    assert first.admitted
    assert not (await limiter.acquire(key, tokens=0, ticket=None, cost=300_000)).admitted
    await limiter.settle(
        key, slot=first.slot, requests=0, tokens=0, ticket=None, period=first.period, cost=-650_000
    )
    second = await limiter.acquire(key, tokens=0, ticket=None, cost=300_000)
    assert second.spent == 150_000 + 300_000
    # A give-back can never take the counter below zero.
    await limiter.settle(
        key, slot=second.slot, requests=-1, tokens=0, ticket=None, period=second.period, cost=-USD
    )
    assert (await limiter.acquire(key, tokens=0, ticket=None, cost=USD)).spent == USD


async def test_spent_reads_the_current_period_for_the_status_page(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(periods=Periods(WallClock("2026-12-02T15:00:00")))
    key = budgeted(1.0, period="week")
    assert await limiter.spent(Scope("key", "no-budget", rpm=5)) is None
    period, spent = await limiter.spent(key) or (None, -1)
    assert spent == 0
    await limiter.acquire(key, tokens=0, ticket=None, cost=250_000)
    period, spent = await limiter.spent(key) or (None, -1)
    assert spent == 250_000
    assert period is not None
    assert period.id == "w2026-49"
    assert period.ends_at == datetime(2026, 12, 7, tzinfo=UTC)


async def test_a_new_period_starts_from_zero_and_late_settles_go_to_their_own(
    make_limiter: LimiterFactory,
) -> None:
    clock = WallClock("2026-12-02T23:59:59")
    limiter = make_limiter(periods=Periods(clock))
    key = budgeted(1.0, "day")
    late = await limiter.acquire(key, tokens=0, ticket=None, cost=USD)
    assert late.admitted
    assert not (await limiter.acquire(key, tokens=0, ticket=None, cost=1)).admitted
    clock.now = at("2026-12-03T00:00:00")
    today = await limiter.acquire(key, tokens=0, ticket=None, cost=400_000)
    assert today.admitted
    assert today.spent == 400_000
    assert today.period is not None
    assert today.period.id == "d20261203"
    # The answer admitted yesterday ends today: its refund goes to yesterday's counter, not today's.
    await limiter.settle(
        key, slot=late.slot, requests=0, tokens=0, ticket=None, period=late.period, cost=-USD
    )
    assert (await limiter.acquire(key, tokens=0, ticket=None, cost=600_000)).spent == USD
    clock.now = at("2026-12-02T23:59:59.5")  # a replica whose clock is half a second behind
    assert (await limiter.acquire(key, tokens=0, ticket=None, cost=USD)).spent == USD


@pytest.mark.parametrize("period", ["week", "month"])
async def test_week_and_month_budgets_roll_over(make_limiter: LimiterFactory, period: BudgetPeriod) -> None:
    clock = WallClock("2026-11-30T10:00:00")  # a Monday, in November
    limiter = make_limiter(periods=Periods(clock))
    key = budgeted(0.5, period)
    assert (await limiter.acquire(key, tokens=0, ticket=None, cost=500_000)).admitted
    clock.now = at("2026-12-06T23:00:00")  # same ISO week, next month
    assert (await limiter.acquire(key, tokens=0, ticket=None, cost=500_000)).admitted is (period == "month")
    clock.now = at("2026-12-07T00:00:00")  # next week, same month as the line above
    assert (await limiter.acquire(key, tokens=0, ticket=None, cost=1)).admitted is (period == "week")


async def test_a_budget_and_rate_limits_are_one_all_or_nothing_decision(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(periods=Periods(WallClock("2026-12-02T15:00:00")))
    key = budgeted(1.0, rpm=2, tpm=100)
    assert (await limiter.acquire(key, tokens=10, ticket=None, cost=600_000)).admitted
    over_budget = await limiter.acquire(key, tokens=10, ticket=None, cost=600_000)
    assert over_budget.refused == "budget"
    assert over_budget.requests_used == 1  # nothing counted
    assert over_budget.tokens_used == 10
    assert (await limiter.acquire(key, tokens=10, ticket=None, cost=400_000)).admitted
    # The rpm refuses now, and the budget (exactly used up) is not charged by the refused request.
    refused = await limiter.acquire(key, tokens=10, ticket=None, cost=0)
    assert refused.refused == "requests"
    assert refused.spent == USD


async def test_redis_keeps_the_spend_beside_the_scopes_other_counters(redis_server: RedisServer) -> None:
    from gateway.limits.redis import RedisLimiter

    limiter = RedisLimiter.from_url(redis_server.url, periods=Periods(WallClock("2026-12-02T15:00:00")))
    try:
        key = budgeted(1.0, rpm=10)
        plain = scope(rpm=10)
        assert (await limiter.acquire(key, tokens=0, ticket=None, cost=1234)).admitted
        assert (await limiter.acquire(plain, tokens=0, ticket=None)).period is None
        spend = f"llmgw:{{key:{key.name}}}:spend:d20261202"
        assert command(redis_server.port, "GET", spend) == b"1234"
        # It expires a day after the period ends (2026-12-04 00:00 UTC on the limiter's clock).
        ttl_ms = int(command(redis_server.port, "PTTL", spend)[1:])
        assert 0 <= at("2026-12-04T00:00:00") * 1000 - at("2026-12-02T15:00:00") * 1000 - ttl_ms < 60_000
        # A scope without a budget has no spend counter.
        assert command(redis_server.port, "EXISTS", f"llmgw:{{key:{plain.name}}}:spend:d20261202") == b":0"
    finally:
        await limiter.aclose()


PRICE = Price(input_per_mtok=100.0, output_per_mtok=1000.0)  # 100 and 1000 micro-USD per token


def gate() -> RateLimits:
    return RateLimits(MemoryLimiter(periods=Periods(WallClock("2026-12-02T15:00:00"))), models={})


async def admit(
    limits: RateLimits,
    scopes: tuple[Scope, ...],
    prompt_tokens: int,
    max_tokens: int,
    *,
    info: RequestInfo | None = None,
    requests: int = 1,
) -> Grant:
    """An admitted request at PRICE (a refusal raises)."""
    grant = await limits.admit(
        scopes,
        "m",
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        explicit_max_tokens=True,
        info=info or RequestInfo(),
        requests=requests,
        price=PRICE,
    )
    assert grant is not None
    return grant


async def test_the_gate_reserves_the_most_possible_cost_and_settles_the_real_one() -> None:
    limits = gate()
    key = budgeted(0.05)  # 50_000 micro-USD
    info = RequestInfo()
    # 10 prompt tokens and max_tokens 20, 2 choices: 2 x (10 x 100 + 20 x 1000) = 42_000 reserved.
    grant = await admit(limits, (key,), 10, 20, info=info, requests=2)
    assert grant.headers[BUDGET_HEADER] == "0.008000"  # after both choices' 21_000
    with pytest.raises(InsufficientQuotaError) as refused:
        await admit(limits, (key,), 10, 20)
    error = refused.value
    assert (error.status_code, error.error_type, error.code) == (
        429,
        "insufficient_quota",
        "insufficient_quota",
    )
    assert error.headers["x-should-retry"] == "false"
    assert error.headers[BUDGET_HEADER] == "0.008000"
    assert f"key {key.name}" in error.message
    assert "0.042000 of its 0.050000 USD per day" in error.message
    assert "resets at 2026-12-03 00:00 UTC" in error.message
    # The answer: 10 prompt and 15 completion tokens in all, at a cheaper target than the maximum.
    info.price = Price(input_per_mtok=100.0, output_per_mtok=500.0)
    info.stats = AnswerStats()
    info.stats.usage = Usage(prompt_tokens=10, completion_tokens=15)
    await grant.settle(25)
    after = await admit(limits, (key,), 0, 0)
    assert after.headers[BUDGET_HEADER] == f"{(50_000 - 10 * 100 - 15 * 500) / USD:.6f}"


async def test_an_answer_that_never_came_costs_nothing_and_a_team_refusal_gives_back() -> None:
    limits = gate()
    key = budgeted(1.0)
    team = Scope("team", key.name, budget=Budget(usd=0.01, period="month"))
    info = RequestInfo()
    grant = await admit(limits, (key,), 100, 100, info=info)
    await grant.settle(0)  # no target answered: info.price stays None
    with pytest.raises(InsufficientQuotaError) as refused:  # 110_000 > the team's 10_000
        await admit(limits, (key, team), 100, 100, info=info)
    assert f"team {key.name}" in refused.value.message
    assert "resets at 2027-01-01 00:00 UTC" in refused.value.message
    assert info.rate_limit == "refused_budget"
    full = await admit(limits, (key,), 0, 1000)
    assert full.headers[BUDGET_HEADER] == "0.000000"  # the key's reservation was given back: all of it fits


async def test_scopes_without_a_budget_reserve_no_cost() -> None:
    grant = await admit(gate(), (scope(rpm=5),), 10, 10)
    assert BUDGET_HEADER not in grant.headers
    assert budgeted(1.0).limited
    assert not scope().limited


async def test_reading_the_spend_from_a_stalled_redis_fails_instead_of_hanging() -> None:
    """The status page reads each budget's spend: a Redis that accepts but does not answer must give
    `LimiterUnavailable` (the page then shows the spend as unavailable), not hold the page forever."""
    from gateway.limits.redis import RedisLimiter

    with RedisServer() as server:
        limiter = RedisLimiter.from_url(server.url)
        key = budgeted(1.0)
        assert await limiter.spent(key) is not None  # connected
        # Paused past the read's own bound (1 s); a pause lifts itself (UNPAUSE would wait too).
        assert command(server.port, "CLIENT", "PAUSE", "15000", "ALL") == b"+OK"
        try:
            with pytest.raises(LimiterUnavailable):
                await asyncio.wait_for(limiter.spent(key), 30)  # a hang guard, not the bound tested
        finally:
            await limiter.aclose()
