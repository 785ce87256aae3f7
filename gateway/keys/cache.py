"""Every replica's in-memory copy of the API-made keys and teams: what `Gateway.authenticate` reads.

The request path only looks up a `DigestIndex` (one dict lookup and one constant-time compare, as for
config keys): no Redis round trip. The copy is kept current by one background task per process:

- at start, and after every (re)connection, it subscribes to `llmgw:keys:changed` first and then
  reads everything, so no change falls between the two;
- each message names one record (`key:<id>`, `team:<id>`), which it re-reads and applies: a creation,
  change, rotation or revocation reaches every replica one pub/sub hop and one `HGET` after the write;
- every `RESYNC_S` it reads everything again, which heals a message lost in a disconnection;
- a lost connection is retried with a backoff of 0.1 s doubling to 2 s, then resynced.

The replica that served an admin call applies its own change at once as well. While Redis is
unreachable the last copy keeps working (revocations made meanwhile arrive with the reconnection);
a process that never reached Redis knows no API key and refuses them (config keys still work).
Expiry and a rotated secret's grace are checked in memory (`KeyPolicy.valid_until`).

An id is one key's: the admin API refuses to make a key with a config key's id, and a reload a
`keys:` id an API key has, but a config file deployed with such an id at start-up (or a key made by
a replica running another file) would make two keys share limiter counters and usage rows. The
config key wins: the API key is not loaded (`shadowed`, logged once as `api_key_shadowed`) for as
long as the config has that id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Final

import anyio

from gateway.edge.auth import DigestIndex, KeyPolicy, canonical_names
from gateway.errors import GatewayError
from gateway.keys.store import CHANNEL, STORE_TIMEOUT_S
from gateway.limits.base import Scope, ScopeKind
from gateway.observability.logs import get_logger

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gateway.config import ModelConfig
    from gateway.keys.records import KeyRecord, TeamRecord
    from gateway.keys.store import KeyStore

RESYNC_S: Final = 30.0
"""A full re-read this often heals a change whose message was lost."""
RETRY_S: Final = (0.1, 2.0)
"""Reconnection backoff: from the first, doubling, up to the second."""

log = get_logger("gateway.keys")


class ApiKeyCache:
    def __init__(
        self,
        store: KeyStore,
        models: Mapping[str, ModelConfig],
        *,
        config_ids: frozenset[str] = frozenset(),
        resync_s: float = RESYNC_S,
    ) -> None:
        self.store = store
        self.index = DigestIndex()
        """What `authenticate` looks keys up in (the same object for the process's life)."""
        self.keys: dict[str, KeyRecord] = {}
        """The keys loaded (in `index`)."""
        self.shadowed: dict[str, KeyRecord] = {}
        """Keys not loaded because a config key has their id (the config key wins)."""
        self._config_ids = config_ids
        self.teams: dict[str, TeamRecord] = {}
        self.synced = False
        """Whether a full read has succeeded since start."""
        self._canonical = canonical_names(models)
        self._policies: dict[str, tuple[KeyPolicy, ...]] = {}
        self._team_scopes: dict[str, Scope | None] = {}
        self._resync_s = resync_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read everything once (start-up goes on without it if Redis does not answer), then follow."""
        try:
            await self.resync()
        except GatewayError as exc:
            log.warning("api_keys_unavailable", message=exc.message)
        self._task = asyncio.create_task(self._follow())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.store.aclose()

    async def resync(self) -> None:
        keys, teams = await self.store.load()
        self._replace(keys, teams)

    def _replace(self, keys: dict[str, KeyRecord], teams: dict[str, TeamRecord]) -> None:
        """Rebuild everything from a full read and swap it in at once."""
        self._team_scopes = {team_id: _scope("team", record) for team_id, record in teams.items()}
        self.teams = teams
        fresh = DigestIndex()
        policies = {}
        shadowed = {}
        for record in keys.values():
            if record.id in self._config_ids:
                shadowed[record.id] = record
                self._log_shadowed(record.id)
                continue
            policies[record.id] = self._build(record)
            for policy in policies[record.id]:
                if fresh.add(policy) is not policy:  # two secrets sharing 64 digest bits: never in practice
                    log.error("api_key_indistinguishable", key=record.id)
        self.keys = {key_id: record for key_id, record in keys.items() if key_id not in shadowed}
        self.shadowed = shadowed
        self._policies = policies
        self.index.take(fresh)
        self.synced = True

    def set_config(self, models: Mapping[str, ModelConfig], config_ids: frozenset[str]) -> None:
        """A config reload: the keys' model names (aliases) resolve against the new models, and a
        key shadowed by a config key that is gone is loaded."""
        self._canonical = canonical_names(models)
        self._config_ids = config_ids
        if self.synced:
            self._replace({**self.keys, **self.shadowed}, self.teams)

    def _log_shadowed(self, key_id: str) -> None:
        if key_id not in self.shadowed:  # once, not at every resync
            log.error(
                "api_key_shadowed",
                key=key_id,
                message="a config key has this id: the config key is used, the API-made key is not loaded",
            )

    def put_key(self, key_id: str, record: KeyRecord | None) -> None:
        """Apply one key's current record (None: revoked)."""
        for policy in self._policies.pop(key_id, ()):
            self.index.remove(policy)
        if record is None:
            self.keys.pop(key_id, None)
            self.shadowed.pop(key_id, None)
            return
        if key_id in self._config_ids:
            self._log_shadowed(key_id)
            self.shadowed[key_id] = record
            self.keys.pop(key_id, None)
            return
        self.keys[key_id] = record
        policies = self._build(record)
        self._policies[key_id] = policies
        for policy in policies:
            if self.index.add(policy) is not policy:  # two secrets sharing 64 digest bits: never in practice
                log.error("api_key_indistinguishable", key=key_id)

    def put_team(self, team_id: str, record: TeamRecord | None) -> None:
        """Apply one team's current record (None: deleted); its keys pick up its limits."""
        if record is None:
            self.teams.pop(team_id, None)
            self._team_scopes.pop(team_id, None)
        else:
            self.teams[team_id] = record
            self._team_scopes[team_id] = _scope("team", record)
        for member in [k for k in self.keys.values() if k.team == team_id]:
            self.put_key(member.id, member)

    async def apply(self, message: str) -> None:
        """Re-read the record a change message names and apply it."""
        kind, _, item_id = message.partition(":")
        if kind == "key":
            found = await self.store.key(item_id)
            self.put_key(item_id, found[0] if found else None)
        elif kind == "team":
            team = await self.store.team(item_id)
            self.put_team(item_id, team[0] if team else None)
        else:
            log.warning("api_keys_unknown_message", message=message[:100])

    def _build(self, record: KeyRecord) -> tuple[KeyPolicy, ...]:
        own = _scope("key", record)
        team = self._team_scopes.get(record.team) if record.team is not None else None
        allowed = (
            None if "*" in record.models else frozenset(self._canonical.get(m, m) for m in record.models)
        )
        expires = record.expires_at.timestamp() if record.expires_at is not None else None

        def policy(sha256: str, until: float | None) -> KeyPolicy:
            digest = bytes.fromhex(sha256)
            return KeyPolicy(record.id, digest, allowed, own, team, team_id=record.team, valid_until=until)

        current = policy(record.sha256, expires)
        if record.previous_sha256 is None or record.previous_valid_until is None:
            return (current,)
        grace_end = record.previous_valid_until.timestamp()
        if expires is not None:
            grace_end = min(grace_end, expires)
        if grace_end <= time.time():
            return (current,)
        return (current, policy(record.previous_sha256, grace_end))

    async def _follow(self) -> None:
        """Subscribe, resync, apply messages; resync periodically; reconnect on failure. Forever."""
        delay = RETRY_S[0]
        while True:
            pubsub = self.store.pubsub()
            try:
                with anyio.fail_after(STORE_TIMEOUT_S):
                    await pubsub.subscribe(CHANNEL)
                await self.resync()
                if delay > RETRY_S[0]:
                    log.info("api_keys_reconnected")
                delay = RETRY_S[0]
                next_resync = time.monotonic() + self._resync_s
                while True:
                    wait = next_resync - time.monotonic()
                    if wait <= 0:
                        await self.resync()
                        next_resync = time.monotonic() + self._resync_s
                        continue
                    message = await pubsub.get_message(timeout=wait)
                    if message is not None and message.get("type") == "message":
                        data = message["data"]
                        await self.apply(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - redis-py also raises non-Redis errors on broken sockets
                what = exc.message if isinstance(exc, GatewayError) else type(exc).__name__
                log.warning("api_keys_sync_failed", error=what, retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_S[1])
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]


def _scope(kind: ScopeKind, record: KeyRecord | TeamRecord) -> Scope | None:
    """A key's or team's scope, or None when it sets no limit and no budget (nothing to count)."""
    scope = Scope(
        kind,
        record.id,
        rpm=record.rpm,
        tpm=record.tpm,
        max_concurrency=record.max_concurrency,
        budget=record.budget,
    )
    return scope if scope.limited else None


__all__ = ("RESYNC_S", "ApiKeyCache")
