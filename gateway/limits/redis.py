"""Limits shared by every replica through Redis (or a Redis Cluster), and `connect`, the one Redis
client factory (also used by `gateway.state.responses` and `gateway.keys.store`, the only other modules
importing redis).

One Lua script per decision, registered once and run with EVALSHA (`register_script` reloads it
after a Redis restart). The scripts read the clock with `TIME`, so replicas with skewed clocks agree,
and check and reserve a scope's requests, tokens and concurrency all or nothing. A scope's keys share
one hash tag (`llmgw:{key:team-a}:rpm`, `...:tpm`, `...:inflight`), so a script's keys are always in
one cluster slot while different scopes spread over the cluster.

Client settings are explicit and short (redis-py's defaults would retry ten times with 5 s socket
timeouts): a decision waits at most about a second for an unreachable store before the gateway's
`rate_limit_failure_mode` applies, and after a failure the store is skipped for `PROBE_INTERVAL_S`
so an outage does not slow every request down.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from gateway.limits.base import (
    LEASE_S,
    SLOTS,
    SPEND_GRACE_S,
    WINDOW_S,
    LimiterUnavailable,
    Outcome,
    Periods,
    Refusal,
)
from gateway.timers import Deadline

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from gateway.limits.base import Period, Scope, Ticket

SOCKET_TIMEOUT_S: Final = 0.5
CONNECT_TIMEOUT_S: Final = 0.25
POOL_SIZE: Final = 64
"""Store calls in flight per process, each on its own connection for one round trip; more wait their
turn (redis-py's pools fail calls beyond their size, and its blocking pool costs ~60 us per call)."""
HEALTH_CHECK_S: Final = 15
PROBE_INTERVAL_S: Final = 0.5
"""After a failure, decisions skip the store this long before trying it again."""
_REFUSALS: Final[dict[int, Refusal]] = {1: "requests", 2: "tokens", 3: "concurrency", 4: "budget"}

# Shared by both scripts. A window is a hash: field `n` (the total), `lo` (the oldest slot present)
# and one field per slot index. Amounts are integers; times are microseconds of Redis's clock.
_WINDOW_LUA: Final = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local width = tonumber(ARGV[1])
local slots = tonumber(ARGV[2])
local cur = math.floor(now / width)
local first = cur - slots
local ttl = math.ceil((slots + 2) * width / 1000)

-- Drop the slots that left the window; returns the amount still counted and the oldest slot.
local function load(key)
  local head = redis.call('HMGET', key, 'n', 'lo')
  local lo = tonumber(head[2])
  if not lo then return 0, nil end
  local used = tonumber(head[1]) or 0
  if lo >= first then return used, lo end
  if lo + slots < first then
    redis.call('DEL', key)
    return 0, nil
  end
  local slot = lo
  while slot <= cur do
    local amount = redis.call('HGET', key, slot)
    if amount then
      if slot >= first then break end
      used = used - tonumber(amount)
      redis.call('HDEL', key, slot)
    end
    slot = slot + 1
  end
  if slot > cur then
    redis.call('DEL', key)
    return 0, nil
  end
  redis.call('HSET', key, 'n', used, 'lo', slot)
  return used, slot
end

local function add(key, lo, amount)
  redis.call('HINCRBY', key, cur, amount)
  redis.call('HINCRBY', key, 'n', amount)
  if not lo then redis.call('HSET', key, 'lo', cur) end
  redis.call('PEXPIRE', key, ttl)
end
"""

ACQUIRE_LUA: Final = (
    _WINDOW_LUA
    + """
-- KEYS: requests window, tokens window, in-flight leases (one hash tag), and for a scope with a
-- budget the period's spend counter (micro-USD).
-- ARGV[3..8]: rpm, tpm, tokens to reserve, max in flight (0: no such limit), ticket, lease (us).
-- ARGV[9..11] (with a budget): the budget and the cost to reserve (micro-USD), the counter's
-- time to live (ms: until a grace after its period's end).
local rpm = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])
local want = tonumber(ARGV[5])
local cap = tonumber(ARGV[6])
local ticket = ARGV[7]
local lease = tonumber(ARGV[8])

-- Microseconds until `excess` has left the window.
local function wait(key, lo, excess)
  local freed = 0
  if lo then
    for slot = lo, cur do
      freed = freed + (tonumber(redis.call('HGET', key, slot)) or 0)
      if freed >= excess then return (slot + slots + 1) * width - now end
    end
  end
  return (cur + slots + 1) * width - now
