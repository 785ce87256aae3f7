"""The hedge budget and the rolling p95 of first-event times (pure arithmetic, no I/O)."""

from __future__ import annotations

from gateway.routing.hedge import P95_MIN_SAMPLES, WINDOW, FirstEventTimes, HedgeBudget


def hedges_started(ratio: float, requests: int) -> int:
    budget, started = HedgeBudget(ratio), 0
    for _ in range(requests):
        budget.request()
        if budget.available():
            budget.take()
            started += 1
    return started


def test_budget_allows_one_plus_ratio_times_requests() -> None:
    assert hedges_started(0.2, 20) == 5
    assert hedges_started(0.1, 1000) == 101
    assert hedges_started(1.0, 50) == 50
    assert hedges_started(0.0, 50) == 0


def test_budget_saves_up_at_most_a_hundred_requests_worth() -> None:
    budget = HedgeBudget(0.1)
    for _ in range(10_000):
        budget.request()
    assert budget.credit == 10.0


def test_p95_waits_for_enough_samples_then_follows_the_window() -> None:
    times = FirstEventTimes()
    for _ in range(P95_MIN_SAMPLES - 1):
        times.add(0.01)
    assert times.p95 is None
    times.add(5.0)  # one outlier in 20: the nearest-rank p95 is the 19th smallest
    assert times.p95 == 0.01
    for _ in range(WINDOW):
        times.add(0.2)
    assert times.p95 == 0.2  # the old samples have left the window
