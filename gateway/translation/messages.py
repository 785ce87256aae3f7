"""Anthropic Messages request → canonical `ChatRequest` (the Workers AI Messages shape), with validation.

What is mapped (see docs/messages.md): `system` (a string or text blocks, joined; Claude Code's
`x-anthropic-billing-header` block is left out) → a leading system message; `text` blocks → text;
`image` blocks → image parts for vision models; assistant `tool_use` → tool calls (arguments as JSON
text); user `tool_result` → one `tool` message per result, before the rest of that user turn;
`thinking` blocks of earlier turns → the assistant message's reasoning; `tools` (`input_schema`) →
function tools; `tool_choice` auto/any/tool/none → auto/required/named/none
(`disable_parallel_tool_use` → one call); `stop_sequences` → applied by the gateway (so the answer can
name the one that matched); `thinking` → `reasoning_effort` from its budget; `output_config.format`
→ JSON mode. Sampling fields exist only in `anthropic-version` 2023-06-01: 2026-10-21 refuses them.
Server tools (`web_search_…`) cannot run on these backends: they are left out and logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import msgspec
from msgspec import UNSET

from adapters.canonical import (
    ChatRequest,
    ContentPart,
    FunctionCall,
    ImagePart,
    ImageURL,
    Message,
    NamedFunction,
    NamedToolChoice,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from gateway.anthropic.requests import (
    Base64Source,
    ContentBlock,
    CountTokensRequest,
    DocumentBlock,
    ImageBlock,
    MessagesRequest,
    RedactedThinkingBlock,
    SearchResultBlock,
    TextBlock,
    ThinkingBlock,
    ThinkingDisabled,
    ThinkingEnabled,
    ToolChoiceAny,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
)
from gateway.errors import InvalidRequestError, UnsupportedParameterError
from gateway.translation.translate import (
    Translated,
    estimate_prompt_tokens,
    function_tool,
    recoverable_tools,
    refuse_or_drop,
)

if TYPE_CHECKING:
    from gateway.config import ModelConfig

ApiVersion = Literal["2023-06-01", "2026-10-21"]
API_VERSIONS: Final[tuple[ApiVersion, ...]] = ("2023-06-01", "2026-10-21")
BILLING_HEADER: Final = "x-anthropic-billing-header"
"""Claude Code's first system block: attribution for Anthropic's billing, not an instruction."""
MIN_THINKING_BUDGET: Final = 1024
_EFFORTS: Final = {"low": "low", "medium": "medium", "high": "high", "max": "high", "xhigh": "high"}
_encoder: Final = msgspec.json.Encoder()
_T = TypeVar("_T")


class MessagesTranslation(msgspec.Struct, frozen=True, kw_only=True):
    translated: Translated[ChatRequest]
    thinking: bool
    """The client asked for thinking: the model's reasoning is answered as `thinking` blocks."""
    user: str | None = None
    """`metadata.user_id`, for the log line (never forwarded)."""


