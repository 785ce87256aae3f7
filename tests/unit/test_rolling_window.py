"""The per-target rolling window behind `/status`: counts, percentiles and expiry of old buckets."""

from __future__ import annotations

from gateway.routing.window import SLOT_S, WINDOW_S, RollingWindow


def test_counts_and_percentiles() -> None:
    window = RollingWindow()
    for _ in range(90):
        window.record(0.010, error=False, now=100.0)
    for _ in range(10):
        window.record(1.0, error=True, now=101.0)
    figures = window.figures(now=102.0)
    assert (figures.requests, figures.errors, figures.window_s) == (100, 10, WINDOW_S)
    assert figures.p50_ms == 10.0
    assert figures.p95_ms == 1000.0


def test_old_buckets_leave_the_window() -> None:
    window = RollingWindow()
    window.record(0.05, error=True, now=0.0)
    window.record(0.05, error=False, now=WINDOW_S - 1)
    assert window.figures(now=WINDOW_S - 1).requests == 2
    later = window.figures(now=WINDOW_S + SLOT_S)
    assert (later.requests, later.errors) == (1, 0)
    assert window.figures(now=10 * WINDOW_S).p50_ms is None


def test_a_reused_bucket_starts_from_zero() -> None:
    window = RollingWindow()
    window.record(0.05, error=True, now=5.0)
    window.record(0.02, error=False, now=5.0 + WINDOW_S)  # same ring slot, a new period
    figures = window.figures(now=5.0 + WINDOW_S)
    assert (figures.requests, figures.errors, figures.p95_ms) == (1, 0, 25.1)  # the bound above 20 ms
