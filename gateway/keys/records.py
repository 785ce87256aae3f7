"""The wire and storage shapes of keys and teams made through the admin API (docs/control-plane.md).

A stored `KeyRecord` is what the API shows (`KeyInfo`) plus the SHA-256 of its secret and, after a
rotation, of the previous secret: never a secret itself. Times are RFC 3339 in UTC on the wire
(`expires_at` must carry an offset: `2027-01-01T00:00:00Z`). Request bodies are decoded strictly
(unknown fields are 400s); in a PATCH an absent field keeps its value and `null` clears it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final

import msgspec
from msgspec import UNSET, Meta, UnsetType

from gateway.limits.base import Budget

Sha256Hex = Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]
"""A digest as stored: a record holding anything else is skipped (logged) rather than breaking a sync."""

ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$"
"""Ids of API-made keys and teams: as config key ids, but without `/` (they are URL path segments)."""
MAX_GRACE_S: Final = 30 * 86400
DEFAULT_GRACE_S: Final = 3600
"""How long a rotated key's previous secret keeps working, unless the rotation says otherwise."""

Id = Annotated[str, Meta(pattern=ID_PATTERN)]
Limit = Annotated[int, Meta(ge=1)]
Expiry = Annotated[datetime, Meta(tz=True)]
Metadata = Annotated[
    dict[Annotated[str, Meta(max_length=64)], Annotated[str, Meta(max_length=1024)]], Meta(max_length=64)
]


def _all_models() -> list[str]:
    return ["*"]


class TeamInfo(msgspec.Struct, kw_only=True, frozen=True):
    """A team: limits and a budget shared by every key in it (each key also keeps its own)."""

    id: str
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    budget: Budget | None = None
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    created_at: datetime
    updated_at: datetime | None = None


TeamRecord = TeamInfo
"""A team stores nothing it does not show."""


class KeyInfo(msgspec.Struct, kw_only=True, frozen=True):
    """An API-made key as the admin API shows it."""

    id: str
    team: str | None = None
    models: list[str] = msgspec.field(default_factory=_all_models)
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    budget: Budget | None = None
    expires_at: datetime | None = None
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    created_at: datetime
    updated_at: datetime | None = None
    secret_hint: str
    """The secret's prefix and last four characters (`sk-gw-…AbCd`), to tell keys apart."""
    rotated_at: datetime | None = None
    previous_valid_until: datetime | None = None
    """After a rotation: until when the previous secret still works."""
    shadowed: bool | UnsetType = UNSET
    """Shown (true) only on a key that a config key's same id shadows: it is not loaded. Never stored."""


class KeyRecord(KeyInfo, kw_only=True, frozen=True):
    """What Redis holds for a key."""

    sha256: Sha256Hex
    """The secret's SHA-256 (hex)."""
    previous_sha256: Sha256Hex | None = None
    """The previous secret's, while `previous_valid_until` has not passed."""

    def info(self) -> KeyInfo:
        return KeyInfo(**{name: getattr(self, name) for name in KeyInfo.__struct_fields__})


class CreatedKey(msgspec.Struct, kw_only=True, frozen=True):
    """The answer to a creation or a rotation: the only time the secret is shown."""

    secret: str
    key: KeyInfo


class _LimitsCreate(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """What a key and a team both take at creation."""

    rpm: Limit | None = None
    tpm: Limit | None = None
    max_concurrency: Limit | None = None
    budget: Budget | None = None
    metadata: Metadata = msgspec.field(default_factory=dict)


class _LimitsUpdate(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """What a PATCH of a key and of a team may both change."""

    rpm: Limit | UnsetType | None = UNSET
    tpm: Limit | UnsetType | None = UNSET
    max_concurrency: Limit | UnsetType | None = UNSET
    budget: Budget | UnsetType | None = UNSET
    metadata: Metadata | UnsetType | None = UNSET


class KeyCreate(_LimitsCreate, kw_only=True, frozen=True, forbid_unknown_fields=True):
    id: Id
    team: Id | None = None
    models: Annotated[list[str], Meta(min_length=1)] = msgspec.field(default_factory=_all_models)
    expires_at: Expiry | None = None


class KeyUpdate(_LimitsUpdate, kw_only=True, frozen=True, forbid_unknown_fields=True):
    team: Id | UnsetType | None = UNSET
    models: Annotated[list[str], Meta(min_length=1)] | UnsetType = UNSET
    expires_at: Expiry | UnsetType | None = UNSET


class Rotation(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    grace_s: Annotated[int, Meta(ge=0, le=MAX_GRACE_S)] = DEFAULT_GRACE_S
    """Seconds the previous secret keeps working (0: it stops at once)."""


class TeamCreate(_LimitsCreate, kw_only=True, frozen=True, forbid_unknown_fields=True):
    id: Id


class TeamUpdate(_LimitsUpdate, kw_only=True, frozen=True, forbid_unknown_fields=True):
    pass


def changes(update: KeyUpdate | TeamUpdate) -> dict[str, object]:
    """The fields a PATCH sets (`null` metadata becomes `{}`)."""
    fields = {
        name: value for name in update.__struct_fields__ if (value := getattr(update, name)) is not UNSET
    }
    if "metadata" in fields and fields["metadata"] is None:
        fields["metadata"] = {}
    return fields


key_record_decoder: Final = msgspec.json.Decoder(KeyRecord)
team_record_decoder: Final = msgspec.json.Decoder(TeamRecord)
key_create_decoder: Final = msgspec.json.Decoder(KeyCreate)
key_update_decoder: Final = msgspec.json.Decoder(KeyUpdate)
rotation_decoder: Final = msgspec.json.Decoder(Rotation)
team_create_decoder: Final = msgspec.json.Decoder(TeamCreate)
team_update_decoder: Final = msgspec.json.Decoder(TeamUpdate)
encoder: Final = msgspec.json.Encoder()

__all__ = (
    "DEFAULT_GRACE_S",
    "ID_PATTERN",
    "CreatedKey",
    "KeyCreate",
    "KeyInfo",
    "KeyRecord",
    "KeyUpdate",
    "Rotation",
    "TeamCreate",
    "TeamInfo",
    "TeamRecord",
    "TeamUpdate",
    "changes",
    "encoder",
    "key_create_decoder",
    "key_record_decoder",
    "key_update_decoder",
    "rotation_decoder",
    "team_create_decoder",
    "team_record_decoder",
    "team_update_decoder",
)
