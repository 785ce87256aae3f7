"""The usage ledger's aggregator and stores: what a request adds, flushing, a Redis outage and restart
(a real redis-server stopped and started again: counters kept, then written exactly once), an
idempotent resend, retention, and the usage API's query parsing and grouping."""

from __future__ import annotations

import asyncio
import os
import time

import msgspec
import pytest
from redis.asyncio import Redis

from adapters.canonical import Usage
from gateway.admin.usage import MAX_RANGE_DAYS, group_rows, parse_query, usage_body
from gateway.config import UsageSettings
from gateway.context import RequestInfo
from gateway.errors import InvalidRequestError
from gateway.limits.base import Price
from gateway.translation.framing import AnswerStats
from gateway.usage.ledger import (
    DAY_S,
    Match,
    MemoryUsageStore,
    RedisUsageStore,
    Row,
    UsageLedger,
    day_name,
    day_number,
    day_of,
)
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio
PRICE = Price(input_per_mtok=2.0, output_per_mtok=10.0)
SETTINGS = UsageSettings(flush_interval_s=3600)  # flushed by hand in these tests


def answered(
    key: str | None = "k1",
    model: str | None = "m",
    *,
    team: str | None = None,
    usage: Usage | None = None,
    price: Price | None = PRICE,
    in_band_error: str | None = None,
) -> RequestInfo:
    info = RequestInfo("req_test", time.monotonic())
    info.key_id, info.team_id, info.model, info.price = key, team, model, price
    if usage is not None or in_band_error is not None:
        info.stats = AnswerStats()
        info.stats.usage = usage
        info.stats.error_code = in_band_error
    return info


def today() -> int:
    return day_number(time.time())


async def test_a_request_adds_requests_tokens_cost_and_errors_to_its_row() -> None:
    ledger = UsageLedger(SETTINGS)
    ledger.start(MemoryUsageStore(90))
    ledger.record(answered(usage=Usage(100, 20), team="t"), 200)
    ledger.record(answered(usage=Usage(1, 1), team="t"), 200)
    ledger.record(answered(usage=Usage(7, 3), team="t", in_band_error="upstream_error"), 200)
    ledger.record(answered(usage=Usage(50, 0), team="t"), 429)  # a refusal: no tokens charged
    ledger.record(answered(usage=Usage(4, 6), team="t"), 499)  # the client left: charged what it got
    ledger.record(answered(key="k2", model=None), 404)  # a known key's error, no model
    ledger.record(answered(key="k2", model=None), 200)  # a listing: not usage
    ledger.record(answered(key=None, model=None), 401)  # nobody known: not counted
    ledger.record(answered(key=None, usage=Usage(3, 4), price=None), 200)  # no keys configured
    rows = await ledger.read(today(), today(), Match())
    cost = PRICE.micro_usd(100, 20) + PRICE.micro_usd(1, 1) + PRICE.micro_usd(7, 3) + PRICE.micro_usd(4, 6)
    assert rows == {
        Row(today(), "k1", "t", "m"): [5, 112, 30, cost, 3],
        Row(today(), "k2", None, None): [1, 0, 0, 0, 1],
        Row(today(), None, None, "m"): [1, 3, 4, 0, 0],
    }
    assert cost == 400 + 12 + 44 + 68  # µUSD: tokens x USD per million tokens (rounded up)
    await ledger.stop()


async def test_the_memory_store_forgets_days_past_retention() -> None:
    store = MemoryUsageStore(retention_days=3)
    await store.write("b1", {Row(today() - 10, "k", None, "m"): [1, 2, 3, 4, 0]})
    await store.write("b2", {Row(today(), "k", None, "m"): [1, 2, 3, 4, 0]})
    assert list(await store.read(0, today(), Match())) == [Row(today(), "k", None, "m")]


async def test_a_redis_outage_keeps_the_counters_and_writes_them_once_it_is_back() -> None:
    with RedisServer() as server:
        ledger = UsageLedger(SETTINGS)
        ledger.start(RedisUsageStore.from_url(server.url, 90))
        ledger.record(answered(usage=Usage(10, 5)), 200)
        await ledger.flush()
        server.stop()
        ledger.record(answered(usage=Usage(10, 5)), 200)
        await ledger.flush()  # fails: the batch is kept
        ledger.record(answered(usage=Usage(10, 5)), 500)  # kept in process meanwhile
        await ledger.flush()  # fails again: still kept
        server.start()
        rows = await ledger.read(today(), today(), Match(key="k1"))  # writes what was kept first
        # The restarted server (no persistence) lost the first request; the failed batch and the
        # request counted after it are written.
        assert rows == {Row(today(), "k1", None, "m"): [2, 10, 5, PRICE.micro_usd(10, 5), 1]}
        await ledger.stop()


