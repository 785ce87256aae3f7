"""The contract between the gateway and a backend kind: one module per kind implements `Adapter`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from adapters.canonical import ChatRequest, Event


class UpstreamResponse(Protocol):
    """An upstream answer whose status has been checked; its events follow."""

    def events(self) -> AsyncIterator[Event]:
        """Yield the answer's events; raise `UpstreamError` if it cannot be completed."""
        ...

    async def aclose(self) -> None:
        """Release the connection. Idempotent; called on completion, error and client disconnect."""
        ...


class Adapter(Protocol):
    name: str
    """The backend's name in the config (never a secret)."""

    async def chat(self, request: ChatRequest, model: str, *, request_id: str) -> UpstreamResponse:
        """Send `request` for the upstream `model`; raise `UpstreamError` unless the answer began well."""
        ...

    async def aclose(self) -> None:
        """Close connection pools at shutdown."""
        ...


__all__ = ("Adapter", "UpstreamResponse")
