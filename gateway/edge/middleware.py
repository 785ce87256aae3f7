"""The one piece of middleware: request ids, one canonical log line and the metrics of every request.

It wraps Litestar's ASGI handler (outside routing and exception handling), so 404s and error
responses are covered too. Raw ASGI, because it runs on every request. The log line is written when
the response has been sent completely (for a stream: after its last event, or when the client left),
from the `RequestInfo` the handlers filled in. Probe and scrape paths are counted but not logged.

It also serves every `/v1/...` route without its prefix (`/chat/completions`, `/models/{id}`...), for
clients configured with a bare host as other gateways allow: a path whose first segment is the first
segment of some `/v1` route is rewritten before routing, so a route added under `/v1` gets its alias
without being listed anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from time import monotonic
from typing import TYPE_CHECKING, Any, Final

from gateway.context import RequestInfo, bind_request, unbind_request
from gateway.edge.asgi import CONNECTION_STATE, SERVER_STATUS_STATE
from gateway.ids import hex_id
from gateway.observability.logs import get_logger, log_info
from gateway.observability.metrics import route_of

if TYPE_CHECKING:
    from gateway.edge.asgi import Message, Receive, Scope, Send
    from gateway.observability.metrics import Metrics
    from gateway.usage.ledger import UsageLedger

_USABLE_ID: Final = re.compile(rb"[\x21-\x7e]{1,128}")
"""Client ids are echoed in headers and logs: printable ASCII without spaces, at most 128 bytes."""
QUIET_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
CLIENT_CLOSED_REQUEST: Final = 499
"""Logged and counted for a request whose client left before its response was complete (nginx's
status for it): a client fault, never a 5xx, whatever the app was doing when it happened."""
API_PREFIX: Final = "/v1"

log = get_logger("gateway.request")


def new_request_id() -> str:
    return "req_" + hex_id(12)


def bare_segments(route_paths: Iterable[str]) -> frozenset[str]:
    """The first path segments of the `/v1/...` routes (`chat`, `completions`, `models`...): a request
    path starting with one of them, without the prefix, is served as its `/v1` route."""
    segments = set()
    for path in route_paths:
        if path.startswith(API_PREFIX + "/"):
            first = path[len(API_PREFIX) + 1 :].split("/", 1)[0]
            if first and "{" not in first:
                segments.add(first)
    return frozenset(segments)


class RequestMiddleware:
    __slots__ = ("_app", "_bare", "_metrics", "_usage")

    def __init__(
        self, app: Any, metrics: Metrics, bare: frozenset[str] = frozenset(), usage: UsageLedger | None = None
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._bare = bare
        """`bare_segments` of the app's routes."""
        self._usage = usage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = monotonic()
        raw_id = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                raw_id = value
                break
        request_id = raw_id.decode("ascii") if raw_id and _USABLE_ID.fullmatch(raw_id) else new_request_id()
        info = scope["state"]["request_info"] = RequestInfo(request_id, started)
        bound = bind_request(info)
        id_header = (b"x-request-id", request_id.encode("ascii"))
        status = 0
        complete = streaming = False
        metrics = self._metrics

        async def send_with_id(message: Message) -> None:
            nonlocal status, complete, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
                if info.stream and status == 200:
                    streaming = True
                    metrics.stream_opened()
            elif not message.get("more_body", False):
                complete = True
            await send(message)

        path: str = scope["path"]
        if path[1:].split("/", 1)[0] in self._bare:
            # A bare-host client: served (and counted) as the `/v1` route; logged with the path it sent.
            scope["path"] = API_PREFIX + path
            if scope.get("raw_path"):
                scope["raw_path"] = API_PREFIX.encode() + scope["raw_path"]
        route = route_of(scope["path"])
        metrics.started(route)
        try:
            await self._app(scope, receive, send_with_id)
        finally:
            duration = monotonic() - started
            if streaming:
                metrics.stream_closed()
            state = scope["state"]
            # The server's request cycle refers to this scope: dropping it here breaks the cycle, so
            # the request's objects are freed at once instead of waiting for the garbage collector
            # (which showed as 2.5x the p99 latency under `make bench`).
            state.pop(CONNECTION_STATE, None)
            server_status = state.get(SERVER_STATUS_STATE)
            if server_status is not None:  # the server answered for the app (a malformed body)
                status = server_status
                info.error_code = info.error_code or "invalid_http_request"
            elif info.client_closed and not complete:
                status = CLIENT_CLOSED_REQUEST
                info.error_code = info.error_code or "client_closed_request"
            metrics.finished(route, status, duration, info)
            if self._usage is not None:
                self._usage.record(info, status)
            if path not in QUIET_PATHS:
                _log_line(info, scope["method"], path, status, duration)
            unbind_request(bound)


def _log_line(info: RequestInfo, method: str, path: str, status: int, duration: float) -> None:
    first_token = info.first_token_s
    fields = {
        "request_id": info.request_id,
        "method": method,
        "path": path,
        "status": status,
        "key": info.key_id,
        "model": info.model,
        "backend": info.backend,
        "upstream_model": info.upstream_model,
        "attempts": info.attempts,
        "failovers": info.failovers,
        "hedged": info.hedged,
        "resumes": info.resumes,
        "stream": info.stream,
        "error": info.error_code or info.error_type or info.answer_error,
        "error_type": info.error_type,
        "error_code": info.error_code or info.answer_error,
        "param": info.error_param,
        "finish_reason": info.finish_reason,
        "duration_ms": round(duration * 1000, 2),
        "ttft_ms": round(first_token * 1000, 2) if first_token is not None else None,
        "upstream_ms": round(info.upstream_s * 1000, 2) if info.upstream_s is not None else None,
        "prompt_tokens": info.prompt_tokens,
        "completion_tokens": info.completion_tokens,
        "rate_limit": info.rate_limit,
        "user": info.user,
        "metadata": info.metadata,
    }
    log_info(log, "request", fields)


__all__ = (
    "API_PREFIX",
    "CLIENT_CLOSED_REQUEST",
    "QUIET_PATHS",
    "RequestMiddleware",
    "bare_segments",
    "new_request_id",
)
