"""OpenAI Responses request (+ the stored conversation it continues) → the canonical chat request.

The bridge of contract §2.1: a Responses request is rewritten as the equivalent Chat Completions
request and goes through `translate.translate`, so every rule of the chat endpoint (roles, images for
vision models only, tools, JSON mode, native / emulated / refused parameters, `drop_unsupported`)
applies unchanged. Errors that name a chat parameter are renamed to the Responses one
(`response_format` → `text.format`, `messages[3].content` → `input[2].content`).

Mapping: `instructions` → a first system message; message items by role (`developer` → system;
assistant `output_text`/`refusal` parts concatenated); consecutive `function_call` items → one
assistant turn with `tool_calls` (merged into the assistant message just before them);
`function_call_output` → a tool message; a `reasoning` item's summary/text → the next assistant turn's
`reasoning` (an `encrypted_content` blob means nothing to another model and is left out); flat
function tools → nested ones; `tool_choice` `{type:function,name}` and `allowed_tools`;
`text.format` → `response_format`; `max_output_tokens` → `max_tokens`; `reasoning.effort` →
`reasoning_effort`. `item_reference`s are resolved by the caller (`gateway.api.responses`) first.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

import msgspec

from gateway.errors import InvalidRequestError, UnsupportedParameterError
from gateway.openai.requests import (
    AssistantMessage,
    ChatCompletionRequest,
    ChatMessage,
    FunctionSpec,
    FunctionTool,
    ImageContent,
    ImageURLSpec,
    JSONObjectFormat,
    JSONSchemaFormat,
    JSONSchemaSpec,
    NamedFunctionSpec,
    NamedToolChoiceSpec,
    StreamOptions,
    SystemMessage,
    TextContent,
    ToolCallSpec,
    ToolMessage,
    UserMessage,
)
from gateway.openai.requests import (
    FunctionCallSpec as ChatFunctionCall,
)
from gateway.openai.responses_api import (
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionToolSpec,
    InputFile,
    InputImage,
    InputItem,
    InputText,
    ItemReference,
    MessageItem,
    OutputText,
    ReasoningItem,
    Refusal,
    ResponsesRequest,
    TextFormatJSONObject,
    TextFormatJSONSchema,
)
from gateway.translation.translate import translate

if TYPE_CHECKING:
    from adapters.canonical import ChatRequest
    from gateway.config import ModelConfig
    from gateway.translation.translate import Translated

INCLUDABLE: Final = frozenset(
    {
        "file_search_call.results",
        "web_search_call.results",
        "web_search_call.action.sources",
        "message.input_image.image_url",
        "computer_call_output.output.image_url",
        "code_interpreter_call.outputs",
        "reasoning.encrypted_content",
        "message.output_text.logprobs",
    }
)
_MESSAGE_PARAM: Final = re.compile(r"^messages\[(\d+)\]")
_CHAT_EFFORTS: Final = {"max": "xhigh"}


def translate_responses(
    body: ResponsesRequest,
    conversation: list[InputItem],
    origins: list[str],
    *,
    public_model: str,
    model: ModelConfig,
    native: frozenset[str] = frozenset(),
) -> tuple[ChatCompletionRequest, Translated[ChatRequest]]:
    """The chat request a Responses request stands for, and its canonical translation.

    `conversation` is every input item in order (a previous response's input and output, then this
    request's input); `origins[i]` names item i for error messages (`input[2]`, `previous_response_id`).
    """
    chat, names = chat_request(body, conversation, origins, public_model=public_model, model=model)
    try:
        translated = translate(chat, public_model=public_model, model=model, native=native)
    except InvalidRequestError as exc:
        raise rename_param(exc, names) from None
    return chat, translated


def chat_request(
    body: ResponsesRequest,
    conversation: list[InputItem],
    origins: list[str],
    *,
    public_model: str,
    model: ModelConfig,
) -> tuple[ChatCompletionRequest, list[str]]:
    """The chat request, and the Responses name of each of its messages (for error messages)."""
    _refuse_unsupported(body, public_model, model)
    tools, tool_choice = _tools(body, public_model, model)
    fmt = body.text.format if body.text is not None else None
    response_format: JSONSchemaFormat | JSONObjectFormat | None = None
    if isinstance(fmt, TextFormatJSONSchema):
        response_format = JSONSchemaFormat(
            JSONSchemaSpec(name=fmt.name, description=fmt.description, schema=fmt.schema, strict=fmt.strict)
        )
    elif isinstance(fmt, TextFormatJSONObject):
        response_format = JSONObjectFormat()
    effort = body.reasoning.effort if body.reasoning is not None else None
    stream = bool(body.stream)
    messages, names = _messages(body, conversation, origins, public_model)
    chat = ChatCompletionRequest(
        model=body.model,
        messages=messages,
        max_completion_tokens=body.max_output_tokens,
        metadata=body.metadata,
        parallel_tool_calls=body.parallel_tool_calls if tools else None,
        reasoning_effort=_CHAT_EFFORTS.get(effort, effort) if effort is not None else None,  # type: ignore[arg-type]
        response_format=response_format,
        safety_identifier=body.safety_identifier,
        seed=body.seed,
        stream=stream,
        stream_options=StreamOptions(include_usage=True) if stream else None,
        temperature=body.temperature,
        tool_choice=tool_choice,
        tools=tools,
        top_p=body.top_p,
        user=body.user,
        top_k=body.top_k,
        repetition_penalty=body.repetition_penalty,
    )
    return chat, names


def _refuse_unsupported(body: ResponsesRequest, public_model: str, model: ModelConfig) -> None:
    if body.background:
        raise UnsupportedParameterError(
            "Background responses ('background') are not supported by this gateway.", param="background"
        )
    if body.conversation is not None:
        raise UnsupportedParameterError(
            "Conversations ('conversation') are not supported by this gateway: "
            "use 'previous_response_id' to continue a stored response.",
            param="conversation",
        )
    if body.prompt is not None:
        raise UnsupportedParameterError(
            "Stored prompt templates ('prompt') are not supported by this gateway.", param="prompt"
        )
    for i, entry in enumerate(body.include or []):
        if entry not in INCLUDABLE:
            raise InvalidRequestError(
                f"Invalid value for 'include[{i}]': '{entry}' is not one of {sorted(INCLUDABLE)}.",
                param=f"include[{i}]",
            )
    logprobs = "message.output_text.logprobs" in (body.include or []) or bool(body.top_logprobs)
    if logprobs and not model.drop_unsupported:
        raise UnsupportedParameterError(
            f"Returning log probabilities is not supported by model '{public_model}' on this gateway.",
            param="top_logprobs" if body.top_logprobs else "include",
        )


def _tools(
    body: ResponsesRequest, public_model: str, model: ModelConfig
) -> tuple[list[FunctionTool] | None, Any]:
    tools: list[FunctionTool] = []
    for i, raw in enumerate(body.tools or []):
        kind = raw.get("type")
        if kind != "function":
            if model.drop_unsupported:
                continue
            raise UnsupportedParameterError(
                f"Tools of type '{kind}' are not supported by this gateway: only function tools are.",
                param=f"tools[{i}].type",
            )
        try:
            spec = msgspec.convert(raw, FunctionToolSpec)
        except msgspec.ValidationError as exc:
            raise InvalidRequestError(
                f"Invalid value for 'tools[{i}]': {exc}.", param=f"tools[{i}]"
            ) from None
        tools.append(
            FunctionTool(
                FunctionSpec(
                    name=spec.name,
                    description=spec.description,
                    parameters=spec.parameters,
                    strict=spec.strict,
                )
            )
        )
    choice = body.tool_choice
    if choice is None or isinstance(choice, str):
        # Without tools `auto` and `none` mean nothing; `required` is refused by the chat rules.
        return tools or None, choice if tools or choice == "required" else None
    kind = choice.get("type")
    if kind == "function" and isinstance(choice.get("name"), str):
        return tools or None, NamedToolChoiceSpec(NamedFunctionSpec(choice["name"]))
    if kind == "allowed_tools":
        mode = choice.get("mode", "auto")
        allowed = choice.get("tools")
        if mode not in ("auto", "required") or not isinstance(allowed, list):
            raise InvalidRequestError(
                "Invalid value for 'tool_choice': allowed_tools needs 'mode' (auto or required) and 'tools'.",
                param="tool_choice",
            )
        names = {t.get("name") for t in allowed if isinstance(t, dict) and t.get("type") == "function"}
        kept = [tool for tool in tools if tool.function.name in names]
        if not kept:
            raise InvalidRequestError(
                "Invalid value for 'tool_choice': none of the allowed tools is among 'tools'.",
                param="tool_choice",
            )
        return kept, mode
    raise UnsupportedParameterError(
        f"Tool choice of type '{kind}' is not supported by this gateway: use 'auto', 'none', 'required', "
        "a function or allowed_tools.",
        param="tool_choice",
    )


class _Assistant:
    """An assistant turn being assembled from consecutive items."""

    __slots__ = ("calls", "origin", "reasoning", "texts")

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.texts: list[str] = []
        self.calls: list[ToolCallSpec] = []
        self.reasoning: list[str] = []

    def message(self) -> AssistantMessage:
        return AssistantMessage(
            content="".join(self.texts) if self.texts else None,
            tool_calls=self.calls or None,
            reasoning_content="\n".join(self.reasoning) if self.reasoning else None,
        )


def _messages(
    body: ResponsesRequest,
    conversation: list[InputItem],
    origins: list[str],
    public_model: str,
) -> tuple[list[ChatMessage], list[str]]:
    messages: list[ChatMessage] = []
    names: list[str] = []
    if body.instructions:
        messages.append(SystemMessage(content=body.instructions))
        names.append("instructions")
    turn: _Assistant | None = None
    reasoning: list[str] = []  # reasoning items waiting for the assistant turn they belong to

    def flush() -> None:
        nonlocal turn
        if turn is not None:
            messages.append(turn.message())
            names.append(turn.origin)
            turn = None

    for item, origin in zip(conversation, origins, strict=True):
        if isinstance(item, MessageItem):
            if item.role == "assistant":
                if turn is None or turn.calls:
                    flush()
                    turn = _Assistant(origin)
                turn.reasoning.extend(reasoning)
                reasoning.clear()
                turn.texts.append(_assistant_text(item.content))
                continue
            flush()
            names.append(origin)
            if item.role in ("system", "developer"):
                messages.append(SystemMessage(content=_plain_text(item.content, origin)))
            else:
                messages.append(UserMessage(content=_user_content(item.content, origin, public_model)))
        elif isinstance(item, FunctionCallItem):
            if turn is None:
                turn = _Assistant(origin)
            turn.reasoning.extend(reasoning)
            reasoning.clear()
            turn.calls.append(ToolCallSpec(item.call_id, ChatFunctionCall(item.name, item.arguments)))
        elif isinstance(item, FunctionCallOutputItem):
            flush()
            names.append(origin)
            messages.append(ToolMessage(content=_tool_output(item.output, origin), tool_call_id=item.call_id))
        elif isinstance(item, ReasoningItem):
            flush()
            text = "\n".join([s.text for s in item.summary] + [c.text for c in item.content or []])
            if text:
                reasoning.append(text)
        elif isinstance(item, ItemReference):  # resolved before translation; kept for exhaustiveness
            raise InvalidRequestError(f"Item with id '{item.id}' not found.", param=origin)
    flush()
    if len(messages) == (1 if body.instructions else 0):
        raise InvalidRequestError(
            "Invalid value for 'input': the conversation has no messages.", param="input"
        )
    return messages, names


def _assistant_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for part in content:
        if isinstance(part, OutputText | InputText):
            texts.append(part.text)
        elif isinstance(part, Refusal):
            texts.append(part.refusal)
    return "".join(texts)


def _plain_text(content: Any, origin: str) -> str | list[TextContent]:
    if isinstance(content, str):
        return content
    texts: list[TextContent] = []
    for part in content:
        if isinstance(part, InputText | OutputText):
            texts.append(TextContent(part.text))
        else:
            raise InvalidRequestError(
                f"Invalid content for '{origin}': system and developer messages take text only.",
                param=f"{origin}.content",
            )
    return texts


def _user_content(content: Any, origin: str, public_model: str) -> Any:
    if isinstance(content, str):
        return content
    parts: list[Any] = []
    for part in content:
        if isinstance(part, InputText | OutputText):
            parts.append(TextContent(part.text))
        elif isinstance(part, InputImage):
            if part.image_url is None:
                raise UnsupportedParameterError(
                    "Images by 'file_id' are not supported by this gateway (it has no files store): "
                    "send 'image_url' (a URL or a data URL).",
                    param=f"{origin}.content",
                )
            detail = part.detail if part.detail in ("auto", "low", "high") else None
            parts.append(ImageContent(ImageURLSpec(part.image_url, detail)))
        elif isinstance(part, InputFile):
            raise UnsupportedParameterError(
                f"File inputs ('input_file') are not supported by model '{public_model}' on this gateway.",
                param=f"{origin}.content",
            )
        else:
            parts.append(TextContent(part.refusal if isinstance(part, Refusal) else ""))
    return parts


def _tool_output(output: Any, origin: str) -> str:
    if isinstance(output, str):
        return output
    texts: list[str] = []
    for part in output:
        if isinstance(part, InputText):
            texts.append(part.text)
        else:
            raise UnsupportedParameterError(
                "Only text parts are supported in a 'function_call_output' on this gateway.",
                param=f"{origin}.output",
            )
    return "\n".join(texts)


def rename_param(exc: InvalidRequestError, message_origins: list[str]) -> InvalidRequestError:
    """The same error naming the Responses parameter instead of the chat one."""
    param = exc.param
    if param is None:
        return exc
    renamed = param
    if param.startswith("response_format"):
        renamed = "text.format" + param[len("response_format") :].replace(".json_schema.schema", ".schema")
    elif param in ("max_completion_tokens", "max_tokens"):
        renamed = "max_output_tokens"
    elif param == "reasoning_effort":
        renamed = "reasoning.effort"
    elif match := _MESSAGE_PARAM.match(param):
        index = int(match.group(1))
        origin = message_origins[index] if index < len(message_origins) else "input"
        renamed = origin + param[match.end() :]
    elif param == "messages":
        renamed = "input"
    elif param.startswith("tools[") and ".function." in param:
        renamed = param.replace(".function.", ".", 1)
    if renamed == param:
        return exc
    message = exc.message.replace(f"'{param}'", f"'{renamed}'")
    return type(exc)(message, param=renamed, code=exc.code, headers=exc.headers)


__all__ = ("INCLUDABLE", "chat_request", "rename_param", "translate_responses")
