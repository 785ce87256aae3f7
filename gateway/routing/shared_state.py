"""Circuit breakers shared by every gateway process through Redis pub/sub (with `redis_url` set).

A breaker that opens in one process opens in all of them, so N replicas (and N workers) do not each
pay `failure_threshold` failed attempts for the same broken target. Nothing here is on the request
path: a breaker that this process opens or closes only queues its name (`Breaker.shared`); a
publisher task sends its state, and a subscriber task applies the others' to the local breakers.

Wire: channel `llmgw:breakers`, one JSON `BreakerChange` per change; the hash `llmgw:breakers:open`
holds the open ones (target → the same JSON), so a process that (re)subscribes reads what it missed.
Times travel as wall-clock epochs (each process converts to and from its own monotonic clock): skew
between hosts lengthens or shortens a remote cool-down by that skew. Each process has its own
`replica` id and ignores its own messages; applying a remote change never publishes, so there is no
echo. A resync also publishes the local opens the hash lacks (made while Redis was out of reach).

Health-probe verdicts are not shared: every process probes each vLLM backend itself every
`health_interval_s`, without costing a request, so sharing would gain less than one interval and let
one host's view of the network override another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING, Final

import msgspec
from redis.asyncio.cluster import RedisCluster

from gateway.observability.logs import get_logger

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.observability.metrics import Metrics
    from gateway.routing.breaker import Breaker

CHANNEL: Final = "llmgw:breakers"
OPEN_KEY: Final = "llmgw:breakers:open"
CALL_TIMEOUT_S: Final = 1.0
"""Bounds each publish (the one-server client has no socket timeout of its own)."""
RETRY_S: Final = (0.1, 0.5, 1.0, 2.0, 5.0)
"""Waits between subscription attempts while Redis is out of reach, the last one repeated."""
POLL_S: Final = 1.0

log = get_logger("gateway.breaker")
monotonic: Final = time.monotonic


class BreakerChange(msgspec.Struct, frozen=True):
    """One breaker's state as another process should apply it."""

    replica: str
    """The process that changed it (its own messages are ignored)."""
    target: str
    """`backend/upstream-model`, as in the config."""
    open_until: float
    """Wall-clock epoch seconds until which the target is skipped; 0: closed."""
    failures: int = 0


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(BreakerChange)


