"""vLLM's errors: its body shapes read as one `Fault`, and its table of statuses in OpenAI's terms.

vLLM's error shapes: `{"error": "Unauthorized"}`, the flat `{"object": "error", ...}`, nested errors
with an integer `code` (the HTTP status, never OpenAI's string code), and FastAPI's `{"detail": ...}`.
"""

from __future__ import annotations

from typing import Final

import msgspec

from adapters.upstream import (
    CREDENTIALS_REJECTED,
    FAILED,
    MODEL_NOT_FOUND,
    NO_SUCH_ROUTE,
    RATE_LIMITED,
    REJECTED,
    TIMED_OUT,
    TOO_LARGE,
    ErrorTable,
    Fault,
    Rule,
    when,
)

_encoder: Final = msgspec.json.Encoder()
_CONTEXT_LENGTH: Final = (
    "maximum context length|context length is only|exceeds model's maximum context length"
)

ERRORS: Final = ErrorTable(
    [
        when(
            Rule(
                status_code=400,
                error_type="invalid_request_error",
                code="context_length_exceeded",
                text="{message}",
                param="input",
                client_fault=True,
            ),
            status={400, 413, 422},
            pattern=_CONTEXT_LENGTH,
        ),
        when(CREDENTIALS_REJECTED, status={401, 403}),
        when(MODEL_NOT_FOUND, status={404}, types={"NotFoundError"}),
        when(MODEL_NOT_FOUND, status={404}, pattern="model .* does not exist"),
        when(
            NO_SUCH_ROUTE,
            status={404},
            text="{where} has no such route (is base_url the server's /v1 URL?){detail}",
        ),
        when(RATE_LIMITED, status={429}),
        when(TIMED_OUT, status={408, 504}),
        Rule(
            status=frozenset({503}),
            status_code=503,
            error_type="service_unavailable",
            code="upstream_overloaded",
            text="{where} is overloaded{detail}",
            retry=True,
        ),
        when(TOO_LARGE, status={413}),
        msgspec.structs.replace(when(REJECTED, status={400, 422}), param="upstream"),
        FAILED,
    ],
    # vLLM appends the exception's empty cause to its messages.
    tidy=lambda message: message.removesuffix(" None").strip(),
)
"""vLLM's HTTP statuses (and message wordings) in OpenAI's terms; the first matching row wins."""


def parse_error_body(raw: bytes) -> Fault:
    """What vLLM said, from any of its error shapes, or plain text."""
    try:
        body = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return Fault(raw[:500].decode("utf-8", "replace").strip())
    if not isinstance(body, dict):
        return Fault("")
    error = body.get("error")
    if isinstance(error, dict):
        body = error  # nested (vLLM ≥ 0.10.1); otherwise flat {"object": "error", ...}
    elif isinstance(error, str):
        return Fault(error)  # {"error": "Unauthorized"}
    detail = body.get("detail")
    if "message" not in body and detail is not None:  # FastAPI's own errors
        return Fault(detail if isinstance(detail, str) else _encoder.encode(detail).decode())
    message, upstream_type, param, code = (body.get(k) for k in ("message", "type", "param", "code"))
    return Fault(
        message if isinstance(message, str) else "",
        type=upstream_type if isinstance(upstream_type, str) else None,
        param=param if isinstance(param, str) and param else None,
        status=code if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599 else None,
    )


__all__ = ("ERRORS", "parse_error_body")
