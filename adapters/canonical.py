"""The canonical request and the canonical event stream.

The gateway turns every OpenAI chat request into a `ChatRequest` modelled on the Workers AI *Messages*
schema, every legacy completions request into a `PromptRequest` modelled on its *Prompt* schema
(both plus a few extensions every backend can express), and every embeddings request into an
`EmbeddingRequest` (answered by `Embedding` events); every adapter turns its upstream's answer into
the same small set of events. The gateway's writer owns all OpenAI framing, so adapters
never build OpenAI chunks themselves.

Events are yielded by `UpstreamResponse.events()`. A failure is raised (an `UpstreamError`), never
yielded, so `async for` loops end only on a complete answer.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import msgspec
from msgspec import UNSET, UnsetType

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class TextPart(msgspec.Struct, tag="text", tag_field="type", frozen=True):
    text: str


class ImageURL(msgspec.Struct, frozen=True, omit_defaults=True):
    url: str
    detail: str | UnsetType = UNSET


class ImagePart(msgspec.Struct, tag="image_url", tag_field="type", frozen=True):
    image_url: ImageURL


ContentPart = TextPart | ImagePart


class FunctionCall(msgspec.Struct, frozen=True):
    name: str
    arguments: str
    """A JSON document as a string, as OpenAI sends it."""


class ToolCall(msgspec.Struct, frozen=True):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class Message(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    role: Role
    content: str | list[ContentPart]
    """Always a string except for vision targets, which may receive text and image parts."""
    tool_calls: list[ToolCall] | UnsetType = UNSET
    tool_call_id: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    reasoning: str | UnsetType = UNSET
    """Reasoning text of an earlier assistant turn, kept apart from `content`."""


class FunctionDefinition(msgspec.Struct, frozen=True):
    name: str
    description: str
    parameters: dict[str, Any]


class Tool(msgspec.Struct, frozen=True):
    function: FunctionDefinition
    type: Literal["function"] = "function"


class NamedFunction(msgspec.Struct, frozen=True):
    name: str


class NamedToolChoice(msgspec.Struct, frozen=True):
    function: NamedFunction
    type: Literal["function"] = "function"


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class ResponseFormat(msgspec.Struct, frozen=True, omit_defaults=True):
    type: Literal["json_object", "json_schema"]
    json_schema: dict[str, Any] | UnsetType = UNSET
    """A bare JSON Schema (Workers AI's form), not OpenAI's {name, schema, strict} envelope."""


class ChatRequest(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """A chat request in the Workers AI Messages shape; unset fields are never sent upstream."""

    messages: list[Message]
    max_tokens: int
    """Always set: Workers AI's default of 256 would silently truncate answers."""
    stream: bool = False
    tools: list[Tool] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    top_k: int | UnsetType = UNSET
    seed: int | UnsetType = UNSET
    repetition_penalty: float | UnsetType = UNSET
    frequency_penalty: float | UnsetType = UNSET
    presence_penalty: float | UnsetType = UNSET
    response_format: ResponseFormat | UnsetType = UNSET
    stop: list[str] | UnsetType = UNSET
    reasoning_effort: str | UnsetType = UNSET
    lora: str | UnsetType = UNSET
    raw: bool | UnsetType = UNSET
    n: int | UnsetType = UNSET
    """Set only for backends that generate several choices themselves (vLLM); see `Indexed`."""
    logit_bias: dict[str, float] | UnsetType = UNSET
    """Set only when every target of the model honours it (vLLM)."""


class PromptRequest(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """A text completion in the Workers AI Prompt shape; unset fields are never sent upstream."""

    prompt: str | list[str]
    """One prompt; a list only for backends that take several at once (`n` set, vLLM)."""
    max_tokens: int
    stream: bool = False
    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    top_k: int | UnsetType = UNSET
    seed: int | UnsetType = UNSET
    repetition_penalty: float | UnsetType = UNSET
    frequency_penalty: float | UnsetType = UNSET
    presence_penalty: float | UnsetType = UNSET
    stop: list[str] | UnsetType = UNSET
    lora: str | UnsetType = UNSET
    raw: bool | UnsetType = UNSET
    n: int | UnsetType = UNSET
    """As for `ChatRequest.n`: choices are numbered prompt index * n + sample index."""
    logit_bias: dict[str, float] | UnsetType = UNSET


class EmbeddingRequest(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """An embeddings request: one vector per input, in input order; unset fields are never sent upstream."""

    input: list[str] | list[list[int]]
    """Texts, or token-id arrays (only backends that take tokens, vLLM, accept those)."""
    dimensions: int | UnsetType = UNSET
    """Fewer dimensions than the model's own, for models that can shorten their vectors."""
    pooling: Literal["mean", "cls"] | UnsetType = UNSET
    """Workers AI's bge extension: how token vectors become one vector."""

    stream: ClassVar[bool] = False
    """Embeddings always come back whole."""
    max_tokens: ClassVar[int] = 0
    """Nothing is generated: rate limits reserve the input's tokens only."""
    n: ClassVar[UnsetType] = UNSET
    seed: ClassVar[UnsetType] = UNSET
    """One answer per request: the choice fields of the other requests are always unset."""


CanonicalRequest = ChatRequest | PromptRequest | EmbeddingRequest


# Events. Small frozen Structs without GC tracking: one is built per upstream token.


class TextDelta(msgspec.Struct, frozen=True, gc=False):
    text: str


class ReasoningDelta(msgspec.Struct, frozen=True, gc=False):
    text: str


class ToolCallDelta(msgspec.Struct, frozen=True, gc=False):
    """A piece of one tool call. `index` orders calls; `name` comes with the first piece of a call."""

    index: int
    name: str | None = None
    arguments: str = ""


class Usage(msgspec.Struct, frozen=True, gc=False):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


class Finish(msgspec.Struct, frozen=True, gc=False):
    reason: FinishReason


class Indexed(msgspec.Struct, frozen=True, gc=False):
    """An event of choice `choice` in an answer with several choices (`n` set on the request).

    Only backends that generate the choices themselves emit these; a `Usage` that is not wrapped
    counts the whole answer.
    """

    choice: int
    event: ChoiceEvent


class Embedding(msgspec.Struct, frozen=True, gc=False):
    """The vector of input `index` of an `EmbeddingRequest` (an answer also carries a `Usage`)."""

    index: int
    vector: list[float]
    """float32 values (as Python floats): packing them as float32 loses nothing."""


ChoiceEvent = TextDelta | ReasoningDelta | ToolCallDelta | Usage | Finish | Embedding
Event = ChoiceEvent | Indexed

__all__ = (
    "CanonicalRequest",
    "ChatRequest",
    "ChoiceEvent",
    "ContentPart",
    "Embedding",
    "EmbeddingRequest",
    "Event",
    "Finish",
    "FinishReason",
    "FunctionCall",
    "FunctionDefinition",
    "ImagePart",
    "ImageURL",
    "Indexed",
    "Message",
    "NamedFunction",
    "NamedToolChoice",
    "PromptRequest",
    "ReasoningDelta",
    "ResponseFormat",
    "Role",
    "TextDelta",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "Usage",
)
