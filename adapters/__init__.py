"""Backend adapters: one package per backend kind, each with its config block and its `Adapter`.

Adding a backend kind means one new package plus one line in `BackendConfigs` and `create_adapter`.
"""

from __future__ import annotations

from adapters import mock, vllm, workers_ai
from adapters.base import Adapter, HealthChecked, UpstreamResponse
from adapters.config import BackendConfig, BreakerConfig
from adapters.mock.adapter import MockConfig
from adapters.vllm.adapter import VLLMConfig
from adapters.workers_ai.adapter import WorkersAIConfig

BackendConfigs = WorkersAIConfig | VLLMConfig | MockConfig
"""The `backends:` entries, told apart by their `kind:` tag."""


def create_adapter(name: str, config: BackendConfigs) -> Adapter:
    match config:
        case WorkersAIConfig():
            return workers_ai.create(name, config)
        case VLLMConfig():
            return vllm.create(name, config)
        case MockConfig():
            return mock.create(name, config)


__all__ = (
    "Adapter",
    "BackendConfig",
    "BackendConfigs",
    "BreakerConfig",
    "HealthChecked",
    "MockConfig",
    "UpstreamResponse",
    "VLLMConfig",
    "WorkersAIConfig",
    "create_adapter",
)
