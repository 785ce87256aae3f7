"""Workers AI embeddings (`POST .../ai/run/@cf/baai/bge-base-en-v1.5` and the other embedding models).

Request: `{"text": [...], "pooling"?}` (the published schemas; qwen3-embedding takes `text` as an alias
of its `documents`). A model takes at most 100 texts per call (qwen3-embedding 32), so a larger request
is split into several calls, made concurrently (at most `MAX_PARALLEL_CALLS` at once) and reassembled
in input order; one failed call fails the whole attempt, so the router can fail over with nothing lost.

Answer: the usual envelope around `{"shape": [n, dim], "data": [[...], ...], "pooling"?}`. It carries no
token counts: the gateway's estimate stands for usage.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

import msgspec
from msgspec import UNSET, UnsetType

from adapters.base import CollectedAnswer
from adapters.canonical import Embedding, EmbeddingRequest, Event
from adapters.errors import UpstreamError, UpstreamProtocolError, UpstreamStatusError

if TYPE_CHECKING:
    from adapters.base import UpstreamResponse
    from adapters.workers_ai.adapter import WorkersAIAdapter

DEFAULT_BATCH_LIMIT: Final = 100
BATCH_LIMITS: Final[dict[str, int]] = {"@cf/qwen/qwen3-embedding-0.6b": 32}
"""Texts per call where a model's schema allows fewer than `DEFAULT_BATCH_LIMIT`."""
MAX_PARALLEL_CALLS: Final = 8
"""Calls in flight at once for one request (2,048 inputs are 21 calls of 100)."""
NATIVE_DIMENSIONS: Final[dict[str, int]] = {
    "@cf/baai/bge-small-en-v1.5": 384,
    "@cf/baai/bge-base-en-v1.5": 768,
    "@cf/baai/bge-large-en-v1.5": 1024,
    "@cf/baai/bge-m3": 1024,
    "@cf/google/embeddinggemma-300m": 768,
    "@cf/qwen/qwen3-embedding-0.6b": 1024,
}
"""The vector size of the embedding models Workers AI lists (others are learnt from their answers)."""


class EmbeddingBody(msgspec.Struct, frozen=True, omit_defaults=True):
    text: list[str]
    pooling: str | UnsetType = UNSET


class EmbeddingResult(msgspec.Struct, frozen=True):
    data: list[list[float]]
    shape: list[int] = []


class EmbeddingEnvelope(msgspec.Struct, frozen=True):
    result: EmbeddingResult | None = None
    success: bool = True


_encoder: Final = msgspec.json.Encoder()
_envelope_decoder: Final = msgspec.json.Decoder(EmbeddingEnvelope)


async def embed(
    adapter: WorkersAIAdapter, request: EmbeddingRequest, model: str, *, max_concurrency: int | None
) -> UpstreamResponse:
    """`max_concurrency` is the backend's: its connection pool holds no more, so no more calls run at once."""
    backend = adapter.name
    texts = [item for item in request.input if isinstance(item, str)]
    if len(texts) != len(request.input):
        raise _refused(backend, "Workers AI embedding models take text only, not token ids.", "input")
    native = NATIVE_DIMENSIONS.get(model)
    wanted = request.dimensions if isinstance(request.dimensions, int) else None
    if wanted is not None and native is not None and wanted != native:
        raise _wrong_dimensions(backend, model, native)
    limit = BATCH_LIMITS.get(model, DEFAULT_BATCH_LIMIT)
    batches = [texts[start : start + limit] for start in range(0, len(texts), limit)]
    if len(batches) == 1:
        vectors = await _call(adapter, model, batches[0], request.pooling)
    else:
        parallel = min(MAX_PARALLEL_CALLS, max_concurrency or MAX_PARALLEL_CALLS)
        vectors = await _concurrently(adapter, model, batches, request.pooling, parallel)
    if wanted is not None and vectors and len(vectors[0]) != wanted:
        raise _wrong_dimensions(backend, model, len(vectors[0]))
    events: list[Event] = [Embedding(index, vector) for index, vector in enumerate(vectors)]
    return CollectedAnswer(events)


async def _concurrently(
    adapter: WorkersAIAdapter,
    model: str,
    batches: list[list[str]],
    pooling: str | UnsetType,
    parallel: int,
) -> list[list[float]]:
    """Every batch's vectors, in batch order; the first failure cancels the other calls and is raised."""
    gate = asyncio.Semaphore(parallel)

    async def one(batch: list[str]) -> list[list[float]]:
        async with gate:
            return await _call(adapter, model, batch, pooling)

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(batch)) for batch in batches]
    except* UpstreamError as failures:
        raise failures.exceptions[0] from None
    return [vector for task in tasks for vector in task.result()]


async def _call(
    adapter: WorkersAIAdapter, model: str, texts: list[str], pooling: str | UnsetType
) -> list[list[float]]:
    backend = adapter.name
    raw = await adapter.post_whole(model, _encoder.encode(EmbeddingBody(texts, pooling)))
    try:
        envelope = _envelope_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise _malformed(backend, "an embeddings answer that is not valid") from exc
    if not envelope.success:
        raise adapter.failed_answer(raw)
    result = envelope.result
    if result is None:
        raise _malformed(backend, "an embeddings answer without a result")
    data = result.data
    if len(data) != len(texts) or (data and any(len(vector) != len(data[0]) for vector in data)):
        raise _malformed(backend, f"{len(data)} vectors of unequal or wrong count for {len(texts)} inputs")
    return data


def _malformed(backend: str, what: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(backend, f"backend '{backend}' sent {what}", code="upstream_malformed")


def _refused(backend: str, message: str, param: str) -> UpstreamStatusError:
    return UpstreamStatusError(
        backend,
        message,
        status_code=400,
        error_type="invalid_request_error",
        code="unsupported_parameter",
        param=param,
        client_fault=True,
    )


def _wrong_dimensions(backend: str, model: str, native: int) -> UpstreamStatusError:
    return _refused(
        backend,
        f"The model '{model}' makes {native}-dimensional embeddings and cannot shorten them: "
        f"leave 'dimensions' out or set it to {native}.",
        "dimensions",
    )


__all__ = ("BATCH_LIMITS", "NATIVE_DIMENSIONS", "embed")