def translate_messages(
    body: MessagesRequest | CountTokensRequest,
    *,
    version: ApiVersion,
    public_model: str,
    model: ModelConfig,
) -> MessagesTranslation:
    """The canonical chat request for a Messages (or count_tokens) body."""
    dropped: list[str] = []
    is_create = isinstance(body, MessagesRequest)
    max_tokens = body.max_tokens if isinstance(body, MessagesRequest) else model.default_max_tokens
    if isinstance(body, MessagesRequest) and version != "2023-06-01":
        for name in ("temperature", "top_p", "top_k"):
            if getattr(body, name) is not None:
                raise InvalidRequestError(f"{name}: Extra inputs are not permitted", param=name)
    if body.mcp_servers:
        refuse_or_drop([("mcp_servers", "MCP servers ('mcp_servers')")], public_model, model, dropped)
    tools = _tools(body, dropped)
    tool_choice, single = _tool_choice(body, tools)
    effort, thinking = _thinking(body, max_tokens if is_create else None)
    response_format = _output_config(body, public_model, model, dropped)
    if effort is UNSET and body.output_config is not None:
        level = body.output_config.get("effort")
        if isinstance(level, str) and level in _EFFORTS:
            effort = _EFFORTS[level]
    messages = _messages(body, version, public_model, model, dropped)
    stops = _stops(body.stop_sequences) if isinstance(body, MessagesRequest) else []
    request = ChatRequest(
        messages=messages,
        max_tokens=max_tokens,
        stream=bool(body.stream) if isinstance(body, MessagesRequest) else False,
        tools=tools or UNSET,
        tool_choice=tool_choice,
        parallel_tool_calls=False if single else UNSET,
        temperature=_opt(body.temperature) if isinstance(body, MessagesRequest) else UNSET,
        top_p=_opt(body.top_p) if isinstance(body, MessagesRequest) else UNSET,
        top_k=_opt(body.top_k) if isinstance(body, MessagesRequest) else UNSET,
        response_format=response_format,
        reasoning_effort=effort,
        # `stop` stays unset: the gateway applies stop sequences itself, so it knows which one matched.
    )
    translated = Translated(
        request=request,
        public_model=public_model,
        include_usage=False,
        single_tool_call=single,
        stop=stops,
        prompt_estimate=estimate_prompt_tokens(request),
        recover_tools=() if tool_choice is UNSET else recoverable_tools(tools, tool_choice),
        dropped=tuple(dropped),
    )
    user = body.metadata.user_id if isinstance(body, MessagesRequest) and body.metadata else None
    return MessagesTranslation(translated=translated, thinking=thinking, user=user)


def _opt(value: _T | None) -> _T | msgspec.UnsetType:
    return UNSET if value is None else value


def _stops(stops: list[str] | None) -> list[str]:
    if not stops:
        return []
    for i, stop in enumerate(stops):
        if not stop:
            raise InvalidRequestError(
                f"stop_sequences.{i}: each stop sequence must contain non-whitespace", param="stop_sequences"
            )
    return stops


def _tools(body: MessagesRequest | CountTokensRequest, dropped: list[str]) -> list[Tool]:
    tools: list[Tool] = []
    for i, tool in enumerate(body.tools or []):
        if tool.type not in (None, "custom"):
            # A server tool runs on Anthropic's servers: no backend of the gateway can run it.
            dropped.append(f"tools.{i} ({tool.type})")
            continue
        if tool.input_schema is None:
            param = f"tools.{i}.input_schema"
            raise InvalidRequestError(f"{param}: Field required", param=param)
        tools.append(function_tool(tool.name, tool.description, tool.input_schema))
    return tools


def _tool_choice(
    body: MessagesRequest | CountTokensRequest, tools: list[Tool]
) -> tuple[ToolChoice | msgspec.UnsetType, bool]:
    """(canonical tool choice, one call only)."""
    choice = body.tool_choice
    if choice is None:
        return UNSET, False
    if isinstance(choice, ToolChoiceNone):
        return ("none" if tools else UNSET), False
    if not tools:
        raise InvalidRequestError(
            "tool_choice: may only be specified while providing tools.", param="tool_choice"
        )
    single = bool(choice.disable_parallel_tool_use)
    if isinstance(choice, ToolChoiceAny):
        return "required", single
    if isinstance(choice, ToolChoiceTool):
        if choice.name not in {tool.function.name for tool in tools}:
            raise InvalidRequestError(
                f"tool_choice.name: tool '{choice.name}' is not among the provided tools.",
                param="tool_choice.name",
            )
        return NamedToolChoice(NamedFunction(choice.name)), single
    return "auto", single


