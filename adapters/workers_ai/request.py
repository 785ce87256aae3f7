"""Request narrowing for Workers AI: the canonical request as its *Messages* and *Prompt* input
schemas take it, with values moved into the ranges every published model schema accepts.

`stop`, `n`, `parallel_tool_calls` and `logit_bias` are in neither schema: the gateway applies (or
refuses) them itself, so they are never sent. The `lora` and `raw` extensions are Workers AI's own.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any, Final

import msgspec
from msgspec import UNSET, UnsetType

from adapters.canonical import (
    ChatRequest,
    Extensions,
    ImagePart,
    Message,
    NamedToolChoice,
    PromptRequest,
    ResponseFormat,
    Sampling,
    Tool,
    ToolChoice,
)
from adapters.narrowing import reasoning_effort, refused
from adapters.workers_ai.templates import continued_chat, continued_prompt

if TYPE_CHECKING:
    from adapters.errors import UpstreamStatusError

# Ranges accepted by every published Messages schema (the seed page's and the newer llama-3.3/gpt-oss ones).
TOP_P_MIN: Final = 0.001
TOP_P_MAX: Final = 1.0
PENALTY_MIN: Final = 0.0
PENALTY_MAX: Final = 2.0
REPETITION_PENALTY_MAX: Final = 2.0
TEMPERATURE_MAX: Final = 5.0
TOP_K_MAX: Final = 50
SEED_MAX: Final = 9_999_999_999
MAX_CONTENT_CHARS: Final = 131_072
_TOOL_CALL_ID: Final = re.compile(r"[a-zA-Z0-9]{9}")
"""Workers AI's vision schema requires `tool_call_id` to match this (unanchored): 9 alphanumerics in a row."""


class WorkersAIChat(Sampling, frozen=True, omit_defaults=True, kw_only=True):
    """The body of a Messages-schema call; unset fields are never sent."""

    messages: list[Message]
    max_tokens: int
    """Always set: Workers AI's default of 256 would silently truncate answers."""
    stream: bool = False
    tools: list[Tool] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    response_format: ResponseFormat | UnsetType = UNSET
    reasoning_effort: str | UnsetType = UNSET
    lora: str | UnsetType = UNSET
    raw: bool | UnsetType = UNSET


class WorkersAIPrompt(Sampling, frozen=True, omit_defaults=True, kw_only=True):
    """The body of a Prompt-schema call; unset fields are never sent."""

    prompt: str
    max_tokens: int
    stream: bool = False
    lora: str | UnsetType = UNSET
    raw: bool | UnsetType = UNSET


def upstream_body(request: ChatRequest, *, stream: bool, backend: str = "workers-ai") -> WorkersAIChat:
    """The request narrowed to what the Workers AI schemas accept: values clamped, tool schemas completed.

    Raises a client-fault `UpstreamStatusError` for content longer than the schemas allow.
    """
    rename_ids = False
    for i, message in enumerate(request.messages):
        if isinstance(message.content, str) and len(message.content) > MAX_CONTENT_CHARS:
            raise _too_long(backend, f"messages[{i}].content", len(message.content))
        if message.tool_call_id is not UNSET and not _TOOL_CALL_ID.search(message.tool_call_id):
            rename_ids = True
        if not isinstance(message.content, str):
            for part in message.content:
                if isinstance(part, ImagePart) and not part.image_url.url.startswith("data:"):
                    raise refused(
                        backend,
                        "Workers AI accepts images only as data: URLs (base64), not links to fetch.",
                        code="invalid_image_url",
                        param=f"messages[{i}].content",
                    )
    messages = request.messages
    if rename_ids:
        messages = [_with_schema_ids(message) for message in messages]
    choice = request.tool_choice
    tools: list[Tool] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    if choice != "none" and request.tools is not UNSET:
        offered = request.tools
        if isinstance(choice, NamedToolChoice):
            # Only the forced tool is offered: legacy schemas take `tool_choice` as advice at best.
            offered = [tool for tool in offered if tool.function.name == choice.function.name]
        tools = [_schema_tool(tool) for tool in offered]
        if choice != "auto":
            tool_choice = choice  # "auto" is the default; legacy schemas do not declare the field
    return WorkersAIChat(
        messages=messages,
        max_tokens=request.max_tokens,
        stream=stream,
        tools=tools,
        tool_choice=tool_choice,
        response_format=request.response_format,
        reasoning_effort=reasoning_effort(request.reasoning_effort),
        **_sampling(request),
        **_extensions(request.extensions),
    )


def _with_schema_ids(message: Message) -> Message:
    """The message with tool-call ids the schema accepts, renamed alike in calls and results."""
    changes: dict[str, Any] = {}
    if message.tool_call_id is not UNSET:
        changes["tool_call_id"] = schema_tool_call_id(message.tool_call_id)
    if message.tool_calls is not UNSET:
        changes["tool_calls"] = [
            msgspec.structs.replace(call, id=schema_tool_call_id(call.id)) for call in message.tool_calls
        ]
    return msgspec.structs.replace(message, **changes) if changes else message


def schema_tool_call_id(call_id: str) -> str:
    """`call_id` itself if it has 9 alphanumerics in a row, else a stable 18-hex-digit stand-in
    (clients' short ids such as `call_1`, and the gateway's own `call_legacy0`)."""
    if _TOOL_CALL_ID.search(call_id):
        return call_id
    return hashlib.blake2s(call_id.encode(), digest_size=9).hexdigest()


