"""Errors the gateway raises itself, and the one place any error becomes an OpenAI error response.

    GatewayError                     status_code / type / code as OpenAI would send them
    ├── InvalidRequestError          400 invalid_request_error (names the offending `param`)
    │   └── UnsupportedParameterError  400, code unsupported_parameter: a parameter we cannot honour
    ├── AuthenticationError          401 invalid_api_key
    ├── PermissionDeniedError        403
    ├── NotFoundError                404 (unknown route)
    │   ├── MethodNotAllowedError    405 (a known route with the wrong method)
    │   └── ModelNotFoundError       404 model_not_found
    ├── ConflictError                409 (the admin API: an id already taken, a team still in use)
    ├── RequestTooLargeError         413
    ├── RateLimitError               429 rate_limit_exceeded, type `requests`
    │   ├── TokenRateLimitError      429 rate_limit_exceeded, type `tokens`
    │   └── InsufficientQuotaError   429 insufficient_quota: a budget is spent (retrying will not help)
    ├── ServiceUnavailableError      503
    └── RoutingError                 no target of a model answered: 502/503/504, or the one failure's status

Upstream failures arrive as `adapters.errors.UpstreamError`; `error_response` renders both kinds, so
no other module formats an error body. The route chooses the envelope (`surface_of`): OpenAI's
everywhere, Anthropic's (`{"type": "error", "error": {"type", "message"}}`, its type names per status,
`anthropic-ratelimit-*` headers) on `/v1/messages` and below.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final, Literal

import msgspec

from gateway.anthropic import responses as anthropic
from gateway.openai.responses import ErrorBody, ErrorDetail, encoder

if TYPE_CHECKING:
    from adapters.errors import UpstreamError


class GatewayError(Exception):
    # Class-level defaults; `RoutingError` sets them per instance (its status depends on what failed).
    status_code: int = 500
    error_type: str = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}


class InvalidRequestError(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class UnsupportedParameterError(InvalidRequestError):
    default_code = "unsupported_parameter"


class AuthenticationError(GatewayError):
    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status_code = 403
    error_type = "permission_error"


class NotFoundError(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"


class MethodNotAllowedError(NotFoundError):
    status_code = 405


class ModelNotFoundError(NotFoundError):
    default_code = "model_not_found"


class ConflictError(GatewayError):
    status_code = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class RequestTooLargeError(GatewayError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimitError(GatewayError):
    status_code = 429
    error_type = "requests"
    default_code = "rate_limit_exceeded"


class TokenRateLimitError(RateLimitError):
    error_type = "tokens"


class InsufficientQuotaError(RateLimitError):
    """OpenAI's own shape for a spent quota: type and code `insufficient_quota`, with 429."""

    error_type = "insufficient_quota"
    default_code = "insufficient_quota"


class ServiceUnavailableError(GatewayError):
    status_code = 503
    error_type = "service_unavailable"


class RoutingError(GatewayError):
    """No target of a model produced an answer: one error that says what happened to each of them."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error_type: str,
        code: str | None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, headers=headers)
        self.status_code = status_code
        self.error_type = error_type


Surface = Literal["openai", "anthropic"]
ANTHROPIC_PATH: Final = "/v1/messages"
_TOKEN_COUNTS: Final = re.compile(r"\d+")


def surface_of(path: str) -> Surface:
    """Whose error envelope a route's clients parse."""
    if path == ANTHROPIC_PATH or path.startswith(ANTHROPIC_PATH + "/"):
        return "anthropic"
    return "openai"


def error_response(
    exc: GatewayError | UpstreamError, surface: Surface = "openai", *, request_id: str | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """(status, error body in the surface's envelope, headers) for any error the gateway reports."""
    if surface == "anthropic":
        return anthropic_error_response(exc, request_id)
    if isinstance(exc, GatewayError):
        detail = ErrorDetail(message=exc.message, type=exc.error_type, param=exc.param, code=exc.code)
        return exc.status_code, encoder.encode(ErrorBody(detail)), exc.headers
    return exc.status_code, error_body(exc), upstream_headers(exc)


def error_body(exc: UpstreamError) -> bytes:
    detail = ErrorDetail(message=exc.message, type=exc.error_type, param=exc.param, code=exc.code)
    return encoder.encode(ErrorBody(detail))


def upstream_headers(exc: UpstreamError) -> dict[str, str]:
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(1, round(exc.retry_after)))
    if exc.quota:
        # A used-up daily allocation will not recover in seconds: stop the SDK's automatic retries.
        headers["x-should-retry"] = "false"
    return headers


def anthropic_error_response(
    exc: GatewayError | UpstreamError, request_id: str | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """(status, Anthropic error body, headers): the type name follows the status, as Anthropic's does."""
    status = exc.status_code
    message = exc.message
    if exc.code == "context_length_exceeded":
        message = prompt_too_long(message)
    detail = anthropic.ErrorDetail(anthropic.error_type(status), message)
    body = anthropic.ErrorBody(type="error", error=detail, request_id=request_id or msgspec.UNSET)
    headers = exc.headers if isinstance(exc, GatewayError) else upstream_headers(exc)
    return status, anthropic.encoder.encode(body), anthropic.rate_limit_headers(headers)


def prompt_too_long(message: str) -> str:
    """Anthropic's wording for a context overflow, which clients such as Claude Code recover on:
    `prompt is too long: N tokens > M maximum` (vLLM says the maximum first, then the request)."""
    numbers = [int(n) for n in _TOKEN_COUNTS.findall(message)]
    if len(numbers) >= 2:
        maximum, requested = numbers[0], numbers[1]
        return f"prompt is too long: {requested} tokens > {maximum} maximum ({message})"
    return f"prompt is too long: {message}"


def in_band_error(
    exc: GatewayError | UpstreamError, surface: Surface = "openai", *, request_id: str | None = None
) -> bytes:
    """An SSE event carrying an error, for failures after the stream has begun."""
    _, body, _ = error_response(exc, surface, request_id=request_id)
    if surface == "anthropic":
        return b"event: error\ndata: " + body + b"\n\n"
    return b"data: " + body + b"\n\n"


__all__ = (
    "ANTHROPIC_PATH",
    "AuthenticationError",
    "ConflictError",
    "GatewayError",
    "InsufficientQuotaError",
    "InvalidRequestError",
    "MethodNotAllowedError",
    "ModelNotFoundError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "RoutingError",
    "ServiceUnavailableError",
    "Surface",
    "TokenRateLimitError",
    "UnsupportedParameterError",
    "anthropic_error_response",
    "error_body",
    "error_response",
    "in_band_error",
    "prompt_too_long",
    "surface_of",
    "upstream_headers",
)
