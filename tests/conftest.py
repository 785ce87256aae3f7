"""Suite-wide rules (under CI=true a skipped test is a failure) and the session's Redis servers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.redis_server import RedisClusterServers, RedisServer

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI", "").lower() == "true" and _skipped:
        print(f"\nCI=true: {len(_skipped)} skipped test(s) count as failures:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
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
