"""The `kind: mock` config block."""

from __future__ import annotations

from adapters.config import BackendConfig


class MockConfig(BackendConfig, tag="mock", frozen=True, kw_only=True):
    """The built-in mock: no network; deterministic answers (text, tool calls) shaped by the request."""

    token_delay_s: float = 0.03
    """Pause between streamed words (about 30 tokens per second, like a hosted model)."""


__all__ = ("MockConfig",)
