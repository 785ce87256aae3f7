"""The Redis limiter across a real redis-server restart: stale pooled connections and outage accounting.

A restart leaves every pooled connection dead. The batched path must resend a batch that failed on
one before any reply (nothing ran) once on a fresh connection, so no request sees the store as down
(issue 13: 8 of 100 got a 503 in closed mode). And the gate must count the store as back as soon as
it answers, whatever it decides: a 429 is an answer, and the next outage must be reported again.
"""

from __future__ import annotations

import asyncio
import logging
import os

import pytest
import structlog
from redis.asyncio import Redis

from gateway.context import RequestInfo
from gateway.errors import RateLimitError, ServiceUnavailableError
from gateway.limits import LimiterUnavailable, RateLimits, Scope
from gateway.limits.redis import RedisLimiter
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

POOLED = 16
"""Connections opened (and left idle in the pool) before the restart."""
BURST = 100


def team(rpm: int = 0, tpm: int = 0, max_concurrency: int = 0) -> Scope:
    return Scope("key", "t-" + os.urandom(6).hex(), rpm=rpm, tpm=tpm, max_concurrency=max_concurrency)


async def admit(gate: RateLimits, scope: Scope) -> object:
    return await gate.admit(
        (scope,), "m", prompt_tokens=1, max_tokens=1, explicit_max_tokens=True, info=RequestInfo()
    )


async def fill_pool(limiter: RedisLimiter, count: int) -> None:
    """Leave `count` connected connections idle in the client's pool, as a busy process would."""
    client = limiter._client
    assert isinstance(client, Redis)
    pool = client.connection_pool
    held = [await pool.get_connection() for _ in range(count)]  # type: ignore[no-untyped-call]
    for connection in held:
        await connection.send_command("PING")
        assert await connection.read_response() in (b"PONG", "PONG", True)
        await pool.release(connection)


async def staggered_burst(limiter: RedisLimiter, scope: Scope) -> list[bool | str]:
    """`BURST` decisions spread over several event-loop turns: several batches, several connections."""

    async def one(turns: int) -> bool | str:
        for _ in range(turns):
            await asyncio.sleep(0)
        try:
            return (await limiter.acquire(scope, tokens=0, ticket=None)).admitted
        except LimiterUnavailable as exc:
            return f"unavailable: {exc}"

    return await asyncio.gather(*(one(i % 10) for i in range(BURST)))


async def test_every_request_of_a_burst_after_a_restart_is_decided_on_a_fresh_connection() -> None:
    with RedisServer() as server:
        limiter = RedisLimiter.from_url(server.url)
        try:
            scope = team(rpm=10 * BURST)
            assert (await limiter.acquire(scope, tokens=0, ticket=None)).admitted
            await fill_pool(limiter, POOLED)
            server.stop()
            server.start()
            outcomes = await staggered_burst(limiter, scope)
            failed = [o for o in outcomes if o is not True]
            print(f"\nafter a restart: {len(failed)}/{BURST} decisions failed")
            assert failed == []
            # The restarted Redis started afresh: exactly the burst is counted, none twice.
            check = await limiter.acquire(scope, tokens=0, ticket=None)
            assert check.requests_used == BURST + 1
        finally:
            await limiter.aclose()


async def test_a_store_that_stays_down_still_fails_after_the_one_retry() -> None:
    with RedisServer() as server:
        limiter = RedisLimiter.from_url(server.url)
        try:
            scope = team(rpm=5)
            assert (await limiter.acquire(scope, tokens=0, ticket=None)).admitted
            await fill_pool(limiter, 4)
            server.stop()
            with pytest.raises(LimiterUnavailable, match="ConnectionError"):
                await limiter.acquire(scope, tokens=0, ticket=None)
        finally:
            await limiter.aclose()


async def test_closed_mode_answers_no_503_after_a_restart() -> None:
    """The gate in closed mode, as the issue measured it: a burst right after the restart."""
    with RedisServer() as server:
        limiter = RedisLimiter.from_url(server.url)
        gate = RateLimits(limiter, models={}, failure_mode="closed", store="redis")
        try:
            scope = team(rpm=10 * BURST)
            for _ in range(20):  # sequential traffic before the restart
                await admit(gate, scope)
            await fill_pool(limiter, POOLED)
            server.stop()
            server.start()

            async def one(turns: int) -> str:
                for _ in range(turns):
                    await asyncio.sleep(0)
                try:
                    await admit(gate, scope)
                except ServiceUnavailableError:
                    return "503"
                return "admitted"

            answers = await asyncio.gather(*(one(i % 10) for i in range(BURST)))
            print(f"\nclosed mode after a restart: {answers.count('503')}/{BURST} got a 503")
            assert answers.count("503") == 0
            assert gate.store_failures == 0
        finally:
            await gate.aclose()


async def test_recovery_is_logged_when_the_first_answer_after_an_outage_is_a_429() -> None:
    """Outage, then the store answers with a refusal (another replica used the minute up meanwhile):
    that is a recovery, so the next outage is warned about and counted again."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    with RedisServer() as server:
        gate = RateLimits(RedisLimiter.from_url(server.url), models={}, store="redis")
        other_replica = RedisLimiter.from_url(server.url)
        scope = team(rpm=1)
        try:
            with structlog.testing.capture_logs() as logs:
                server.stop()
                grant = await admit(gate, scope)
                assert grant is None  # open mode: served without limits
                assert (gate.store_available, gate.store_outages) == (False, 1)
                server.start()
                assert (await other_replica.acquire(scope, tokens=0, ticket=None)).admitted
                await asyncio.sleep(0.6)  # past the probe interval: the gate asks the store again
                with pytest.raises(RateLimitError):
                    await admit(gate, scope)
                assert gate.store_available
                server.stop()
                await admit(gate, scope)
                server.start()
            events = [entry["event"] for entry in logs if entry["event"].startswith("rate_limit_store")]
            assert events == [
                "rate_limit_store_unavailable",
                "rate_limit_store_recovered",
                "rate_limit_store_unavailable",
            ]
            assert gate.store_outages == 2
        finally:
            await gate.aclose()
            await other_replica.aclose()
