"""OpenAI request → canonical request, with validation: chat → `ChatRequest` (the Workers AI Messages
shape), legacy completions → `PromptRequest` (its Prompt shape).

What cannot be honoured is refused with a 400 naming the parameter and the model, or, for a model
with `drop_unsupported: true`, dropped (the pipeline logs which). What is mapped (see the README's
compatibility table): roles (`developer` → `system`, legacy `function` → `tool`), content parts
flattened to one string (images kept only for vision models), assistant tool-call history and tool
results, `functions`/`function_call` → `tools`/`tool_choice`, `max_completion_tokens` → `max_tokens`
(always sent), sampling parameters, JSON mode, extensions. `n` is sent upstream only when every target
of the model generates several choices itself (vLLM); otherwise the pipeline fans out one call per
choice.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import msgspec
from msgspec import UNSET

from adapters.canonical import (
    CanonicalRequest,
    ChatRequest,
    ContentPart,
    FunctionCall,
    FunctionDefinition,
    ImagePart,
    ImageURL,
    Message,
    NamedFunction,
    NamedToolChoice,
    PromptRequest,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    extensions,
)
from gateway.errors import InvalidRequestError, UnsupportedParameterError
from gateway.openai.requests import (
    AssistantMessage,
    ChatCompletionRequest,
    CompletionRequest,
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
    TextFormat,
    ToolMessage,
    UserMessage,
)

if TYPE_CHECKING:
    from gateway.config import ModelConfig

DEFAULT_PARAMETERS: Final = {"type": "object", "properties": {}}
COMPLETION_MAX_TOKENS: Final = 16
"""OpenAI's (and vLLM's) default `max_tokens` for legacy completions."""
GREEDY_TEMPERATURE: Final = 1e-5
"""vLLM refuses `n > 1` below this temperature ("n must be 1 when using greedy sampling")."""
_T = TypeVar("_T")
_Request = TypeVar("_Request", bound=CanonicalRequest, covariant=True)
_encoder: Final = msgspec.json.Encoder()


class Translated(msgspec.Struct, Generic[_Request], frozen=True, kw_only=True):
    """The canonical request plus how the answer must be framed for this client."""

    request: _Request
    public_model: str
    include_usage: bool
    legacy_functions: bool = False
    """The client used `functions`: answer with `function_call`, not `tool_calls`."""
    single_tool_call: bool = False
    """`parallel_tool_calls: false` (or legacy functions): return only the first call."""
    stop: list[str]
    prompt_estimate: int
    """A rough prompt size in tokens (of one upstream call), used until the upstream reports usage."""
    n: int = 1
    """Choices in the answer. When `request.n` is unset and this is above 1, one call per choice."""
    recover_tools: tuple[str, ...] = ()
    """A forced tool call (`tool_choice` named or `required`) may come back as JSON text naming one of
    these tools: the writer turns it into a tool call. With one name, a bare arguments object counts."""
    dropped: tuple[str, ...] = ()
    """Parameters dropped because the model has `drop_unsupported: true` (for the log)."""
    prompts: tuple[str, ...] = ()
    """Legacy completions: the prompts; choice i answers prompt i // samples."""
    samples: int = 1
    """Legacy completions: the client's `n` (choices per prompt)."""
    echo: bool = False
    """Legacy completions: prepend each choice's prompt to its text."""


def translate(
    body: ChatCompletionRequest,
    *,
    public_model: str,
    model: ModelConfig,
    native: frozenset[str] = frozenset(),
) -> Translated[ChatRequest]:
    """The canonical chat request; `native` are the parameters every target of the model honours."""
    dropped: list[str] = []
    _unsupported(body, public_model, model, native, dropped)
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
    messages = _messages(body, public_model, model, dropped)
    n = body.n or 1
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
        response_format=UNSET if "response_format" in dropped else _response_format(body),
        stop=_stop(body.stop) or UNSET,
        reasoning_effort=_opt(body.reasoning_effort),
        extensions=extensions(lora=body.lora, raw=body.raw),
        n=n if n > 1 and _native_n(n, body.temperature, native) else UNSET,
        logit_bias=UNSET if body.logit_bias is None or "logit_bias" not in native else body.logit_bias,
    )
    return Translated(
        request=request,
        public_model=public_model,
        include_usage=bool(stream and body.stream_options is not None and body.stream_options.include_usage),
        legacy_functions=legacy,
        single_tool_call=legacy or body.parallel_tool_calls is False,
        stop=_stop(body.stop),
        prompt_estimate=estimate_prompt_tokens(request),
        n=n,
        recover_tools=() if tool_choice is UNSET else recoverable_tools(tools, tool_choice),
        dropped=tuple(dropped) if dropped else (),
    )


