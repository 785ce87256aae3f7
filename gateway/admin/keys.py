"""`/admin/v1/keys` and `/admin/v1/teams`: keys and teams made through the admin API.

They live in Redis (`gateway.keys.store`) and every replica authenticates against its in-memory copy
(`gateway.keys.cache`). Without `redis_url` there is nowhere to keep them: every route here answers
503 `key_store_unavailable`. A creation or rotation answers the secret once (`sk-gw-` and 48
URL-safe random characters); only its SHA-256 is stored. Errors are OpenAI-shaped: 400 for a bad body
(naming the field), 404 for an unknown id, 409 for an id taken (by an API key or one of the config
file's `keys:`) or a team that still has keys.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec
from litestar import Request, Response, delete, get, patch, post

from gateway.admin import status
from gateway.api.chat import decode_request
from gateway.edge.auth import canonical_names
from gateway.errors import ConflictError, InvalidRequestError, NotFoundError, ServiceUnavailableError
from gateway.keys.records import (
    CreatedKey,
    KeyInfo,
    KeyRecord,
    TeamInfo,
    TeamRecord,
    changes,
    encoder,
    key_create_decoder,
    key_update_decoder,
    rotation_decoder,
    team_create_decoder,
    team_update_decoder,
)

if TYPE_CHECKING:
    from litestar.types import ControllerRouterHandler

    from gateway.app import Gateway
    from gateway.keys.cache import ApiKeyCache
    from gateway.keys.store import WriteOutcome

SECRET_PREFIX: Final = "sk-gw-"  # noqa: S105 - the public prefix of every secret, not one
SECRET_BYTES: Final = 36
"""48 URL-safe base64 characters: 288 random bits."""
CAS_ATTEMPTS: Final = 5
"""An update re-reads and re-applies itself this often when another change lands in between."""

_T = TypeVar("_T")


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def secret_hint(secret: str) -> str:
    return f"{SECRET_PREFIX}…{secret[-4:]}"


def digest_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _json(value: object, status_code: int = 200) -> Response[bytes]:
    return Response(
        encoder.encode(value),
        status_code=status_code,
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


def _utc(expires_at: datetime) -> datetime:
    """An `expires_at` in UTC.

    Raises:
        InvalidRequestError: it falls outside years 1 to 9999 once in UTC (`9999-12-31T23:00:00-05:00`).
    """
    try:
        return expires_at.astimezone(UTC)
    except OverflowError:
        raise InvalidRequestError(
            "expires_at is out of range: it must fall between years 1 and 9999 in UTC.", param="expires_at"
        ) from None


def _no_key(key_id: str) -> NotFoundError:
    return NotFoundError(f"No API key with id '{key_id}'.", code="key_not_found")


def _no_team(team_id: str) -> NotFoundError:
    return NotFoundError(f"No team with id '{team_id}'.", code="team_not_found")


def _unknown_team(team_id: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"No team with id '{team_id}': create it first (POST /admin/v1/teams).",
        param="team",
        code="team_not_found",
    )


async def compare_and_set(
    read: Callable[[], Awaitable[tuple[_T, bytes] | None]],
    change: Callable[[_T], _T | None],
    write: Callable[[bytes, _T | None], Awaitable[WriteOutcome]],
    missing: Exception,
) -> _T | None:
    """Read a record, change it (None: delete it) and write it unless it changed in between.

    Raises:
        the `missing` error: there is no such record (any more).
        InvalidRequestError: the record names a team that does not exist (400).
        ConflictError: it kept changing under us (409).
    """
    for _ in range(CAS_ATTEMPTS):
        found = await read()
        if found is None:
            raise missing
        record, raw = found
        updated = change(record)
        outcome = await write(raw, updated)
        if outcome == "ok":
            return updated
        if outcome == "missing":
            raise missing
        if outcome == "no_team":
            team = getattr(updated, "team", None)
            raise _unknown_team(str(team))
    raise ConflictError("The record kept changing while this request updated it; try again.")


class KeysApi:
    """The handlers' logic, on one gateway's settings, store and cache."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    @property
    def _models(self) -> dict[str, str]:
        return canonical_names(self._gateway.settings.models)

    @property
    def cache(self) -> ApiKeyCache:
        cache = self._gateway.api_keys
        if cache is None:
            raise ServiceUnavailableError(
                "API-made keys need a shared store: set `redis_url` in the gateway's config "
                "(config-file keys need no store).",
                code="key_store_unavailable",
            )
        return cache

    def _check_key(self, record: KeyRecord) -> None:
        unknown = [m for m in record.models if m != "*" and m not in self._models]
        if unknown:
            raise InvalidRequestError(
                f"models: no model named {', '.join(repr(m) for m in unknown)} "
                f"(known: {', '.join(sorted(self._models)) or 'none'}, or '*').",
                param="models",
            )
        if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
            raise InvalidRequestError("expires_at is in the past.", param="expires_at")

    async def create_key(self, body: bytes) -> CreatedKey:
        request = decode_request(key_create_decoder, body)
        cache = self.cache
        if request.id in self._gateway.settings.key_ids:  # read each time: a reload may change them
            raise ConflictError(
                f"A key with id '{request.id}' is in the config file's `keys:`; ids are unique across "
                "config and API keys.",
                param="id",
                code="key_exists",
            )
        secret = new_secret()
        fields = msgspec.structs.asdict(request)
        if fields["expires_at"] is not None:
            fields["expires_at"] = _utc(fields["expires_at"])
        record = KeyRecord(
            **fields, created_at=_now(), secret_hint=secret_hint(secret), sha256=digest_hex(secret)
        )
        self._check_key(record)
        outcome = await cache.store.write_key(
            record.id, before=None, after=encoder.encode(record), team=record.team
        )
        if outcome == "exists":
            raise ConflictError(
                f"An API key with id '{record.id}' already exists.", param="id", code="key_exists"
            )
        if outcome == "no_team":
            raise _unknown_team(str(record.team))
        cache.put_key(record.id, record)
        return CreatedKey(secret=secret, key=record.info())

    async def list_keys(self) -> list[KeyInfo]:
        keys, _ = await self.cache.store.load()
        return [self._shown(keys[k]) for k in sorted(keys)]

    async def key(self, key_id: str) -> KeyInfo:
        found = await self.cache.store.key(key_id)
        if found is None:
            raise _no_key(key_id)
        return self._shown(found[0])

    def _shown(self, record: KeyRecord) -> KeyInfo:
        """A stored key as listed: marked `shadowed` when a config key has its id (it is not loaded)."""
        info = record.info()
        return (
            msgspec.structs.replace(info, shadowed=True)
            if record.id in self._gateway.settings.key_ids
            else info
        )

    async def _change_key(
        self, key_id: str, change: Callable[[KeyRecord], KeyRecord | None]
    ) -> KeyRecord | None:
        cache = self.cache

        async def write(raw: bytes, record: KeyRecord | None) -> WriteOutcome:
            after = encoder.encode(record) if record is not None else None
            team = record.team if record is not None else None
            return await cache.store.write_key(key_id, before=raw, after=after, team=team)

        record = await compare_and_set(lambda: cache.store.key(key_id), change, write, _no_key(key_id))
        cache.put_key(key_id, record)
        return record

    async def update_key(self, key_id: str, body: bytes) -> KeyInfo:
        fields = changes(decode_request(key_update_decoder, body))
        expires_at = fields.get("expires_at")
        if isinstance(expires_at, datetime):
            fields["expires_at"] = _utc(expires_at)

        def change(record: KeyRecord) -> KeyRecord:
            updated = msgspec.structs.replace(record, **fields, updated_at=_now())
            self._check_key(updated)
            return updated

        record = await self._change_key(key_id, change)
        assert record is not None
        return record.info()

    async def rotate_key(self, key_id: str, body: bytes) -> CreatedKey:
        grace_s = decode_request(rotation_decoder, body or b"{}").grace_s
        secret = new_secret()

        def change(record: KeyRecord) -> KeyRecord:
            now = _now()
            return msgspec.structs.replace(
                record,
                sha256=digest_hex(secret),
                secret_hint=secret_hint(secret),
                rotated_at=now,
                previous_sha256=record.sha256 if grace_s else None,
                previous_valid_until=now + timedelta(seconds=grace_s) if grace_s else None,
            )

        record = await self._change_key(key_id, change)
        assert record is not None
        return CreatedKey(secret=secret, key=record.info())

    async def revoke_key(self, key_id: str) -> None:
        await self._change_key(key_id, lambda _: None)

    async def create_team(self, body: bytes) -> TeamInfo:
        request = decode_request(team_create_decoder, body)
        cache = self.cache
        record = TeamRecord(**msgspec.structs.asdict(request), created_at=_now())
        outcome = await cache.store.write_team(record.id, before=None, after=encoder.encode(record))
        if outcome == "exists":
            raise ConflictError(
                f"A team with id '{record.id}' already exists.", param="id", code="team_exists"
            )
        cache.put_team(record.id, record)
        return record

    async def list_teams(self) -> list[TeamInfo]:
        _, teams = await self.cache.store.load()
        return [teams[t] for t in sorted(teams)]

    async def team(self, team_id: str) -> TeamInfo:
        found = await self.cache.store.team(team_id)
        if found is None:
            raise _no_team(team_id)
        return found[0]

    async def update_team(self, team_id: str, body: bytes) -> TeamInfo:
        fields = changes(decode_request(team_update_decoder, body))
        cache = self.cache

        async def write(raw: bytes, record: TeamRecord | None) -> WriteOutcome:
            assert record is not None
            return await cache.store.write_team(team_id, before=raw, after=encoder.encode(record))

        def change(record: TeamRecord) -> TeamRecord:
            return msgspec.structs.replace(record, **fields, updated_at=_now())

        record = await compare_and_set(lambda: cache.store.team(team_id), change, write, _no_team(team_id))
        assert record is not None
        cache.put_team(team_id, record)
        return record

    async def delete_team(self, team_id: str, *, force: bool) -> list[str]:
        cache = self.cache
        outcome, members = await cache.store.delete_team(team_id, force=force)
        if outcome == "missing":
            raise _no_team(team_id)
        if outcome == "has_keys":
            shown = ", ".join(sorted(members)[:10]) + (" ..." if len(members) > 10 else "")
            raise ConflictError(
                f"Team '{team_id}' still has {len(members)} key(s) ({shown}): revoke or move them first, "
                "or delete with `?force=true` to revoke them too.",
                code="team_has_keys",
            )
        for key_id in members:
            cache.put_key(key_id, None)
        cache.put_team(team_id, None)
        return members


