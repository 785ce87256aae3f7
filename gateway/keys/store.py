"""Keys and teams made through the admin API, in Redis: two hashes and one pub/sub channel.

    llmgw:{control}:keys    id -> KeyRecord JSON (the secret's SHA-256, never the secret)
    llmgw:{control}:teams   id -> TeamRecord JSON
    llmgw:keys:changed      `key:<id>` or `team:<id>` after every change

Both hashes share one hash tag, so a Cluster keeps them in one slot and a script can read both. Every
write is one script that checks and writes atomically and publishes the change in the same step:
creations fail on an existing id, updates are compare-and-set on the record read before (a
concurrent change makes the caller re-read and re-apply its PATCH), a key's team must exist, and a
team is deleted only without keys (or with them, on `force`). Readers (`gateway.keys.cache`) never
call Redis on the request path: they re-read what a message names, and everything every `RESYNC_S`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast

import anyio
import msgspec

from gateway.errors import ServiceUnavailableError
from gateway.keys.records import KeyRecord, TeamRecord, key_record_decoder, team_record_decoder
from gateway.observability.logs import get_logger

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub
    from redis.asyncio.cluster import RedisCluster

KEYS_HASH: Final = "llmgw:{control}:keys"
TEAMS_HASH: Final = "llmgw:{control}:teams"
CHANNEL: Final = "llmgw:keys:changed"
STORE_TIMEOUT_S: Final = 2.0
"""One admin call to the store (a read, or a script) must finish within this."""

WriteOutcome = Literal["ok", "exists", "missing", "changed", "no_team"]

# KEYS: the hash written, the teams hash. ARGV: id, the record read before ('' to create), the new
# record ('' to delete), the team the record names ('' none), the channel, the message.
_WRITE_LUA: Final = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  if current then return 'exists' end
elseif not current then
  return 'missing'
elseif current ~= ARGV[2] then
  return 'changed'
end
if ARGV[4] ~= '' and redis.call('HEXISTS', KEYS[2], ARGV[4]) == 0 then return 'no_team' end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 'ok'
"""

# KEYS: the keys hash, the teams hash. ARGV: team id, '1' to revoke its keys too, the channel.
# Answers {outcome, ids of the team's keys}.
_DELETE_TEAM_LUA: Final = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return {'missing'} end
local members = {'has_keys'}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, record = pcall(cjson.decode, all[i + 1])
  if ok and record.team == ARGV[1] then members[#members + 1] = all[i] end
end
if #members > 1 and ARGV[2] ~= '1' then return members end
for i = 2, #members do
  redis.call('HDEL', KEYS[1], members[i])
  redis.call('PUBLISH', ARGV[3], 'key:' .. members[i])
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[3], 'team:' .. ARGV[1])
members[1] = 'ok'
return members
"""

log = get_logger("gateway.keys")
_T = TypeVar("_T")


def unavailable(what: str) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        f"The key store (Redis) did not answer ({what}); nothing was changed, or the change was not "
        "confirmed: read it back before retrying.",
        code="key_store_unavailable",
    )


class KeyStore:
    """The Redis side of API-made keys and teams (one client of its own, besides the limiter's)."""

    def __init__(self, client: Redis | RedisCluster) -> None:
        self._client = client
        self._write = client.register_script(_WRITE_LUA)
        self._delete_team = client.register_script(_DELETE_TEAM_LUA)

    @classmethod
    def from_url(cls, url: str) -> KeyStore:
        from gateway.limits.redis import connect

        return cls(connect(url))

    async def _call(self, call: Awaitable[Any]) -> Any:
        """Raises:
        ServiceUnavailableError: Redis did not answer in time (503 `key_store_unavailable`).
        """
        try:
            with anyio.fail_after(STORE_TIMEOUT_S):
                return await call
        except Exception as exc:  # noqa: BLE001 - redis-py also raises non-Redis errors on broken sockets
            raise unavailable(type(exc).__name__) from None

    async def load(self) -> tuple[dict[str, KeyRecord], dict[str, TeamRecord]]:
        """Every key and team (records that do not decode are logged and left out)."""
        raw_keys: dict[bytes, bytes] = await self._call(self._client.hgetall(KEYS_HASH))
        raw_teams: dict[bytes, bytes] = await self._call(self._client.hgetall(TEAMS_HASH))
        keys = {k.id: k for raw in raw_keys.values() if (k := _decode(key_record_decoder, raw)) is not None}
        teams = {
            t.id: t for raw in raw_teams.values() if (t := _decode(team_record_decoder, raw)) is not None
        }
        return keys, teams

    async def key(self, key_id: str) -> tuple[KeyRecord, bytes] | None:
        """The key's record and its stored bytes (what an update compares against), or None."""
        raw: bytes | None = await self._call(self._client.hget(KEYS_HASH, key_id))
        record = _decode(key_record_decoder, raw) if raw is not None else None
        return None if record is None or raw is None else (record, raw)

    async def team(self, team_id: str) -> tuple[TeamRecord, bytes] | None:
        raw: bytes | None = await self._call(self._client.hget(TEAMS_HASH, team_id))
        record = _decode(team_record_decoder, raw) if raw is not None else None
        return None if record is None or raw is None else (record, raw)

    async def write_key(
        self, key_id: str, *, before: bytes | None, after: bytes | None, team: str | None
    ) -> WriteOutcome:
        """Create (`before` None), replace or delete (`after` None) a key, checked and published."""
        return await self._run_write(KEYS_HASH, "key", key_id, before, after, team)

    async def write_team(self, team_id: str, *, before: bytes | None, after: bytes) -> WriteOutcome:
        return await self._run_write(TEAMS_HASH, "team", team_id, before, after, None)

    async def _run_write(
        self,
        hash_key: str,
        kind: str,
        item_id: str,
        before: bytes | None,
        after: bytes | None,
        team: str | None,
    ) -> WriteOutcome:
        args = (item_id, before or b"", after or b"", team or "", CHANNEL, f"{kind}:{item_id}")
        reply = await self._call(self._write(keys=(hash_key, TEAMS_HASH), args=args))
        outcome = reply.decode() if isinstance(reply, bytes) else str(reply)
        return cast("WriteOutcome", outcome)

    async def delete_team(self, team_id: str, *, force: bool) -> tuple[str, list[str]]:
        """("ok" | "missing" | "has_keys", the team's key ids: revoked on "ok")."""
        args = (team_id, "1" if force else "", CHANNEL)
        reply: list[Any] = await self._call(self._delete_team(keys=(KEYS_HASH, TEAMS_HASH), args=args))
        names = [item.decode() if isinstance(item, bytes) else str(item) for item in reply]
        return names[0], names[1:]

    def pubsub(self) -> PubSub:
        """A pub/sub connection of its own (not yet subscribed)."""
        return self._client.pubsub(ignore_subscribe_messages=True)

    async def aclose(self) -> None:
        await self._client.aclose()


def _decode(decoder: msgspec.json.Decoder[_T], raw: bytes) -> _T | None:
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError as exc:
        log.error("key_store_record_invalid", error=str(exc))
        return None


__all__ = ("CHANNEL", "KEYS_HASH", "STORE_TIMEOUT_S", "TEAMS_HASH", "KeyStore", "WriteOutcome", "unavailable")
