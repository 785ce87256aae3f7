"""The built-in mock backend (`kind: mock`): deterministic answers that follow the request, no network."""

from adapters.mock.adapter import MockAdapter, MockConfig, create

__all__ = ("MockAdapter", "MockConfig", "create")
