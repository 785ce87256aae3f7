"""Anthropic Messages request bodies (`POST /v1/messages`, `/v1/messages/count_tokens`), decoded strictly.

Every documented top-level field is declared (beta ones such as `context_management` too, since
Claude Code sends them with its `anthropic-beta` header), so an undeclared one is refused as Anthropic
refuses it ("Extra inputs are not permitted"). Inside content blocks unknown keys are ignored: clients
echo whole response blocks (with `citations`, `caller`...) back into the history. `cache_control` is
accepted everywhere and ignored: no backend of the gateway has a prompt cache to steer.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

CacheControl = dict[str, Any]


# Content blocks, tagged by `type`


class TextBlock(msgspec.Struct, tag="text", tag_field="type", frozen=True, kw_only=True):
    text: str
    cache_control: CacheControl | None = None
    citations: list[Any] | None = None


class Base64Source(msgspec.Struct, tag="base64", tag_field="type", frozen=True):
    media_type: str
    data: str


class URLSource(msgspec.Struct, tag="url", tag_field="type", frozen=True):
    url: str


class FileSource(msgspec.Struct, tag="file", tag_field="type", frozen=True):
    file_id: str


class ImageBlock(msgspec.Struct, tag="image", tag_field="type", frozen=True, kw_only=True):
    source: Base64Source | URLSource | FileSource
    cache_control: CacheControl | None = None


class DocumentBlock(msgspec.Struct, tag="document", tag_field="type", frozen=True, kw_only=True):
    source: dict[str, Any]
    cache_control: CacheControl | None = None


class SearchResultBlock(msgspec.Struct, tag="search_result", tag_field="type", frozen=True, kw_only=True):
    source: str
    title: str
    content: list[TextBlock]
    cache_control: CacheControl | None = None


class ToolUseBlock(msgspec.Struct, tag="tool_use", tag_field="type", frozen=True, kw_only=True):
    id: str
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None


class ToolResultBlock(msgspec.Struct, tag="tool_result", tag_field="type", frozen=True, kw_only=True):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock | DocumentBlock | SearchResultBlock] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


class ThinkingBlock(msgspec.Struct, tag="thinking", tag_field="type", frozen=True, kw_only=True):
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(msgspec.Struct, tag="redacted_thinking", tag_field="type", frozen=True):
    data: str


ContentBlock = (
    TextBlock
    | ImageBlock
    | DocumentBlock
    | SearchResultBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
)


class MessageParam(msgspec.Struct, frozen=True):
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


# Tools


class ToolParam(msgspec.Struct, frozen=True, kw_only=True):
    """A client tool; server tools (`web_search_…`, `bash_…`) carry another `type` and no schema."""

    name: str
    input_schema: dict[str, Any] | None = None
    description: str | None = None
    type: str | None = None
    cache_control: CacheControl | None = None
    strict: bool | None = None
    defer_loading: bool | None = None
    eager_input_streaming: bool | None = None
    input_examples: list[dict[str, Any]] | None = None
    allowed_callers: list[Any] | None = None


class ToolChoiceAuto(msgspec.Struct, tag="auto", tag_field="type", frozen=True):
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(msgspec.Struct, tag="any", tag_field="type", frozen=True):
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(msgspec.Struct, tag="tool", tag_field="type", frozen=True):
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(msgspec.Struct, tag="none", tag_field="type", frozen=True):
    pass


ToolChoice = ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone


# Thinking


class ThinkingEnabled(msgspec.Struct, tag="enabled", tag_field="type", frozen=True):
    budget_tokens: int
    display: Literal["summarized", "omitted"] | None = None


class ThinkingAdaptive(msgspec.Struct, tag="adaptive", tag_field="type", frozen=True):
    display: Literal["summarized", "omitted"] | None = None


class ThinkingBetweenTools(msgspec.Struct, tag="between_tools", tag_field="type", frozen=True):
    pass


class ThinkingDisabled(msgspec.Struct, tag="disabled", tag_field="type", frozen=True):
    pass


Thinking = ThinkingEnabled | ThinkingAdaptive | ThinkingBetweenTools | ThinkingDisabled


class Metadata(msgspec.Struct, frozen=True):
    user_id: str | None = None


class CountTokensRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/messages/count_tokens`: the message fields that make up the prompt."""

    model: str
    messages: list[MessageParam]
    system: str | list[TextBlock] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: dict[str, Any] | None = None
    cache_control: CacheControl | None = None
    context_management: dict[str, Any] | None = None
    mcp_servers: list[Any] | None = None
    speed: str | None = None
    user_profile_id: str | None = None
    workspace_id: str | None = None


class MessagesRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/messages`."""

    model: str
    max_tokens: Annotated[int, Meta(ge=1)]
    messages: list[MessageParam]
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None
    thinking: Thinking | None = None
    output_config: dict[str, Any] | None = None
    cache_control: CacheControl | None = None
    context_management: dict[str, Any] | None = None
    mcp_servers: list[Any] | None = None
    container: str | dict[str, Any] | None = None
    service_tier: str | None = None
    inference_geo: str | None = None
    speed: str | None = None
    diagnostics: dict[str, Any] | None = None
    user_profile_id: str | None = None
    workspace_id: str | None = None


messages_request_decoder: Final = msgspec.json.Decoder(MessagesRequest)
count_tokens_request_decoder: Final = msgspec.json.Decoder(CountTokensRequest)

__all__ = (
    "Base64Source",
    "ContentBlock",
    "CountTokensRequest",
    "DocumentBlock",
    "FileSource",
    "ImageBlock",
    "MessageParam",
    "MessagesRequest",
    "Metadata",
    "RedactedThinkingBlock",
    "SearchResultBlock",
    "TextBlock",
    "Thinking",
    "ThinkingAdaptive",
    "ThinkingBetweenTools",
    "ThinkingBlock",
    "ThinkingDisabled",
    "ThinkingEnabled",
    "ToolChoice",
    "ToolChoiceAny",
    "ToolChoiceAuto",
    "ToolChoiceNone",
    "ToolChoiceTool",
    "ToolParam",
    "ToolResultBlock",
    "ToolUseBlock",
    "URLSource",
    "count_tokens_request_decoder",
    "messages_request_decoder",
)
