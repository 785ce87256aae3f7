"""Workers AI's errors: the v4 envelope (or an OpenAI-style error) read as one `Fault`, and the
table of Cloudflare codes and HTTP statuses in OpenAI's terms."""

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

QUOTA_CODES: Final = frozenset({3036, 4006})
CAPACITY_CODES: Final = frozenset({3040, 3021})
UNKNOWN_MODEL_CODES: Final = frozenset({5007, 3042})
PERMISSION_CODES: Final = frozenset({5016, 5018, 5035, 3041, 3023})
TIMEOUT_CODES: Final = frozenset({3007, 3008})
AUTH_CODES: Final = frozenset({10000})

_QUOTA: Final = Rule(
    status_code=429,
    error_type="insufficient_quota",
    code="insufficient_quota",
    text="{where} has used up its quota{detail}",
    quota=True,
    retry=True,
)
_PERMISSION: Final = Rule(
    status_code=403,
    error_type="permission_error",
    code="upstream_permission_denied",
    text="{where} refused access to the model{detail}",
)
_OUT_OF_CAPACITY: Final = "{where} is rate limited or out of capacity{detail}"

ERRORS: Final = ErrorTable(
    [
        when(_QUOTA, codes=QUOTA_CODES),
        when(_QUOTA, pattern="daily free allocation"),
        when(RATE_LIMITED, codes=CAPACITY_CODES, text=_OUT_OF_CAPACITY),
        when(RATE_LIMITED, status={429}, text=_OUT_OF_CAPACITY),
        when(
            MODEL_NOT_FOUND,
            codes=UNKNOWN_MODEL_CODES,
            text="{where} does not know the configured upstream model{detail}",
        ),
        when(CREDENTIALS_REJECTED, codes=AUTH_CODES),
        when(CREDENTIALS_REJECTED, status={401}),
        when(_PERMISSION, codes=PERMISSION_CODES),
        when(_PERMISSION, status={403}),
        when(TIMED_OUT, codes=TIMEOUT_CODES),
        when(TIMED_OUT, status={408}),
        # The route itself was not found (code 7003: a wrong account id or base_url): a config error.
        when(
            NO_SUCH_ROUTE,
            status={404},
            text="{where} has no such route (check account_id and base_url){detail}",
        ),
        when(TOO_LARGE, status={413}),
        when(REJECTED, status=range(400, 500)),
        FAILED,
    ],
    code_label="Workers AI error",
)
"""Cloudflare's codes first, then HTTP statuses; the first matching row wins."""


def parse_error_body(raw: bytes) -> Fault:
    """(Cloudflare code, message) from the v4 envelope, an OpenAI-style error, or plain text."""
    try:
        body = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return Fault(raw[:500].decode("utf-8", "replace").strip())
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            code = first.get("code")
            code = code if isinstance(code, int) and not isinstance(code, bool) else None
            return Fault(str(first.get("message", "")), code=code)
        error = body.get("error")
        if isinstance(error, list) and error and isinstance(error[0], dict):  # AI Gateway's own errors
            first = error[0]
            code = first.get("code")
            code = code if isinstance(code, int) and not isinstance(code, bool) else None
            return Fault(str(first.get("message", "")), code=code)
        if isinstance(error, dict):
            return Fault(str(error.get("message", "")))
        if isinstance(error, str):
            return Fault(error)
    return Fault("")


__all__ = ("ERRORS", "parse_error_body")