def _thinking(
    body: MessagesRequest | CountTokensRequest, max_tokens: int | None
) -> tuple[str | msgspec.UnsetType, bool]:
    """(reasoning effort to ask for, whether thinking blocks are answered)."""
    thinking = body.thinking
    if thinking is None or isinstance(thinking, ThinkingDisabled):
        return UNSET, False
    shown = getattr(thinking, "display", None) != "omitted"
    if not isinstance(thinking, ThinkingEnabled):
        return UNSET, shown  # adaptive: the model decides how much to think
    budget = thinking.budget_tokens
    if budget < MIN_THINKING_BUDGET:
        raise InvalidRequestError(
            f"thinking.enabled.budget_tokens: Input should be greater than or equal to {MIN_THINKING_BUDGET}",
            param="thinking.budget_tokens",
        )
    if max_tokens is not None and budget >= max_tokens:
        raise InvalidRequestError(
            "`max_tokens` must be greater than `thinking.budget_tokens`.", param="thinking.budget_tokens"
        )
    effort = "low" if budget < 4096 else "medium" if budget < 16384 else "high"
    return effort, shown


def _output_config(
    body: MessagesRequest | CountTokensRequest, public_model: str, model: ModelConfig, dropped: list[str]
) -> ResponseFormat | msgspec.UnsetType:
    config = body.output_config
    fmt = config.get("format") if config else None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return UNSET
    if not model.json_mode:
        problem = ("output_config.format", "JSON output ('output_config.format')")
        refuse_or_drop([problem], public_model, model, dropped)
        return UNSET
    schema = fmt.get("schema")
    if isinstance(schema, dict):
        return ResponseFormat("json_schema", json_schema=schema)
    return ResponseFormat("json_object")


def _system(system: str | list[TextBlock] | None) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    return "\n\n".join(block.text for block in system if not block.text.startswith(BILLING_HEADER))


def _messages(
    body: MessagesRequest | CountTokensRequest,
    version: ApiVersion,
    public_model: str,
    model: ModelConfig,
    dropped: list[str],
) -> list[Message]:
    messages: list[Message] = []
    system = _system(body.system)
    if system:
        messages.append(Message(role="system", content=system))
    tool_names: dict[str, str] = {}
    for i, message in enumerate(body.messages):
        where = f"messages.{i}.content"
        content = message.content
        if message.role == "system":
            text = content if isinstance(content, str) else _texts(content, where)
            messages.append(Message(role="system", content=text))
        elif isinstance(content, str):
            messages.append(Message(role=message.role, content=content))
        elif message.role == "assistant":
            messages.append(_assistant(content, where, version, tool_names))
        else:
            messages.extend(_user(content, where, version, public_model, model, dropped, tool_names))
    return messages


def _texts(blocks: Sequence[ContentBlock], where: str) -> str:
    parts: list[str] = []
    for j, block in enumerate(blocks):
        if not isinstance(block, TextBlock):
            param = f"{where}.{j}"
            raise InvalidRequestError(f"{param}: only text blocks are allowed here.", param=param)
        parts.append(block.text)
    return "\n".join(parts)


def _assistant(
    blocks: Sequence[ContentBlock], where: str, version: ApiVersion, tool_names: dict[str, str]
) -> Message:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            tool_names[block.id] = block.name
            calls.append(ToolCall(block.id, FunctionCall(block.name, _encoder.encode(block.input).decode())))
        elif isinstance(block, ThinkingBlock):
            reasoning.append(block.thinking)
        elif isinstance(block, RedactedThinkingBlock):
            continue  # encrypted by Anthropic for its own models: nothing another model can read
        elif isinstance(block, DocumentBlock) and version == "2023-06-01":
            continue
        else:
            kind = _kind(block)
            raise InvalidRequestError(
                f"{where}.{j}: '{kind}' blocks are not allowed in assistant messages.", param=f"{where}.{j}"
            )
    return Message(
        role="assistant",
        content="".join(texts),  # Workers AI requires string content: a tool-calling turn gets ""
        tool_calls=calls or UNSET,
        reasoning="".join(reasoning) or UNSET,
    )


