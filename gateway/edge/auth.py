"""Client API keys: who is calling, which models they may use, and their limits.

A key is looked up by its SHA-256: the presented key is hashed once, the first bytes of the digest
pick the candidate, and the full digests are compared with `hmac.compare_digest`. The cost is the same
whatever the number of keys, and no timing reveals how much of a key was right. Configs may hold only
`key_sha256`, so the secret itself need not be in the file.

`Authorization: Bearer <key>` (what the OpenAI SDKs send) and `api-key: <key>` (Azure-style clients)
are both accepted. Errors never echo a key: at most its first five and last two characters.
"""

from __future__ import annotations

import hashlib
import hmac
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

    __slots__ = ("digest", "id", "models", "scope", "scopes", "team_id")

    def __init__(
        self,
        id: str,
        digest: bytes,
        models: frozenset[str] | None,
        scope: Scope | None,
        team: Scope | None = None,
        team_id: str | None = None,
    ) -> None:
        self.id = id
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


class KeyRing:
    def __init__(self, keys: list[KeyConfig], models: dict[str, ModelConfig]) -> None:
        canonical = {alias: name for name, model in models.items() for alias in (name, *model.aliases)}
        self._index: dict[bytes, KeyPolicy] = {}
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
            other = self._index.setdefault(digest[:_INDEX_BYTES], policy)
            if other is not policy:  # distinct keys whose digests share 64 bits: never in practice
                raise ValueError(f"keys '{entry.id}' and '{other.id}' cannot be told apart")

    def authenticate(self, authorization: str | None, api_key: str | None) -> KeyPolicy:
        """The policy of the key the request presents.

        Raises:
            AuthenticationError: no key, or not a configured one (401 `invalid_api_key`).
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
        digest = hashlib.sha256(presented.encode()).digest()
        policy = self._index.get(digest[:_INDEX_BYTES])
        if policy is None or not hmac.compare_digest(policy.digest, digest):
            raise AuthenticationError(f"Incorrect API key provided: {mask(presented)}.")
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


__all__ = ("KeyPolicy", "KeyRing", "check_model", "mask")
