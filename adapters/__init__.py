"""Backend adapters: one module per backend kind, each with its config block and its `Adapter`.

Adding a backend kind means one new module plus one line in `BackendConfigs` and `create_adapter`.
"""

from __future__ import annotations

from adapters import mock, workers_ai
from adapters.base import Adapter, UpstreamResponse
from adapters.mock import MockConfig
from adapters.workers_ai import WorkersAIConfig

BackendConfigs = WorkersAIConfig | MockConfig
"""The `backends:` entries, told apart by their `kind:` tag."""


def create_adapter(name: str, config: BackendConfigs) -> Adapter:
    match config:
        case WorkersAIConfig():
            return workers_ai.create(name, config)
        case MockConfig():
            return mock.create(name, config)


__all__ = ("Adapter", "BackendConfigs", "MockConfig", "UpstreamResponse", "WorkersAIConfig", "create_adapter")
