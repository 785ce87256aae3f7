"""The built-in mock backend: deterministic answers, no network.

It lets a newcomer see streaming, tools and JSON mode work before they have credentials, and gives
tests and benchmarks a backend with no I/O at all. The answers themselves are made in `answers.py`
(vectors in `embeddings.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from adapters.mock import embeddings
from adapters.mock.answers import MockAnswer

if TYPE_CHECKING:
    from adapters.base import UpstreamResponse
    from adapters.canonical import ChatRequest, EmbeddingRequest, PromptRequest
    from adapters.mock.config import MockConfig


class MockAdapter:
    native: Final = frozenset[str]()

    def __init__(self, name: str, config: MockConfig) -> None:
        self.name = name
        self._delay = config.token_delay_s

    async def aclose(self) -> None:
        return None

    def can_continue(self, request: ChatRequest | PromptRequest, model: str) -> bool:
        return True  # its answers are deterministic: it continues any prefill of its own

    async def chat(self, request: ChatRequest, model: str, *, request_id: str) -> UpstreamResponse:
        return MockAnswer(request, delay=self._delay if request.stream else 0.0)

    async def complete(self, request: PromptRequest, model: str, *, request_id: str) -> UpstreamResponse:
        return MockAnswer(request, delay=self._delay if request.stream else 0.0)

    async def embed(self, request: EmbeddingRequest, model: str, *, request_id: str) -> UpstreamResponse:
        return embeddings.embed(self.name, request, model)


def create(name: str, config: MockConfig) -> MockAdapter:
    return MockAdapter(name, config)


__all__ = ("MockAdapter", "create")