end

local r_used, r_lo, t_used, t_lo, flying = 0, nil, 0, nil, 0
local refused, retry = 0, 0
if rpm > 0 then
  r_used, r_lo = load(KEYS[1])
  if r_used + 1 > rpm then refused, retry = 1, wait(KEYS[1], r_lo, r_used + 1 - rpm) end
end
if tpm > 0 then
  t_used, t_lo = load(KEYS[2])
  if t_used + want > tpm then
    local w = wait(KEYS[2], t_lo, t_used + want - tpm)
    if refused == 0 or w > retry then refused, retry = 2, w end
  end
end
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  flying = redis.call('ZCARD', KEYS[3])
  if flying + 1 > cap and (refused == 0 or retry < 1000000) then
    refused, retry = 3, math.max(retry, 1000000)
  end
end
local spent, cost = 0, 0
if #KEYS == 4 then
  cost = tonumber(ARGV[10])
  spent = tonumber(redis.call('GET', KEYS[4])) or 0
  -- Waiting a minute will not help: the budget refusal is the one the client hears of.
  if spent + cost > tonumber(ARGV[9]) then refused = 4 end
end
if refused == 0 then
  if rpm > 0 then
    add(KEYS[1], r_lo, 1)
    r_used = r_used + 1
    r_lo = r_lo or cur
  end
  if tpm > 0 and want > 0 then
    add(KEYS[2], t_lo, want)
    t_used = t_used + want
    t_lo = t_lo or cur
  end
  if cap > 0 and ticket ~= '' then
    redis.call('ZADD', KEYS[3], now + lease, ticket)
    redis.call('PEXPIRE', KEYS[3], math.ceil(2 * lease / 1000))
    flying = flying + 1
  end
  if cost > 0 then
    spent = redis.call('INCRBY', KEYS[4], cost)
    redis.call('PEXPIRE', KEYS[4], ARGV[11])
  end
end
local r_reset, t_reset = 0, 0
if r_lo then r_reset = (r_lo + slots + 1) * width - now end
if t_lo then t_reset = (t_lo + slots + 1) * width - now end
return {refused == 0 and 1 or 0, cur, r_used, r_reset, t_used, t_reset, flying, refused, retry, spent}
"""
)

SETTLE_LUA: Final = (
    _WINDOW_LUA
    + """
