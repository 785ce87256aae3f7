"""The request context: facts about one request that its logs and metrics need, gathered while it
is handled.

`gateway.edge.middleware.RequestMiddleware` creates one `RequestInfo` per HTTP request, binds it once
(`bind_request`: a context variable, so every task the request starts sees it too) and puts it in the
ASGI scope's state (`scope["state"]["request_info"]`); handlers fill it in; the middleware reads it
once the response has been sent. Every log line written while the request is handled carries its
`request_id` (and `key` and `model` once known) through `add_request_fields`, a structlog processor,
so no function takes a `request_id` just to log it. Plain attributes, set where the fact is known:
nothing here costs more than an assignment on the request path.
"""

from __future__ import annotations

import math
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.limits.base import Price
    from gateway.translation.framing import AnswerStats


class RequestInfo:
    __slots__ = (
        "attempts",
        "backend",
        "client_closed",
        "error_code",
        "error_param",
        "error_type",
        "failovers",
        "hedged",
        "http_10",
        "key_id",
        "metadata",
        "model",
        "price",
        "prompt_estimate",
        "rate_limit",
        "request_id",
        "resumes",
        "session",
        "started",
        "stats",
        "stream",
        "team_id",
        "upstream_model",
        "upstream_s",
        "user",
    )

    def __init__(self, request_id: str = "", started: float = 0.0) -> None:
        self.request_id = request_id
        """The client's `x-request-id` when it sent a usable one, else one the gateway made."""
        self.started = started
        """`time.monotonic()` when the request arrived."""
        self.key_id: str | None = None
        """The calling API key's `id` (None when the gateway runs without keys)."""
        self.team_id: str | None = None
        """The calling key's team, if it belongs to one."""
        self.rate_limit: str | None = None
        """The limit decision: `admitted`, `refused_requests`, `refused_tokens`, `refused_concurrency`,
        `refused_budget`,
        `too_large`, `store_unavailable`; None when no limit applied."""
        self.model: str | None = None
        """The public model name (aliases resolved); None until resolved."""
        self.stream = False
        self.backend: str | None = None
        """The backend whose answer the client got."""
        self.upstream_model: str | None = None
        self.attempts = 0
        """Upstream calls made (skipped targets are not calls)."""
        self.failovers = 0
        """Targets given up on (failed or skipped) before the answering one, or all of them."""
        self.upstream_s: float | None = None
        """Upstream time until the answer began (the whole answer when not streamed)."""
        self.error_type: str | None = None
        """The OpenAI error `type` of an error response (`invalid_request_error`, `requests`...)."""
        self.error_code: str | None = None
        """Its OpenAI error `code` (`unsupported_parameter`, `model_not_found`...), None when it has none."""
        self.error_param: str | None = None
        """Its `param`: the request parameter that was refused (`messages[0].content`, `top_p`...)."""
        self.stats: AnswerStats | None = None
        """The writer's record of the answer: first token time, usage, finish reason."""
        self.prompt_estimate = 0
        self.price: Price | None = None
        """The answering target's price (budgets settle and the usage ledger charges with it)."""
        self.user: str | None = None
        """The request's `user` field (logged, never forwarded to Cloudflare)."""
        self.metadata: dict[str, str] | None = None
        """The request's `metadata` (logged, never forwarded to Cloudflare)."""
        self.client_closed = False
        """The client left before its response was complete (logged and counted as status 499)."""
        self.hedged: str | None = None
        """A hedge was started (gateway.routing.hedge): `won` (its answer was used), `lost` (the first
        target answered first) or `failed`; None without a hedge."""
        self.resumes = 0
        """Continuations that took over the answer after its upstream failed mid-way
        (gateway.routing.resume; models with `resume: true`)."""
        self.http_10 = False
        """The request came over HTTP/1.0, which has no chunked framing for a stream."""
        self.session: str | None = None
        """The client's `x-session-affinity` header as a session token (`gateway.routing.affinity`)."""

    @property
    def first_token_s(self) -> float | None:
        stats = self.stats
        if stats is None or stats.first_token_at is None or not self.stream:
            return None
        return stats.first_token_at - self.started

    @property
    def prompt_tokens(self) -> int:
        stats = self.stats
        if stats is None:
            return 0
        return stats.usage.prompt_tokens if stats.usage is not None else self.prompt_estimate

    @property
    def completion_tokens(self) -> int:
        stats = self.stats
        if stats is None:
            return 0
        return stats.usage.completion_tokens if stats.usage is not None else math.ceil(stats.chars / 4)

    @property
    def finish_reason(self) -> str | None:
        return self.stats.finish_reason if self.stats is not None else None

    def refused(self, error_type: str, code: str | None, param: str | None = None) -> None:
        """Record the error response the request got."""
        self.error_type, self.error_code, self.error_param = error_type, code, param

    @property
    def answer_error(self) -> str | None:
        """An error sent in-band, after the stream began."""
        return self.stats.error_code if self.stats is not None else None


_current: ContextVar[RequestInfo | None] = ContextVar("request_info", default=None)


def bind_request(info: RequestInfo) -> Token[RequestInfo | None]:
    """Make `info` the current request's context (for this task and the tasks it starts)."""
    return _current.set(info)


def unbind_request(token: Token[RequestInfo | None]) -> None:
    _current.reset(token)


def current_request() -> RequestInfo | None:
    """The context of the request being handled; None outside one (start-up, background probes)."""
    return _current.get()


def add_request_fields(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the current request's id, key and model on every line logged for it."""
    info = _current.get()
    if info is not None:
        event.setdefault("request_id", info.request_id)
        if info.key_id is not None:
            event.setdefault("key", info.key_id)
        if info.model is not None:
            event.setdefault("model", info.model)
    return event


__all__ = ("RequestInfo", "add_request_fields", "bind_request", "current_request", "unbind_request")
