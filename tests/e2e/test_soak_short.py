"""The soak runner (`tests/soak.py`, `make soak` for minutes) in its short form: steady mixed load with
injected faults for 20 s, and nothing may grow between the first and the last seconds."""

from __future__ import annotations

from tests.soak import run_soak


def test_a_short_soak_holds_steady_and_leaks_nothing() -> None:
    report = run_soak(duration_s=20, concurrency=16, fault_rate=0.05, warmup_s=2)
    print("\n" + report.render())
    # The load really ran (figures are printed, not asserted: a busy machine serves fewer per second):
    # every worker finished requests, both compared windows saw some, and faults came at their rate.
    assert report.requests >= 2 * report.concurrency
    assert all(window.requests for window in report.windows)
    assert report.faults_injected >= 0.4 * report.fault_rate * report.requests > 0
    assert not report.problems, report.render()
