"""The limiter contract, run against the in-process store, one real Redis and a real 3-node Redis Cluster."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest

from gateway.context import RequestInfo
from gateway.errors import RateLimitError
from gateway.limits import (
    LimiterUnavailable,
    MemoryLimiter,
    RateLimits,
    Scope,
    Ticket,
    format_duration,
)
from gateway.limits.redis import SOCKET_TIMEOUT_S, RedisLimiter
from tests.redis_server import RedisClusterServers, RedisServer, command
from tests.waiting import HANG_GUARD_S

if TYPE_CHECKING:
    from tests.unit.conftest import LimiterFactory

pytestmark = pytest.mark.anyio


def scope(**limits: Any) -> Scope:
    """A scope no other test uses (the Redis servers are shared by the session)."""
    return Scope("key", "t-" + os.urandom(6).hex(), **limits)


def ticket() -> Ticket:
    return Ticket(os.urandom(8).hex())


async def test_a_burst_admits_exactly_the_limit(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    team = scope(rpm=25)
    outcomes = await asyncio.gather(*(limiter.acquire(team, tokens=0, ticket=None) for _ in range(80)))
    admitted = [o for o in outcomes if o.admitted]
    assert len(admitted) == 25
    assert sorted(o.requests_used for o in admitted) == list(range(1, 26))
    refused = [o for o in outcomes if not o.admitted]
    assert {o.refused for o in refused} == {"requests"}
    assert all(59 < o.retry_after_s <= 61 for o in refused)


async def test_first_admission_reports_usage_and_reset(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    outcome = await limiter.acquire(scope(rpm=10, tpm=1000), tokens=300, ticket=None)
    assert outcome.admitted
    assert (outcome.requests_used, outcome.tokens_used) == (1, 300)
    assert 59 < outcome.requests_reset_s <= 61
    assert 59 < outcome.tokens_reset_s <= 61


async def test_a_refusal_changes_nothing(make_limiter: LimiterFactory) -> None:
    """All or nothing: a request refused on tokens does not count against requests either."""
    limiter = make_limiter()
    team = scope(rpm=10, tpm=1000)
    assert (await limiter.acquire(team, tokens=900, ticket=None)).admitted
    refused = await limiter.acquire(team, tokens=200, ticket=None)
    assert not refused.admitted
    assert refused.refused == "tokens"
    assert (refused.requests_used, refused.tokens_used) == (1, 900)
    after = await limiter.acquire(team, tokens=100, ticket=None)
    assert after.admitted
    assert (after.requests_used, after.tokens_used) == (2, 1000)


async def test_capacity_returns_when_the_window_has_passed(make_limiter: LimiterFactory) -> None:
    window, slots = 2.0, 20  # the decisions below take milliseconds; a busy machine leaves them a second
    limiter = make_limiter(window_s=window, slots=slots)
    team = scope(rpm=3)
    for _ in range(3):
        assert (await limiter.acquire(team, tokens=0, ticket=None)).admitted
    refused = await limiter.acquire(team, tokens=0, ticket=None)
    assert not refused.admitted
    assert window - 1.0 < refused.retry_after_s <= window + window / slots  # counted in whole slots
    assert not (await limiter.acquire(team, tokens=0, ticket=None)).admitted
    await asyncio.sleep(refused.retry_after_s + 0.02)  # waiting longer than told is always allowed
    assert (await limiter.acquire(team, tokens=0, ticket=None)).admitted


async def test_no_window_ever_holds_more_than_the_limit(make_limiter: LimiterFactory) -> None:
    """Unlike a fixed window, a burst at the end of one window and the start of the next cannot add up."""
    window, limit = 0.3, 4
    limiter = make_limiter(window_s=window, slots=6)
    team = scope(rpm=limit)
    admitted: list[tuple[float, float]] = []  # (asked, answered): the decision fell in between
    deadline = time.monotonic() + HANG_GUARD_S
    while len(admitted) < 3 * limit:  # bounded by count: three windows' worth, however long they take
        assert time.monotonic() < deadline
        asked = time.monotonic()
        outcome = await limiter.acquire(team, tokens=0, ticket=None)
        if outcome.admitted:
            admitted.append((asked, time.monotonic()))
        await asyncio.sleep(0.005)
    # Any limit + 1 admissions span a window: bounded from above by the later one's answer and the
    # earlier one's question, so a slow round trip cannot make a correct limiter fail.
    for (earlier, _), (_, later) in zip(admitted, admitted[limit:], strict=False):
        assert later - earlier >= window - 0.02


async def test_settle_replaces_the_reservation_by_real_usage(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    team = scope(tpm=1000)
    first = await limiter.acquire(team, tokens=600, ticket=None)
    assert first.admitted
    assert not (await limiter.acquire(team, tokens=600, ticket=None)).admitted
    await limiter.settle(team, slot=first.slot, requests=0, tokens=120 - 600, ticket=None)
    second = await limiter.acquire(team, tokens=600, ticket=None)
    assert second.admitted
    assert second.tokens_used == 720
    await limiter.settle(team, slot=second.slot, requests=0, tokens=900 - 600, ticket=None)
    third = await limiter.acquire(team, tokens=1, ticket=None)
    assert (third.admitted, third.tokens_used) == (False, 1020)


async def test_usage_beyond_an_expired_reservation_is_charged_now(make_limiter: LimiterFactory) -> None:
    """A long answer whose reservation already left the window still pays what it overran."""
    window, slots = 1.2, 3  # the charge stays in the window at least window - window / slots = 0.8 s
    limiter = make_limiter(window_s=window, slots=slots)
    team = scope(tpm=1000)
    first = await limiter.acquire(team, tokens=100, ticket=None)
    await asyncio.sleep(window + window / slots + 0.1)  # the reservation has certainly left the window
    await limiter.settle(team, slot=first.slot, requests=0, tokens=250, ticket=None)
    after = await limiter.acquire(team, tokens=10, ticket=None)
    assert after.tokens_used == 260


async def test_giving_back_a_reservation(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    team = scope(rpm=1, tpm=100, max_concurrency=1)
    held = ticket()
    first = await limiter.acquire(team, tokens=100, ticket=held)
    assert first.admitted
    await limiter.settle(team, slot=first.slot, requests=-1, tokens=-100, ticket=held)
    again = await limiter.acquire(team, tokens=100, ticket=ticket())
    assert again.admitted
    assert (again.requests_used, again.tokens_used, again.in_flight) == (1, 100, 1)


async def test_concurrency_is_released_on_settle(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    team = scope(max_concurrency=2)
    tickets = [ticket() for _ in range(3)]
    outcomes = [await limiter.acquire(team, tokens=0, ticket=t) for t in tickets]
    assert [o.admitted for o in outcomes] == [True, True, False]
    assert outcomes[2].refused == "concurrency"
    assert outcomes[2].in_flight == 2
    assert outcomes[2].retry_after_s >= 1
    await limiter.settle(team, slot=outcomes[0].slot, requests=0, tokens=0, ticket=tickets[0])
    retried = await limiter.acquire(team, tokens=0, ticket=tickets[2])
    assert (retried.admitted, retried.in_flight) == (True, 2)


async def test_scopes_are_independent(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    first, second = scope(rpm=1), scope(rpm=1)
    assert (await limiter.acquire(first, tokens=0, ticket=None)).admitted
    assert not (await limiter.acquire(first, tokens=0, ticket=None)).admitted
    assert (await limiter.acquire(second, tokens=0, ticket=None)).admitted


async def test_the_longest_wait_names_the_refusal(make_limiter: LimiterFactory) -> None:
    window, apart = 3.0, 1.0
    limiter = make_limiter(window_s=window, slots=30)
    team = scope(rpm=2, tpm=100)
    assert (await limiter.acquire(team, tokens=10, ticket=None)).admitted
    await asyncio.sleep(apart)
    assert (await limiter.acquire(team, tokens=90, ticket=None)).admitted
    refused = await limiter.acquire(team, tokens=50, ticket=None)
    assert not refused.admitted
    # Requests free up when the first request leaves (in at most 2 s); the 50 tokens need the second
    # one gone too (in about 3 s): a busy machine may take 0.8 s off that and still be told apart.
    assert refused.refused == "tokens"
    assert window - apart + 0.2 < refused.retry_after_s <= window + window / 30


# Redis only


@pytest.fixture
async def redis_limiters(redis_server: RedisServer) -> AsyncIterator[Callable[..., RedisLimiter]]:
    made: list[RedisLimiter] = []

    def make(**options: Any) -> RedisLimiter:
        limiter = RedisLimiter.from_url(redis_server.url, **options)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()


async def test_a_crashed_replicas_slots_free_themselves(
    redis_limiters: Callable[..., RedisLimiter],
) -> None:
    lease = 2.0
    crashed, survivor = redis_limiters(lease_s=lease), redis_limiters(lease_s=lease)
    team = scope(max_concurrency=1)
    assert (await crashed.acquire(team, tokens=0, ticket=ticket())).admitted
    await crashed.aclose()  # stops renewing without releasing: what a killed process leaves behind
    assert not (await survivor.acquire(team, tokens=0, ticket=ticket())).admitted
    deadline = time.monotonic() + lease + HANG_GUARD_S
    while not (await survivor.acquire(team, tokens=0, ticket=ticket())).admitted:
        assert time.monotonic() < deadline, "the crashed replica's slot never freed itself"
        await asyncio.sleep(0.05)


async def test_leases_are_renewed_while_requests_are_in_flight(
    redis_limiters: Callable[..., RedisLimiter],
) -> None:
    lease = 1.0  # renewed every third of it: a busy event loop may be late by most of a lease
    holder, other = redis_limiters(lease_s=lease), redis_limiters(lease_s=lease)
    team = scope(max_concurrency=1)
    held = ticket()
    first = await holder.acquire(team, tokens=0, ticket=held)
    assert first.admitted
    await asyncio.sleep(3 * lease)  # unrenewed, the lease would have lapsed three times over
    assert not (await other.acquire(team, tokens=0, ticket=ticket())).admitted
    await holder.settle(team, slot=first.slot, requests=0, tokens=0, ticket=held)
    assert (await other.acquire(team, tokens=0, ticket=ticket())).admitted


async def test_decisions_run_the_registered_script() -> None:
    """EVALSHA every time: the script text is sent once (SCRIPT LOAD), never with each decision."""
    with RedisServer() as server:
        limiter = RedisLimiter.from_url(server.url)
        try:
            team = scope(rpm=100)
            for _ in range(20):
                await limiter.acquire(team, tokens=0, ticket=None)
        finally:
            await limiter.aclose()
        stats = command(server.port, "INFO", "commandstats").decode()
    calls = dict(re.findall(r"cmdstat_([a-z|]+):calls=(\d+)", stats))
    assert calls["script|load"] == "1"  # after the first EVALSHA's NOSCRIPT
    assert calls["evalsha"] == "21"
    assert "eval" not in calls


async def test_concurrent_decisions_share_round_trips_and_survive_a_script_flush(
    redis_limiters: Callable[..., RedisLimiter], redis_server: RedisServer
) -> None:
    """Decisions made in one event-loop turn travel in one pipeline; each stays exact, and a script
    Redis has lost (SCRIPT FLUSH, as after a restart) is loaded again for the whole batch."""
    limiter = redis_limiters()
    team = scope(rpm=40)
    assert (await limiter.acquire(team, tokens=0, ticket=None)).admitted  # loads the scripts
    command(redis_server.port, "SCRIPT", "FLUSH")
    before = dict(
        re.findall(
            r"cmdstat_([a-z|]+):calls=(\d+)", command(redis_server.port, "INFO", "commandstats").decode()
        )
    )
    outcomes = await asyncio.gather(*(limiter.acquire(team, tokens=0, ticket=None) for _ in range(60)))
    assert sum(o.admitted for o in outcomes) == 39  # exactly the limit, with the first one above
    after = dict(
        re.findall(
            r"cmdstat_([a-z|]+):calls=(\d+)", command(redis_server.port, "INFO", "commandstats").decode()
        )
    )
    assert int(after["script|load"]) - int(before.get("script|load", "0")) == 1
    # 60 NOSCRIPT answers then 60 retries: every decision ran exactly once.
    assert int(after["evalsha"]) - int(before["evalsha"]) == 120


async def test_a_store_that_never_answers_fails_within_the_call_timeout() -> None:
    """A server that accepts connections and then says nothing (a hung Redis): the decision gives up
    after the round-trip deadline instead of holding the request."""
    held: list[asyncio.StreamWriter] = []

    async def accept_and_stay_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept_and_stay_silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limiter = RedisLimiter.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        started = time.monotonic()
        with pytest.raises(LimiterUnavailable, match="TimeoutError"):
            await limiter.acquire(scope(rpm=5), tokens=0, ticket=None)
        # It gave up at its deadline (SOCKET_TIMEOUT_S) instead of holding the request: the bound is a
        # hang guard, far above the deadline and far below forever.
        assert SOCKET_TIMEOUT_S <= time.monotonic() - started < SOCKET_TIMEOUT_S + HANG_GUARD_S
    finally:
        await limiter.aclose()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_an_unreachable_store_fails_fast_and_recovers() -> None:
    """Connection refused → LimiterUnavailable at once; later decisions skip the store briefly, then
    find it again with no restart."""
    with RedisServer() as server:
        limiter = RedisLimiter.from_url(server.url)
        try:
            team = scope(rpm=5)
            assert (await limiter.acquire(team, tokens=0, ticket=None)).admitted
            server.stop()
            started = time.monotonic()
            with pytest.raises(LimiterUnavailable, match="ConnectionError"):
                await limiter.acquire(team, tokens=0, ticket=None)
            with pytest.raises(LimiterUnavailable):
                await limiter.acquire(team, tokens=0, ticket=None)
            # Refused connections fail at once and the next decision skips the store: neither waited
            # for a socket timeout (each would take SOCKET_TIMEOUT_S on a store that does not answer).
            assert time.monotonic() - started < 2 * SOCKET_TIMEOUT_S
            server.start()
            deadline = time.monotonic() + HANG_GUARD_S
            while True:
                try:
                    outcome = await limiter.acquire(team, tokens=0, ticket=None)
                    break
                except LimiterUnavailable:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            assert outcome.admitted
            assert outcome.requests_used == 1  # a restarted Redis without persistence starts afresh
        finally:
            await limiter.aclose()


async def test_cluster_spreads_scopes_over_its_nodes(redis_cluster: RedisClusterServers) -> None:
    limiter = RedisLimiter.from_url(redis_cluster.url)
    try:
        for _ in range(30):
            assert (await limiter.acquire(scope(rpm=5, tpm=50), tokens=5, ticket=None)).admitted
    finally:
        await limiter.aclose()
    sizes = [int(command(node.port, "DBSIZE").lstrip(b":")) for node in redis_cluster.nodes]
    assert sum(1 for size in sizes if size) >= 2


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.012, "12ms"),
        (1, "1s"),
        (8.64, "8.64s"),
        (59.9996, "1m0s"),
        (360, "6m0s"),
        (3725, "1h2m5s"),
    ],
)
def test_durations_are_written_like_openai(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# A request with several choices counts as that many requests


async def test_a_request_with_n_choices_counts_n_times_all_or_nothing(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    limits = RateLimits(limiter, models={})
    key = scope(rpm=5, tpm=1000, max_concurrency=4)
    info = RequestInfo()
    grant = await limits.admit(
        (key,), "m", prompt_tokens=10, max_tokens=20, explicit_max_tokens=True, info=info, requests=3
    )
    assert grant is not None
    assert grant.headers["x-ratelimit-remaining-requests"] == "2"
    assert grant.headers["x-ratelimit-remaining-tokens"] == "910"
    with pytest.raises(RateLimitError):  # 3 more would be 6 requests (and 6 in flight)
        await limits.admit(
            (key,), "m", prompt_tokens=10, max_tokens=20, explicit_max_tokens=True, info=info, requests=3
        )
    await grant.settle(100)  # the real usage of all three choices together
    one = await limits.admit((key,), "m", prompt_tokens=0, max_tokens=0, explicit_max_tokens=True, info=info)
    assert one is not None
    assert one.headers["x-ratelimit-remaining-requests"] == "1"  # the refusal counted nothing
    assert one.headers["x-ratelimit-remaining-tokens"] == "900"  # 3 reservations replaced by 100 in all
    await one.settle(0)


async def test_n_choices_that_can_never_fit_are_too_large() -> None:
    limits = RateLimits(MemoryLimiter(), models={})
    with pytest.raises(RateLimitError) as info:
        await limits.admit(
            (scope(tpm=100),),
            "m",
            prompt_tokens=10,
            max_tokens=30,
            explicit_max_tokens=True,
            info=RequestInfo(),
            requests=3,
        )
    assert info.value.headers["x-should-retry"] == "false"
    assert "3 choices" in info.value.message
