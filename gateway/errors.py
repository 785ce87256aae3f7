"""Errors the gateway raises itself, and the one place any error becomes an OpenAI error response.

    GatewayError                     status_code / type / code as OpenAI would send them
    ├── InvalidRequestError          400 invalid_request_error (names the offending `param`)
    │   └── UnsupportedParameterError  400, code unsupported_parameter: a parameter we cannot honour
    ├── AuthenticationError          401 invalid_api_key
    ├── PermissionDeniedError        403
    ├── NotFoundError                404 (unknown route)
    │   ├── MethodNotAllowedError    405 (a known route with the wrong method)
    │   └── ModelNotFoundError       404 model_not_found
    ├── RequestTooLargeError         413
    ├── RateLimitError               429 rate_limit_exceeded, type `requests`
    │   └── TokenRateLimitError      429 rate_limit_exceeded, type `tokens`
    ├── ServiceUnavailableError      503
    └── RoutingError                 no target of a model answered: 502/503/504, or the one failure's status

Upstream failures arrive as `adapters.errors.UpstreamError`; `error_response` renders both kinds, so
no other module formats an error body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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


def error_response(exc: GatewayError | UpstreamError) -> tuple[int, bytes, dict[str, str]]:
    """(status, OpenAI error body, headers) for any error the gateway reports."""
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


def in_band_error(exc: GatewayError | UpstreamError) -> bytes:
    """An SSE event carrying an error, for failures after the stream has begun."""
    _, body, _ = error_response(exc)
    return b"data: " + body + b"\n\n"


__all__ = (
    "AuthenticationError",
    "GatewayError",
    "InvalidRequestError",
    "MethodNotAllowedError",
    "ModelNotFoundError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "RoutingError",
    "ServiceUnavailableError",
    "TokenRateLimitError",
    "UnsupportedParameterError",
    "error_body",
    "error_response",
    "in_band_error",
    "upstream_headers",
)
