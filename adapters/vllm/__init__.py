"""vLLM's OpenAI-compatible server (`kind: vllm`)."""

from adapters.vllm.adapter import VLLMAdapter, VLLMConfig, create

__all__ = ("VLLMAdapter", "VLLMConfig", "create")
