"""What every backend's config block shares. Each adapter module subclasses it with its `kind` tag."""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec
from msgspec import Meta

from adapters.secret import hide_secrets

DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_COOLDOWN_S = 30.0
DEFAULT_HEALTH_INTERVAL_S = 5.0


class BreakerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """When the gateway stops sending traffic to a failing target, and for how long."""

    failure_threshold: Annotated[int, Meta(ge=1)] = DEFAULT_FAILURE_THRESHOLD
    """Consecutive failures (not client faults) after which a target is skipped."""
    cooldown_s: Annotated[float, Meta(gt=0)] = DEFAULT_COOLDOWN_S
    """How long a tripped target is skipped before one probe request is let through."""
    health_interval_s: Annotated[float, Meta(gt=0)] = DEFAULT_HEALTH_INTERVAL_S
    """Backends with a health endpoint (vLLM's `GET /health`) are probed this often in the background."""


class BackendConfig(msgspec.Struct, tag_field="kind", forbid_unknown_fields=True, frozen=True, kw_only=True):
    """An upstream service (a `backends:` entry); its `kind` says which adapter talks to it."""

    # `extra["problem"]` words the config error for a value the bound refuses (gateway/config.py).
    timeout_s: Annotated[float, Meta(gt=0, extra={"problem": "must be greater than 0"})] = 60.0
    """Per-read timeout of one upstream call: connect, first byte, and every gap between chunks. A vLLM
    non-streamed answer arrives in one piece, so there it must also cover the longest generation."""
    max_concurrency: Annotated[int, Meta(ge=1, extra={"problem": "must be at least 1"})] | None = None
    """Upper bound on requests in flight to this backend from one gateway process (unset: unbounded);
    it also sizes the connection pool. A full backend is passed over for the next target."""
    tls_ca_file: str | None = None
    """PEM file of CA certificates to trust for an `https` base_url (default: certifi's public CAs),
    e.g. for a vLLM server behind a private CA."""
    proxy: str | None = None
    """Egress proxy for this backend: an `http://[user:password@]host:port` URL, or `none` for direct
    connections. Unset: HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment (adapters/proxy.py)."""
    when_unconfigured: str | None = None
    """Another backend to serve this one's targets when a required value (e.g. a credential) is empty.

    Without it, an empty required value stops start-up. The default config uses it so `make run` works
    before any credentials exist; production configs should leave it out.
    """
    breaker: BreakerConfig = BreakerConfig()
    """Circuit-breaker settings for every target on this backend."""
    secret_fields: ClassVar[tuple[str, ...]] = ()
    """Fields holding credentials: wrapped in `Secret`, so they never print (`adapters.secret`)."""

    def __post_init__(self) -> None:
        hide_secrets(self, "proxy", *self.secret_fields)  # a proxy URL may hold a password

    def required_values(self) -> dict[str, str]:
        """Values that must not be empty, by field name."""
        return {}

    def secrets(self) -> list[str]:
        """Values that must never appear in logs, errors or responses."""
        return []


__all__ = ("BackendConfig", "BreakerConfig")