def _listed(items: list[Any]) -> dict[str, Any]:
    return {"object": "list", "data": items}


def routes(gateway: Gateway) -> list[ControllerRouterHandler]:
    """Under `/admin/v1`, behind the admin key."""
    api = KeysApi(gateway)
    one_key = "/keys/{key_id:str}"
    one_team = "/teams/{team_id:str}"

    @post("/keys", name="admin_create_key")
    async def create_key(request: Request[Any, Any, Any]) -> Response[bytes]:
        return _json(await api.create_key(await request.body()), 201)

    @get("/keys", name="admin_list_keys")
    async def list_keys() -> Response[bytes]:
        return _json(_listed(await api.list_keys()))

    @get(one_key, name="admin_get_key")
    async def get_key(key_id: str) -> Response[bytes]:
        return _json(await api.key(key_id))

    @patch(one_key, name="admin_update_key")
    async def update_key(request: Request[Any, Any, Any], key_id: str) -> Response[bytes]:
        return _json(await api.update_key(key_id, await request.body()))

    @delete(one_key, name="admin_revoke_key", status_code=200)
    async def revoke_key(key_id: str) -> Response[bytes]:
        await api.revoke_key(key_id)
        return _json({"id": key_id, "object": "key", "deleted": True})

    @post(f"{one_key}/rotate", name="admin_rotate_key", status_code=200)
    async def rotate_key(request: Request[Any, Any, Any], key_id: str) -> Response[bytes]:
        return _json(await api.rotate_key(key_id, await request.body()))

    @post("/teams", name="admin_create_team")
    async def create_team(request: Request[Any, Any, Any]) -> Response[bytes]:
        return _json(await api.create_team(await request.body()), 201)

    @get("/teams", name="admin_list_teams")
    async def list_teams() -> Response[bytes]:
        return _json(_listed(await api.list_teams()))

    @get(one_team, name="admin_get_team")
    async def get_team(team_id: str) -> Response[bytes]:
        return _json(await api.team(team_id))

    @patch(one_team, name="admin_update_team")
    async def update_team(request: Request[Any, Any, Any], team_id: str) -> Response[bytes]:
        return _json(await api.update_team(team_id, await request.body()))

    @delete(one_team, name="admin_delete_team", status_code=200)
    async def delete_team(team_id: str, force: bool = False) -> Response[bytes]:
        revoked = await api.delete_team(team_id, force=force)
        return _json({"id": team_id, "object": "team", "deleted": True, "revoked_keys": revoked})

    return [
        create_key,
        list_keys,
        get_key,
        update_key,
        revoke_key,
        rotate_key,
        create_team,
        list_teams,
        get_team,
        update_team,
        delete_team,
    ]


