"""`POST /v1/embeddings`: decode → resolve (an `embeddings` model) → translate → serve.

The request becomes a canonical `EmbeddingRequest` (`gateway.translation.embeddings`) and the
answer OpenAI's `CreateEmbeddingResponse`. Keys, model allow-lists, limits (the input's tokens are
reserved and charged like a chat prompt; nothing is generated), routing, failover, breakers and
errors are the chat endpoint's own (`gateway.api.chat.serve_translated`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.api.chat import decode_request, serve_translated
from gateway.edge.auth import check_model
from gateway.openai.requests import embedding_request_decoder
from gateway.routing.router import require_kind
from gateway.translation.embeddings import EmbeddingWriter, translate_embeddings

if TYPE_CHECKING:
    from gateway.api.chat import ChatResult
    from gateway.context import RequestInfo
    from gateway.edge.auth import KeyPolicy
    from gateway.limits import RateLimits
    from gateway.routing.router import Router


async def create_embeddings(
    router: Router,
    raw_body: bytes,
    *,
    info: RequestInfo,
    key: KeyPolicy | None = None,
    limits: RateLimits | None = None,
) -> ChatResult:
    payload = decode_request(embedding_request_decoder, raw_body)
    model = router.resolve(payload.model)
    check_model(key, payload.model, model.name)
    require_kind(model, payload.model, "embeddings")
    translated = translate_embeddings(payload, public_model=model.name)
    info.user = payload.user  # for the log line, never upstream
    return await serve_translated(
        router,
        model,
        translated,
        EmbeddingWriter(translated, base64=payload.encoding_format == "base64"),
        key=key,
        limits=limits,
        info=info,
        explicit_max_tokens=False,
    )


__all__ = ("create_embeddings",)
