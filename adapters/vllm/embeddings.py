"""vLLM embeddings (`POST {base_url}/embeddings`, served by a pooling model: `vllm serve --runner pooling`).

Request: OpenAI's fields as they are (texts or token-id arrays, `dimensions` for Matryoshka models),
always `encoding_format: float` (the gateway encodes base64 itself, the same for every backend).
Errors are vLLM's, normalised as for chat: an over-long input is a 400 `context_length_exceeded` on
`input`, "does not support Matryoshka embeddings" a 400 on `dimensions`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

import msgspec
from msgspec import UNSET, UnsetType

from adapters.base import CollectedAnswer
from adapters.canonical import Embedding, EmbeddingRequest, Event, Usage
from adapters.errors import UpstreamProtocolError, UpstreamStatusError

if TYPE_CHECKING:
    from adapters.base import UpstreamResponse
    from adapters.vllm.adapter import VLLMAdapter


class VLLMEmbeddingRequest(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """The body of `POST /v1/embeddings`; unset fields are never sent."""

    model: str
    input: list[str] | list[list[int]]
    encoding_format: Literal["float"]
    """Always sent (not left to vLLM's default): the answer is parsed as floats."""
    dimensions: int | UnsetType = UNSET


class EmbeddingView(msgspec.Struct):
    embedding: list[float]
    index: int


class EmbeddingUsageView(msgspec.Struct):
    prompt_tokens: int = 0


class EmbeddingAnswerView(msgspec.Struct):
    data: list[EmbeddingView] = []
    usage: EmbeddingUsageView | None = None
    object: str | None = None


_encoder: Final = msgspec.json.Encoder()
_answer_decoder: Final = msgspec.json.Decoder(EmbeddingAnswerView)


async def embed(
    adapter: VLLMAdapter, request: EmbeddingRequest, model: str, *, request_id: str
) -> UpstreamResponse:
    backend = adapter.name
    if request.pooling is not UNSET:
        raise UpstreamStatusError(
            backend,
            f"'pooling' is a Workers AI extension that backend '{backend}' (vLLM) does not support.",
            status_code=400,
            error_type="invalid_request_error",
            code="unsupported_parameter",
            param="pooling",
            client_fault=True,
        )
    body = VLLMEmbeddingRequest(
        model=model, input=request.input, encoding_format="float", dimensions=request.dimensions
    )
    raw = await adapter.post_embeddings(_encoder.encode(body), request_id=request_id)
    try:
        answer = _answer_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise _malformed(backend, "an embeddings answer that is not valid") from exc
    if answer.object == "error":
        raise adapter.failed_answer(raw)
    if len(answer.data) != len(request.input) or sorted(item.index for item in answer.data) != list(
        range(len(request.input))
    ):
        raise _malformed(backend, f"{len(answer.data)} vectors for {len(request.input)} inputs")
    events: list[Event] = [Embedding(item.index, item.embedding) for item in answer.data]
    if answer.usage is not None:
        events.append(Usage(answer.usage.prompt_tokens, 0))
    return CollectedAnswer(events)


def _malformed(backend: str, what: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(backend, f"backend '{backend}' sent {what}", code="upstream_malformed")


__all__ = ("VLLMEmbeddingRequest", "embed")