-- KEYS: as for acquire (the spend counter of the reservation's period). ARGV[3..7]: the
-- reservation's slot, requests delta, tokens delta, ticket, cost delta (micro-USD).
local slot = tonumber(ARGV[3])

local function adjust(key, delta)
  if delta == 0 then return end
  local used, lo = load(key)
  local old = lo and slot >= lo and tonumber(redis.call('HGET', key, slot))
  if old then
    local new = math.max(0, old + delta)
    redis.call('HSET', key, slot, new, 'n', used + new - old)
  elseif delta > 0 then
    -- The reservation's slot has left the window: charge the excess now instead.
    add(key, lo, delta)
  end
end

adjust(KEYS[1], tonumber(ARGV[4]))
adjust(KEYS[2], tonumber(ARGV[5]))
if ARGV[6] ~= '' then redis.call('ZREM', KEYS[3], ARGV[6]) end
-- A counter that expired (long after its period) stays gone: INCRBY would recreate it without a TTL.
if #KEYS == 4 and redis.call('EXISTS', KEYS[4]) == 1 then
  local spent = redis.call('INCRBY', KEYS[4], ARGV[7])
  if spent < 0 then redis.call('SET', KEYS[4], 0, 'KEEPTTL') end
end
return 1
"""
)

RENEW_LUA: Final = """
-- KEYS[1]: in-flight leases. ARGV[1]: lease (us); ARGV[2..]: tickets still in flight here.
local clock = redis.call('TIME')
local expires = tonumber(clock[1]) * 1000000 + tonumber(clock[2]) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', expires, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], math.ceil(2 * tonumber(ARGV[1]) / 1000))
return 1
"""


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme.endswith("+cluster")


def connect(url: str) -> Redis | RedisCluster:
    """A client for `redis_url`: `redis[s]://` or `unix://` for one server (query options such as
    `?db=1` apply), `redis[s]+cluster://[user:password@]host:port[,host:port...]` for a cluster.

    Nothing connects until the first command, so an unreachable store does not stop start-up.
    """
    # Retry only a failed connection: a timed-out script may have run, and running it twice would
    # count the request twice.
    retry = Retry(
        ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=1, supported_errors=(RedisConnectionError,)
    )
    options: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "health_check_interval": HEALTH_CHECK_S,
        "retry": retry,
        "client_name": "llm-gateway",
    }
    parts = urlsplit(url)
    if not parts.scheme.endswith("+cluster"):
        # Calls to one server go through `_Batcher`, which bounds each round trip itself.
        return Redis.from_url(url, max_connections=POOL_SIZE, **{**options, "socket_timeout": None})
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = []
    for host_port in hosts.split(","):
        host, _, port = host_port.strip().rpartition(":")
        nodes.append(ClusterNode(host.strip("[]") or "127.0.0.1", int(port or 6379)))
    return RedisCluster(
        startup_nodes=nodes,
        username=unquote(username) or None,
        password=unquote(password) or None,
        ssl=parts.scheme.startswith("rediss"),
        max_connections=POOL_SIZE,
        **options,
    )


def describe_url(url: str) -> str:
    """The store's address for logs: scheme, hosts and database, never credentials."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{hosts}{parts.path if parts.path not in ('', '/') else ''}"


class RedisLimiter:
    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        window_s: float = WINDOW_S,
        slots: int = SLOTS,
        lease_s: float = LEASE_S,
        secrets: tuple[str, ...] = (),
        periods: Periods | None = None,
    ) -> None:
        self._client = client
        self._periods = periods or Periods()
        self._calls = asyncio.Semaphore(POOL_SIZE)
        # redis-py's cluster client races when many calls trigger its lazy start-up at once.
        self._cluster_ready = not isinstance(client, RedisCluster)
        self._cluster_start = asyncio.Lock()
        self._width_us = round(window_s * 1_000_000 / slots)
        self._slots = slots
        self._lease_us = round(lease_s * 1_000_000)
        self._secrets = tuple(s for s in secrets if s)
        self._batcher = _Batcher(client, self._calls) if isinstance(client, Redis) else None
        """One server: the calls of one event-loop turn share a pipeline (a cluster is called directly)."""
        self._acquire = client.register_script(ACQUIRE_LUA)
        self._settle = client.register_script(SETTLE_LUA)
        self._renew = client.register_script(RENEW_LUA)
        self._leases: dict[str, set[str]] = {}
        """Tickets this process holds, by leases key: renewed until settled."""
        self._renewer: asyncio.Task[None] | None = None
        self._skip_until = 0.0
        self._last_error = ""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisLimiter:
        password = urlsplit(url).password
        secrets = (password, unquote(password)) if password else ()
        return cls(connect(url), secrets=secrets, **options)

    async def acquire(self, scope: Scope, *, tokens: int, ticket: Ticket | None, cost: int = 0) -> Outcome:
        if self._skip_until and time.monotonic() < self._skip_until:
            raise LimiterUnavailable(self._last_error)
        args: tuple[str | int, ...] = (
            self._width_us,
            self._slots,
            scope.rpm,
            scope.tpm,
            tokens,
            scope.max_concurrency,
            ticket.id if ticket is not None else "",
            self._lease_us,
        )
        keys: tuple[str, ...] = scope.keys
        period: Period | None = None
        wall = 0.0
        if scope.budget is not None:
            # The period comes from this replica's clock (see docs/control-plane.md, "Budgets"): the
            # counter must be named in KEYS for a cluster to route the call.
            wall = self._periods.now()
            period = self._periods.current(scope.budget.period, wall)
            keys = scope.budget_keys(period.id)
            ttl_ms = max(1, round((period.end + SPEND_GRACE_S - wall) * 1000))
            args = (*args, scope.budget_micro_usd, cost, ttl_ms)
        reply = await self._run(self._acquire, keys, args)
        self._skip_until = 0.0
        admitted = reply[0] == 1
        if admitted and ticket is not None and scope.max_concurrency:
            self._leases.setdefault(scope.keys[2], set()).add(ticket.id)
            if self._renewer is None:
                self._renewer = asyncio.create_task(self._renew_leases(), name="rate-limit-leases")
        return Outcome(
            admitted=admitted,
            slot=reply[1],
            requests_used=reply[2],
            requests_reset_s=reply[3] / 1_000_000,
            tokens_used=reply[4],
            tokens_reset_s=reply[5] / 1_000_000,
            in_flight=reply[6],
            refused=_REFUSALS.get(reply[7]),
            retry_after_s=(
                period.end - wall if period is not None and reply[7] == 4 else reply[8] / 1_000_000
            ),
            period=period,
            spent=reply[9],
        )

    async def settle(
        self,
        scope: Scope,
        *,
        slot: int,
        requests: int,
        tokens: int,
        ticket: Ticket | None,
        period: Period | None = None,
        cost: int = 0,
    ) -> None:
        flight_key = scope.keys[2]
        ticket_id = ""
        if ticket is not None and (held := self._leases.get(flight_key)) is not None:
            held.discard(ticket.id)
            ticket_id = ticket.id
        spend = bool(cost and period is not None and scope.budget is not None)
        if not ticket_id and not (requests and scope.rpm) and not (tokens and scope.tpm) and not spend:
            return
        if self._skip_until and time.monotonic() < self._skip_until:
            raise LimiterUnavailable(self._last_error)
        args = (
            self._width_us,
            self._slots,
            slot,
            requests if scope.rpm else 0,
            tokens if scope.tpm else 0,
            ticket_id,
            cost,
        )
        # The reservation's own period's counter, even when the next period has begun since.
        keys = scope.budget_keys(period.id) if spend and period is not None else scope.keys
        await self._run(self._settle, keys, args)

    async def spent(self, scope: Scope) -> tuple[Period, int] | None:
        if scope.budget is None:
            return None
        period = self._periods.current(scope.budget.period, self._periods.now())
        try:
            async with asyncio.timeout(SOCKET_TIMEOUT_S * 2):  # a stalled store must not hang /status
                value = await self._client.get(scope.budget_keys(period.id)[3])
        except Exception as exc:  # noqa: BLE001 - as in `_run`
            raise self._failed(exc) from None
        return period, int(value or 0)

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        await self._client.aclose()

    async def _renew_leases(self) -> None:
        interval = self._lease_us / 3_000_000
        while True:
            await asyncio.sleep(interval)
            for key, tickets in list(self._leases.items()):
                if not tickets:
                    del self._leases[key]
                    continue
                # An outage is reported by the decisions; unrenewed leases simply expire.
                with contextlib.suppress(LimiterUnavailable):
                    await self._run(self._renew, (key,), (self._lease_us, *tickets))

    async def _run(self, script: AsyncScript, keys: tuple[str, ...], args: tuple[str | int, ...]) -> Any:
        """Run a registered script; any failure means the store could not answer."""
        try:
            if self._batcher is not None:
                return await self._batcher.run(script, keys, args)
            if not self._cluster_ready:
                async with self._cluster_start:
                    if not self._cluster_ready:
                        await self._client.initialize()
                        self._cluster_ready = True
            async with self._calls:
                return await script(keys=keys, args=args)
        except Exception as exc:  # noqa: BLE001 - redis-py also raises non-Redis errors on broken sockets
            raise self._failed(exc) from None

    def _failed(self, exc: BaseException) -> LimiterUnavailable:
        self._skip_until = time.monotonic() + PROBE_INTERVAL_S
        message = f"{type(exc).__name__}: {exc}"
        for secret in self._secrets:
            message = message.replace(secret, "***")
        self._last_error = message
        return LimiterUnavailable(message)


