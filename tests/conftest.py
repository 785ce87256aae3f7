"""Suite-wide rules (under CI=true a skipped test is a failure; no test's captured output may hold a
gateway secret, see `tests/secret_scan.py`) and the session's Redis servers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests import secret_scan
from tests.redis_server import RedisClusterServers, RedisServer

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)
    for section, text in report.sections:  # captured stdout, stderr and log records of this phase
        secret_scan.scan(text, f"{report.nodeid} ({section})")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI", "").lower() == "true" and _skipped:
        print(f"\nCI=true: {len(_skipped)} skipped test(s) count as failures:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if secret_scan.leaks:
        leaks = dict.fromkeys(secret_scan.leaks)  # a phase's report repeats the earlier phases' output
        print(f"\n{len(leaks)} secret leak(s) in what the tests captured:")
        for leak in leaks:
            print(f"  {leak}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One `redis-server` for the session; tests keep apart by using their own scope names."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A three-node Redis Cluster for the session."""
    with RedisClusterServers() as cluster:
        yield cluster
