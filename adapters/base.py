"""The contract between the gateway and a backend kind: one module per kind implements `Adapter`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from adapters.canonical import ChatRequest, EmbeddingRequest, Event, PromptRequest


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

    @property
    def native(self) -> frozenset[str]:
        """OpenAI parameters the backend honours itself (`n`, `logit_bias`) beyond those every backend
        takes. The gateway sends them only to models whose every target has them, and emulates or
        refuses them otherwise."""
        ...

    async def chat(self, request: ChatRequest, model: str, *, request_id: str) -> UpstreamResponse:
        """Send `request` for the upstream `model`; raise `UpstreamError` unless the answer began well.

        `request_id` is unique per upstream call (the gateway's request id plus the attempt number).
        """
        ...

    async def complete(self, request: PromptRequest, model: str, *, request_id: str) -> UpstreamResponse:
        """As `chat`, for a text completion: the answer's events carry text (no tool calls)."""
        ...

    async def embed(self, request: EmbeddingRequest, model: str, *, request_id: str) -> UpstreamResponse:
        """As `chat`, for embeddings: one `Embedding` event per input, in input order, and a `Usage`
        when the backend counts tokens. The whole answer is read before this returns."""
        ...

    async def aclose(self) -> None:
        """Close connection pools at shutdown."""
        ...


@runtime_checkable
class HealthChecked(Protocol):
    """An adapter whose backend reports its own health (vLLM's `GET /health`).

    The gateway probes such backends in the background and skips them while the probe fails; other
    backends are judged by their live traffic only.
    """

    async def check_health(self) -> None:
        """Return if the backend says it is healthy; raise `UpstreamError` saying why not otherwise."""
        ...


@runtime_checkable
class Continues(Protocol):
    """An adapter that can continue a partial answer (`prefill` set on the request): mid-stream
    failover (`resume: true`) sends such a request only to targets whose adapter says it can."""

    def can_continue(self, request: ChatRequest | PromptRequest, model: str) -> bool:
        """Whether `request`, with `prefill` set, can be sent for the upstream `model` so that the
        answer continues from the prefill (and only the continuation comes back)."""
        ...


class CollectedAnswer:
    """A whole answer already read and parsed (non-streamed, or a JSON body to a stream request)."""

    __slots__ = ("_events",)

    def __init__(self, events: list[Event]) -> None:
        self._events = events

    async def events(self) -> AsyncIterator[Event]:
        for event in self._events:
            yield event

    async def aclose(self) -> None:
        return None


__all__ = ("Adapter", "CollectedAnswer", "Continues", "HealthChecked", "UpstreamResponse")
