"""`POST /v1/messages` and `POST /v1/messages/count_tokens`: Anthropic's Messages API on every chat model.

A decoder and a writer on the chat pipeline: the body is decoded strictly (`gateway.anthropic`),
translated to the canonical chat request (`gateway.translation.messages`) and served by
`serve_translated` (limits, routing, failover, settling exactly as chat), and the canonical events are
written as Anthropic JSON or SSE (`gateway.translation.messages_writer`). Errors on these routes are
rendered in Anthropic's envelope (`gateway.errors.surface_of`). `count_tokens` answers the same
estimate the rate limiter reserves for the prompt, without calling any backend.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from gateway.anthropic.requests import count_tokens_request_decoder, messages_request_decoder
from gateway.anthropic.responses import TokenCount, encoder, rate_limit_headers
from gateway.api.chat import ChatResult, decode_request, serve_translated, validation_parts
from gateway.edge.auth import check_model
from gateway.errors import InvalidRequestError
from gateway.openai.limits import check_depth, check_length
from gateway.routing.router import require_kind
from gateway.translation.messages import API_VERSIONS, translate_messages
from gateway.translation.messages_writer import MessagesWriter

if TYPE_CHECKING:
    from gateway.anthropic.requests import CountTokensRequest, MessagesRequest
    from gateway.config import HTTPLimits
    from gateway.context import RequestInfo
    from gateway.edge.auth import KeyPolicy
    from gateway.limits import RateLimits
    from gateway.routing.router import ResolvedModel, Router
    from gateway.translation.messages import ApiVersion, MessagesTranslation

_INDEX: Final = re.compile(r"\[(\d+)\]")


def api_version(header: str | None) -> ApiVersion:
    """The request's `anthropic-version`; required, as Anthropic requires it.

    Raises:
        InvalidRequestError: missing, or a version the gateway does not implement.
    """
    if header is None or not header.strip():
        raise InvalidRequestError("anthropic-version: header is required")
    version = header.strip()
    for known in API_VERSIONS:
        if version == known:
            return known
    raise InvalidRequestError(
        f"anthropic-version: '{version}' is not a supported version (use {' or '.join(API_VERSIONS)})."
    )


async def create_message(
    router: Router,
    raw_body: bytes,
    *,
    info: RequestInfo,
    version: ApiVersion,
    key: KeyPolicy | None = None,
    limits: RateLimits | None = None,
) -> ChatResult:
    payload: MessagesRequest = decode_request(messages_request_decoder, raw_body, anthropic_validation_error)
    model, result = _translate(router, payload, version, key)
    info.stream = bool(payload.stream)
    info.user = result.user  # for the log line, never upstream
    answer = await serve_translated(
        router,
        model,
        result.translated,
        MessagesWriter(result.translated, thinking=result.thinking, request_id=info.request_id),
        key=key,
        limits=limits,
        info=info,
        explicit_max_tokens=True,
    )
    answer.headers = rate_limit_headers(answer.headers)
    answer.headers["request-id"] = info.request_id
    return answer


async def count_tokens(
    router: Router,
    raw_body: bytes,
    *,
    info: RequestInfo,
    version: ApiVersion,
    key: KeyPolicy | None = None,
    limits: RateLimits | None = None,
) -> ChatResult:
    """The prompt's size as the limiter estimates it (about 4 characters a token, see docs/messages.md)."""
    payload: CountTokensRequest = decode_request(
        count_tokens_request_decoder, raw_body, anthropic_validation_error
    )
    model, result = _translate(router, payload, version, key)
    info.model = model.name
    body = encoder.encode(TokenCount(result.translated.prompt_estimate))
    return ChatResult({"request-id": info.request_id}, body=body)


def _translate(
    router: Router, payload: MessagesRequest | CountTokensRequest, version: ApiVersion, key: KeyPolicy | None
) -> tuple[ResolvedModel, MessagesTranslation]:
    """Size limits, the model (as the key may use it), and the canonical request."""
    _check_limits(payload, router.request_limits)
    model = router.resolve(payload.model)
    check_model(key, payload.model, model.name)
    require_kind(model, payload.model, "chat")
    return model, translate_messages(payload, version=version, public_model=model.name, model=model.config)


def _check_limits(payload: MessagesRequest | CountTokensRequest, limits: HTTPLimits) -> None:
    if not payload.messages:
        raise InvalidRequestError("messages: at least one message is required", param="messages")
    check_length(len(payload.messages), limits.max_messages, "messages")
    for i, tool in enumerate(payload.tools or []):
        check_depth(tool.input_schema, limits.max_schema_depth, f"tools.{i}.input_schema")


def anthropic_validation_error(text: str) -> InvalidRequestError:
    """A msgspec validation failure in Anthropic's words: `max_tokens: Field required`."""
    where, message = validation_parts(text)
    where = _INDEX.sub(r".\1", where)
    if missing := re.match(r"Object missing required field `([^`]+)`", message):
        param = f"{where}.{missing.group(1)}" if where else missing.group(1)
        return InvalidRequestError(f"{param}: Field required", param=param)
    if unknown := re.match(r"Object contains unknown field `([^`]+)`", message):
        param = f"{where}.{unknown.group(1)}" if where else unknown.group(1)
        return InvalidRequestError(f"{param}: Extra inputs are not permitted", param=param)
    if not where:
        return InvalidRequestError(f"The request body must be a JSON object ({message}).")
    return InvalidRequestError(f"{where}: {message}", param=where)


__all__ = ("anthropic_validation_error", "api_version", "count_tokens", "create_message")
