"""Request narrowing for vLLM: the canonical request as `POST /v1/chat/completions` and
`POST /v1/completions` take it.

The canonical request is already OpenAI-shaped (messages, content parts, tools, tool calls), so it is
sent nearly as it is; this module only adds what vLLM needs: the served model name,
`stream_options.include_usage` on every stream (usage is always known, even when the client did not
ask for it), the OpenAI `json_schema` envelope for JSON mode, and values narrowed to what vLLM
accepts (`top_p` > 0, `seed` within int64, `top_k`/`repetition_penalty` as its sampling extras).
`n` and `logit_bias` are vLLM's own too: the gateway sends them only to models served by vLLM alone.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from msgspec import UNSET, UnsetType

from adapters.canonical import ChatRequest, Message, PromptRequest, Sampling, Tool, ToolChoice
from adapters.narrowing import reasoning_effort, refuse_extensions

TOP_P_MIN: Final = 1e-6
"""vLLM refuses `top_p: 0` ("must be in (0, 1]"); this is as greedy as a nucleus gets."""
INT64_MAX: Final = 2**63 - 1
JSON_SCHEMA_NAME: Final = "response"
"""vLLM requires a name in the `json_schema` envelope; the canonical request keeps only the schema."""
EXTENSIONS: Final = frozenset[str]()
"""Canonical extensions vLLM understands: none (`lora` and `raw` are Workers AI's)."""


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = True


class JSONSchemaEnvelope(msgspec.Struct, frozen=True):
    name: str
    schema: dict[str, Any]


class ResponseFormat(msgspec.Struct, frozen=True, omit_defaults=True):
    type: str
    json_schema: JSONSchemaEnvelope | UnsetType = UNSET


class VLLMRequest(Sampling, frozen=True, omit_defaults=True, kw_only=True):
    """The body of `POST /v1/chat/completions`; unset fields are never sent."""

    model: str
    messages: list[Message]
    max_tokens: int
    stream: bool = False
    stream_options: StreamOptions | UnsetType = UNSET
    tools: list[Tool] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType = UNSET
    response_format: ResponseFormat | UnsetType = UNSET
    stop: list[str] | UnsetType = UNSET
    reasoning_effort: str | UnsetType = UNSET
    n: int | UnsetType = UNSET
    logit_bias: dict[str, float] | UnsetType = UNSET
    continue_final_message: bool | UnsetType = UNSET
    """With a final assistant message (a prefill): continue it rather than start a new turn."""
    add_generation_prompt: bool | UnsetType = UNSET
    """Sent as false with `continue_final_message` (vLLM refuses both true)."""


class VLLMCompletionRequest(Sampling, frozen=True, omit_defaults=True, kw_only=True):
    """The body of `POST /v1/completions`; unset fields are never sent."""

    model: str
    prompt: str | list[str]
    max_tokens: int
    stream: bool = False
    stream_options: StreamOptions | UnsetType = UNSET
    n: int | UnsetType = UNSET
    stop: list[str] | UnsetType = UNSET
    logit_bias: dict[str, float] | UnsetType = UNSET


_STREAM_OPTIONS: Final = StreamOptions()


def upstream_body(request: ChatRequest, model: str, *, backend: str = "vllm") -> VLLMRequest:
    """The canonical request as vLLM's OpenAI server takes it.

    Raises a client-fault `UpstreamStatusError` for extensions vLLM has no equivalent of.
    """
    refuse_extensions(request.extensions, backend=backend, kind="vLLM", understood=EXTENSIONS)
    unset = UNSET
    tools: list[Tool] | UnsetType = request.tools
    tool_choice = request.tool_choice
    if tool_choice == "none":
        # As on Workers AI: a model that never sees the tools cannot emit a call as plain text.
        tools = tool_choice = unset
    top_p, top_k, seed, repetition_penalty = _sampling(request)
    response_format: ResponseFormat | UnsetType = unset
    if request.response_format is not unset:
        schema = request.response_format.json_schema
        if schema is unset:
            response_format = ResponseFormat("json_object")
        else:
            response_format = ResponseFormat("json_schema", JSONSchemaEnvelope(JSON_SCHEMA_NAME, schema))
    messages = request.messages
    continuing: bool | UnsetType = unset
    if request.prefill is not unset:
        # The partial answer as the final assistant turn, continued by the chat template itself.
        # Templates trim it (Llama 3's `| trim`): the gateway sends it without trailing whitespace
        # and drops the continuation's repeat of it (`gateway.routing.resume`).
        messages = [*messages, Message(role="assistant", content=request.prefill)]
        continuing = True
    return VLLMRequest(
        model=model,
        messages=messages,
        max_tokens=request.max_tokens,
        stream=request.stream,
        stream_options=_STREAM_OPTIONS if request.stream else unset,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
        temperature=request.temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        repetition_penalty=repetition_penalty,
        frequency_penalty=request.frequency_penalty,
        presence_penalty=request.presence_penalty,
        response_format=response_format,
        stop=request.stop,
        reasoning_effort=reasoning_effort(request.reasoning_effort),
        n=request.n,
        logit_bias=request.logit_bias,
        continue_final_message=continuing,
        add_generation_prompt=unset if continuing is unset else False,
    )


def can_continue(request: ChatRequest | PromptRequest) -> bool:
    """A prefill can be continued for one answer: chat (`continue_final_message`), or one prompt.

    Not in JSON mode: the grammar that constrains the answer would start again after the prefill."""
    if request.n is not UNSET:
        return False
    if isinstance(request, ChatRequest):
        return request.response_format is UNSET
    return isinstance(request.prompt, str)


def completion_body(request: PromptRequest, model: str, *, backend: str = "vllm") -> VLLMCompletionRequest:
    """A canonical text completion as vLLM's `/v1/completions` takes it (sampling as for chat)."""
    refuse_extensions(request.extensions, backend=backend, kind="vLLM", understood=EXTENSIONS)
    top_p, top_k, seed, repetition_penalty = _sampling(request)
    prompt = request.prompt
    if request.prefill is not UNSET and isinstance(prompt, str):
        prompt += request.prefill  # a text completion continues its prompt: the prefill is more of it
    return VLLMCompletionRequest(
        model=model,
        prompt=prompt,
        max_tokens=request.max_tokens,
        stream=request.stream,
        stream_options=_STREAM_OPTIONS if request.stream else UNSET,
        n=request.n,
        temperature=request.temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        repetition_penalty=repetition_penalty,
        frequency_penalty=request.frequency_penalty,
        presence_penalty=request.presence_penalty,
        stop=request.stop,
        logit_bias=request.logit_bias,
    )


_Sampling = tuple[float | UnsetType, int | UnsetType, int | UnsetType, float | UnsetType]


def _sampling(request: ChatRequest | PromptRequest) -> _Sampling:
    """(top_p, top_k, seed, repetition_penalty) narrowed to what vLLM accepts."""
    unset = UNSET
    top_p = request.top_p
    if top_p is not unset and top_p < TOP_P_MIN:
        top_p = TOP_P_MIN
    top_k = request.top_k
    if top_k is not unset and top_k < 1:
        top_k = unset  # 0 and negatives mean "off", which is vLLM's default
    seed = request.seed
    if seed is not unset and not -INT64_MAX <= seed <= INT64_MAX:
        seed = seed % INT64_MAX  # deterministic: the same client seed always gives the same sample
    repetition_penalty = request.repetition_penalty
    if repetition_penalty is not unset and repetition_penalty <= 0:
        repetition_penalty = unset  # vLLM requires > 0; 0 has no meaning as a penalty
    return top_p, top_k, seed, repetition_penalty


__all__ = ("VLLMCompletionRequest", "VLLMRequest", "can_continue", "completion_body", "upstream_body")
