"""The admin key: `Authorization: Bearer <admin key>` on every `/admin/v1/...` route.

The presented key is hashed and compared with the configured digest in constant time
(`hmac.compare_digest`), so neither the result nor its timing tells how much of a key was right.
Refusals are 401s in OpenAI's envelope and never echo what was presented.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from gateway.config import key_digest
from gateway.errors import AuthenticationError

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers import BaseRouteHandler

    from gateway.config import AdminSettings


class AdminAuth:
    """A Litestar guard: admits a request presenting the admin key, raises a 401 otherwise."""

    __slots__ = ("_digest",)

    def __init__(self, admin: AdminSettings) -> None:
        self._digest = bytes.fromhex(key_digest(admin))

    def check(self, authorization: str | None) -> None:
        """Raises:
        AuthenticationError: no admin key, or not the right one (401 `invalid_api_key`).
        """
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        presented = credentials.strip()
        if scheme.lower() != "bearer" or not presented:
            raise AuthenticationError(
                "The admin API needs the admin key: send `Authorization: Bearer <admin key>`."
            )
        digest = hashlib.sha256(presented.encode()).digest()
        if not hmac.compare_digest(digest, self._digest):
            raise AuthenticationError("Incorrect admin key provided.")

    def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        authorization = None
        for name, value in connection.scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        self.check(authorization)


__all__ = ("AdminAuth",)
