"""OpenAI-compatible LLM gateway: Workers AI and vLLM behind one endpoint."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.app import create_app
    from gateway.config import ConfigError, Settings, load_config

_LAZY = {
    "create_app": "gateway.app",
    "ConfigError": "gateway.config",
    "Settings": "gateway.config",
    "load_config": "gateway.config",
}


def __getattr__(name: str) -> Any:
    # Imported on first use: `gateway keys ...` (the CLI) need not load the app and every adapter.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")


__all__ = ("ConfigError", "Settings", "create_app", "load_config")