def _user(
    blocks: Sequence[ContentBlock],
    where: str,
    version: ApiVersion,
    public_model: str,
    model: ModelConfig,
    dropped: list[str],
    tool_names: dict[str, str],
) -> list[Message]:
    results: list[Message] = []
    parts: list[ContentPart] = []
    for j, block in enumerate(blocks):
        param = f"{where}.{j}"
        if isinstance(block, TextBlock):
            if block.citations and version != "2023-06-01":
                raise InvalidRequestError(f"{param}.citations: Extra inputs are not permitted", param=param)
            parts.append(TextPart(block.text))
        elif isinstance(block, ToolResultBlock):
            text = _tool_result_text(block, param, public_model, model, dropped)
            name = tool_names.get(block.tool_use_id)
            results.append(
                Message(
                    role="tool",
                    content=f"Error: {text}" if block.is_error and not text.startswith("Error") else text,
                    tool_call_id=block.tool_use_id,
                    name=UNSET if name is None else name,
                )
            )
        elif isinstance(block, ImageBlock):
            image = _image(block, param, public_model, model, dropped)
            if image is not None:
                parts.append(image)
        elif isinstance(block, SearchResultBlock):
            parts.append(TextPart(_search_result_text(block)))
        elif isinstance(block, DocumentBlock):
            document = _document_text(block)
            if document is not None:
                parts.append(TextPart(document))
            else:
                refuse_or_drop([(param, "PDF and file documents")], public_model, model, dropped)
        elif isinstance(block, ThinkingBlock | RedactedThinkingBlock):
            continue
        else:
            raise InvalidRequestError(
                f"{param}: '{_kind(block)}' blocks are only allowed in assistant messages.", param=param
            )
    messages = results
    if parts or not results:
        if all(isinstance(part, TextPart) for part in parts):
            content: str | list[ContentPart] = "\n".join(p.text for p in parts if isinstance(p, TextPart))
        else:
            content = parts
        messages.append(Message(role="user", content=content))
    return messages


def _tool_result_text(
    block: ToolResultBlock, param: str, public_model: str, model: ModelConfig, dropped: list[str]
) -> str:
    content = block.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for k, part in enumerate(content):
        if isinstance(part, TextBlock):
            texts.append(part.text)
        elif isinstance(part, SearchResultBlock):
            texts.append(_search_result_text(part))
        elif isinstance(part, DocumentBlock) and (text := _document_text(part)) is not None:
            texts.append(text)
        else:
            what = "Images in tool results" if isinstance(part, ImageBlock) else "Documents in tool results"
            refuse_or_drop([(f"{param}.content.{k}", what)], public_model, model, dropped)
    return "\n".join(texts)


def _image(
    block: ImageBlock, param: str, public_model: str, model: ModelConfig, dropped: list[str]
) -> ImagePart | None:
    if not model.vision:
        if model.drop_unsupported:
            dropped.append(param)
            return None
        raise UnsupportedParameterError(
            f"Model '{public_model}' does not accept images (its config lacks vision: true).", param=param
        )
    source = block.source
    if isinstance(source, Base64Source):
        return ImagePart(ImageURL(f"data:{source.media_type};base64,{source.data}"))
    if isinstance(source, URLSource):
        return ImagePart(ImageURL(source.url))
    raise UnsupportedParameterError(
        "Image sources of type 'file' (the Files API) are not supported on this gateway: send base64 data.",
        param=f"{param}.source",
    )


def _document_text(block: DocumentBlock) -> str | None:
    """A plain-text document's text (PDFs and files cannot be read by these backends)."""
    source = block.source
    if source.get("type") == "text" and isinstance(source.get("data"), str):
        return str(source["data"])
    if source.get("type") == "content" and isinstance(source.get("content"), str):
        return str(source["content"])
    return None


def _search_result_text(block: SearchResultBlock) -> str:
    body = "\n".join(part.text for part in block.content)
    return f"{block.title} ({block.source})\n{body}"


def _kind(block: object) -> str:
    config = getattr(type(block), "__struct_config__", None)
    tag = getattr(config, "tag", None)
    return str(tag) if tag is not None else type(block).__name__


__all__ = (
    "API_VERSIONS",
    "BILLING_HEADER",
    "ApiVersion",
    "MessagesTranslation",
    "translate_messages",
)
