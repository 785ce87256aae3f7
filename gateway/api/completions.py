"""`POST /v1/completions` (OpenAI's legacy text completions): decode → resolve → translate → serve.

The request becomes a canonical `PromptRequest` (Workers AI's Prompt schema; vLLM's `/v1/completions`)
and the answer OpenAI's `text_completion` objects and chunks (`gateway.text_writer`). Keys, limits
(counted like a chat request: one per choice, reserving the prompt estimate plus `max_tokens`),
routing, failover and errors are the chat endpoint's own (`gateway.chat.serve_translated`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.api.chat import decode_request, serve_translated
from gateway.edge.auth import check_model
from gateway.openai.limits import check_completion_request
from gateway.openai.requests import completion_request_decoder
from gateway.routing.router import require_kind
from gateway.translation.text_writer import TextWriter
from gateway.translation.translate import translate_completion

if TYPE_CHECKING:
    from gateway.api.chat import ChatResult
    from gateway.context import RequestInfo
    from gateway.edge.auth import KeyPolicy
    from gateway.limits import RateLimits
    from gateway.routing.router import Router


async def text_completion(
    router: Router,
    raw_body: bytes,
    *,
    info: RequestInfo,
    key: KeyPolicy | None = None,
    limits: RateLimits | None = None,
) -> ChatResult:
    payload = decode_request(completion_request_decoder, raw_body)
    check_completion_request(payload, router.request_limits)
    model = router.resolve(payload.model)
    check_model(key, payload.model, model.name)
    require_kind(model, payload.model, "chat")
    translated = translate_completion(
        payload, public_model=model.name, model=model.config, native=model.native
    )
    info.user = payload.user  # for the log line, never upstream
    return await serve_translated(
        router,
        model,
        translated,
        TextWriter(translated),
        key=key,
        limits=limits,
        info=info,
        explicit_max_tokens=payload.max_tokens is not None,
    )


__all__ = ("text_completion",)
