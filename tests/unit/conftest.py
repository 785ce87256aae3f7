"""Fixtures shared by the unit tests of the limits (`test_limits.py`, `test_budgets.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.limits import Limiter, MemoryLimiter
from gateway.limits.redis import RedisLimiter

LimiterFactory = Callable[..., Limiter]


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("redis", id="redis"),
        pytest.param("cluster", id="redis-cluster"),
    ]
)
async def make_limiter(request: pytest.FixtureRequest) -> AsyncIterator[LimiterFactory]:
    """Builds limiters of one kind (window and lease shortened on demand); closes them afterwards."""
    made: list[Limiter] = []
    url = ""
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
    elif request.param == "cluster":
        url = request.getfixturevalue("redis_cluster").url

    def make(**options: Any) -> Limiter:
        limiter: Limiter
        if url:
            limiter = RedisLimiter.from_url(url, **options)
        else:
            options.pop("lease_s", None)
            limiter = MemoryLimiter(**options)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()