class SharedBreakers:
    """Publishes this process's breaker changes and applies every other process's."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        breakers: dict[tuple[str, str], Breaker],
        metrics: Metrics | None = None,
        *,
        replica: str | None = None,
    ) -> None:
        self._client = client
        self._breakers = {breaker.name: breaker for breaker in breakers.values()}
        self._labels = {breaker.name: key for key, breaker in breakers.items()}
        self._metrics = metrics
        self.replica = replica or f"{os.getpid()}-{os.urandom(4).hex()}"
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._pending: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._failing = False
        self.synced = asyncio.Event()
        """Set once the first resync is done (subscribed, and the open breakers read)."""

    def start(self) -> None:
        for breaker in self._breakers.values():
            breaker.shared = self._changed
        self._tasks = [
            asyncio.create_task(self._publish(), name="breakers-publish"),
            asyncio.create_task(self._subscribe(), name="breakers-subscribe"),
        ]

    def track(self, breakers: dict[tuple[str, str], Breaker]) -> None:
        """A config reload: share the new router's breakers from now on (kept ones stay; those of
        targets no longer configured stop publishing), and resync, so a new target learns of a
        breaker open elsewhere."""
        for breaker in self._breakers.values():
            breaker.shared = None
        self._breakers = {breaker.name: breaker for breaker in breakers.values()}
        self._labels = {breaker.name: key for key, breaker in breakers.items()}
        for breaker in self._breakers.values():
            breaker.shared = self._changed
        if self._tasks:  # started (and not stopped)
            resync = asyncio.create_task(self._resync_once(), name="breakers-resync")
            self._tasks = [task for task in self._tasks if not task.done()] + [resync]

    async def _resync_once(self) -> None:
        try:
            await self._resync()
        except Exception as exc:  # noqa: BLE001 - a missed resync is healed by the next (re)subscribe
            self._failed("resync", exc)

    async def stop(self) -> None:
        for breaker in self._breakers.values():
            breaker.shared = None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.aclose()

    def _changed(self, breaker: Breaker) -> None:
        """On the request path: queue the name only; bursts for one target collapse into one message."""
        if breaker.name not in self._pending:
            self._pending.add(breaker.name)
            self._queue.put_nowait(breaker.name)

    def _message(self, breaker: Breaker) -> BreakerChange:
        now = monotonic()
        open_until = time.time() + (breaker.open_until - now) if breaker.is_open(now) else 0.0
        return BreakerChange(self.replica, breaker.name, open_until, breaker.failures)

    async def _publish(self) -> None:
        client = self._client
        while True:
            name = await self._queue.get()
            self._pending.discard(name)
            breaker = self._breakers.get(name)
            if breaker is None:  # a target a reload removed since its change was queued
                continue
            change = self._message(breaker)
            payload = _encoder.encode(change)
            try:
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    if change.open_until:
                        await client.hset(OPEN_KEY, name, payload)
                    else:
                        await client.hdel(OPEN_KEY, name)
                    await client.publish(CHANNEL, payload)
            except Exception as exc:  # noqa: BLE001 - the publisher must outlive any failed call
                # Dropped, not retried: the next resync publishes the opens still in force.
                self._failed("publish", exc)
            else:
                self._failing = False

    async def _subscribe(self) -> None:
        attempt = 0
        while True:
            pubsub = None
            try:
                if isinstance(self._client, RedisCluster):
                    await self._client.initialize()  # a cluster's pub/sub needs its slot map first
                pubsub = self._client.pubsub()
                await pubsub.subscribe(CHANNEL)
                while True:
                    message = await pubsub.get_message(timeout=POLL_S)
                    if message is None:
                        continue
                    attempt = 0
                    if message["type"] == "subscribe":
                        # Also after the client reconnected on its own: read what was missed.
                        await self._resync()
                    elif message["type"] == "message":
                        self._apply(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever the client raises, subscribe again later
                self._failed("subscribe", exc)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(RETRY_S[min(attempt, len(RETRY_S) - 1)])
            attempt += 1

    async def _resync(self) -> None:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            stored = await self._client.hgetall(OPEN_KEY)
        published: dict[str, float] = {}
        for raw in stored.values():
            change = self._apply(raw.encode() if isinstance(raw, str) else raw)
            if change is not None:
                published[change.target] = change.open_until
        now, wall = monotonic(), time.time()
        for name, breaker in self._breakers.items():
            # A local open the others do not know of (made while Redis was out of reach). Not one
            # applied from another process: its sender may have closed it meanwhile.
            if (
                breaker.is_open(now)
                and not breaker.remote_open
                and wall + (breaker.open_until - now) > published.get(name, 0.0) + 1.0
            ):
                self._changed(breaker)
        log.info("breakers_resynced", open=len(published), replica=self.replica)
        self._failing = False
        self.synced.set()

    def _apply(self, raw: bytes) -> BreakerChange | None:
        """Apply one change from another process; the change, or None if it was not one."""
        try:
            change = _decoder.decode(raw)
        except msgspec.DecodeError:
            log.warning("breaker_message_invalid", size=len(raw))
            return None
        breaker = self._breakers.get(change.target)
        if breaker is None or change.replica == self.replica:
            return change  # another config's target, or this process's own message
        now = monotonic()
        open_until = now + (change.open_until - time.time()) if change.open_until else 0.0
        if breaker.apply_remote(now, open_until, change.failures, change.replica) and self._metrics:
            backend, model = self._labels[change.target]
            self._metrics.breaker_remote(backend, model, "open" if open_until else "closed")
        return change

    def _failed(self, what: str, exc: Exception) -> None:
        if self._metrics is not None:
            self._metrics.store_error()
        if not self._failing:
            self._failing = True
            log.warning(
                "breaker_sharing_unavailable",
                operation=what,
                error=type(exc).__name__,
                detail="breakers are kept per process until Redis answers again",
            )


__all__ = ("CHANNEL", "OPEN_KEY", "BreakerChange", "SharedBreakers")
