"""OpenAI chat request → canonical request (the Workers AI Messages shape), with validation.

What cannot be honoured is refused with a 400 naming the parameter, never dropped silently. What
is mapped (see the README's compatibility table): roles (`developer` → `system`, legacy `function`
→ `tool`), content parts flattened to one string (images kept only for vision models), assistant
tool-call history and tool results, `functions`/`function_call` → `tools`/`tool_choice`,
`max_completion_tokens` → `max_tokens` (always sent), sampling parameters, JSON mode, extensions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final, TypeVar

import msgspec
from msgspec import UNSET

from adapters.canonical import (
    ChatRequest,
    ContentPart,
    FunctionCall,
    FunctionDefinition,
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
from gateway.errors import InvalidRequestError, UnsupportedParameterError
from gateway.openai.requests import (
    AssistantMessage,
    ChatCompletionRequest,
    DeveloperMessage,
    FunctionMessage,
    FunctionSpec,
    ImageContent,
    JSONObjectFormat,
    JSONSchemaFormat,
    LegacyFunctionChoice,
    RefusalContent,
    SystemMessage,
    TextContent,
    ToolMessage,
    UserMessage,
)

if TYPE_CHECKING:
    from gateway.config import ModelConfig

DEFAULT_PARAMETERS: Final = {"type": "object", "properties": {}}
_T = TypeVar("_T")
_encoder: Final = msgspec.json.Encoder()


class Translated(msgspec.Struct, frozen=True, kw_only=True):
    """The canonical request plus how the answer must be framed for this client."""

    request: ChatRequest
    public_model: str
    include_usage: bool
    legacy_functions: bool
    """The client used `functions`: answer with `function_call`, not `tool_calls`."""
    single_tool_call: bool
    """`parallel_tool_calls: false` (or legacy functions): return only the first call."""
    stop: list[str]
    prompt_estimate: int
    """A rough prompt size in tokens, used until the upstream reports real usage."""


def translate(body: ChatCompletionRequest, *, public_model: str, model: ModelConfig) -> Translated:
    _refuse_unsupported(body, public_model)
    stream = bool(body.stream)
    if body.stream_options is not None and not stream:
        raise InvalidRequestError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    legacy = body.functions is not None or body.function_call is not None
    if legacy and body.tools is not None:
        raise InvalidRequestError(
            "Use either 'tools' or the deprecated 'functions', not both.", param="functions"
        )
    tools, tool_choice = _tools(body)
    messages = _messages(body, public_model, vision=model.vision)
    request = ChatRequest(
        messages=messages,
        max_tokens=body.max_completion_tokens or body.max_tokens or model.default_max_tokens,
        stream=stream,
        tools=tools if tools else UNSET,
        tool_choice=tool_choice,
        parallel_tool_calls=UNSET if body.parallel_tool_calls is None else body.parallel_tool_calls,
        temperature=_opt(body.temperature),
        top_p=_opt(body.top_p),
        top_k=_opt(body.top_k),
        seed=_opt(body.seed),
        repetition_penalty=_opt(body.repetition_penalty),
        frequency_penalty=_opt(body.frequency_penalty),
        presence_penalty=_opt(body.presence_penalty),
        response_format=_response_format(body),
        stop=_stop(body.stop) or UNSET,
        reasoning_effort=_opt(body.reasoning_effort),
        lora=_opt(body.lora),
        raw=_opt(body.raw),
    )
    return Translated(
        request=request,
        public_model=public_model,
        include_usage=bool(stream and body.stream_options is not None and body.stream_options.include_usage),
        legacy_functions=legacy,
        single_tool_call=legacy or body.parallel_tool_calls is False,
        stop=_stop(body.stop),
        prompt_estimate=estimate_prompt_tokens(request),
    )


def _opt(value: _T | None) -> _T | msgspec.UnsetType:
    return UNSET if value is None else value


def _refuse_unsupported(body: ChatCompletionRequest, model: str) -> None:
    def refuse(param: str, what: str) -> None:
        raise UnsupportedParameterError(
            f"{what} is not supported by model '{model}' on this gateway.", param=param
        )

    if body.n is not None and body.n > 1:
        refuse("n", "Generating more than one choice (n > 1)")
    if body.logprobs:
        refuse("logprobs", "Returning log probabilities ('logprobs')")
    if body.top_logprobs:
        refuse("top_logprobs", "Returning log probabilities ('top_logprobs')")
    if body.logit_bias:
        refuse("logit_bias", "Biasing tokens ('logit_bias')")
    if body.audio is not None or (body.modalities and "audio" in body.modalities):
        refuse("audio" if body.audio is not None else "modalities", "Audio output")
    if body.prediction is not None:
        refuse("prediction", "Predicted outputs ('prediction')")
    if body.web_search_options is not None:
        refuse("web_search_options", "Web search ('web_search_options')")


def _stop(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if any(s == "" for s in stops):
        raise InvalidRequestError("Stop sequences must not be empty strings.", param="stop")
    return stops


def _tools(body: ChatCompletionRequest) -> tuple[list[Tool], ToolChoice | msgspec.UnsetType]:
    specs: list[FunctionSpec]
    if body.functions is not None:
        specs = body.functions
    elif body.tools is not None:
        specs = [tool.function for tool in body.tools]
    else:
        specs = []
    tools = [_tool(spec) for spec in specs]
    names = {tool.function.name for tool in tools}
    choice: ToolChoice | msgspec.UnsetType = UNSET
    raw_choice = body.tool_choice if body.functions is None else body.function_call
    param = "tool_choice" if body.functions is None else "function_call"
    if raw_choice is None and body.function_call is not None and body.functions is None:
        raise InvalidRequestError(
            "'function_call' is only allowed when 'functions' are specified.", param=param
        )
    if raw_choice is not None:
        if not tools:
            raise InvalidRequestError(f"'{param}' is only allowed when 'tools' are specified.", param=param)
        if isinstance(raw_choice, str):
            choice = raw_choice
        else:
            name = (
                raw_choice.name if isinstance(raw_choice, LegacyFunctionChoice) else raw_choice.function.name
            )
            if name not in names:
                raise InvalidRequestError(
                    f"Invalid value for '{param}': function '{name}' is not among the offered tools.",
                    param=param,
                )
            choice = NamedToolChoice(NamedFunction(name))
    return tools, choice


def _tool(spec: FunctionSpec) -> Tool:
    parameters = dict(spec.parameters) if spec.parameters else dict(DEFAULT_PARAMETERS)
    parameters.setdefault("type", "object")
    if parameters.get("type") == "object":
        parameters.setdefault("properties", {})
    # Never send an empty (falsy) description: some Workers AI models reject it as invalid input.
    return Tool(FunctionDefinition(spec.name, spec.description or spec.name, parameters))


def _response_format(body: ChatCompletionRequest) -> ResponseFormat | msgspec.UnsetType:
    fmt = body.response_format
    if isinstance(fmt, JSONObjectFormat):
        return ResponseFormat("json_object")
    if isinstance(fmt, JSONSchemaFormat):
        schema = fmt.json_schema.schema
        if not schema:
            return ResponseFormat("json_object")
        return ResponseFormat("json_schema", json_schema=schema)
    return UNSET


def _messages(body: ChatCompletionRequest, public_model: str, *, vision: bool) -> list[Message]:
    messages: list[Message] = []
    tool_names: dict[str, str] = {}
    legacy_calls: dict[str, str] = {}  # function name → id given to its latest legacy call
    for i, message in enumerate(body.messages):
        param = f"messages[{i}].content"
        match message:
            case SystemMessage(content=content) | DeveloperMessage(content=content):
                messages.append(Message(role="system", content=_text(content)))
            case UserMessage(content=content):
                messages.append(
                    Message(role="user", content=_user_content(content, param, public_model, vision))
                )
            case AssistantMessage():
                calls = [
                    ToolCall(c.id, FunctionCall(c.function.name, c.function.arguments))
                    for c in message.tool_calls or []
                ]
                if message.function_call is not None:
                    legacy_id = f"call_legacy{i}"
                    legacy_calls[message.function_call.name] = legacy_id
                    calls.append(
                        ToolCall(
                            legacy_id,
                            FunctionCall(message.function_call.name, message.function_call.arguments),
                        )
                    )
                for call in calls:
                    tool_names[call.id] = call.function.name
                reasoning = message.reasoning_content or message.reasoning
                messages.append(
                    Message(
                        role="assistant",
                        # Workers AI requires string content: a tool-calling turn gets "".
                        content=_assistant_text(message.content),
                        tool_calls=calls or UNSET,
                        reasoning=reasoning or UNSET,
                    )
                )
            case ToolMessage(content=content, tool_call_id=call_id):
                name = tool_names.get(call_id)
                messages.append(
                    Message(
                        role="tool",
                        content=_text(content),
                        tool_call_id=call_id,
                        name=UNSET if name is None else name,
                    )
                )
            case FunctionMessage(content=content, name=name):
                call_id = legacy_calls.get(name, f"call_legacy{i}")
                messages.append(Message(role="tool", content=content or "", tool_call_id=call_id, name=name))
    return messages


def _text(content: str | list[TextContent]) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(part.text for part in content)


def _assistant_text(content: str | list[TextContent | RefusalContent] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.text if isinstance(part, TextContent) else part.refusal for part in content)


def _user_content(content: object, param: str, public_model: str, vision: bool) -> str | list[ContentPart]:
    if isinstance(content, str):
        return content
    assert isinstance(content, list)
    parts: list[ContentPart] = []
    for part in content:
        if isinstance(part, TextContent):
            parts.append(TextPart(part.text))
        elif isinstance(part, ImageContent):
            if not vision:
                raise UnsupportedParameterError(
                    f"Model '{public_model}' does not accept images (its config lacks vision: true).",
                    param=param,
                )
            detail = UNSET if part.image_url.detail is None else part.image_url.detail
            parts.append(ImagePart(ImageURL(part.image_url.url, detail)))
        else:
            kind = type(part).__name__.removesuffix("Content").lower()
            raise UnsupportedParameterError(
                f"Content parts of type '{kind}' are not supported by model '{public_model}'.", param=param
            )
    if all(isinstance(part, TextPart) for part in parts):
        return "\n".join(part.text for part in parts if isinstance(part, TextPart))
    return parts


def estimate_prompt_tokens(request: ChatRequest) -> int:
    """About four characters per token over message text and tool schemas: cheap and conservative enough."""
    chars = 0
    for message in request.messages:
        if isinstance(message.content, str):
            chars += len(message.content)
        else:
            chars += sum(len(p.text) if isinstance(p, TextPart) else 1000 for p in message.content)
        if message.tool_calls is not UNSET:
            chars += sum(len(c.function.arguments) + len(c.function.name) for c in message.tool_calls)
    if request.tools is not UNSET:
        chars += len(_encoder.encode(request.tools))
    return max(1, math.ceil(chars / 4) + 4 * len(request.messages))


__all__ = ("Translated", "estimate_prompt_tokens", "translate")
