"""Facts about one request that its log line and metrics need, gathered while it is handled.

`gateway.middleware.RequestMiddleware` creates one per HTTP request and puts it in the ASGI scope's
state (`scope["state"]["request_info"]`); handlers fill it in; the middleware reads it once the
response has been sent.
"""

from __future__ import annotations


class RequestInfo:
    __slots__ = ("key_id", "metadata", "rate_limit", "request_id", "user")

    def __init__(self, request_id: str = "") -> None:
        self.request_id = request_id
        """The client's `x-request-id` when it sent a usable one, else one the gateway made."""
        self.key_id: str | None = None
        """The calling API key's `id` (None when the gateway runs without keys)."""
        self.rate_limit: str | None = None
        """The limit decision: `admitted`, `refused_requests`, `refused_tokens`, `refused_concurrency`,
        `too_large`, `store_unavailable`; None when no limit applied."""
        self.user: str | None = None
        """The client's `user` field (an end-user id of its own), for logs; never sent upstream."""
        self.metadata: dict[str, str] | None = None
        """The client's chat `metadata` (string pairs), for logs; never sent upstream."""


__all__ = ("RequestInfo",)