def translate_completion(
    body: CompletionRequest,
    *,
    public_model: str,
    model: ModelConfig,
    native: frozenset[str] = frozenset(),
) -> Translated[PromptRequest]:
    """The canonical text completion (Prompt schema) for a legacy completions request."""
    dropped: list[str] = []
    prompts = _prompts(body.prompt, public_model)
    stream = bool(body.stream)
    if body.stream_options is not None and not stream:
        raise InvalidRequestError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    samples = body.n or 1
    if body.best_of is not None and body.best_of < samples:
        raise InvalidRequestError(
            f"best_of ({body.best_of}) must be greater than or equal to n ({samples}).", param="best_of"
        )
    problems: list[tuple[str, str]] = []
    if body.logprobs is not None:
        problems.append(("logprobs", "Returning log probabilities ('logprobs')"))
    if body.logit_bias and "logit_bias" not in native:
        problems.append(("logit_bias", "Biasing tokens ('logit_bias')"))
    if body.best_of is not None and body.best_of > samples:
        problems.append(("best_of", "Ranking extra samples ('best_of' above 'n')"))
    if body.suffix:
        problems.append(("suffix", "Inserting text before a suffix ('suffix')"))
    refuse_or_drop(problems, public_model, model, dropped)
    n = len(prompts) * samples
    native_n = _native_n(samples, body.temperature, native)
    request = PromptRequest(
        prompt=list(prompts) if native_n and len(prompts) > 1 else prompts[0],
        max_tokens=body.max_tokens or COMPLETION_MAX_TOKENS,
        stream=stream,
        temperature=_opt(body.temperature),
        top_p=_opt(body.top_p),
        top_k=_opt(body.top_k),
        seed=_opt(body.seed),
        repetition_penalty=_opt(body.repetition_penalty),
        frequency_penalty=_opt(body.frequency_penalty),
        presence_penalty=_opt(body.presence_penalty),
        stop=_stop(body.stop) or UNSET,
        extensions=extensions(lora=body.lora, raw=body.raw),
        n=samples if native_n else UNSET,
        logit_bias=_opt(body.logit_bias) if "logit_bias" in native and "logit_bias" not in dropped else UNSET,
    )
    return Translated(
        request=request,
        public_model=public_model,
        include_usage=bool(stream and body.stream_options is not None and body.stream_options.include_usage),
        stop=_stop(body.stop),
        prompt_estimate=max(1, math.ceil(sum(len(p) for p in prompts) / 4 / len(prompts))),
        n=n,
        dropped=tuple(dropped),
        prompts=prompts,
        samples=samples,
        echo=bool(body.echo),
    )


def _prompts(prompt: str | list[object], public_model: str) -> tuple[str, ...]:
    if isinstance(prompt, str):
        prompts: tuple[str, ...] = (prompt,)
    elif prompt and all(isinstance(p, str) for p in prompt):
        prompts = tuple(p for p in prompt if isinstance(p, str))
    elif prompt and all(isinstance(p, int | list) for p in prompt):
        raise UnsupportedParameterError(
            f"Token-id prompts are not supported by model '{public_model}' on this gateway: send text.",
            param="prompt",
        )
    else:
        raise InvalidRequestError(
            "Invalid value for 'prompt': expected a string or a non-empty list of strings.", param="prompt"
        )
    if any(not p for p in prompts):
        raise InvalidRequestError("Invalid value for 'prompt': prompts must not be empty.", param="prompt")
    return prompts


def _native_n(n: int, temperature: float | None, native: frozenset[str]) -> bool:
    """Whether the backend generates the n choices itself (vLLM); never for greedy sampling, which
    vLLM refuses with n > 1 (the gateway's n identical calls give OpenAI's answer instead)."""
    return n > 1 and "n" in native and not (temperature is not None and temperature < GREEDY_TEMPERATURE)


