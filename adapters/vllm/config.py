"""The `kind: vllm` config block."""

from __future__ import annotations

from adapters.config import BackendConfig


class VLLMConfig(BackendConfig, tag="vllm", frozen=True, kw_only=True):
    """`vllm serve`'s OpenAI server; its `GET /health` (server root) is probed in the background."""

    base_url: str
    """The OpenAI base URL of `vllm serve`, with `/v1`, e.g. `http://gpu-1:8000/v1`; required."""
    api_key: str = ""
    """vLLM's `--api-key`, if it was started with one."""
    secret_fields = ("api_key",)

    def required_values(self) -> dict[str, str]:
        return {"base_url": self.base_url}

    def secrets(self) -> list[str]:
        return [self.api_key]


__all__ = ("VLLMConfig",)
