"""OpenAI embeddings requests → canonical `EmbeddingRequest`, and `Embedding` events → OpenAI's list.

Translation checks what OpenAI checks before any upstream call (1-2,048 inputs, no empty string,
no input certainly longer than 8,192 tokens, at most 300,000 tokens in all) and estimates the
request's tokens without a tokenizer (`estimate_tokens`): Workers AI reports no usage for embeddings,
so the estimate is what the rate limits reserve, what the answer's `usage` says, and what the key is
charged, unless the backend counts tokens itself (vLLM).

The writer answers `encoding_format: base64` with base64 of packed little-endian float32, which is
what openai-python asks for by default and decodes with `array("f")` / `numpy.frombuffer`.
"""

from __future__ import annotations

import base64
import re
import sys
from array import array
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Final

from msgspec import UNSET

from adapters.canonical import Embedding, EmbeddingRequest, Usage
from gateway.errors import InvalidRequestError
from gateway.openai.responses import EmbeddingList, EmbeddingObject, EmbeddingUsage, encoder
from gateway.translation.framing import AnswerStats
from gateway.translation.translate import Translated

if TYPE_CHECKING:
    from adapters.canonical import CanonicalRequest, Event
    from gateway.openai.requests import EmbeddingCreateRequest

MAX_INPUTS: Final = 2048
"""OpenAI's limit on inputs per request."""
MAX_INPUT_TOKENS: Final = 8192
"""OpenAI's limit per input."""
MAX_REQUEST_TOKENS: Final = 300_000
"""OpenAI's limit on all inputs of one request together."""
SPECIAL_TOKENS: Final = 2
"""Tokens a model adds around every input ([CLS]/[SEP] for BERT-style bge, <s></s> for XLM-R bge-m3)."""
BYTES_PER_TOKEN_FLOOR: Final = 4
"""The estimate never counts fewer tokens than a quarter of the input's UTF-8 bytes: no tokenizer makes
more than one token per byte, so the real count is at most 4 times the estimate."""
LETTERS_PER_TOKEN: Final = 4

_LETTERS: Final = re.compile(r"[A-Za-z]+")
_SPACE_OR_LETTERS: Final = re.compile(r"[A-Za-z]+|\s+")
_BIG_ENDIAN: Final = sys.byteorder == "big"


