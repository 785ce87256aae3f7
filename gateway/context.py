"""Facts about one request that its log line and metrics need, gathered while it is handled.

The app stores the object in the ASGI scope's state (`scope["state"]["request_info"]`), where a
middleware can read it once the response has been sent.
"""

from __future__ import annotations


class RequestInfo:
    __slots__ = ("key_id", "rate_limit")

    def __init__(self) -> None:
        self.key_id: str | None = None
        """The calling API key's `id` (None when the gateway runs without keys)."""
        self.rate_limit: str | None = None
        """The limit decision: `admitted`, `refused_requests`, `refused_tokens`, `refused_concurrency`,
        `too_large`, `store_unavailable`; None when no limit applied."""


__all__ = ("RequestInfo",)
