"""The canonical request and the canonical event stream.

The gateway turns every OpenAI chat request into a `ChatRequest`, every legacy completions request
into a `PromptRequest` and every embeddings request into an `EmbeddingRequest`: backend-neutral
requests that each backend's `request.py` narrows to its own upstream body. What only some backends
understand travels apart, in `Extensions`, and a backend refuses those it does not know. Every
adapter turns its upstream's answer into the same small set of events. The gateway's writer owns all
OpenAI framing, so adapters never build OpenAI chunks themselves.

Operations: each canonical request type names the `Adapter` method that serves it (`open_on`), so the
router opens any request the same way. A new surface either maps onto an existing request type
(Responses and Anthropic Messages onto `ChatRequest`) or adds one request type with its `open_on` and
one method on every adapter (as embeddings did: `EmbeddingRequest` → `Adapter.embed`).

Events are yielded by `UpstreamResponse.events()`. A failure is raised (an `UpstreamError`), never
yielded, so `async for` loops end only on a complete answer.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

import msgspec
from msgspec import UNSET, UnsetType

if TYPE_CHECKING:
    from adapters.base import Adapter, UpstreamResponse

SESSION_HEADER: Final = "x-session-affinity"
"""Where backends send `ChatRequest.session_affinity` (Workers AI's prompt-caching header)."""

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


class Sampling(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """The sampling values every backend takes (each narrows them to its own ranges); unset: not sent.

    The canonical requests and the backends' upstream bodies all have these fields."""

    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    top_k: int | UnsetType = UNSET
    seed: int | UnsetType = UNSET
    repetition_penalty: float | UnsetType = UNSET
    frequency_penalty: float | UnsetType = UNSET
    presence_penalty: float | UnsetType = UNSET


class Extensions(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """Request fields only some backends understand; a backend refuses (400) any it does not."""

    lora: str | UnsetType = UNSET
    """Workers AI: the fine-tune (LoRA adapter) to apply."""
    raw: bool | UnsetType = UNSET
    """Workers AI: send the prompt as it is, without the model's chat template."""

    def names(self) -> list[str]:
        """The extensions that are set."""
        return [name for name in self.__struct_fields__ if getattr(self, name) is not UNSET]


NO_EXTENSIONS: Final = Extensions()
"""Shared by every request that sets none (nearly all): `extensions is NO_EXTENSIONS` is the fast test."""


def extensions(*, lora: str | None = None, raw: bool | None = None) -> Extensions:
    """The extensions a client asked for (None: not asked)."""
    if lora is None and raw is None:
        return NO_EXTENSIONS
    return Extensions(lora=UNSET if lora is None else lora, raw=UNSET if raw is None else raw)


class ChatRequest(Sampling, frozen=True, omit_defaults=True, kw_only=True):
    """A chat request; unset fields are never sent upstream."""

    operation: ClassVar[str] = "chat"

    messages: list[Message]
    max_tokens: int
    """Always set: Workers AI's default of 256 would silently truncate answers."""
    stream: bool = False
    tools: list[Tool] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType = UNSET
    response_format: ResponseFormat | UnsetType = UNSET
    stop: list[str] | UnsetType = UNSET
    reasoning_effort: str | UnsetType = UNSET
    n: int | UnsetType = UNSET
    """Set only for backends that generate several choices themselves (vLLM); see `Indexed`."""
    logit_bias: dict[str, float] | UnsetType = UNSET
    """Set only when every target of the model honours it (vLLM)."""
    session_affinity: str | UnsetType = UNSET
    """OpenAI's `prompt_cache_key`, a header-safe token: backends send it as the `x-session-affinity`
    header (Workers AI routes a session to one replica for prefix-cache hits), never in a body."""
    extensions: Extensions = NO_EXTENSIONS
    prefill: str | UnsetType = UNSET
    """The start of the answer, produced by an earlier call that failed mid-way: the backend continues
    it as a partial assistant turn (`Continues`). Sent only to adapters that can continue the request."""

    def open_on(self, adapter: Adapter, model: str, *, request_id: str) -> Awaitable[UpstreamResponse]:
        """Ask `adapter` for the answer: the one place that names the operation serving this type."""
        return adapter.chat(self, model, request_id=request_id)


class PromptRequest(Sampling, frozen=True, omit_defaults=True, kw_only=True):
    """A text completion (a prompt to continue); unset fields are never sent upstream."""

    operation: ClassVar[str] = "complete"

    prompt: str | list[str]
    """One prompt; a list only for backends that take several at once (`n` set, vLLM)."""
    max_tokens: int
    stream: bool = False
    stop: list[str] | UnsetType = UNSET
    n: int | UnsetType = UNSET
    """As for `ChatRequest.n`: choices are numbered prompt index * n + sample index."""
    logit_bias: dict[str, float] | UnsetType = UNSET
    extensions: Extensions = NO_EXTENSIONS
    prefill: str | UnsetType = UNSET
    """As for `ChatRequest.prefill`: the text the answer already has, continued after the prompt."""

    def open_on(self, adapter: Adapter, model: str, *, request_id: str) -> Awaitable[UpstreamResponse]:
        return adapter.complete(self, model, request_id=request_id)


class EmbeddingRequest(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """An embeddings request: one vector per input, in input order; unset fields are never sent upstream."""

    operation: ClassVar[str] = "embed"

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

    def open_on(self, adapter: Adapter, model: str, *, request_id: str) -> Awaitable[UpstreamResponse]:
        return adapter.embed(self, model, request_id=request_id)


CanonicalRequest = ChatRequest | PromptRequest | EmbeddingRequest
"""Every request type an adapter serves, one per operation."""


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
    "NO_EXTENSIONS",
    "SESSION_HEADER",
    "CanonicalRequest",
    "ChatRequest",
    "ChoiceEvent",
    "ContentPart",
    "Embedding",
    "EmbeddingRequest",
    "Event",
    "Extensions",
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
    "Sampling",
    "TextDelta",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "Usage",
    "extensions",
)
