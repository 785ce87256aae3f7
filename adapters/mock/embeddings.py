"""The mock backend's embeddings: deterministic unit vectors of the real model's dimension, no network.

The same input (text or token ids), model and `pooling` always give the same vector; different
inputs give unrelated ones. `dimensions` shortens the vector (and renormalises it), as Matryoshka
models do.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from typing import TYPE_CHECKING, Final

from adapters.base import CollectedAnswer
from adapters.canonical import Embedding, EmbeddingRequest, Event
from adapters.errors import UpstreamStatusError

if TYPE_CHECKING:
    from adapters.base import UpstreamResponse

DEFAULT_DIMENSIONS: Final = 768
"""bge-base's, the default config's embeddings model."""
DIMENSIONS_BY_NAME: Final = (("small", 384), ("large", 1024), ("m3", 1024), ("qwen3", 1024))
"""The dimension a model name suggests (the Workers AI and Hugging Face names say small/base/large)."""


def native_dimensions(model: str) -> int:
    name = model.lower()
    return next((dim for part, dim in DIMENSIONS_BY_NAME if part in name), DEFAULT_DIMENSIONS)


def embed(backend: str, request: EmbeddingRequest, model: str) -> UpstreamResponse:
    native = native_dimensions(model)
    size = native
    if isinstance(request.dimensions, int):
        if request.dimensions > native:
            raise UpstreamStatusError(
                backend,
                f"model '{model}' makes {native}-dimensional embeddings: "
                f"'dimensions' must be at most {native}",
                status_code=400,
                error_type="invalid_request_error",
                code="invalid_value",
                param="dimensions",
                client_fault=True,
            )
        size = request.dimensions
    salt = f"{model}\0{request.pooling or 'mean'}\0".encode()
    events: list[Event] = [
        Embedding(index, vector(salt + _input_bytes(item), native, size))
        for index, item in enumerate(request.input)
    ]
    return CollectedAnswer(events)


def _input_bytes(item: object) -> bytes:
    if isinstance(item, str):
        return b"t" + item.encode("utf-8", "surrogatepass")
    assert isinstance(item, list)
    return b"i" + array("q", item).tobytes()


def vector(seed: bytes, native: int, size: int) -> list[float]:
    """A unit vector of `size` float32 values drawn from `seed` (the first `size` of `native`)."""
    raw = array("b", hashlib.shake_256(seed).digest(native))[:size]
    norm = math.sqrt(sum(value * value for value in raw)) or 1.0
    # Rounded through float32 so that base64 (float32) and float answers carry the same values.
    return array("f", [value / norm for value in raw]).tolist()


__all__ = ("embed", "native_dimensions", "vector")
