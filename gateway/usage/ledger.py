"""The usage ledger: every answer (and every error answered to a known key or model) adds to counters
by UTC day, key, team and model: requests, input tokens, output tokens, cost (integer micro-USD) and
errors.

The request path only adds to a dict in process (`UsageLedger.record`, called by the request
middleware once the response is sent: no I/O, no task). Every `usage.flush_interval_s` the pending
counters go to the store in one batch (`flush`); on shutdown what remains is flushed.

`RedisUsageStore` (with `redis_url`): one hash per (day, key, team, model) holding the five counters
and one index set per day naming the day's hashes, all expiring `usage.retention_days` after the day
ends. A batch is one Lua script call per UTC day it spans (one, except across midnight): the script
first sets a marker for the batch's id, so a batch resent after a timeout (it may have run) is
counted once. A day's keys share a hash tag (`llmgw:{usage:2026-12-02}:...`), so each call lives in
one Cluster slot. While Redis is unreachable the counters keep growing in process (bounded by
`MAX_PENDING_ROWS` rows) and the failed batch is retried at the next flush; the outage is logged once.

`MemoryUsageStore` (without `redis_url`): the same counters in this process, which then answers the
usage API for itself only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable
from datetime import date
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

import msgspec

from gateway.edge.middleware import CLIENT_CLOSED_REQUEST
from gateway.observability.logs import get_logger

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from gateway.config import UsageSettings
    from gateway.context import RequestInfo

DAY_S: Final = 86_400
EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
MAX_PENDING_ROWS: Final = 100_000
"""Distinct (day, key, team, model) rows kept in process while the store cannot be written; rows
beyond it are dropped (and the drop logged). Keys and models come from the config, so real traffic
stays far below it."""
STORE_TIMEOUT_S: Final = 2.0
"""One store call (a batch's write, or a read's pipeline) must finish within this."""
MARKER_TTL_S: Final = 86_400
"""How long a written batch's id is remembered (a resend after that would count twice)."""
PREFIX: Final = "llmgw"
FIELDS: Final = ("requests", "input_tokens", "output_tokens", "cost_micro_usd", "errors")
"""The counters, in the order `Counts` lists hold them."""

Counts = list[int]
"""requests, input_tokens, output_tokens, cost_micro_usd, errors."""

log = get_logger("gateway.usage")


class Row(NamedTuple):
    """What one set of counters is for. `day`: days since 1970-01-01 (UTC)."""

    day: int
    key: str | None
    team: str | None
    model: str | None


class Match(NamedTuple):
    """A query's filters (None: any)."""

    key: str | None = None
    team: str | None = None
    model: str | None = None

    def __call__(self, row: Row) -> bool:
        return (
            (self.key is None or row.key == self.key)
            and (self.team is None or row.team == self.team)
            and (self.model is None or row.model == self.model)
        )


