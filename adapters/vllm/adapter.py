"""vLLM's OpenAI-compatible server (`POST {base_url}/chat/completions`, `POST {base_url}/completions`,
`GET {root}/health`).

Request: the canonical request is already OpenAI-shaped (messages, content parts, tools, tool calls),
so it is sent nearly as it is; this module only adds what vLLM needs: the served model name,
`stream_options.include_usage` on every stream (usage is always known, even when the client did not
ask for it), the OpenAI `json_schema` envelope for JSON mode, and values narrowed to what vLLM
accepts (`top_p` > 0, `seed` within int64, `top_k`/`repetition_penalty` as its sampling extras).
`n` and `logit_bias` are vLLM's own too: the gateway sends them only to models served by vLLM alone,
and then the answer's choices arrive as `Indexed` events.

Answers: chunks and bodies are decoded into small view Structs that hold only what the gateway reads,
so the per-token work is one typed msgspec decode. vLLM's quirks become canonical events (the
writer re-frames everything OpenAI's way): `finish_reason` on the last content chunk, `reasoning`
or `reasoning_content`, tool-call headers without `arguments`, a role chunk with `content: ""`.
vLLM's error shapes (`{"error": "Unauthorized"}`, the flat `{"object": "error", ...}`, nested errors
with an integer `code`, FastAPI's `{"detail": ...}`) become `UpstreamError`s in OpenAI's terms.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from random import getrandbits
from typing import TYPE_CHECKING, Any, Final

import msgspec
from msgspec import UNSET, UnsetType

from adapters.base import CollectedAnswer
from adapters.canonical import (
    ChatRequest,
    ChoiceEvent,
    EmbeddingRequest,
    Event,
    Finish,
    FinishReason,
    Indexed,
    Message,
    PromptRequest,
    ReasoningDelta,
    TextDelta,
    Tool,
    ToolCallDelta,
    ToolChoice,
    Usage,
)
from adapters.config import BackendConfig
from adapters.errors import UpstreamError, UpstreamProtocolError, UpstreamStatusError
from adapters.http import (
    MAX_ERROR_BODY,
    MAX_RESPONSE_BODY,
    Endpoint,
    build_client,
    fetch_whole,
    parse_retry_after,
    read_body,
    send,
    transport_errors,
)
from adapters.sse import SSEAnswer
from adapters.vllm import embeddings

if TYPE_CHECKING:
    import httpx

    from adapters.base import UpstreamResponse

TOP_P_MIN: Final = 1e-6
"""vLLM refuses `top_p: 0` ("must be in (0, 1]"); this is as greedy as a nucleus gets."""
INT64_MAX: Final = 2**63 - 1
PROBE_TIMEOUT_S: Final = 5.0
JSON_SCHEMA_NAME: Final = "response"
"""vLLM requires a name in the `json_schema` envelope; the canonical request keeps only the schema."""

_REASONING_EFFORT: Final = {"none": "low", "minimal": "low", "xhigh": "high"}
"""Effort levels newer than vLLM's `low | medium | high`, mapped onto the nearest one it accepts."""

_CONTEXT_LENGTH: Final = re.compile(
    r"maximum context length|context length is only|exceeds model's maximum context length", re.IGNORECASE
)
_MODEL_NOT_FOUND: Final = re.compile(r"model .* does not exist", re.IGNORECASE)


class VLLMConfig(BackendConfig, tag="vllm", frozen=True, kw_only=True):
    base_url: str
    """The OpenAI base URL of `vllm serve`, e.g. `http://gpu-1:8000/v1`."""
    api_key: str = ""
    """vLLM's `--api-key`, if it was started with one."""

    def required_values(self) -> dict[str, str]:
        return {"base_url": self.base_url}

    def secrets(self) -> list[str]:
        return [self.api_key]


# The upstream request.


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = True


class JSONSchemaEnvelope(msgspec.Struct, frozen=True):
    name: str
    schema: dict[str, Any]


class ResponseFormat(msgspec.Struct, frozen=True, omit_defaults=True):
    type: str
    json_schema: JSONSchemaEnvelope | UnsetType = UNSET