def recoverable_tools(tools: list[Tool], choice: ToolChoice | msgspec.UnsetType) -> tuple[str, ...]:
    if isinstance(choice, NamedToolChoice):
        return (choice.function.name,)
    if choice == "required":
        return tuple(tool.function.name for tool in tools)
    return ()


def _opt(value: _T | None) -> _T | msgspec.UnsetType:
    return UNSET if value is None else value


def _unsupported(
    body: ChatCompletionRequest,
    public_model: str,
    model: ModelConfig,
    native: frozenset[str],
    dropped: list[str],
) -> None:
    problems: list[tuple[str, str]] = []
    if body.logprobs:
        problems.append(("logprobs", "Returning log probabilities ('logprobs')"))
    if body.top_logprobs:
        problems.append(("top_logprobs", "Returning log probabilities ('top_logprobs')"))
    if body.logit_bias and "logit_bias" not in native:
        problems.append(("logit_bias", "Biasing tokens ('logit_bias')"))
    if body.audio is not None or (body.modalities and "audio" in body.modalities):
        problems.append(("audio" if body.audio is not None else "modalities", "Audio output"))
    if body.prediction is not None:
        problems.append(("prediction", "Predicted outputs ('prediction')"))
    if body.web_search_options is not None:
        problems.append(("web_search_options", "Web search ('web_search_options')"))
    if (
        not model.json_mode
        and body.response_format is not None
        and type(body.response_format) is not TextFormat
    ):
        problems.append(("response_format", "JSON mode ('response_format')"))
    if problems:
        refuse_or_drop(problems, public_model, model, dropped)


def refuse_or_drop(
    problems: list[tuple[str, str]], public_model: str, model: ModelConfig, dropped: list[str]
) -> None:
    """Refuse the first problem with a 400, or drop them all for a model with `drop_unsupported`."""
    if not problems:
        return
    if not model.drop_unsupported:
        param, what = problems[0]
        raise UnsupportedParameterError(
            f"{what} is not supported by model '{public_model}' on this gateway.", param=param
        )
    dropped.extend(param for param, _ in problems)


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
    tools = [function_tool(spec.name, spec.description, spec.parameters) for spec in specs]
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


def function_tool(name: str, description: str | None, parameters: dict[str, Any] | None) -> Tool:
    """A canonical tool; every surface's tool definitions go through here."""
    parameters = dict(parameters) if parameters else dict(DEFAULT_PARAMETERS)
    parameters.setdefault("type", "object")
    if parameters.get("type") == "object":
        parameters.setdefault("properties", {})
    # Never send an empty (falsy) description: some Workers AI models reject it as invalid input.
    return Tool(FunctionDefinition(name, description or name, parameters))


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


def _messages(
    body: ChatCompletionRequest, public_model: str, model: ModelConfig, dropped: list[str]
) -> list[Message]:
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
                    Message(role="user", content=_user_content(content, param, public_model, model, dropped))
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


def _user_content(
    content: object, param: str, public_model: str, model: ModelConfig, dropped: list[str]
) -> str | list[ContentPart]:
    if isinstance(content, str):
        return content
    assert isinstance(content, list)
    parts: list[ContentPart] = []
    for part in content:
        if isinstance(part, TextContent):
            parts.append(TextPart(part.text))
        elif isinstance(part, ImageContent) and model.vision:
            detail = UNSET if part.image_url.detail is None else part.image_url.detail
            parts.append(ImagePart(ImageURL(part.image_url.url, detail)))
        elif model.drop_unsupported:
            if param not in dropped:
                dropped.append(param)
        elif isinstance(part, ImageContent):
            raise UnsupportedParameterError(
                f"Model '{public_model}' does not accept images (its config lacks vision: true).",
                param=param,
            )
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


__all__ = (
    "COMPLETION_MAX_TOKENS",
    "Translated",
    "estimate_prompt_tokens",
    "function_tool",
    "recoverable_tools",
    "refuse_or_drop",
    "translate",
    "translate_completion",
)