def prompt_body(request: PromptRequest, *, backend: str = "workers-ai") -> WorkersAIPrompt:
    """A text completion narrowed to the Prompt schema (`prompt`, `raw`, `lora` and sampling)."""
    prompt = request.prompt
    if not isinstance(prompt, str):
        raise refused(
            backend,
            f"backend '{backend}' (Workers AI) takes one prompt per call",
            code="unsupported_parameter",
            param="prompt",
        )
    if len(prompt) > MAX_CONTENT_CHARS:
        raise _too_long(backend, "prompt", len(prompt))
    return WorkersAIPrompt(
        prompt=prompt,
        max_tokens=request.max_tokens,
        stream=request.stream,
        **_sampling(request),
        **_extensions(request.extensions),
    )


def continuation_body(
    request: ChatRequest | PromptRequest, *, stream: bool, backend: str = "workers-ai"
) -> WorkersAIPrompt:
    """A request with `prefill` as a raw Prompt-schema call: the conversation (or prompt) written out
    in the model's chat template, ending with the prefill inside the assistant's turn
    (`templates.chat_can_continue` / `prompt_can_continue` said the model's template is known)."""
    assert request.prefill is not UNSET
    if isinstance(request, ChatRequest):
        prompt = continued_chat(request.messages, request.prefill)
    else:
        prompt = continued_prompt(request, request.prefill)
    if len(prompt) > MAX_CONTENT_CHARS:
        raise _too_long(backend, "prompt", len(prompt))
    return WorkersAIPrompt(
        prompt=prompt,
        max_tokens=request.max_tokens,
        stream=stream,
        lora=request.extensions.lora,
        raw=True,
        **_sampling(request),
    )


def _extensions(extensions: Extensions) -> dict[str, Any]:
    """The canonical extensions as body fields: both are Workers AI's own."""
    return {"lora": extensions.lora, "raw": extensions.raw}


def _sampling(request: ChatRequest | PromptRequest) -> dict[str, Any]:
    """Sampling values moved into the ranges every published schema accepts (both input schemas)."""
    unset = UNSET
    top_p, temperature, top_k, seed = request.top_p, request.temperature, request.top_k, request.seed
    repetition_penalty = request.repetition_penalty
    if top_p is not unset:
        top_p = min(max(top_p, TOP_P_MIN), TOP_P_MAX)
    if temperature is not unset:
        temperature = min(max(temperature, 0.0), TEMPERATURE_MAX)
    if repetition_penalty is not unset:
        repetition_penalty = min(max(repetition_penalty, 0.0), REPETITION_PENALTY_MAX)
    if top_k is not unset:
        top_k = unset if top_k < 1 else min(top_k, TOP_K_MAX)
    if seed is not unset and not 1 <= seed <= SEED_MAX:
        # Keep determinism: the same client seed always maps to the same accepted seed.
        seed = (seed - 1) % SEED_MAX + 1
    return {
        "top_p": top_p,
        "temperature": temperature,
        "top_k": top_k,
        "seed": seed,
        "repetition_penalty": repetition_penalty,
        # Older schemas accept only 0..2; 0 is OpenAI's neutral value, the closest to a negative one.
        "frequency_penalty": _penalty(request.frequency_penalty),
        "presence_penalty": _penalty(request.presence_penalty),
    }


def _penalty(value: float | UnsetType) -> float | UnsetType:
    return value if value is UNSET else min(max(value, PENALTY_MIN), PENALTY_MAX)


def _too_long(backend: str, param: str, length: int) -> UpstreamStatusError:
    return refused(
        backend,
        f"{param} has {length} characters; Workers AI accepts at most {MAX_CONTENT_CHARS} per "
        + ("prompt." if param == "prompt" else "message."),
        code="string_above_max_length",
        param=param,
    )


def _schema_tool(tool: Tool) -> Tool:
    """Complete a tool's parameters the way the Messages schema requires.

    The schema wants `type` and `properties` on the parameters and a string `type` plus a
    `description` on every property; OpenAI clients often leave descriptions out or use type lists.
    """
    parameters = dict(tool.function.parameters)
    if not isinstance(parameters.get("type"), str):
        parameters["type"] = "object"  # absent, or a type list: the schema wants one string
    properties = parameters.get("properties")
    if not isinstance(properties, dict):
        properties = {}
    completed: dict[str, Any] = {}
    for name, prop in properties.items():
        prop = dict(prop) if isinstance(prop, dict) else {}
        prop["type"] = _property_type(prop)
        if not isinstance(prop.get("description"), str) or not prop["description"]:
            prop["description"] = str(name)
        completed[str(name)] = prop
    parameters["properties"] = completed
    function = msgspec.structs.replace(tool.function, parameters=parameters)
    return msgspec.structs.replace(tool, function=function)


def _property_type(prop: dict[str, Any]) -> str:
    kind = prop.get("type")
    if isinstance(kind, str):
        return kind
    if isinstance(kind, list):
        named = [k for k in kind if isinstance(k, str) and k != "null"]
        return named[0] if named else "string"
    for key in ("anyOf", "oneOf"):
        for branch in prop.get(key) or []:
            if isinstance(branch, dict) and isinstance(branch.get("type"), str) and branch["type"] != "null":
                return str(branch["type"])
    if "enum" in prop:
        return "string"
    return "object" if "properties" in prop else "string"


__all__ = (
    "MAX_CONTENT_CHARS",
    "WorkersAIChat",
    "WorkersAIPrompt",
    "continuation_body",
    "prompt_body",
    "schema_tool_call_id",
    "upstream_body",
)
