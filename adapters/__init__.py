"""Backend adapters: one package per backend kind, each with its config block and its `Adapter`.

Adding a backend kind is one new package (see docs/architecture.md, "A new backend kind") plus its
`Config` in `BackendConfigs` below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from adapters import mock, vllm, workers_ai
from adapters.base import Adapter, HealthChecked, UpstreamResponse
from adapters.config import BackendConfig, BreakerConfig
from adapters.mock import MockConfig
from adapters.vllm import VLLMConfig
from adapters.workers_ai import WorkersAIConfig

BackendConfigs = workers_ai.Config | vllm.Config | mock.Config
"""The `backends:` entries, told apart by their `kind:` tag."""

_CREATE: Final[dict[type[BackendConfig], Callable[[str, Any], Adapter]]] = {
    kind.Config: kind.create for kind in (workers_ai, vllm, mock)
}


def create_adapter(name: str, config: BackendConfigs) -> Adapter:
    return _CREATE[type(config)](name, config)


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
