"""Rate limits: requests and tokens per minute and requests in flight, per API key and per model.

`base.py` holds the contract and the algorithm's description, `memory.py` the in-process store,
`redis.py` the shared one, and `gate.py` applies them to a request. `create_rate_limits(settings)`
builds what the configuration asks for; the app's lifespan owns the result and closes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.limits.base import (
    LEASE_S,
    SLOTS,
    WINDOW_S,
    Budget,
    Limiter,
    LimiterUnavailable,
    Outcome,
    Scope,
    Ticket,
    format_duration,
)
from gateway.limits.gate import Grant, RateLimits
from gateway.limits.memory import MemoryLimiter

if TYPE_CHECKING:
    from gateway.config import Settings


def model_scopes(settings: Settings) -> dict[str, Scope]:
    """Each model's own limits (`models.<name>.rpm/tpm`), shared by every key."""
    return {
        name: Scope("model", name, rpm=model.rpm, tpm=model.tpm) for name, model in settings.models.items()
    }


def create_rate_limits(settings: Settings) -> RateLimits:
    """The store `redis_url` names (in-process when empty) and the per-model scopes."""
    models = model_scopes(settings)
    url = settings.redis_url.strip()
    limiter: Limiter
    if url:
        # Imported here so a gateway without Redis never loads the client library.
        from gateway.limits.redis import RedisLimiter, describe_url

        limiter, store = RedisLimiter.from_url(url), describe_url(url)
    else:
        limiter, store = MemoryLimiter(), "memory"
    return RateLimits(limiter, models=models, failure_mode=settings.rate_limit_failure_mode, store=store)


__all__ = (
    "LEASE_S",
    "SLOTS",
    "WINDOW_S",
    "Budget",
    "Grant",
    "Limiter",
    "LimiterUnavailable",
    "MemoryLimiter",
    "Outcome",
    "RateLimits",
    "Scope",
    "Ticket",
    "create_rate_limits",
    "format_duration",
    "model_scopes",
)