class VLLMRequest(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """The body of `POST /v1/chat/completions`; unset fields are never sent."""

    model: str
    messages: list[Message]
    max_tokens: int
    stream: bool = False
    stream_options: StreamOptions | UnsetType = UNSET
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
    n: int | UnsetType = UNSET
    logit_bias: dict[str, float] | UnsetType = UNSET


class VLLMCompletionRequest(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """The body of `POST /v1/completions`; unset fields are never sent."""

    model: str
    prompt: str | list[str]
    max_tokens: int
    stream: bool = False
    stream_options: StreamOptions | UnsetType = UNSET
    n: int | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    top_k: int | UnsetType = UNSET
    seed: int | UnsetType = UNSET
    repetition_penalty: float | UnsetType = UNSET
    frequency_penalty: float | UnsetType = UNSET
    presence_penalty: float | UnsetType = UNSET
    stop: list[str] | UnsetType = UNSET
    logit_bias: dict[str, float] | UnsetType = UNSET


_STREAM_OPTIONS: Final = StreamOptions()


def upstream_body(request: ChatRequest, model: str, *, backend: str = "vllm") -> VLLMRequest:
    """The canonical request as vLLM's OpenAI server takes it.

    Raises a client-fault `UpstreamStatusError` for Workers AI extensions vLLM has no equivalent of.
    """
    _refuse_workers_ai_extensions(request, backend)
    unset = UNSET
    tools: list[Tool] | UnsetType = request.tools
    tool_choice = request.tool_choice
    if tool_choice == "none":
        # As on Workers AI: a model that never sees the tools cannot emit a call as plain text.
        tools = tool_choice = unset
    top_p, top_k, seed, repetition_penalty = _sampling(request)
    effort = request.reasoning_effort
    if effort is not unset:
        effort = _REASONING_EFFORT.get(effort, effort)
    response_format: ResponseFormat | UnsetType = unset
    if request.response_format is not unset:
        schema = request.response_format.json_schema
        if schema is unset:
            response_format = ResponseFormat("json_object")
        else:
            response_format = ResponseFormat("json_schema", JSONSchemaEnvelope(JSON_SCHEMA_NAME, schema))
    return VLLMRequest(
        model=model,
        messages=request.messages,
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
        reasoning_effort=effort,
        n=request.n,
        logit_bias=request.logit_bias,
    )


def completion_body(request: PromptRequest, model: str, *, backend: str = "vllm") -> VLLMCompletionRequest:
    """A canonical text completion as vLLM's `/v1/completions` takes it (sampling as for chat)."""
    _refuse_workers_ai_extensions(request, backend)
    top_p, top_k, seed, repetition_penalty = _sampling(request)
    return VLLMCompletionRequest(
        model=model,
        prompt=request.prompt,
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


def _refuse_workers_ai_extensions(request: ChatRequest | PromptRequest, backend: str) -> None:
    for name in ("lora", "raw"):
        if getattr(request, name) is not UNSET:
            raise UpstreamStatusError(
                backend,
                f"'{name}' is a Workers AI extension that backend '{backend}' (vLLM) does not support.",
                status_code=400,
                error_type="invalid_request_error",
                code="unsupported_parameter",
                param=name,
                client_fault=True,
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


# Views of vLLM's answers: only the fields the gateway reads; everything else is skipped by msgspec.


class FunctionView(msgspec.Struct):
    name: str | None = None
    arguments: str | dict[str, Any] | None = None


class ToolCallView(msgspec.Struct):
    index: int | None = None
    function: FunctionView | None = None


class MessageView(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallView] | None = None


class ChoiceView(msgspec.Struct):
    index: int = 0
    message: MessageView | None = None
    delta: MessageView | None = None
    text: str | None = None
    """Text completions (`/v1/completions`) carry their text here."""
    finish_reason: str | None = None


class PromptDetailsView(msgspec.Struct):
    cached_tokens: int | None = None


class CompletionDetailsView(msgspec.Struct):
    reasoning_tokens: int | None = None


class UsageView(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: PromptDetailsView | None = None
    completion_tokens_details: CompletionDetailsView | None = None


class BodyView(msgspec.Struct):
    """A chat.completion, a chat.completion.chunk, a text_completion, or an error in their place."""

    choices: list[ChoiceView] = []
    usage: UsageView | None = None
    error: Any = None
    object: str | None = None


_encoder: Final = msgspec.json.Encoder()
_body_decoder: Final = msgspec.json.Decoder(BodyView)

_FINISH_REASONS: Final[dict[str, FinishReason]] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}
_BROKEN_FINISH: Final = frozenset({"abort", "error"})
"""vLLM ends an answer it could not complete with these: never relay one as a normal end."""


Parse = Callable[[bytes, str], list[Event]]
"""Turns one streamed chunk or one whole body into canonical events."""


class VLLMAdapter:
    native: Final = frozenset({"n", "logit_bias"})

    def __init__(self, name: str, config: VLLMConfig) -> None:
        self.name = name
        self._timeout_s = config.timeout_s
        self._secrets = [s for s in config.secrets() if s]
        headers = {"content-type": "application/json"}
        if config.api_key:
            headers["authorization"] = f"Bearer {config.api_key}"
        base_url = config.base_url.rstrip("/")
        self._client = build_client(
            timeout_s=config.timeout_s,
            max_connections=config.max_concurrency,
            ca_file=config.tls_ca_file,
            proxy=config.proxy,
        )
        self._chat = Endpoint(f"{base_url}/chat/completions", headers)
        self._completions = Endpoint(f"{base_url}/completions", headers)
        self._embeddings = Endpoint(f"{base_url}/embeddings", headers)
        # Probes get their own small pool: a backend at max_concurrency must still answer its health check.
        self._probe_timeout_s = min(PROBE_TIMEOUT_S, config.timeout_s)
        self._probe = build_client(
            timeout_s=self._probe_timeout_s, max_connections=1, ca_file=config.tls_ca_file, proxy=config.proxy
        )
        self._health = Endpoint(f"{base_url.removesuffix('/v1')}/health", {})

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._probe.aclose()

    async def chat(self, request: ChatRequest, model: str, *, request_id: str) -> UpstreamResponse:
        body = _encoder.encode(upstream_body(request, model, backend=self.name))
        if request.n is UNSET:
            return await self._run(self._chat, body, request.stream, request_id, chunk_events, answer_events)
        return await self._run(
            self._chat, body, request.stream, request_id, multi_chunk_events, multi_answer_events
        )

    async def complete(self, request: PromptRequest, model: str, *, request_id: str) -> UpstreamResponse:
        body = _encoder.encode(completion_body(request, model, backend=self.name))
        if request.n is UNSET and isinstance(request.prompt, str):
            parse_chunk, parse_answer = text_chunk_events, text_answer_events
        else:
            parse_chunk, parse_answer = multi_text_chunk_events, multi_text_answer_events
        return await self._run(
            self._completions, body, request.stream, request_id, parse_chunk, parse_answer, "prompt"
        )

    async def embed(self, request: EmbeddingRequest, model: str, *, request_id: str) -> UpstreamResponse:
        return await embeddings.embed(self, request, model, request_id=request_id)

    async def post_embeddings(self, body: bytes, *, request_id: str) -> bytes:
        """POST to `/embeddings`; the whole answer of a success, else its mapped error."""
        suffix = f"{getrandbits(32):08x}"  # see `_run`
        http_request = self._embeddings.post(body, {"x-request-id": f"{request_id}-{suffix}"})

        def error(status: int, raw: bytes, headers: httpx.Headers) -> UpstreamStatusError:
            return self._status_error(status, raw, headers, "input")

        return await fetch_whole(
            self._client, http_request, backend=self.name, timeout_s=self._timeout_s, status_error=error
        )

    def failed_answer(self, raw: bytes) -> UpstreamError:
        """The error of a 200 answer that is an error object."""
        return _in_band_error(raw, self.name)

    async def _run(
        self,
        endpoint: Endpoint,
        body: bytes,
        stream: bool,
        request_id: str,
        parse_chunk: Parse,
        parse_answer: Parse,
        input_param: str = "messages",
    ) -> UpstreamResponse:
        # vLLM makes X-Request-Id its engine request id: clients may reuse theirs, so add a random part.
        suffix = f"{getrandbits(32):08x}"
        http_request = endpoint.post(body, {"x-request-id": f"{request_id}-{suffix}"})
        response = await send(self._client, http_request, backend=self.name, timeout_s=self._timeout_s)
        try:
            if response.status_code >= 400:
                raw = await read_body(
                    response, backend=self.name, timeout_s=self._timeout_s, limit=MAX_ERROR_BODY
                )
                raise self._status_error(response.status_code, raw, response.headers, input_param)
            if stream and "text/event-stream" in response.headers.get("content-type", ""):
                parse = functools.partial(_parse_with_backend, parse_chunk, self.name)
                return SSEAnswer(response, backend=self.name, timeout_s=self._timeout_s, parse=parse)
            raw = await read_body(
                response, backend=self.name, timeout_s=self._timeout_s, limit=MAX_RESPONSE_BODY
            )
        except BaseException:
            await response.aclose()
            raise
        await response.aclose()
        return CollectedAnswer(parse_answer(raw, self.name))

    async def check_health(self) -> None:
        with transport_errors(self.name, timeout_s=self._probe_timeout_s):
            response = await self._probe.send(self._health.get())
        if response.status_code != 200:
            raise UpstreamStatusError(
                self.name,
                f"backend '{self.name}' failed its health check (HTTP {response.status_code})",
                status_code=503,
                error_type="service_unavailable",
                code="upstream_unhealthy",
                upstream_status=response.status_code,
            )

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _status_error(
        self, status: int, raw: bytes, headers: httpx.Headers, input_param: str
    ) -> UpstreamStatusError:
        info = parse_error_body(raw)
        message = self.redact(info.message)[:2000]
        retry_after = parse_retry_after(headers)
        return status_error(self.name, status, message, info.type, info.param, retry_after, input_param)


def _parse_with_backend(parse: Parse, backend: str, payload: bytes) -> list[Event]:
    return parse(payload, backend)


def chunk_events(payload: bytes, backend: str) -> list[Event]:
    """The canonical events of one `chat.completion.chunk` (runs once per token: keep it lean)."""
    chunk = _decode(payload, backend, "stream event")
    if chunk.error is not None or chunk.object == "error":
        raise _in_band_error(payload, backend)
    events: list[Event] = []
    for choice in chunk.choices:
        if choice.index:
            continue  # several choices are parsed by `multi_chunk_events`; never mix them
        events.extend(_choice_events(choice, choice.delta, backend))
    if chunk.usage is not None:
        events.append(_usage(chunk.usage))
    return events


def answer_events(raw: bytes, backend: str) -> list[Event]:
    """The canonical events of a whole `chat.completion` body."""
    body = _answer_body(raw, backend)
    choice = body.choices[0]
    events: list[Event] = [*_choice_events(choice, choice.message or choice.delta, backend)]
    if body.usage is not None:
        events.append(_usage(body.usage))
    return events


def multi_chunk_events(payload: bytes, backend: str) -> list[Event]:
    """The events of one chunk of an answer with several choices (`n`), each wrapped in `Indexed`."""
    chunk = _decode(payload, backend, "stream event")
    if chunk.error is not None or chunk.object == "error":
        raise _in_band_error(payload, backend)
    events: list[Event] = []
    for choice in chunk.choices:
        index = choice.index
        events.extend(Indexed(index, event) for event in _choice_events(choice, choice.delta, backend))
    if chunk.usage is not None:
        events.append(_usage(chunk.usage))
    return events


def multi_answer_events(raw: bytes, backend: str) -> list[Event]:
    """The events of a whole `chat.completion` with several choices, each wrapped in `Indexed`."""
    body = _answer_body(raw, backend)
    events: list[Event] = []
    for choice in body.choices:
        index = choice.index
        part = choice.message or choice.delta
        events.extend(Indexed(index, event) for event in _choice_events(choice, part, backend))
    if body.usage is not None:
        events.append(_usage(body.usage))
    return events


def _choice_events(choice: ChoiceView, part: MessageView | None, backend: str) -> list[ChoiceEvent]:
    events: list[ChoiceEvent] = []
    if part is not None:
        reasoning = part.reasoning_content or part.reasoning
        if reasoning:
            events.append(ReasoningDelta(reasoning))
        if part.content:
            events.append(TextDelta(part.content))
        if part.tool_calls:
            _append_tool_calls(events, part.tool_calls)
    if choice.finish_reason is not None:
        events.append(Finish(_finish_reason(choice.finish_reason, backend)))
    return events


def text_chunk_events(payload: bytes, backend: str) -> list[Event]:
    """The events of one streamed `text_completion` chunk with a single choice."""
    chunk = _decode(payload, backend, "stream event")
    if chunk.error is not None or chunk.object == "error":
        raise _in_band_error(payload, backend)
    return _text_events(chunk, backend, indexed=False)


def text_answer_events(raw: bytes, backend: str) -> list[Event]:
    """The events of a whole `text_completion` body with a single choice."""
    return _text_events(_answer_body(raw, backend), backend, indexed=False)


def multi_text_chunk_events(payload: bytes, backend: str) -> list[Event]:
    """As `text_chunk_events`, for several prompts or `n`: each choice's events wrapped in `Indexed`."""
    chunk = _decode(payload, backend, "stream event")
    if chunk.error is not None or chunk.object == "error":
        raise _in_band_error(payload, backend)
    return _text_events(chunk, backend, indexed=True)


def multi_text_answer_events(raw: bytes, backend: str) -> list[Event]:
    """As `text_answer_events`, for several prompts or `n`."""
    return _text_events(_answer_body(raw, backend), backend, indexed=True)


def _text_events(body: BodyView, backend: str, *, indexed: bool) -> list[Event]:
    events: list[Event] = []
    for choice in body.choices:
        found: list[ChoiceEvent] = []
        if choice.text:
            found.append(TextDelta(choice.text))
        if choice.finish_reason is not None:
            found.append(Finish(_finish_reason(choice.finish_reason, backend)))
        if indexed:
            index = choice.index
            events.extend(Indexed(index, event) for event in found)
        elif not choice.index:
            events.extend(found)
    if body.usage is not None:
        events.append(_usage(body.usage))
    return events


def _answer_body(raw: bytes, backend: str) -> BodyView:
    body = _decode(raw, backend, "answer")
    if body.error is not None or body.object == "error":
        raise _in_band_error(raw, backend)
    if not body.choices:
        raise UpstreamProtocolError(
            backend, f"backend '{backend}' sent an answer without choices", code="upstream_malformed"
        )
    return body


def _decode(raw: bytes, backend: str, what: str) -> BodyView:
    try:
        return _body_decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise UpstreamProtocolError(
            backend, f"backend '{backend}' sent a {what} that is not valid JSON", code="upstream_malformed"
        ) from exc
    except msgspec.ValidationError as exc:
        raise UpstreamProtocolError(
            backend, f"backend '{backend}' sent a malformed {what}: {exc}", code="upstream_malformed"
        ) from exc


def _append_tool_calls(events: list[Event] | list[ChoiceEvent], calls: list[ToolCallView]) -> None:
    for position, call in enumerate(calls):
        function = call.function
        if function is None:
            continue
        arguments = function.arguments
        if arguments is None:
            text = ""
        elif isinstance(arguments, str):
            text = arguments
        else:
            text = _encoder.encode(arguments).decode()
        if function.name is None and not text:
            continue  # a header-less empty piece, e.g. the closing `arguments: ""` on the finish chunk
        index = call.index if call.index is not None else position
        events.append(ToolCallDelta(index, function.name or None, text))


def _finish_reason(value: str, backend: str) -> FinishReason:
    if value in _BROKEN_FINISH:
        raise UpstreamProtocolError(
            backend,
            f"backend '{backend}' gave up on the answer (finish_reason '{value}')",
            code="upstream_aborted",
        )
    return _FINISH_REASONS.get(value, "stop")


def _usage(usage: UsageView) -> Usage:
    prompt_details = usage.prompt_tokens_details
    completion_details = usage.completion_tokens_details
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=prompt_details.cached_tokens if prompt_details is not None else None,
        reasoning_tokens=completion_details.reasoning_tokens if completion_details is not None else None,
    )


def _in_band_error(raw: bytes, backend: str) -> UpstreamError:
    """An error object where an answer or chunk was expected (vLLM's in-stream failures)."""
    info = parse_error_body(raw)
    error = status_error(backend, info.status or 500, info.message[:2000], info.type, None, None)
    if not error.client_fault:
        error.message = f"backend '{backend}' failed while answering: {info.message[:500]}"
    return error


class ErrorInfo(msgspec.Struct, frozen=True):
    message: str
    type: str | None = None
    """vLLM's own error type, e.g. `BadRequestError`, `NotFoundError`."""
    param: str | None = None
    status: int | None = None
    """The HTTP status vLLM put in `code` (it is an int there, never OpenAI's string code)."""


def parse_error_body(raw: bytes) -> ErrorInfo:
    """What vLLM said, from any of its error shapes, or plain text."""
    try:
        body = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return ErrorInfo(raw[:500].decode("utf-8", "replace").strip())
    if not isinstance(body, dict):
        return ErrorInfo("")
    error = body.get("error")
    if isinstance(error, dict):
        body = error  # nested (vLLM ≥ 0.10.1); otherwise flat {"object": "error", ...}
    elif isinstance(error, str):
        return ErrorInfo(error)  # {"error": "Unauthorized"}
    detail = body.get("detail")
    if "message" not in body and detail is not None:  # FastAPI's own errors
        return ErrorInfo(detail if isinstance(detail, str) else _encoder.encode(detail).decode())
    message, upstream_type, param, code = (body.get(k) for k in ("message", "type", "param", "code"))
    return ErrorInfo(
        message if isinstance(message, str) else "",
        upstream_type if isinstance(upstream_type, str) else None,
        param if isinstance(param, str) and param else None,
        code if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599 else None,
    )


def status_error(
    backend: str,
    status: int,
    message: str,
    upstream_type: str | None,
    param: str | None,
    retry_after: float | None,
    input_param: str = "messages",
) -> UpstreamStatusError:
    """Map a vLLM error (HTTP status, vLLM's message and type) onto OpenAI's terms.

    `input_param` names the request's input (`messages`, or `prompt` for text completions).
    """
    where = f"backend '{backend}'"
    message = message.removesuffix(" None").strip()  # vLLM appends the exception's empty cause
    detail = f": {message}" if message else ""
    if status in (400, 413, 422) and _CONTEXT_LENGTH.search(message):
        return UpstreamStatusError(
            backend,
            message,
            status_code=400,
            error_type="invalid_request_error",
            code="context_length_exceeded",
            param=input_param,
            upstream_status=status,
            client_fault=True,
        )
    if status in (401, 403):
        return UpstreamStatusError(
            backend,
            f"the gateway's upstream credentials were rejected by {where}{detail}",
            status_code=status,
            error_type="authentication_error",
            code="upstream_credentials_rejected",
            upstream_status=status,
        )
    if status == 404:
        if upstream_type == "NotFoundError" or _MODEL_NOT_FOUND.search(message):
            return UpstreamStatusError(
                backend,
                f"{where} does not serve the configured upstream model{detail}",
                status_code=404,
                error_type="invalid_request_error",
                code="model_not_found",
                upstream_status=status,
            )
        return UpstreamStatusError(
            backend,
            f"{where} has no such route (is base_url the server's /v1 URL?){detail}",
            status_code=502,
            error_type="upstream_error",
            code="upstream_not_found",
            upstream_status=status,
        )
    if status == 429:
        return UpstreamStatusError(
            backend,
            f"{where} is rate limited{detail}",
            status_code=429,
            error_type="rate_limit_exceeded",
            code="rate_limit_exceeded",
            upstream_status=status,
            retry_after=retry_after,
        )
    if status in (408, 504):
        return UpstreamStatusError(
            backend,
            f"{where} timed out{detail}",
            status_code=504,
            error_type="timeout",
            code="upstream_timeout",
            upstream_status=status,
        )
    if status == 503:
        return UpstreamStatusError(
            backend,
            f"{where} is overloaded{detail}",
            status_code=503,
            error_type="service_unavailable",
            code="upstream_overloaded",
            upstream_status=status,
            retry_after=retry_after,
        )
    if status == 413:
        return UpstreamStatusError(
            backend,
            f"{where} found the request too large{detail}",
            status_code=413,
            error_type="invalid_request_error",
            code="request_too_large",
            upstream_status=status,
            client_fault=True,
        )
    if status in (400, 422):
        return UpstreamStatusError(
            backend,
            f"{where} rejected the request{detail}",
            status_code=400,
            error_type="invalid_request_error",
            code=None,
            param=_openai_param(param),
            upstream_status=status,
            client_fault=True,
        )
    return UpstreamStatusError(
        backend,
        f"{where} failed with HTTP {status}{detail}",
        status_code=502,
        error_type="upstream_error",
        code="upstream_error",
        upstream_status=status,
        retry_after=retry_after,
    )


def _openai_param(param: str | None) -> str | None:
    """vLLM ≥ 0.16 names the field (`temperature`, `body.temperature`); keep it when it is a plain name."""
    if param is None:
        return None
    name = param.removeprefix("body.")
    return name if name.replace("_", "").replace(".", "").isalnum() else None


def create(name: str, config: VLLMConfig) -> VLLMAdapter:
    return VLLMAdapter(name, config)


__all__ = (
    "ErrorInfo",
    "VLLMAdapter",
    "VLLMCompletionRequest",
    "VLLMConfig",
    "VLLMRequest",
    "answer_events",
    "chunk_events",
    "completion_body",
    "create",
    "multi_answer_events",
    "multi_chunk_events",
    "multi_text_answer_events",
    "multi_text_chunk_events",
    "parse_error_body",
    "status_error",
    "text_answer_events",
    "text_chunk_events",
    "upstream_body",
)
