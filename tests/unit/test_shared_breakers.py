"""Breakers shared through a real redis-server: two `SharedBreakers` stand for two gateway processes.

Each has its own `Breaker` objects for the same target, as two processes would. Also: remote changes
never shorten a local open nor publish again (no echo), and a process that opened a breaker while
Redis was down tells the others once Redis is back.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from adapters.config import BreakerConfig
from gateway.limits.redis import connect
from gateway.routing.breaker import Breaker
from gateway.routing.shared_state import BreakerChange, SharedBreakers, _encoder
from tests.redis_server import RedisServer
from tests.waiting import HANG_GUARD_S

pytestmark = pytest.mark.anyio

TARGET = (f"vllm-{os.urandom(3).hex()}", "meta/llama")
"""Unique to the run: the session's Redis is shared with other tests."""
CONFIG = BreakerConfig(failure_threshold=1, cooldown_s=60)


def breakers() -> dict[tuple[str, str], Breaker]:
    return {TARGET: Breaker("/".join(TARGET), CONFIG)}


async def eventually(condition: Callable[[], bool]) -> None:
    """Polls `condition` on the event loop (the subscribers run meanwhile), up to the hang guard."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "still not true after the hang guard"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def process(url: str) -> AsyncIterator[tuple[SharedBreakers, Breaker]]:
    """One gateway process's shared breakers, subscribed (its first resync done)."""
    own = breakers()
    shared = SharedBreakers(connect(url), own)
    shared.start()
    try:
        await asyncio.wait_for(shared.synced.wait(), HANG_GUARD_S)
        yield shared, own[TARGET]
    finally:
        await shared.stop()


def test_remote_changes_never_shorten_a_local_open_and_never_publish() -> None:
    breaker = Breaker("b/m", CONFIG)
    told: list[Breaker] = []
    breaker.shared = told.append
    assert breaker.apply_remote(100.0, 130.0, 3, "other")
    assert breaker.is_open(100.0)
    assert breaker.failures == 3
    assert not breaker.apply_remote(100.0, 120.0, 1, "other")  # earlier: kept at 130
    assert breaker.open_until == 130.0
    assert breaker.apply_remote(100.0, 0.0, 0, "other")
    assert not breaker.is_open(100.0)
    assert breaker.failures == 0
    assert not breaker.apply_remote(100.0, 0.0, 0, "other")  # already closed
    assert told == []
    breaker.failed(100.0, probe=False)  # a local open is shared
    breaker.succeeded(probe=False)  # a close by an answer already in flight is not
    assert told == [breaker]
    breaker.failed(100.0, probe=False)
    assert breaker.available(100.0 + CONFIG.cooldown_s)
    probe = breaker.begin()
    assert probe
    breaker.succeeded(probe)  # a close by a passing probe is
    assert told == [breaker, breaker, breaker]


@pytest.mark.parametrize("store", ["redis_server", "redis_cluster"])
async def test_an_open_and_a_close_reach_the_other_process(
    request: pytest.FixtureRequest, store: str
) -> None:
    url = request.getfixturevalue(store).url
    async with process(url) as (a, on_a), process(url) as (_, on_b):
        on_a.failed(time.monotonic(), probe=False)
        await eventually(lambda: on_b.is_open(time.monotonic()))
        # The same open-until time, give or take the clock conversions.
        assert abs(on_b.open_until - on_a.open_until) < 0.5
        on_a.succeeded(probe=True)
        await eventually(lambda: not on_b.open_until)
        # A's own messages came back to it too, and were ignored: nothing re-opened there.
        assert not on_a.open_until
        own = BreakerChange(a.replica, on_a.name, time.time() + 60, 1)
        a._apply(_encoder.encode(own))
        assert not on_a.open_until


async def test_an_open_made_while_redis_was_down_reaches_the_others_when_it_is_back() -> None:
    with RedisServer() as server:
        async with process(server.url) as (_, on_a), process(server.url) as (_, on_b):
            server.stop()
            on_a.failed(time.monotonic(), probe=False)  # its publish fails: Redis is down
            await asyncio.sleep(0)
            assert not on_b.open_until
            server.start()
            await eventually(lambda: on_b.is_open(time.monotonic()))


async def test_a_message_that_is_not_a_breaker_change_is_ignored(redis_server: RedisServer) -> None:
    async with process(redis_server.url) as (shared, breaker):
        assert shared._apply(b'{"replica": 1}') is None
        assert shared._apply(b"not json") is None
        assert not breaker.open_until


async def test_a_resync_does_not_republish_an_open_another_process_made(redis_server: RedisServer) -> None:
    """The sender may have closed it while this process was not listening: republishing it would
    reopen the breaker everywhere for the rest of the cool-down."""
    async with process(redis_server.url) as (shared, breaker):
        now = time.monotonic()
        assert breaker.apply_remote(now, now + 60, 1, "a-replica-that-closed-it-since")
        await shared._resync()  # the stored hash has no open for this target
        assert breaker.name not in shared._pending
        breaker.failed(time.monotonic(), probe=True)  # its own failed probe: its own open again
        assert not breaker.remote_open
        assert breaker.name in shared._pending
