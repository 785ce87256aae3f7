"""The `kind: workers-ai` config block (optionally through Cloudflare AI Gateway).

Through AI Gateway (`ai_gateway:`), the same body goes to
`POST {ai_gateway.base_url}/{account_id}/{gateway_id}/workers-ai/{model}`, with the gateway's own
token in `cf-aig-authorization` and `cf-aig-max-attempts: 1`: our router already fails over, so AI
Gateway must not retry a failed request on its own as well (docs/deploy-proxies.md cites the headers).
"""

from __future__ import annotations

from typing import Final

import msgspec

from adapters.config import BackendConfig
from adapters.secret import hide_secrets, reveal

DEFAULT_BASE_URL: Final = "https://api.cloudflare.com/client/v4"
AI_GATEWAY_BASE_URL: Final = "https://gateway.ai.cloudflare.com/v1"
AI_GATEWAY_SINGLE_ATTEMPT: Final = {"cf-aig-max-attempts": "1"}
"""AI Gateway's per-request override of its retry policy (dashboard or gateway-level defaults): one try.
Its documented range is 1 to 5 attempts, so 1 means no retry at AI Gateway; failover stays ours."""


class AIGatewayConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Send this backend's requests through a Cloudflare AI Gateway (for its logs, caching, limits)."""

    gateway_id: str
    """The gateway's id (its name in the dashboard): the `{gateway_id}` in the endpoint URL."""
    token: str | None = None
    """An Authenticated Gateway's token, sent as `cf-aig-authorization: Bearer <token>` (new gateways
    require one). The Workers AI `api_token` is still sent as `Authorization` for the model call."""
    base_url: str = AI_GATEWAY_BASE_URL
    """AI Gateway's API root; the account and gateway ids are appended."""

    def __post_init__(self) -> None:
        hide_secrets(self, "token")


class WorkersAIConfig(BackendConfig, tag="workers-ai", frozen=True, kw_only=True):
    """Cloudflare Workers AI's REST API (`POST {base_url}/accounts/{account_id}/ai/run/{model}`)."""

    account_id: str
    """The Cloudflare account id (usually `${CLOUDFLARE_ACCOUNT_ID}`); required, never logged."""
    api_token: str
    """An API token with Workers AI permission (usually `${CLOUDFLARE_API_TOKEN}`); required, never logged."""
    base_url: str = DEFAULT_BASE_URL
    """Cloudflare's API root (must not be empty); tests point it at an emulator."""
    ai_gateway: AIGatewayConfig | None = None
    """Route through Cloudflare AI Gateway instead of `base_url` (then leave `base_url` out)."""
    secret_fields = ("account_id", "api_token")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ai_gateway is not None and self.base_url != DEFAULT_BASE_URL:
            raise ValueError("set either base_url or ai_gateway (ai_gateway.base_url), not both")

    def required_values(self) -> dict[str, str]:
        values = {"account_id": self.account_id, "api_token": self.api_token, "base_url": self.base_url}
        if self.ai_gateway is not None:
            values["ai_gateway.gateway_id"] = self.ai_gateway.gateway_id
            values["ai_gateway.base_url"] = self.ai_gateway.base_url
        return values

    def secrets(self) -> list[str]:
        token = self.ai_gateway.token if self.ai_gateway is not None else None
        return [self.api_token, self.account_id, *([token] if token else [])]

    def run_url(self) -> str:
        """The URL that the model name is appended to."""
        if self.ai_gateway is None:
            return f"{self.base_url.rstrip('/')}/accounts/{reveal(self.account_id)}/ai/run/"
        gateway = self.ai_gateway
        return f"{gateway.base_url.rstrip('/')}/{reveal(self.account_id)}/{gateway.gateway_id}/workers-ai/"

    def headers(self) -> dict[str, str]:
        headers = {"authorization": f"Bearer {reveal(self.api_token)}", "content-type": "application/json"}
        if self.ai_gateway is not None:
            headers |= AI_GATEWAY_SINGLE_ATTEMPT
            if self.ai_gateway.token:
                headers["cf-aig-authorization"] = f"Bearer {reveal(self.ai_gateway.token)}"
        return headers


__all__ = ("AI_GATEWAY_BASE_URL", "DEFAULT_BASE_URL", "AIGatewayConfig", "WorkersAIConfig")