class _Batcher:
    """Sends the script calls made during one event-loop turn as one pipeline on one connection.

    Each EVALSHA in the pipeline is still its own atomic decision; batching only shares the round
    trip and redis-py's per-call overhead (its client path cost ~80 us of CPU per call here; a batch
    costs one connection checkout, one write and one read per reply). A script Redis lost (after a
    restart) is loaded again and its calls retried.
    """

    __slots__ = ("_calls", "_client", "_queue", "_scheduled", "_sending")

    def __init__(self, client: Redis, calls: asyncio.Semaphore) -> None:
        self._client = client
        self._calls = calls
        self._queue: list[
            tuple[AsyncScript, tuple[str, ...], tuple[str | int, ...], asyncio.Future[Any]]
        ] = []
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()  # strong references while in flight

    def run(
        self, script: AsyncScript, keys: tuple[str, ...], args: tuple[str | int, ...]
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((script, keys, args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._queue = self._queue, []
        task = asyncio.ensure_future(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(
        self, batch: list[tuple[AsyncScript, tuple[str, ...], tuple[str | int, ...], asyncio.Future[Any]]]
    ) -> None:
        # One deadline for the whole round trip (the client has no socket timeout of its own: redis-py
        # wraps each timed write in asyncio.wait_for, a task per call on the request path).
        deadline = Deadline(SOCKET_TIMEOUT_S)
        try:
            try:
                async with self._calls:
                    try:
                        results = await self._execute(batch)
                    except _StaleConnection:
                        # A pooled connection from before a Redis restart (or one the server
                        # dropped) failed before any reply: nothing ran, so the whole batch is sent
                        # once more, on a new connection. Its idle neighbours are as stale.
                        await self._client.connection_pool.disconnect(inuse_connections=False)
                        results = await self._execute(batch, fresh=True)
                    missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
                    if missing:
                        for script in {id(batch[i][0]): batch[i][0] for i in missing}.values():
                            await self._client.script_load(script.script)
                        retried = await self._execute([batch[i] for i in missing])
                        for i, result in zip(missing, retried, strict=True):
                            results[i] = result
            except asyncio.CancelledError:
                if deadline.disarm():
                    raise RedisTimeoutError(f"no answer from Redis within {SOCKET_TIMEOUT_S:g} s") from None
                raise
            deadline.disarm()
        except BaseException as exc:  # every caller must hear about a failed round trip
            for *_, future in batch:
                if not future.done():
                    future.set_exception(
                        exc if isinstance(exc, Exception) else RedisConnectionError(str(exc))
                    )
            if not isinstance(exc, Exception):
                raise
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _execute(
        self,
        batch: list[tuple[AsyncScript, tuple[str, ...], tuple[str | int, ...], asyncio.Future[Any]]],
        *,
        fresh: bool = False,
    ) -> list[Any]:
        """One round trip on one pooled connection (a new one if `fresh`); per-call errors (NOSCRIPT)
        come back as values.

        Raises:
            _StaleConnection: the connection failed before Redis answered anything (safe to resend).
        """
        pool = self._client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        results: list[Any] = []
        try:
            if fresh:
                await connection.disconnect()
                await connection.connect()
            packed = b"".join(_pack_evalsha(script.sha, keys, args) for script, keys, args, _ in batch)
            await connection.send_packed_command(packed, check_health=False)
            for _ in batch:
                try:
                    results.append(await connection.read_response())
                except ResponseError as exc:
                    results.append(exc)
            return results
        except (RedisConnectionError, OSError) as exc:
            await connection.disconnect(nowait=True)
            if results or fresh:
                raise  # some replies came (the rest may have run) or a new connection failed too
            raise _StaleConnection(str(exc)) from exc
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)


class _StaleConnection(RedisConnectionError):
    """A connection failed before any reply, so no call in its batch ran: it may be resent once."""


_PREFIXES: dict[tuple[str, tuple[str, ...], int], bytes] = {}
"""RESP up to the first argument, per script, keys and argument count: bounded by the scopes (and
their budget periods: emptied when it grows past `_MAX_PREFIXES`)."""
_MAX_PREFIXES: Final = 16_384


def _pack_evalsha(sha: str, keys: tuple[str, ...], args: tuple[str | int, ...]) -> bytes:
    """RESP for one EVALSHA: redis-py's general-purpose packer cost ~40 us per call (profiled)."""
    prefix = _PREFIXES.get((sha, keys, len(args)))
    if prefix is None:
        head = [b"EVALSHA", sha.encode(), str(len(keys)).encode(), *(key.encode() for key in keys)]
        prefix = b"*%d\r\n" % (len(head) + len(args)) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in head)
        if len(_PREFIXES) >= _MAX_PREFIXES:
            _PREFIXES.clear()
        _PREFIXES[(sha, keys, len(args))] = prefix
    out = [prefix]
    for arg in args:
        part = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(part), part))
    return b"".join(out)


__all__ = (
    "ACQUIRE_LUA",
    "RENEW_LUA",
    "SETTLE_LUA",
    "RedisLimiter",
    "connect",
    "describe_url",
    "is_cluster_url",
)
