"""The `kind: workers-ai` config block."""

from __future__ import annotations

from typing import Final

from adapters.config import BackendConfig

DEFAULT_BASE_URL: Final = "https://api.cloudflare.com/client/v4"


class WorkersAIConfig(BackendConfig, tag="workers-ai", frozen=True, kw_only=True):
    account_id: str
    api_token: str
    base_url: str = DEFAULT_BASE_URL

    def required_values(self) -> dict[str, str]:
        return {"account_id": self.account_id, "api_token": self.api_token, "base_url": self.base_url}

    def secrets(self) -> list[str]:
        return [self.api_token, self.account_id]


__all__ = ("DEFAULT_BASE_URL", "WorkersAIConfig")