def day_number(when: float) -> int:
    return int(when // DAY_S)


def day_name(day: int) -> str:
    """`2026-12-02` for a day number."""
    return date.fromordinal(EPOCH_ORDINAL + day).isoformat()


def day_of(name: str) -> int:
    """The day number of a `YYYY-MM-DD` date (raises ValueError otherwise)."""
    return date.fromisoformat(name).toordinal() - EPOCH_ORDINAL


def add_counts(into: Counts, counts: Iterable[int]) -> None:
    for i, amount in enumerate(counts):
        into[i] += amount


class UsageStore(Protocol):
    kind: str
    """`redis` or `memory`: what the status page reports as its usage source."""

    async def write(self, batch_id: str, rows: dict[Row, Counts]) -> None:
        """Add `rows` to the stored counters, once per `batch_id` however often it is sent."""

    async def read(self, first_day: int, last_day: int, match: Match) -> dict[Row, Counts]:
        """The stored counters of the rows `match` selects, days inclusive."""

    async def aclose(self) -> None: ...


class MemoryUsageStore:
    kind = "memory"

    def __init__(self, retention_days: int) -> None:
        self._rows: dict[Row, Counts] = {}
        self._retention_days = retention_days

    async def write(self, batch_id: str, rows: dict[Row, Counts]) -> None:
        stored = self._rows
        for row, counts in rows.items():
            into = stored.get(row)
            if into is None:
                stored[row] = list(counts)
            else:
                add_counts(into, counts)
        oldest = day_number(time.time()) - self._retention_days
        if any(row.day < oldest for row in stored):
            self._rows = {row: counts for row, counts in stored.items() if row.day >= oldest}

    async def read(self, first_day: int, last_day: int, match: Match) -> dict[Row, Counts]:
        return {
            row: list(counts)
            for row, counts in self._rows.items()
            if first_day <= row.day <= last_day and match(row)
        }

    async def aclose(self) -> None:
        return None


WRITE_LUA: Final = """
-- KEYS[1]: this batch's marker; KEYS[2]: the day's index set; KEYS[3..]: one counters hash per row.
-- ARGV[1]: when the day's keys expire (unix s); ARGV[2]: the marker's ttl (s);
-- then per row: its index member and its five counters (requests, input, output, cost, errors).
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then return 0 end
local at = tonumber(ARGV[1])
local fields = {'requests', 'input_tokens', 'output_tokens', 'cost_micro_usd', 'errors'}
for i = 3, #KEYS do
  local base = 3 + (i - 3) * 6
  for f = 1, 5 do
    local amount = tonumber(ARGV[base + f])
    if amount ~= 0 then redis.call('HINCRBY', KEYS[i], fields[f], amount) end
  end
  redis.call('EXPIREAT', KEYS[i], at)
  redis.call('SADD', KEYS[2], ARGV[base])
end
redis.call('EXPIREAT', KEYS[2], at)
return 1
"""

_member_encoder: Final = msgspec.json.Encoder()
_member_decoder: Final = msgspec.json.Decoder(tuple[str | None, str | None, str | None])


class RedisUsageStore:
    kind = "redis"

    def __init__(self, client: Redis | RedisCluster, retention_days: int) -> None:
        self._client = client
        self._retention_days = retention_days
        self._write = client.register_script(WRITE_LUA)

    @classmethod
    def from_url(cls, url: str, retention_days: int) -> RedisUsageStore:
        from gateway.limits.redis import connect

        return cls(connect(url), retention_days)

    @staticmethod
    def day_prefix(day: int) -> str:
        """The prefix of a day's keys; its hash tag keeps them in one Cluster slot."""
        return f"{PREFIX}:{{usage:{day_name(day)}}}:"

    async def write(self, batch_id: str, rows: dict[Row, Counts]) -> None:
        days: dict[int, list[tuple[Row, Counts]]] = {}
        for row, counts in rows.items():
            days.setdefault(row.day, []).append((row, counts))
        async with asyncio.timeout(STORE_TIMEOUT_S):
            for day, day_rows in days.items():
                prefix = self.day_prefix(day)
                keys = [f"{prefix}batch:{batch_id}", f"{prefix}index"]
                args: list[str | int] = [(day + 1 + self._retention_days) * DAY_S, MARKER_TTL_S]
                for row, counts in day_rows:
                    member = _member_encoder.encode((row.key, row.team, row.model)).decode()
                    keys.append(prefix + "row:" + member)
                    args.append(member)
                    args.extend(counts)
                await self._write(keys=keys, args=args)

    async def read(self, first_day: int, last_day: int, match: Match) -> dict[Row, Counts]:
        days = range(first_day, last_day + 1)
        async with asyncio.timeout(STORE_TIMEOUT_S):
            pipe = self._client.pipeline(transaction=False)
            for day in days:
                pipe.smembers(self.day_prefix(day) + "index")
            indexes = await pipe.execute()
            wanted: list[tuple[Row, str]] = []
            for day, members in zip(days, indexes, strict=True):
                prefix = self.day_prefix(day)
                for raw in members:
                    key, team, model = _member_decoder.decode(raw)
                    row = Row(day, key, team, model)
                    if match(row):
                        wanted.append((row, prefix + "row:" + raw.decode()))
            if not wanted:
                return {}
            pipe = self._client.pipeline(transaction=False)
            for _, name in wanted:
                pipe.hmget(name, FIELDS)
            replies = await pipe.execute()
        return {
            row: [int(value or 0) for value in reply] for (row, _), reply in zip(wanted, replies, strict=True)
        }

    async def aclose(self) -> None:
        await self._client.aclose()


def create_usage_store(redis_url: str, settings: UsageSettings) -> UsageStore:
    url = redis_url.strip()
    if url:
        return RedisUsageStore.from_url(url, settings.retention_days)
    return MemoryUsageStore(settings.retention_days)


def _wall_offset() -> float:
    """What to add to `time.monotonic()` to get Unix time."""
    return time.time() - time.monotonic()


class UsageLedger:
    """This process's pending counters and their flushing; `record` is the request path's part."""

    def __init__(self, settings: UsageSettings) -> None:
        self._interval_s = settings.flush_interval_s
        self._pending: dict[tuple[int, str | None, str | None, str | None], Counts] = {}
        """By `Row`'s fields, as a plain tuple."""
        self._wall_offset = _wall_offset()
        self._unsent: tuple[str, dict[Row, Counts]] | None = None
        """A batch whose write failed: resent (same id) before anything newer."""
        self._store: UsageStore | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._failing = False
        self._dropped = 0

    @property
    def source(self) -> str:
        """`redis`, `memory`, or `none` before start-up."""
        return self._store.kind if self._store is not None else "none"

    def record(self, info: RequestInfo, status: int) -> None:
        """Count one finished request (called once per request, after its response was sent).

        The day is the UTC day the request arrived, from its monotonic start time and the wall clock's
        offset (read once per flush: a clock read per request cost 0.3 us here, a `Row` 0.5 us, so
        the key is a plain tuple).
        """
        model = info.model
        key = info.key_id
        error = status >= 400 or info.answer_error is not None
        if model is None and (key is None or not error):
            return  # not a model request (a listing, a probe, the admin API) or an unknown caller
        row = (int((info.started + self._wall_offset) // DAY_S), key, info.team_id, model)
        pending = self._pending
        counts = pending.get(row)
        if counts is None:
            if len(pending) >= MAX_PENDING_ROWS:
                self._drop()
                return
            counts = pending[row] = [0, 0, 0, 0, 0]
        counts[0] += 1
        # An error response carries no answer (a refusal's stats hold only its prompt estimate);
        # an answer that failed part-way (in-band error, client gone) is charged what it produced.
        stats = info.stats
        if stats is not None and (status < 400 or status == CLIENT_CLOSED_REQUEST):
            usage = stats.usage
            if usage is not None:
                input_tokens, output_tokens = usage.prompt_tokens, usage.completion_tokens
            else:
                input_tokens, output_tokens = info.prompt_tokens, info.completion_tokens
            counts[1] += input_tokens
            counts[2] += output_tokens
            price = info.price
            if price is not None:
                counts[3] += price.micro_usd(input_tokens, output_tokens)
        if error:
            counts[4] += 1

    def _drop(self) -> None:
        if not self._dropped:
            log.error("usage_rows_dropped", message=f"more than {MAX_PENDING_ROWS} unwritten usage rows")
        self._dropped += 1

    def start(self, store: UsageStore) -> None:
        self._store = store
        self._flusher = asyncio.create_task(self._flush_periodically(), name="usage-ledger")

    async def stop(self) -> None:
        """Flush what remains (once: a store that fails now loses it, and says so), then close."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        store = self._store
        if store is None:
            return
        await self.flush()
        requests = sum(counts[0] for counts in self._pending.values())
        if self._unsent is not None:
            requests += sum(counts[0] for counts in self._unsent[1].values())
        if requests:
            log.error("usage_not_written", requests=requests, message="the usage store could not be written")
        self._store = None
        await store.aclose()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.flush()

    async def flush(self) -> None:
        """Write the pending counters (and first any batch that failed before) in one batch."""
        store = self._store
        if store is None:
            return
        async with self._lock:
            self._wall_offset = _wall_offset()
            if self._unsent is not None:
                if not await self._send(store, *self._unsent):
                    return
                self._unsent = None
            if not self._pending:
                return
            pending, self._pending = self._pending, {}
            rows = {Row._make(row): counts for row, counts in pending.items()}
            # Kept as unsent until the write answers: a flush cancelled while it waits (the flusher
            # at shutdown, an admin read whose client left) leaves the batch for the next one, which
            # resends it with the same id (counted once if the cancelled write did run).
            self._unsent = (os.urandom(12).hex(), rows)
            if await self._send(store, *self._unsent):
                self._unsent = None

    async def _send(self, store: UsageStore, batch_id: str, rows: dict[Row, Counts]) -> bool:
        try:
            await store.write(batch_id, rows)
        except Exception as exc:  # noqa: BLE001 - redis-py also raises non-Redis errors on broken sockets
            if not self._failing:
                self._failing = True
                log.warning(
                    "usage_store_unavailable",
                    error=type(exc).__name__,
                    message="usage counters are kept in process and written once the store answers",
                )
            return False
        if self._failing:
            self._failing = False
            log.info("usage_store_recovered", dropped_rows=self._dropped)
            self._dropped = 0
        return True

    async def read(self, first_day: int, last_day: int, match: Match) -> dict[Row, Counts]:
        """The stored counters (every replica's, with Redis), this process's pending ones written first.

        Raises whatever the store raises when it cannot be read.
        """
        if self._store is None:
            raise RuntimeError("the usage ledger is not running")
        await self.flush()
        return await self._store.read(first_day, last_day, match)


__all__ = (
    "FIELDS",
    "Counts",
    "Match",
    "MemoryUsageStore",
    "RedisUsageStore",
    "Row",
    "UsageLedger",
    "UsageStore",
    "add_counts",
    "create_usage_store",
    "day_name",
    "day_number",
    "day_of",
)
