"""OpenAI Chat Completions and (legacy) Completions request bodies, decoded strictly.

Every documented top-level parameter is declared so its type is checked; an undeclared one is
refused as OpenAI refuses it ("Unrecognized request argument supplied"). Inside messages, unknown
keys are ignored: clients routinely echo whole response messages (with `refusal`, `annotations`,
`reasoning_content`...) back into the history.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

FunctionName = Annotated[str, Meta(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]


# Content parts


class TextContent(msgspec.Struct, tag="text", tag_field="type", frozen=True):
    text: str


class ImageURLSpec(msgspec.Struct, frozen=True):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageContent(msgspec.Struct, tag="image_url", tag_field="type", frozen=True):
    image_url: ImageURLSpec


class InputAudioContent(msgspec.Struct, tag="input_audio", tag_field="type", frozen=True):
    input_audio: dict[str, Any]


class FileContent(msgspec.Struct, tag="file", tag_field="type", frozen=True):
    file: dict[str, Any]


class RefusalContent(msgspec.Struct, tag="refusal", tag_field="type", frozen=True):
    refusal: str


UserContentPart = TextContent | ImageContent | InputAudioContent | FileContent
AssistantContentPart = TextContent | RefusalContent


# Messages, tagged by role


class FunctionCallSpec(msgspec.Struct, frozen=True):
    name: str
    arguments: str


class ToolCallSpec(msgspec.Struct, frozen=True):
    id: str
    function: FunctionCallSpec
    type: Literal["function"] = "function"


class SystemMessage(msgspec.Struct, tag="system", tag_field="role", frozen=True, kw_only=True):
    content: str | list[TextContent]
    name: str | None = None


class DeveloperMessage(msgspec.Struct, tag="developer", tag_field="role", frozen=True, kw_only=True):
    content: str | list[TextContent]
    name: str | None = None


class UserMessage(msgspec.Struct, tag="user", tag_field="role", frozen=True, kw_only=True):
    content: str | list[UserContentPart]
    name: str | None = None


class AssistantMessage(msgspec.Struct, tag="assistant", tag_field="role", frozen=True, kw_only=True):
    content: str | list[AssistantContentPart] | None = None
    tool_calls: list[ToolCallSpec] | None = None
    function_call: FunctionCallSpec | None = None
    refusal: str | None = None
    name: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class ToolMessage(msgspec.Struct, tag="tool", tag_field="role", frozen=True, kw_only=True):
    content: str | list[TextContent]
    tool_call_id: str


class FunctionMessage(msgspec.Struct, tag="function", tag_field="role", frozen=True, kw_only=True):
    """The deprecated result message of a legacy `function_call`."""

    content: str | None
    name: str


ChatMessage = (
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage
)


# Tools


class FunctionSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(msgspec.Struct, tag="function", tag_field="type", frozen=True):
    function: FunctionSpec


class NamedFunctionSpec(msgspec.Struct, frozen=True):
    name: str


class NamedToolChoiceSpec(msgspec.Struct, frozen=True):
    function: NamedFunctionSpec
    type: Literal["function"] = "function"


class LegacyFunctionChoice(msgspec.Struct, frozen=True):
    name: str


# Response format


class JSONSchemaSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: Annotated[str, Meta(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormat(msgspec.Struct, tag="text", tag_field="type", frozen=True):
    pass


class JSONObjectFormat(msgspec.Struct, tag="json_object", tag_field="type", frozen=True):
    pass


class JSONSchemaFormat(msgspec.Struct, tag="json_schema", tag_field="type", frozen=True):
    json_schema: JSONSchemaSpec


ResponseFormatSpec = TextFormat | JSONObjectFormat | JSONSchemaFormat


class StreamOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


Temperature = Annotated[float, Meta(ge=0, le=2)]
TopP = Annotated[float, Meta(ge=0, le=1)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
PositiveInt = Annotated[int, Meta(ge=1)]


class ChatCompletionRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    model: str
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    audio: dict[str, Any] | None = None
    frequency_penalty: Penalty | None = None
    function_call: Literal["none", "auto"] | LegacyFunctionChoice | None = None
    functions: Annotated[list[FunctionSpec], Meta(min_length=1, max_length=128)] | None = None
    logit_bias: dict[str, Annotated[float, Meta(ge=-100, le=100)]] | None = None
    logprobs: bool | None = None
    max_completion_tokens: PositiveInt | None = None
    max_tokens: PositiveInt | None = None
    metadata: dict[str, str] | None = None
    modalities: list[str] | None = None
    n: Annotated[int, Meta(ge=1, le=128)] | None = None
    parallel_tool_calls: bool | None = None
    prediction: dict[str, Any] | None = None
    presence_penalty: Penalty | None = None
    prompt_cache_key: str | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    response_format: ResponseFormatSpec | None = None
    safety_identifier: str | None = None
    seed: int | None = None
    service_tier: str | None = None
    stop: str | Annotated[list[str], Meta(max_length=4)] | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoiceSpec | None = None
    tools: list[FunctionTool] | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    top_p: TopP | None = None
    user: str | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    web_search_options: dict[str, Any] | None = None
    # Extensions (the SDK's `extra_body`), understood by Workers AI and vLLM.
    top_k: int | None = None
    repetition_penalty: Annotated[float, Meta(ge=0, le=2)] | None = None
    lora: str | None = None
    raw: bool | None = None


class CompletionRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /v1/completions` (OpenAI's legacy text completions)."""

    model: str
    prompt: str | list[Any]
    """A string or a list of strings (token-id prompts decode too, and are refused by translation)."""
    best_of: Annotated[int, Meta(ge=0, le=20)] | None = None
    echo: bool | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Meta(ge=-100, le=100)]] | None = None
    logprobs: Annotated[int, Meta(ge=0, le=5)] | None = None
    max_tokens: PositiveInt | None = None
    n: Annotated[int, Meta(ge=1, le=128)] | None = None
    presence_penalty: Penalty | None = None
    seed: int | None = None
    stop: str | Annotated[list[str], Meta(max_length=4)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    user: str | None = None
    # Extensions (the SDK's `extra_body`), understood by Workers AI and vLLM.
    top_k: int | None = None
    repetition_penalty: Annotated[float, Meta(ge=0, le=2)] | None = None
    lora: str | None = None
    raw: bool | None = None


TokenId = Annotated[int, Meta(ge=0, le=2**31 - 1)]


class EmbeddingCreateRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /v1/embeddings` (OpenAI's `CreateEmbeddingRequest`, `additionalProperties: false`)."""

    model: str
    input: str | list[str | TokenId | list[TokenId]]
    """A string, a list of strings, a token-id array or a list of token-id arrays (mixing is refused
    by translation: msgspec unions take one array type only)."""
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: PositiveInt | None = None
    user: str | None = None
    # Extension (the SDK's `extra_body`), understood by Workers AI's bge models.
    pooling: Literal["mean", "cls"] | None = None


chat_request_decoder: Final = msgspec.json.Decoder(ChatCompletionRequest)
completion_request_decoder: Final = msgspec.json.Decoder(CompletionRequest)
embedding_request_decoder: Final = msgspec.json.Decoder(EmbeddingCreateRequest)

__all__ = (
    "AssistantMessage",
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "DeveloperMessage",
    "EmbeddingCreateRequest",
    "FunctionMessage",
    "FunctionSpec",
    "FunctionTool",
    "ImageContent",
    "JSONObjectFormat",
    "JSONSchemaFormat",
    "LegacyFunctionChoice",
    "NamedToolChoiceSpec",
    "SystemMessage",
    "TextContent",
    "TextFormat",
    "ToolMessage",
    "UserMessage",
    "chat_request_decoder",
    "completion_request_decoder",
    "embedding_request_decoder",
)
