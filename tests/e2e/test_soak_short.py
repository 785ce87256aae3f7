"""The soak runner (`tests/soak.py`, `make soak` for minutes) in its short form: steady mixed load with
injected faults for 20 s, and nothing may grow between the first and the last seconds."""

from __future__ import annotations

from tests.soak import run_soak


def test_a_short_soak_holds_steady_and_leaks_nothing() -> None:
    report = run_soak(duration_s=20, concurrency=16, fault_rate=0.05, warmup_s=2)
    print("\n" + report.render())
    assert report.requests > 500  # the load really ran (figures are printed, not asserted)
    assert report.faults_injected > 10
    assert not report.problems, report.render()
