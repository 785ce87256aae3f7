"""Cloudflare Workers AI (`kind: workers-ai`)."""

from adapters.workers_ai.adapter import WorkersAIAdapter, WorkersAIConfig, create

__all__ = ("WorkersAIAdapter", "WorkersAIConfig", "create")
