"""Upstream failures, as every adapter reports them.

    UpstreamError                 one failed call to one backend
    ├── UpstreamConnectError      no connection (refused, reset or DNS) before any response byte
    ├── UpstreamTimeout           connect, first-byte or between-chunk timeout
    ├── UpstreamStatusError       the backend answered with an error status (mapped to OpenAI terms)
    └── UpstreamProtocolError     the answer could not be understood (malformed JSON, cut stream, bad UTF-8)

Each carries what the client may be shown (`status_code`, `error_type`, `code`, `param`, `message`, already
free of secrets) and the facts the router needs to decide on failover (`category`, `upstream_status`,
`client_fault`, `retry_after`). The gateway renders them as OpenAI errors at its single error boundary.
"""

from __future__ import annotations

from typing import ClassVar, Literal

Category = Literal["connect", "timeout", "status", "protocol"]


class UpstreamError(Exception):
    category: ClassVar[Category]

    def __init__(
        self,
        backend: str,
        message: str,
        *,
        status_code: int = 502,
        error_type: str = "upstream_error",
        code: str | None = None,
        upstream_status: int | None = None,
        client_fault: bool = False,
        retry_after: float | None = None,
        quota: bool = False,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.backend = backend
        self.message = message
        self.status_code = status_code
        self.error_type = error_type
        self.code = code
        self.upstream_status = upstream_status
        self.client_fault = client_fault
        """The upstream judged the request itself invalid: another backend would refuse it too."""
        self.retry_after = retry_after
        self.quota = quota
        """A quota that will not recover soon (e.g. a daily allocation used up)."""
        self.param = param
        """The request parameter the upstream objected to, in OpenAI's terms (e.g. `messages`)."""

    @property
    def summary(self) -> str:
        """A short, secret-free description for attempt lists and logs, e.g. `HTTP 429` or `timeout`."""
        if self.upstream_status is not None:
            return f"HTTP {self.upstream_status}"
        return self.category


class UpstreamConnectError(UpstreamError):
    category = "connect"


class UpstreamTimeout(UpstreamError):
    category = "timeout"


class UpstreamStatusError(UpstreamError):
    category = "status"


class UpstreamProtocolError(UpstreamError):
    category = "protocol"


__all__ = (
    "Category",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamStatusError",
    "UpstreamTimeout",
)