def key_figures(
    gateway: Gateway, keys: list[status.KeyStatus]
) -> tuple[list[status.KeyStatus], list[status.TeamStatus], str]:
    """The status page's keys and teams: the config's, then the API's (from memory, no secrets)."""
    cache = gateway.api_keys
    if cache is None:
        return keys, [], "none"
    members: dict[str, int] = {}
    listed = list(keys)
    for record in sorted(cache.keys.values(), key=lambda k: k.id):
        if record.team is not None:
            members[record.team] = members.get(record.team, 0) + 1
        listed.append(
            status.KeyStatus(
                id=record.id,
                source="api",
                team=record.team,
                models=list(record.models),
                limits=status.Limits(rpm=record.rpm, tpm=record.tpm, max_concurrency=record.max_concurrency),
                budget=status.budget_figures(record.budget),
            )
        )
    teams = [
        status.TeamStatus(
            id=team.id,
            keys=members.get(team.id, 0),
            limits=status.Limits(rpm=team.rpm, tpm=team.tpm, max_concurrency=team.max_concurrency),
            budget=status.budget_figures(team.budget),
        )
        for team in sorted(cache.teams.values(), key=lambda t: t.id)
    ]
    return listed, teams, "none"


status.KEY_FIGURES.append(key_figures)

__all__ = ("SECRET_PREFIX", "KeysApi", "compare_and_set", "key_figures", "new_secret", "routes")