@pytest.mark.parametrize("store_fixture", ["redis_server", "redis_cluster"])
async def test_a_resent_batch_is_counted_once(store_fixture: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(store_fixture).url
    key = "k-" + os.urandom(4).hex()  # the session's Redis holds other tests' rows too
    store = RedisUsageStore.from_url(url, 90)
    rows = {
        Row(today(), key, "t", "m"): [1, 2, 3, 4, 5],
        Row(today() - 1, key, "t", "m"): [1, 1, 1, 1, 1],
        Row(today(), key, None, "m2"): [1, 0, 0, 0, 1],
    }
    for _ in range(3):
        await store.write("batch-" + key, rows)
    await store.write("next-" + key, {Row(today(), key, "t", "m"): [1, 0, 0, 0, 0]})
    assert await store.read(today() - 1, today(), Match(key=key, team="t")) == {
        Row(today(), key, "t", "m"): [2, 2, 3, 4, 5],
        Row(today() - 1, key, "t", "m"): [1, 1, 1, 1, 1],
    }
    assert await store.read(today(), today(), Match(key=key, model="m2")) == {
        Row(today(), key, None, "m2"): [1, 0, 0, 0, 1]
    }
    assert await store.read(today(), today(), Match(key=key, model="other")) == {}
    if store_fixture == "redis_server":
        async with Redis.from_url(url) as client:
            ttl = await client.ttl(RedisUsageStore.day_prefix(today()) + "index")
        assert 90 * DAY_S < ttl <= 91 * DAY_S
    await store.aclose()


async def test_stop_flushes_what_remains() -> None:
    store = MemoryUsageStore(90)
    ledger = UsageLedger(SETTINGS)
    ledger.start(store)
    ledger.record(answered(usage=Usage(1, 2)), 200)
    await ledger.stop()
    assert await store.read(today(), today(), Match()) == {
        Row(today(), "k1", None, "m"): [1, 1, 2, PRICE.micro_usd(1, 2), 0]
    }


def test_query_parameters_default_to_today_and_are_checked() -> None:
    query = parse_query({}, 20_000)
    assert (query.first_day, query.last_day, query.group_by) == (20_000, 20_000, "day")
    query = parse_query({"from": "2026-01-01", "to": "2026-01-31", "group_by": "model", "key": "k"}, 0)
    assert (day_name(query.first_day), day_name(query.last_day)) == ("2026-01-01", "2026-01-31")
    assert query.match == Match(key="k")
    first = day_of("2026-01-01")
    assert parse_query({"from": "2026-01-01", "to": day_name(first + MAX_RANGE_DAYS - 1)}, 0)
    for params, param in (
        ({"from": "2026-02-30"}, "from"),
        ({"from": "2026-1-1"}, "from"),
        ({"to": "\uff12026-01-01"}, "to"),  # a full-width digit
        ({"from": "2026-01-02", "to": "2026-01-01"}, "to"),
        ({"from": "2026-01-01", "to": day_name(first + MAX_RANGE_DAYS)}, "from"),
        ({"group_by": "week"}, "group_by"),
        ({"user": "x"}, "user"),
    ):
        with pytest.raises(InvalidRequestError) as refused:
            parse_query(params, first)
        assert refused.value.param == param, params


def test_grouping_sums_rows_and_totals() -> None:
    rows = {
        Row(20_000, "a", "t", "m1"): [1, 10, 5, 1_500_000, 0],
        Row(20_000, "b", "t", "m2"): [2, 20, 10, 250, 1],
        Row(20_001, "a", None, "m1"): [1, 1, 1, 1, 1],
    }
    assert group_rows(rows, "team") == {"t": [3, 30, 15, 1_500_250, 1], None: [1, 1, 1, 1, 1]}
    query = parse_query({"from": day_name(20_000), "to": day_name(20_001), "group_by": "key"}, 20_000)
    body = msgspec.json.decode(msgspec.json.encode(usage_body(query, rows, "redis")))
    assert body["data"] == [
        {
            "key": "a",
            "requests": 2,
            "input_tokens": 11,
            "output_tokens": 6,
            "cost_usd": 1.500001,
            "errors": 1,
        },
        {
            "key": "b",
            "requests": 2,
            "input_tokens": 20,
            "output_tokens": 10,
            "cost_usd": 0.00025,
            "errors": 1,
        },
    ]
    assert body["totals"] == {
        "requests": 4,
        "input_tokens": 31,
        "output_tokens": 16,
        "cost_usd": 1.500251,
        "errors": 2,
    }


async def test_stop_during_a_flush_in_flight_writes_its_batch() -> None:
    """SIGTERM while the periodic flush waits on Redis: the batch it took is resent by the final
    flush (same id, so counted once), not dropped with the cancelled task."""
    key = "k-" + os.urandom(4).hex()
    with RedisServer() as server:
        ledger = UsageLedger(UsageSettings(flush_interval_s=0.05))
        ledger.start(RedisUsageStore.from_url(server.url, 90))
        async with Redis.from_url(server.url) as admin:
            # Writes wait until the unpause below, however slow the machine (a pause lifts itself
            # only after a minute): the stop surely comes while the flusher's write is in flight.
            await admin.client_pause(60_000, all=False)
            ledger.record(answered(key=key, usage=Usage(10, 5)), 200)
            for _ in range(3000):  # hang guard: 30 s
                if not ledger._pending:  # the flusher took the batch and is writing it
                    break
                await asyncio.sleep(0.01)
            stopping = asyncio.create_task(ledger.stop())  # cancels the flusher, then flushes again
            for _ in range(100):  # the stop is under way (it cancels at once) before writes resume
                await asyncio.sleep(0.01)
            assert not stopping.done()  # its final flush waits on the paused Redis
            await admin.client_unpause()
            await asyncio.wait_for(stopping, 30)
        store = RedisUsageStore.from_url(server.url, 90)
        assert await store.read(today(), today(), Match(key=key)) == {
            Row(today(), key, None, "m"): [1, 10, 5, PRICE.micro_usd(10, 5), 0]
        }
        await store.aclose()
