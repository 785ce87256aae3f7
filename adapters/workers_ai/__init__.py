"""Cloudflare Workers AI (`kind: workers-ai`).

config.py    the `kind: workers-ai` block
request.py   the canonical request narrowed to the Messages and Prompt input schemas
errors.py    the v4 error envelope and the table of Cloudflare codes and statuses
answers.py   envelopes, `result` shapes and stream events as canonical events
adapter.py   `WorkersAIAdapter`: the calls, through the shared kit (`adapters.upstream`)
"""

from adapters.workers_ai.adapter import WorkersAIAdapter, create
from adapters.workers_ai.config import AIGatewayConfig, WorkersAIConfig

Config = WorkersAIConfig

__all__ = ("AIGatewayConfig", "Config", "WorkersAIAdapter", "WorkersAIConfig", "create")
