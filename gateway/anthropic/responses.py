"""Anthropic Messages response bodies, error bodies and rate-limit headers.

Streams are framed by `gateway.translation.messages_writer` from byte templates; the whole-answer
body, the error envelope and the token count are Structs here. Field order follows Anthropic's own
answers (msgspec writes fields in declaration order).
"""

from __future__ import annotations

import re
import time
from typing import Final, Literal

import msgspec
from msgspec import UNSET, UnsetType


class TextOut(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class ThinkingOut(msgspec.Struct, tag="thinking", tag_field="type"):
    thinking: str
    signature: str = ""


class ToolUseOut(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: msgspec.Raw
    """The call's arguments: a JSON object, as the model wrote it (checked, not re-encoded)."""


ContentOut = TextOut | ThinkingOut | ToolUseOut


class UsageOut(msgspec.Struct, omit_defaults=True, kw_only=True):
    input_tokens: int | UnsetType = UNSET
    """Always in a whole answer and `message_start`; in `message_delta` once the upstream reported it."""
    cache_creation_input_tokens: int | UnsetType = UNSET
    cache_read_input_tokens: int | UnsetType = UNSET
    output_tokens: int


class MessageOut(msgspec.Struct, kw_only=True):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ContentOut]
    stop_reason: str | None
    stop_sequence: str | None
    usage: UsageOut


class ErrorDetail(msgspec.Struct):
    type: str
    message: str


class ErrorBody(msgspec.Struct, omit_defaults=True, kw_only=True):
    type: Literal["error"]
    error: ErrorDetail
    request_id: str | UnsetType = UNSET


class TokenCount(msgspec.Struct):
    input_tokens: int


encoder: Final = msgspec.json.Encoder()

ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
"""Anthropic's error `type` per status; other 4xx are `invalid_request_error`, other 5xx `api_error`."""


def error_type(status: int) -> str:
    name = ERROR_TYPES.get(status)
    if name is not None:
        return name
    return "invalid_request_error" if status < 500 else "api_error"


_OPENAI_RATE_HEADERS: Final = {
    "x-ratelimit-limit-requests": "anthropic-ratelimit-requests-limit",
    "x-ratelimit-remaining-requests": "anthropic-ratelimit-requests-remaining",
    "x-ratelimit-reset-requests": "anthropic-ratelimit-requests-reset",
    "x-ratelimit-limit-tokens": "anthropic-ratelimit-tokens-limit",
    "x-ratelimit-remaining-tokens": "anthropic-ratelimit-tokens-remaining",
    "x-ratelimit-reset-tokens": "anthropic-ratelimit-tokens-reset",
}
_DURATION: Final = re.compile(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:([\d.]+)s)?(?:(\d+)ms)?")


def rate_limit_headers(headers: dict[str, str], now: float | None = None) -> dict[str, str]:
    """The headers with OpenAI's `x-ratelimit-*` (the limiter's) renamed to Anthropic's
    `anthropic-ratelimit-*`, whose resets are RFC 3339 times rather than durations."""
    if not any(name in _OPENAI_RATE_HEADERS for name in headers):
        return headers
    out: dict[str, str] = {}
    for name, value in headers.items():
        renamed = _OPENAI_RATE_HEADERS.get(name)
        if renamed is None:
            out[name] = value
        elif renamed.endswith("-reset"):
            out[renamed] = _reset_time(value, time.time() if now is None else now)
        else:
            out[renamed] = value
    return out


def _reset_time(duration: str, now: float) -> str:
    """`6m0s` (as `gateway.limits.format_duration` writes it) → the UTC time it ends, RFC 3339."""
    match = _DURATION.fullmatch(duration)
    seconds = 0.0
    if match is not None:
        hours, minutes, secs, ms = match.groups()
        seconds = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs or 0) + int(ms or 0) / 1000
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + seconds + 0.999))


__all__ = (
    "ERROR_TYPES",
    "ContentOut",
    "ErrorBody",
    "ErrorDetail",
    "MessageOut",
    "TextOut",
    "ThinkingOut",
    "TokenCount",
    "ToolUseOut",
    "UsageOut",
    "encoder",
    "error_type",
    "rate_limit_headers",
)
