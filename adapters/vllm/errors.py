"""vLLM's errors: its body shapes read as one `Fault`, and its table of statuses in OpenAI's terms.

vLLM's error shapes: `{"error": "Unauthorized"}`, the flat `{"object": "error", ...}`, nested errors
with an integer `code` (the HTTP status, never OpenAI's string code), and FastAPI's `{"detail": ...}`.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from adapters.upstream import ErrorTable, Fault, Rule

_CONTEXT_LENGTH: Final = re.compile(
    r"maximum context length|context length is only|exceeds model's maximum context length", re.IGNORECASE
)
_MODEL_NOT_FOUND: Final = re.compile(r"model .* does not exist", re.IGNORECASE)
_encoder: Final = msgspec.json.Encoder()

_MODEL_MISSING: Final = Rule(
    status=frozenset({404}),
    types=frozenset({"NotFoundError"}),
    status_code=404,
    error_type="invalid_request_error",
    code="model_not_found",
    text="{where} does not serve the configured upstream model{detail}",
)

ERRORS: Final = ErrorTable(
    [
        Rule(
            status=frozenset({400, 413, 422}),
            pattern=_CONTEXT_LENGTH,
            status_code=400,
            error_type="invalid_request_error",
            code="context_length_exceeded",
            text="{message}",
            param="input",
            client_fault=True,
        ),
        Rule(
            status=frozenset({401, 403}),
            status_code=401,
            mirror=frozenset({401, 403}),
            error_type="authentication_error",
            code="upstream_credentials_rejected",
            text="the gateway's upstream credentials were rejected by {where}{detail}",
        ),
        _MODEL_MISSING,
        msgspec.structs.replace(_MODEL_MISSING, types=None, pattern=_MODEL_NOT_FOUND),
        Rule(
            status=frozenset({404}),
            status_code=502,
            error_type="upstream_error",
            code="upstream_not_found",
            text="{where} has no such route (is base_url the server's /v1 URL?){detail}",
        ),
        Rule(
            status=frozenset({429}),
            status_code=429,
            error_type="rate_limit_exceeded",
            code="rate_limit_exceeded",
            text="{where} is rate limited{detail}",
            retry=True,
        ),
        Rule(
            status=frozenset({408, 504}),
            status_code=504,
            error_type="timeout",
            code="upstream_timeout",
            text="{where} timed out{detail}",
        ),
        Rule(
            status=frozenset({503}),
            status_code=503,
            error_type="service_unavailable",
            code="upstream_overloaded",
            text="{where} is overloaded{detail}",
            retry=True,
        ),
        Rule(
            status=frozenset({413}),
            status_code=413,
            error_type="invalid_request_error",
            code="request_too_large",
            text="{where} found the request too large{detail}",
            client_fault=True,
        ),
        Rule(
            status=frozenset({400, 422}),
            status_code=400,
            error_type="invalid_request_error",
            code=None,
            text="{where} rejected the request{detail}",
            param="upstream",
            client_fault=True,
        ),
        Rule(
            status_code=502,
            error_type="upstream_error",
            code="upstream_error",
            text="{where} failed with HTTP {status}{detail}",
            retry=True,
        ),
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
