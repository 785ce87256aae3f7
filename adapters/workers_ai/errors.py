"""Workers AI's errors: the v4 envelope (or an OpenAI-style error) read as one `Fault`, and the
table of Cloudflare codes and HTTP statuses in OpenAI's terms."""

from __future__ import annotations

import re
from typing import Final

import msgspec

from adapters.upstream import ErrorTable, Fault, Rule

QUOTA_CODES: Final = frozenset({3036, 4006})
CAPACITY_CODES: Final = frozenset({3040, 3021})
UNKNOWN_MODEL_CODES: Final = frozenset({5007, 3042})
PERMISSION_CODES: Final = frozenset({5016, 5018, 5035, 3041, 3023})
TIMEOUT_CODES: Final = frozenset({3007, 3008})
AUTH_CODES: Final = frozenset({10000})

_QUOTA: Final = Rule(
    codes=QUOTA_CODES,
    status_code=429,
    error_type="insufficient_quota",
    code="insufficient_quota",
    text="{where} has used up its quota{detail}",
    quota=True,
    retry=True,
)
_RATE_LIMITED: Final = Rule(
    codes=CAPACITY_CODES,
    status_code=429,
    error_type="rate_limit_exceeded",
    code="rate_limit_exceeded",
    text="{where} is rate limited or out of capacity{detail}",
    retry=True,
)
_CREDENTIALS: Final = Rule(
    codes=AUTH_CODES,
    status_code=401,
    mirror=frozenset({401, 403}),
    error_type="authentication_error",
    code="upstream_credentials_rejected",
    text="the gateway's upstream credentials were rejected by {where}{detail}",
)
_PERMISSION: Final = Rule(
    codes=PERMISSION_CODES,
    status_code=403,
    error_type="permission_error",
    code="upstream_permission_denied",
    text="{where} refused access to the model{detail}",
)
_TIMEOUT: Final = Rule(
    codes=TIMEOUT_CODES,
    status_code=504,
    error_type="timeout",
    code="upstream_timeout",
    text="{where} timed out{detail}",
)


def _or_status(rule: Rule, status: int) -> Rule:
    """The same outcome for an HTTP status without (or with another) Cloudflare code."""
    return msgspec.structs.replace(rule, codes=None, status=frozenset({status}))


ERRORS: Final = ErrorTable(
    [
        _QUOTA,
        msgspec.structs.replace(
            _QUOTA, codes=None, pattern=re.compile("daily free allocation", re.IGNORECASE)
        ),
        _RATE_LIMITED,
        _or_status(_RATE_LIMITED, 429),
        Rule(
            codes=UNKNOWN_MODEL_CODES,
            status_code=404,
            error_type="invalid_request_error",
            code="model_not_found",
            text="{where} does not know the configured upstream model{detail}",
        ),
        _CREDENTIALS,
        _or_status(_CREDENTIALS, 401),
        _PERMISSION,
        _or_status(_PERMISSION, 403),
        _TIMEOUT,
        _or_status(_TIMEOUT, 408),
        Rule(
            # The route itself was not found (code 7003: a wrong account id or base_url): a config error.
            status=frozenset({404}),
            status_code=502,
            error_type="upstream_error",
            code="upstream_not_found",
            text="{where} has no such route (check account_id and base_url){detail}",
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
            status=frozenset(range(400, 500)),
            status_code=400,
            error_type="invalid_request_error",
            code=None,
            text="{where} rejected the request{detail}",
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
        if isinstance(error, dict):
            return Fault(str(error.get("message", "")))
        if isinstance(error, str):
            return Fault(error)
    return Fault("")


__all__ = ("ERRORS", "parse_error_body")
