"""OpenAI response bodies: chat and text completions, stream deltas, usage, models and errors.

Fields OpenAI always sends (even as null) have plain defaults; fields it sends only sometimes are
`UNSET` by default so msgspec leaves them out.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec
from msgspec import UNSET, UnsetType


class FunctionCallOut(msgspec.Struct, omit_defaults=True):
    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET


class ToolCallOut(msgspec.Struct):
    id: str
    function: FunctionCallOut
    type: Literal["function"] = "function"


class AssistantMessageOut(msgspec.Struct, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None
    annotations: list[object] = msgspec.field(default_factory=list)
    tool_calls: list[ToolCallOut] | UnsetType = UNSET
    function_call: FunctionCallOut | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET


class Choice(msgspec.Struct, kw_only=True):
    index: int
    message: AssistantMessageOut
    logprobs: None = None
    finish_reason: str


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int = 0
    audio_tokens: int = 0


class CompletionTokensDetails(msgspec.Struct):
    reasoning_tokens: int = 0
    audio_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


class CompletionUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = msgspec.field(default_factory=PromptTokensDetails)
    completion_tokens_details: CompletionTokensDetails = msgspec.field(
        default_factory=CompletionTokensDetails
    )


class ChatCompletion(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    system_fingerprint: None = None


class TextChoice(msgspec.Struct, kw_only=True):
    text: str
    index: int
    logprobs: None = None
    finish_reason: str


class TextUsage(msgspec.Struct):
    """Legacy completions report the three token counts only."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TextCompletion(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: TextUsage
    system_fingerprint: None = None


class ToolCallDeltaOut(msgspec.Struct, omit_defaults=True):
    index: int
    function: FunctionCallOut
    id: str | UnsetType = UNSET
    type: Literal["function"] | UnsetType = UNSET


class ChunkDelta(msgspec.Struct, omit_defaults=True):
    """One `delta` object; everything unset is left out, as OpenAI does after the first chunk."""

    role: Literal["assistant"] | UnsetType = UNSET
    content: str | UnsetType | None = UNSET
    reasoning_content: str | UnsetType = UNSET
    tool_calls: list[ToolCallDeltaOut] | UnsetType = UNSET
    function_call: FunctionCallOut | UnsetType = UNSET
    refusal: UnsetType | None = UNSET


class EmbeddingObject(msgspec.Struct, kw_only=True):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str
    """The vector, or with `encoding_format: base64` its packed little-endian float32 bytes in base64."""


class EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct, kw_only=True):
    """OpenAI's `CreateEmbeddingResponse`."""

    object: Literal["list"] = "list"
    data: list[EmbeddingObject]
    model: str
    usage: EmbeddingUsage


class ModelObject(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


encoder: Final = msgspec.json.Encoder()

__all__ = (
    "AssistantMessageOut",
    "ChatCompletion",
    "Choice",
    "ChunkDelta",
    "CompletionTokensDetails",
    "CompletionUsage",
    "EmbeddingList",
    "EmbeddingObject",
    "EmbeddingUsage",
    "ErrorBody",
    "ErrorDetail",
    "FunctionCallOut",
    "ModelList",
    "ModelObject",
    "PromptTokensDetails",
    "TextChoice",
    "TextCompletion",
    "TextUsage",
    "ToolCallDeltaOut",
    "ToolCallOut",
    "encoder",
)
