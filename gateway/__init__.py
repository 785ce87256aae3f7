"""OpenAI-compatible LLM gateway: Workers AI and vLLM behind one endpoint."""

from __future__ import annotations

from gateway.app import create_app
from gateway.config import ConfigError, Settings, load_config

__all__ = ("ConfigError", "Settings", "create_app", "load_config")
