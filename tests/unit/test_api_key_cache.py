"""The per-replica copy of API-made keys (`gateway.keys.cache`) against a real Redis: what it
applies from a change message, a full resync, and what `authenticate` then admits."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from redis import asyncio as redis

from gateway.admin.keys import digest_hex, new_secret, secret_hint
from gateway.config import ModelConfig
from gateway.edge.auth import authenticate
from gateway.errors import AuthenticationError
from gateway.keys.cache import ApiKeyCache
from gateway.keys.records import KeyRecord, TeamRecord, encoder
from gateway.keys.store import KEYS_HASH, KeyStore
from tests.redis_server import RedisServer

MODELS = {
    "m": msgspec.convert({"targets": [{"backend": "b", "model": "x"}], "aliases": ["alias"]}, ModelConfig)
}
NOW = datetime.now(UTC).replace(microsecond=0)


def key(key_id: str, secret: str, **fields: Any) -> KeyRecord:
    return KeyRecord(
        id=key_id, created_at=NOW, secret_hint=secret_hint(secret), sha256=digest_hex(secret), **fields
    )


def admitted(cache: ApiKeyCache, secret: str) -> str | None:
    try:
        return authenticate(f"Bearer {secret}", None, (cache.index,)).id
    except AuthenticationError:
        return None


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@pytest.fixture
def ids() -> str:
    return "u" + os.urandom(3).hex()


def test_messages_and_resyncs_apply_what_redis_holds(redis_server: RedisServer, ids: str) -> None:
    async def scenario() -> None:
        writer, reader = KeyStore.from_url(redis_server.url), KeyStore.from_url(redis_server.url)
        cache = ApiKeyCache(reader, MODELS)
        team = TeamRecord(id=f"{ids}-team", rpm=5, created_at=NOW)
        assert await writer.write_team(team.id, before=None, after=encoder.encode(team)) == "ok"
        first, second = new_secret(), new_secret()
        one = key(f"{ids}-1", first, team=team.id, models=["alias"])
        two = key(f"{ids}-2", second, team=team.id, rpm=9)
        for record in (one, two):
            assert (
                await writer.write_key(record.id, before=None, after=encoder.encode(record), team=team.id)
                == "ok"
            )
        await cache.resync()
        assert admitted(cache, first) == one.id
        policy = authenticate(f"Bearer {second}", None, (cache.index,))
        # The key's own scope first, then the team's: one Scope object shared by the team's keys.
        assert [(s.kind, s.rpm) for s in policy.scopes] == [("key", 9), ("team", 5)]
        team_scope = authenticate(f"Bearer {first}", None, (cache.index,)).scopes[0]
        assert team_scope is policy.scopes[1]
        assert authenticate(f"Bearer {first}", None, (cache.index,)).allows("m")

        # A message names what changed; the cache re-reads just that.
        found = await writer.key(one.id)
        assert found is not None
        assert await writer.write_key(one.id, before=found[1], after=None, team=None) == "ok"
        assert admitted(cache, first) == one.id  # not yet told
        await cache.apply(f"key:{one.id}")
        assert admitted(cache, first) is None
        raised = msgspec.structs.replace(team, rpm=50)
        stored = await writer.team(team.id)
        assert stored is not None
        assert await writer.write_team(team.id, before=stored[1], after=encoder.encode(raised)) == "ok"
        await cache.apply(f"team:{team.id}")
        assert authenticate(f"Bearer {second}", None, (cache.index,)).scopes[1].rpm == 50
        # A stale compare-and-set is refused and changes nothing.
        assert await writer.write_team(team.id, before=stored[1], after=encoder.encode(team)) == "changed"
        assert (await writer.delete_team(team.id, force=False))[0] == "has_keys"
        assert await writer.delete_team(team.id, force=True) == ("ok", [two.id])
        await cache.resync()
        assert admitted(cache, second) is None
        await writer.aclose()
        await cache.aclose()

    run(scenario())


def test_expiry_and_a_rotated_secret_grace_are_checked_in_memory(redis_server: RedisServer, ids: str) -> None:
    cache = ApiKeyCache(KeyStore.from_url(redis_server.url), MODELS)
    old, new, expired = new_secret(), new_secret(), new_secret()
    rotated = key(
        f"{ids}-r",
        new,
        previous_sha256=digest_hex(old),
        previous_valid_until=NOW + timedelta(hours=1),
        rotated_at=NOW,
    )
    cache.put_key(rotated.id, rotated)
    assert admitted(cache, new) == admitted(cache, old) == rotated.id
    over = msgspec.structs.replace(rotated, previous_valid_until=NOW - timedelta(seconds=1))
    cache.put_key(over.id, over)
    assert admitted(cache, old) is None
    assert admitted(cache, new) == rotated.id
    cache.put_key(f"{ids}-x", key(f"{ids}-x", expired, expires_at=NOW - timedelta(seconds=1)))
    with pytest.raises(AuthenticationError, match="has expired"):
        authenticate(f"Bearer {expired}", None, (cache.index,))
    cache.put_key(rotated.id, None)
    assert admitted(cache, new) is None
    run(cache.aclose())


def test_start_without_redis_knows_no_api_key_and_does_not_fail() -> None:
    async def scenario() -> None:
        cache = ApiKeyCache(KeyStore.from_url("redis://127.0.0.1:1"), MODELS, resync_s=0.1)
        await cache.start()
        assert not cache.synced
        assert len(cache.index) == 0
        await cache.aclose()

    run(scenario())


def test_a_stored_record_with_a_malformed_digest_is_skipped_not_fatal(ids: str) -> None:
    """One bad record (written by hand, or by another version) must not stop every other key's sync."""

    async def scenario() -> None:
        with RedisServer() as server:  # its own server: the bad record would reach other tests' caches
            writer, reader = KeyStore.from_url(server.url), KeyStore.from_url(server.url)
            good = new_secret()
            record = key(f"{ids}-good", good)
            assert (
                await writer.write_key(record.id, before=None, after=encoder.encode(record), team=None)
                == "ok"
            )
            bad = msgspec.structs.replace(key(f"{ids}-bad", new_secret()), sha256="not hex")
            raw = redis.Redis.from_url(server.url)
            await raw.hset(KEYS_HASH, bad.id, encoder.encode(bad))
            await raw.aclose()
            cache = ApiKeyCache(reader, MODELS)
            await cache.resync()
            assert admitted(cache, good) == record.id
            assert set(cache.keys) == {record.id}
            await cache.aclose()
            await writer.aclose()

    run(scenario())