def estimate_tokens(text: str) -> int:
    """Tokens in `text` for an embedding model, without a tokenizer; see docs/embeddings.md.

    Runs of ASCII letters count one token per 4 letters (rounded up); every other character that is
    not white space (digits, punctuation, symbols, any non-ASCII character) counts one; 2 are added
    for the special tokens. The count is raised to a quarter of the UTF-8 bytes when lower, so it
    never undercounts by more than 4 times (a tokenizer makes at most one token per byte).
    """
    letters = sum(-(-len(run) // LETTERS_PER_TOKEN) for run in _LETTERS.findall(text))
    others = len(_SPACE_OR_LETTERS.sub("", text))
    floor = -(-len(text.encode("utf-8", "surrogatepass")) // BYTES_PER_TOKEN_FLOOR)
    return max(letters + others, floor) + SPECIAL_TOKENS


def translate_embeddings(body: EmbeddingCreateRequest, *, public_model: str) -> Translated[EmbeddingRequest]:
    """The canonical request, with its token estimate; a 400 naming the input for what OpenAI refuses."""
    raw = body.input
    inputs: list[str] | list[list[int]]
    if isinstance(raw, str):
        inputs = [raw]
    elif raw and all(type(item) is int for item in raw):
        inputs = [[item for item in raw if type(item) is int]]  # one token-id array
    else:
        inputs = _homogeneous(raw)
    if not inputs:
        raise InvalidRequestError(
            "Invalid 'input': empty array. Expected an array with minimum length 1.",
            param="input",
            code="empty_array",
        )
    if len(inputs) > MAX_INPUTS:
        raise InvalidRequestError(
            f"Invalid 'input': array too long. Expected an array with maximum length {MAX_INPUTS}, "
            f"but got an array with length {len(inputs)} instead.",
            param="input",
            code="array_above_max_length",
        )
    estimate = 0
    least = 0
    for index, item in enumerate(inputs):
        param = "input" if isinstance(raw, str) else f"input[{index}]"
        if isinstance(item, str):
            if not item:
                raise InvalidRequestError(
                    f"Invalid '{param}': empty string. Every input must contain at least one character.",
                    param=param,
                    code="empty_string",
                )
            # Every word is at least one token: only inputs certainly too long are refused here.
            at_least = len(item.split())
            tokens = estimate_tokens(item)
        else:
            if not item:
                raise InvalidRequestError(
                    f"Invalid '{param}': empty token array.", param=param, code="empty_array"
                )
            if any(type(token) is not int or token < 0 for token in item):
                raise InvalidRequestError(
                    f"Invalid '{param}': token ids must be non-negative integers.", param=param
                )
            at_least = tokens = len(item)
        if at_least > MAX_INPUT_TOKENS:
            raise InvalidRequestError(
                f"Invalid '{param}': this input has at least {at_least} tokens; the maximum per input "
                f"is {MAX_INPUT_TOKENS} tokens. Shorten it or split it into several inputs.",
                param=param,
                code="context_length_exceeded",
            )
        least += at_least
        estimate += tokens
    if least > MAX_REQUEST_TOKENS:
        raise InvalidRequestError(
            f"Invalid 'input': the inputs have at least {least} tokens together; the maximum per "
            f"request is {MAX_REQUEST_TOKENS}. Send them in several requests.",
            param="input",
            code="max_tokens_per_request",
        )
    request = EmbeddingRequest(
        input=inputs,
        dimensions=UNSET if body.dimensions is None else body.dimensions,
        pooling=UNSET if body.pooling is None else body.pooling,
    )
    return Translated(
        request=request, public_model=public_model, include_usage=True, stop=[], prompt_estimate=estimate
    )


def _homogeneous(items: list[str | int | list[int]]) -> list[str] | list[list[int]]:
    """A list of strings or a list of token arrays; a mixture (or a stray number) is a 400."""
    if all(type(item) is str for item in items):
        return items  # type: ignore[return-value]
    if all(type(item) is list for item in items):
        return items  # type: ignore[return-value]
    raise InvalidRequestError(
        "Invalid 'input': expected a string, an array of strings, an array of token ids, or an array "
        "of token-id arrays (not a mixture).",
        param="input",
        code="invalid_type",
    )


class EmbeddingWriter:
    """`Embedding` events → OpenAI's `CreateEmbeddingResponse` body (a whole answer, never a stream)."""

    __slots__ = ("base64", "stats", "translated")
    final_event: bytes = b""
    """Never sent: an embeddings answer is never a stream."""

    def __init__(self, translated: Translated[EmbeddingRequest], *, base64: bool) -> None:
        self.translated: Translated[CanonicalRequest] = translated
        self.stats = AnswerStats()
        self.base64 = base64

    def stream(self, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
        raise NotImplementedError("embeddings are never streamed")

    def complete(self, events: Iterable[Event]) -> bytes:
        vectors: list[Embedding] = []
        usage: Usage | None = None
        for event in events:
            if type(event) is Embedding:
                vectors.append(event)
            elif type(event) is Usage:
                usage = event
        if usage is None:  # Workers AI counts no tokens for embeddings: the gateway's estimate stands
            usage = Usage(self.translated.prompt_estimate, 0)
        self.stats.usage = usage
        self.stats.finish_reason = "stop"
        vectors.sort(key=_index)
        data = [
            EmbeddingObject(
                index=item.index, embedding=packed_base64(item.vector) if self.base64 else item.vector
            )
            for item in vectors
        ]
        body = EmbeddingList(
            data=data,
            model=self.translated.public_model,
            usage=EmbeddingUsage(prompt_tokens=usage.prompt_tokens, total_tokens=usage.prompt_tokens),
        )
        return encoder.encode(body)


def _index(item: Embedding) -> int:
    return item.index


def packed_base64(vector: list[float]) -> str:
    """The vector as base64 of little-endian float32 values (OpenAI's `encoding_format: base64`)."""
    packed = array("f", vector)
    if _BIG_ENDIAN:
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


__all__ = (
    "MAX_INPUTS",
    "MAX_INPUT_TOKENS",
    "EmbeddingWriter",
    "estimate_tokens",
    "packed_base64",
    "translate_embeddings",
)
