"""Client API keys: who is calling, which models they may use, and their limits.

A key is looked up by its SHA-256: the presented key is hashed once, the first bytes of the digest
pick the candidate, and the full digests are compared with `hmac.compare_digest`. The cost is the same
whatever the number of keys, and no timing reveals how much of a key was right. Configs may hold only
`key_sha256`, so the secret itself need not be in the file. `DigestIndex` is that lookup; the config's
`KeyRing` is one, and the keys made through the admin API (`gateway.keys.cache`) keep another, which
`authenticate` consults after the config's.

`Authorization: Bearer <key>` (what the OpenAI SDKs send) and `api-key: <key>` (Azure-style clients)
are both accepted. Errors never echo a key: at most its first five and last two characters.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

from gateway.config import key_digest
from gateway.errors import AuthenticationError, ModelNotFoundError
from gateway.limits import Scope

if TYPE_CHECKING:
    from gateway.config import KeyConfig, ModelConfig

_INDEX_BYTES: Final = 8
_MIN_HINT_LENGTH: Final = 20
"""Shorter keys are masked entirely: a hint would give away too much of them."""


class KeyPolicy:
    """One configured key: its id, the models it may use (None: all) and its limits (None: none)."""

    __slots__ = ("digest", "id", "models", "scope", "scopes", "team_id", "valid_until")

    def __init__(
        self,
        id: str,
        digest: bytes,
        models: frozenset[str] | None,
        scope: Scope | None,
        team: Scope | None = None,
        team_id: str | None = None,
        valid_until: float | None = None,
    ) -> None:
        self.id = id
        self.valid_until = valid_until
        """Unix seconds after which the key is refused (an expiry, or a rotated secret's grace), or None."""
        self.team_id = team_id
        """The team the key belongs to (its usage is counted there too), or None."""
        self.digest = digest
        self.models = models
        self.scope = scope
        """The key's own limits, or None."""
        self.scopes = tuple(s for s in (scope, team) if s is not None)
        """The limited scopes a request with this key counts against: the key's, then its team's."""

    def allows(self, model: str) -> bool:
        """Whether the key may use the model with this canonical (not alias) name."""
        return self.models is None or model in self.models


class DigestIndex:
    """Key policies by the first bytes of their digest: one dict lookup and one constant-time compare."""

    __slots__ = ("_index",)

    def __init__(self) -> None:
        self._index: dict[bytes, KeyPolicy] = {}

    def add(self, policy: KeyPolicy) -> KeyPolicy:
        """Index the policy; returns the policy already indexed under the same prefix, if another one is."""
        return self._index.setdefault(policy.digest[:_INDEX_BYTES], policy)

    def remove(self, policy: KeyPolicy) -> None:
        if self._index.get(policy.digest[:_INDEX_BYTES]) is policy:
            del self._index[policy.digest[:_INDEX_BYTES]]

    def take(self, other: DigestIndex) -> None:
        """Hold what `other` holds from now on, in one step (a rebuilt index replacing this one)."""
        self._index = other._index

    def find(self, digest: bytes) -> KeyPolicy | None:
        policy = self._index.get(digest[:_INDEX_BYTES])
        if policy is None or not hmac.compare_digest(policy.digest, digest):
            return None
        return policy

    def __len__(self) -> int:
        return len(self._index)


def canonical_names(models: Mapping[str, ModelConfig]) -> dict[str, str]:
    """Every public name and alias, to the model's canonical name."""
    return {alias: name for name, model in models.items() for alias in (name, *model.aliases)}


class KeyRing(DigestIndex):
    """The config file's `keys:`."""

    __slots__ = ()

    def __init__(self, keys: list[KeyConfig], models: dict[str, ModelConfig]) -> None:
        super().__init__()
        canonical = canonical_names(models)
        for entry in keys:
            digest = bytes.fromhex(key_digest(entry))
            allowed = None if "*" in entry.models else frozenset(canonical[m] for m in entry.models)
            scope = Scope(
                "key",
                entry.id,
                rpm=entry.rpm,
                tpm=entry.tpm,
                max_concurrency=entry.max_concurrency,
                budget=entry.budget,
            )
            policy = KeyPolicy(entry.id, digest, allowed, scope if scope.limited else None)
            other = self.add(policy)
            if other is not policy:  # distinct keys whose digests share 64 bits: never in practice
                raise ValueError(f"keys '{entry.id}' and '{other.id}' cannot be told apart")

    def authenticate(self, authorization: str | None, api_key: str | None) -> KeyPolicy:
        """The policy of the key the request presents (see `authenticate`)."""
        return authenticate(authorization, api_key, (self,))


def presented_key(authorization: str | None, api_key: str | None) -> str:
    """The key a request presents, from `Authorization: Bearer` or else `api-key`.

    Raises:
        AuthenticationError: no key, or another scheme than Bearer (401 `invalid_api_key`).
    """
    presented = None
    if authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise AuthenticationError(
                "The Authorization header must use the Bearer scheme: `Authorization: Bearer <key>`."
            )
        presented = credentials.strip()
    elif api_key:
        presented = api_key.strip()
    if not presented:
        raise AuthenticationError(
            "Missing API key: send your gateway key as `Authorization: Bearer <key>` "
            "(or in an `api-key` header)."
        )
    return presented


def authenticate(authorization: str | None, api_key: str | None, indexes: Iterable[DigestIndex]) -> KeyPolicy:
    """The policy of the key the request presents, from the first index that knows it.

    Raises:
        AuthenticationError: no key, not a known one, or an expired one (401 `invalid_api_key`).
    """
    presented = presented_key(authorization, api_key)
    digest = hashlib.sha256(presented.encode()).digest()
    for index in indexes:
        policy = index.find(digest)
        if policy is not None:
            break
    else:
        raise AuthenticationError(f"Incorrect API key provided: {mask(presented)}.")
    if policy.valid_until is not None and time.time() >= policy.valid_until:
        raise AuthenticationError(f"The API key {mask(presented)} has expired.")
    return policy


def check_model(policy: KeyPolicy | None, requested: str, canonical: str) -> None:
    """Refuse a model the key may not use exactly like an unknown one (404), so keys cannot probe
    which models exist; `/v1/models` lists what the key may use.

    Raises:
        ModelNotFoundError: the key may not use the model.
    """
    if policy is not None and not policy.allows(canonical):
        raise ModelNotFoundError(
            f"The model `{requested}` does not exist or you do not have access to it.", param="model"
        )


def mask(key: str) -> str:
    """A hint of a presented key for error messages: `sk-ab***yz`, or `***` for short keys."""
    if len(key) < _MIN_HINT_LENGTH:
        return "***"
    return f"{key[:5]}***{key[-2:]}"


__all__ = (
    "DigestIndex",
    "KeyPolicy",
    "KeyRing",
    "authenticate",
    "canonical_names",
    "check_model",
    "mask",
    "presented_key",
)
