"""Cloudflare Workers AI (`POST {base_url}/accounts/{account_id}/ai/run/{model}`).

Request: the canonical request already has the Messages schema's shape; this module only narrows
values to the ranges every published model schema accepts and decides on streaming.

Through Cloudflare AI Gateway (`ai_gateway:`), the same body goes to
`POST {ai_gateway.base_url}/{account_id}/{gateway_id}/workers-ai/{model}`, with the gateway's own
token in `cf-aig-authorization` and `cf-aig-max-attempts: 1`: our router already fails over, so AI
Gateway must not retry a failed request on its own as well (docs/deploy-proxies.md cites the headers).

Answers come in three `result` shapes (legacy `{response, tool_calls, usage}`, an OpenAI
chat.completion, a Responses-style `output` list, or a bare string) and two stream formats (native
`{"response": ...}` events and OpenAI chunks, often mixed with a trailing native usage event). All of
them become canonical events here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

import httpx
import msgspec

from adapters.base import CollectedAnswer
from adapters.canonical import (
    ChatRequest,
    EmbeddingRequest,
    Event,
    Finish,
    FinishReason,
    ImagePart,
    Message,
    NamedToolChoice,
    PromptRequest,
    ReasoningDelta,
    TextDelta,
    Tool,
    ToolCallDelta,
    Usage,
)
from adapters.config import BackendConfig
from adapters.errors import UpstreamProtocolError, UpstreamStatusError
from adapters.http import (
    MAX_ERROR_BODY,
    MAX_RESPONSE_BODY,
    Endpoint,
    build_client,
    fetch_whole,
    parse_retry_after,
    read_body,
    send,
)
from adapters.sse import SSEAnswer
from adapters.workers_ai import embeddings

if TYPE_CHECKING:
    from adapters.base import UpstreamResponse

DEFAULT_BASE_URL: Final = "https://api.cloudflare.com/client/v4"
AI_GATEWAY_BASE_URL: Final = "https://gateway.ai.cloudflare.com/v1"
AI_GATEWAY_SINGLE_ATTEMPT: Final = {"cf-aig-max-attempts": "1"}
"""AI Gateway's per-request override of its retry policy (dashboard or gateway-level defaults): one try.
Its documented range is 1 to 5 attempts, so 1 means no retry at AI Gateway; failover stays ours."""

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
_REASONING_EFFORT: Final = {"none": "low", "minimal": "low", "xhigh": "high"}
"""OpenAI's effort levels outside the `low | medium | high` that Workers AI's models accept."""

QUOTA_CODES: Final = frozenset({3036, 4006})
CAPACITY_CODES: Final = frozenset({3040, 3021})
UNKNOWN_MODEL_CODES: Final = frozenset({5007, 3042})
PERMISSION_CODES: Final = frozenset({5016, 5018, 5035, 3041, 3023})
TIMEOUT_CODES: Final = frozenset({3007, 3008})
AUTH_CODE: Final = 10000


class AIGatewayConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Send this backend's requests through a Cloudflare AI Gateway (for its logs, caching, limits)."""

    gateway_id: str
    """The gateway's id (its name in the dashboard): the `{gateway_id}` in the endpoint URL."""
    token: str | None = None
    """An Authenticated Gateway's token, sent as `cf-aig-authorization: Bearer <token>` (new gateways
    require one). The Workers AI `api_token` is still sent as `Authorization` for the model call."""
    base_url: str = AI_GATEWAY_BASE_URL
    """AI Gateway's API root; the account and gateway ids are appended."""


class WorkersAIConfig(BackendConfig, tag="workers-ai", frozen=True, kw_only=True):
    account_id: str
    api_token: str
    base_url: str = DEFAULT_BASE_URL
    ai_gateway: AIGatewayConfig | None = None
    """Route through Cloudflare AI Gateway instead of `base_url` (then leave `base_url` out)."""

    def __post_init__(self) -> None:
        if self.ai_gateway is not None and self.base_url != DEFAULT_BASE_URL:
            raise ValueError("set either base_url or ai_gateway (ai_gateway.base_url), not both")

    def required_values(self) -> dict[str, str]:
        values = {"account_id": self.account_id, "api_token": self.api_token, "base_url": self.base_url}
        if self.ai_gateway is not None:
            values["ai_gateway.gateway_id"] = self.ai_gateway.gateway_id
            values["ai_gateway.base_url"] = self.ai_gateway.base_url
        return values

    def secrets(self) -> list[str]:
        token = self.ai_gateway.token if self.ai_gateway is not None else None
        return [self.api_token, self.account_id, *([token] if token else [])]

    def run_url(self) -> str:
        """The URL that the model name is appended to."""
        if self.ai_gateway is None:
            return f"{self.base_url.rstrip('/')}/accounts/{self.account_id}/ai/run/"
        gateway = self.ai_gateway
        return f"{gateway.base_url.rstrip('/')}/{self.account_id}/{gateway.gateway_id}/workers-ai/"

    def headers(self) -> dict[str, str]:
        headers = {"authorization": f"Bearer {self.api_token}", "content-type": "application/json"}
        if self.ai_gateway is not None:
            headers |= AI_GATEWAY_SINGLE_ATTEMPT
            if self.ai_gateway.token:
                headers["cf-aig-authorization"] = f"Bearer {self.ai_gateway.token}"
        return headers


_encoder: Final = msgspec.json.Encoder()


class WorkersAIAdapter:
    native: Final = frozenset[str]()
    """The gateway emulates `n` and `stop`, and refuses `logit_bias`: Workers AI takes none of them."""

    def __init__(self, name: str, config: WorkersAIConfig) -> None:
        self.name = name
        self._config = config
        self._timeout_s = config.timeout_s
        self._run_url = config.run_url()
        self._headers = config.headers()
        self._endpoints: dict[str, Endpoint] = {}
        self._secrets = [s for s in config.secrets() if s]
        self._client = build_client(
            timeout_s=config.timeout_s,
            max_connections=config.max_concurrency,
            ca_file=config.tls_ca_file,
            proxy=config.proxy,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def chat(self, request: ChatRequest, model: str, *, request_id: str) -> UpstreamResponse:
        # JSON mode does not stream on Workers AI: ask for the whole answer and replay it as events.
        stream = request.stream and request.response_format is msgspec.UNSET
        body = _encoder.encode(upstream_body(request, stream=stream, backend=self.name))
        return await self._run(model, body)

    async def complete(self, request: PromptRequest, model: str, *, request_id: str) -> UpstreamResponse:
        return await self._run(model, _encoder.encode(prompt_body(request, backend=self.name)))

    async def embed(self, request: EmbeddingRequest, model: str, *, request_id: str) -> UpstreamResponse:
        return await embeddings.embed(self, request, model, max_concurrency=self._config.max_concurrency)

    def _endpoint(self, model: str) -> Endpoint:
        endpoint = self._endpoints.get(model)
        if endpoint is None:
            # Model names come from the config only, so this cache is bounded by the config.
            endpoint = self._endpoints[model] = Endpoint(self._run_url + model, self._headers)
        return endpoint

    async def post_whole(self, model: str, body: bytes) -> bytes:
        """POST one body to the model's route; the whole answer of a success, else its mapped error."""
        request = self._endpoint(model).post(body)
        timeout_s, status_error = self._timeout_s, self._status_error
        return await fetch_whole(
            self._client, request, backend=self.name, timeout_s=timeout_s, status_error=status_error
        )

    def failed_answer(self, raw: bytes) -> UpstreamStatusError:
        """The error of a 200 answer whose envelope says `success: false`."""
        return self._status_error(502, raw, httpx.Headers())

    async def _run(self, model: str, body: bytes) -> UpstreamResponse:
        """POST one body to the model's route; both input schemas answer in the same shapes."""
        endpoint = self._endpoint(model)
        response = await send(self._client, endpoint.post(body), backend=self.name, timeout_s=self._timeout_s)
        try:
            if response.status_code >= 400:
                raw = await read_body(
                    response, backend=self.name, timeout_s=self._timeout_s, limit=MAX_ERROR_BODY
                )
                raise self._status_error(response.status_code, raw, response.headers)
            if "text/event-stream" in response.headers.get("content-type", ""):
                return SSEAnswer(
                    response,
                    backend=self.name,
                    timeout_s=self._timeout_s,
                    parse=StreamParser(self.name).parse,
                )
            # A JSON body: asked for, or sent by models that ignore `stream` (gpt-oss, some Kimi builds).
            raw = await read_body(
                response, backend=self.name, timeout_s=self._timeout_s, limit=MAX_RESPONSE_BODY
            )
        except BaseException:
            await response.aclose()
            raise
        await response.aclose()
        return CollectedAnswer(self._answer_events(raw))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _answer_events(self, raw: bytes) -> list[Event]:
        try:
            envelope = msgspec.json.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise UpstreamProtocolError(
                self.name,
                f"backend '{self.name}' sent a body that is not valid JSON",
                code="upstream_malformed",
            ) from exc
        if not isinstance(envelope, dict):
            raise UpstreamProtocolError(
                self.name, f"backend '{self.name}' sent an answer without a result", code="upstream_malformed"
            )
        if envelope.get("success") is False or (envelope.get("errors") and envelope.get("result") is None):
            raise self.failed_answer(raw)
        if "result" not in envelope:
            raise UpstreamProtocolError(
                self.name, f"backend '{self.name}' sent an answer without a result", code="upstream_malformed"
            )
        return list(result_events(envelope["result"], self.name))

    def _status_error(self, status: int, raw: bytes, headers: httpx.Headers) -> UpstreamStatusError:
        cf_code, upstream_message = _parse_error_body(raw)
        message = self.redact(upstream_message)[:2000]
        return status_error(self.name, status, cf_code, message, parse_retry_after(headers))


def status_error(
    backend: str, status: int, cf_code: int | None, message: str, retry_after: float | None
) -> UpstreamStatusError:
    """Map a Workers AI error (HTTP status + Cloudflare code) onto OpenAI's terms."""
    where = f"backend '{backend}'" + (f" (Workers AI error {cf_code})" if cf_code is not None else "")
    detail = f": {message}" if message else ""
    if cf_code in QUOTA_CODES or "daily free allocation" in message.lower():
        return UpstreamStatusError(
            backend,
            f"{where} has used up its quota{detail}",
            status_code=429,
            error_type="insufficient_quota",
            code="insufficient_quota",
            upstream_status=status,
            quota=True,
            retry_after=retry_after,
        )
    if cf_code in CAPACITY_CODES or status == 429:
        return UpstreamStatusError(
            backend,
            f"{where} is rate limited or out of capacity{detail}",
            status_code=429,
            error_type="rate_limit_exceeded",
            code="rate_limit_exceeded",
            upstream_status=status,
            retry_after=retry_after,
        )
    if cf_code in UNKNOWN_MODEL_CODES:
        return UpstreamStatusError(
            backend,
            f"{where} does not know the configured upstream model{detail}",
            status_code=404,
            error_type="invalid_request_error",
            code="model_not_found",
            upstream_status=status,
        )
    if cf_code == AUTH_CODE or status == 401:
        return UpstreamStatusError(
            backend,
            f"the gateway's upstream credentials were rejected by {where}{detail}",
            status_code=status if status in (401, 403) else 401,
            error_type="authentication_error",
            code="upstream_credentials_rejected",
            upstream_status=status,
        )
    if cf_code in PERMISSION_CODES or status == 403:
        return UpstreamStatusError(
            backend,
            f"{where} refused access to the model{detail}",
            status_code=403,
            error_type="permission_error",
            code="upstream_permission_denied",
            upstream_status=status,
        )
    if cf_code in TIMEOUT_CODES or status == 408:
        return UpstreamStatusError(
            backend,
            f"{where} timed out{detail}",
            status_code=504,
            error_type="timeout",
            code="upstream_timeout",
            upstream_status=status,
        )
    if status == 404:
        # The route itself was not found (code 7003: a wrong account id or base_url): a config error.
        return UpstreamStatusError(
            backend,
            f"{where} has no such route (check account_id and base_url){detail}",
            status_code=502,
            error_type="upstream_error",
            code="upstream_not_found",
            upstream_status=status,
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
    if 400 <= status < 500:
        return UpstreamStatusError(
            backend,
            f"{where} rejected the request{detail}",
            status_code=400,
            error_type="invalid_request_error",
            code=None,
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


def _parse_error_body(raw: bytes) -> tuple[int | None, str]:
    """(Cloudflare code, message) from the v4 envelope, an OpenAI-style error, or plain text."""
    try:
        body = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None, raw[:500].decode("utf-8", "replace").strip()
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            code = first.get("code")
            return (code if isinstance(code, int) else None), str(first.get("message", ""))
        error = body.get("error")
        if isinstance(error, list) and error and isinstance(error[0], dict):  # AI Gateway's own errors
            first = error[0]
            code = first.get("code")
            return (code if isinstance(code, int) else None), str(first.get("message", ""))
        if isinstance(error, dict):
            return None, str(error.get("message", ""))
        if isinstance(error, str):
            return None, error
    return None, ""


def upstream_body(request: ChatRequest, *, stream: bool, backend: str = "workers-ai") -> ChatRequest:
    """The request narrowed to what the Workers AI schemas accept: values clamped, tool schemas completed.

    Raises a client-fault `UpstreamStatusError` for content longer than the schemas allow.
    """
    rename_ids = False
    for i, message in enumerate(request.messages):
        if isinstance(message.content, str) and len(message.content) > MAX_CONTENT_CHARS:
            raise _too_long(backend, f"messages[{i}].content", len(message.content))
        if message.tool_call_id is not msgspec.UNSET and not _TOOL_CALL_ID.search(message.tool_call_id):
            rename_ids = True
        if not isinstance(message.content, str):
            for part in message.content:
                if isinstance(part, ImagePart) and not part.image_url.url.startswith("data:"):
                    raise _image_url_refused(backend, f"messages[{i}].content")
    changes = _sampling(request)
    if rename_ids:
        changes["messages"] = [_with_schema_ids(message) for message in request.messages]
    changes["stream"] = stream
    unset = msgspec.UNSET
    choice = request.tool_choice
    if choice == "none" or request.tools is unset:
        changes["tools"] = unset
        changes["tool_choice"] = unset
    else:
        tools = request.tools
        if isinstance(choice, NamedToolChoice):
            # Only the forced tool is offered: legacy schemas take `tool_choice` as advice at best.
            tools = [tool for tool in tools if tool.function.name == choice.function.name]
        changes["tools"] = [_schema_tool(tool) for tool in tools]
        if choice == "auto":
            changes["tool_choice"] = unset  # the default; legacy schemas do not declare the field
    if request.reasoning_effort is not unset:
        changes["reasoning_effort"] = _REASONING_EFFORT.get(
            request.reasoning_effort, request.reasoning_effort
        )
    # `stop`, `n` and `parallel_tool_calls` are not in the Messages schema: the gateway applies them.
    changes["stop"] = unset
    changes["parallel_tool_calls"] = unset
    changes["n"] = unset
    changes["logit_bias"] = unset
    return msgspec.structs.replace(request, **changes)


def _with_schema_ids(message: Message) -> Message:
    """The message with tool-call ids the schema accepts, renamed alike in calls and results."""
    changes: dict[str, Any] = {}
    if message.tool_call_id is not msgspec.UNSET:
        changes["tool_call_id"] = schema_tool_call_id(message.tool_call_id)
    if message.tool_calls is not msgspec.UNSET:
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


def prompt_body(request: PromptRequest, *, backend: str = "workers-ai") -> PromptRequest:
    """A text completion narrowed to the Prompt schema (`prompt`, `raw`, `lora` and sampling)."""
    prompt = request.prompt
    if not isinstance(prompt, str):
        raise UpstreamStatusError(
            backend,
            f"backend '{backend}' (Workers AI) takes one prompt per call",
            status_code=400,
            error_type="invalid_request_error",
            code="unsupported_parameter",
            param="prompt",
            client_fault=True,
        )
    if len(prompt) > MAX_CONTENT_CHARS:
        raise _too_long(backend, "prompt", len(prompt))
    changes = _sampling(request)
    unset = msgspec.UNSET
    changes["stop"] = unset  # not in the Prompt schema either: the gateway cuts the text itself
    changes["n"] = unset
    changes["logit_bias"] = unset
    return msgspec.structs.replace(request, **changes)


def _sampling(request: ChatRequest | PromptRequest) -> dict[str, Any]:
    """Sampling values moved into the ranges every published schema accepts (both input schemas)."""
    changes: dict[str, Any] = {}
    unset = msgspec.UNSET
    if request.top_p is not unset:
        changes["top_p"] = min(max(request.top_p, TOP_P_MIN), TOP_P_MAX)
    if request.temperature is not unset:
        changes["temperature"] = min(max(request.temperature, 0.0), TEMPERATURE_MAX)
    for name in ("frequency_penalty", "presence_penalty"):
        value = getattr(request, name)
        if value is not unset:
            # Older schemas accept only 0..2; 0 is OpenAI's neutral value, the closest to a negative one.
            changes[name] = min(max(value, PENALTY_MIN), PENALTY_MAX)
    if request.repetition_penalty is not unset:
        changes["repetition_penalty"] = min(max(request.repetition_penalty, 0.0), REPETITION_PENALTY_MAX)
    if request.top_k is not unset:
        changes["top_k"] = unset if request.top_k < 1 else min(request.top_k, TOP_K_MAX)
    if request.seed is not unset and not 1 <= request.seed <= SEED_MAX:
        # Keep determinism: the same client seed always maps to the same accepted seed.
        changes["seed"] = (request.seed - 1) % SEED_MAX + 1
    return changes


def _image_url_refused(backend: str, param: str) -> UpstreamStatusError:
    return UpstreamStatusError(
        backend,
        "Workers AI accepts images only as data: URLs (base64), not links to fetch.",
        status_code=400,
        error_type="invalid_request_error",
        code="invalid_image_url",
        param=param,
        client_fault=True,
    )


def _too_long(backend: str, param: str, length: int) -> UpstreamStatusError:
    return UpstreamStatusError(
        backend,
        f"{param} has {length} characters; Workers AI accepts at most {MAX_CONTENT_CHARS} per "
        + ("prompt." if param == "prompt" else "message."),
        status_code=400,
        error_type="invalid_request_error",
        code="string_above_max_length",
        param=param,
        client_fault=True,
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


class StreamParser:
    """Turns one stream event (native, OpenAI chunk, or both in one stream) into canonical events."""

    __slots__ = ("_backend", "_flat_calls")

    def __init__(self, backend: str) -> None:
        self._backend = backend
        self._flat_calls = 0  # complete flat tool calls carry no index: number them in arrival order

    def parse(self, payload: bytes) -> Iterator[Event]:
        try:
            event = msgspec.json.decode(payload)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise UpstreamProtocolError(
                self._backend,
                f"backend '{self._backend}' sent a stream event that is not valid JSON",
                code="upstream_malformed",
            ) from exc
        if not isinstance(event, dict):
            raise UpstreamProtocolError(
                self._backend,
                f"backend '{self._backend}' sent a stream event that is not an object",
                code="upstream_malformed",
            )
        if "error" in event or "errors" in event:
            _, message = _parse_error_body(payload)
            raise UpstreamStatusError(
                self._backend,
                f"backend '{self._backend}' failed mid-stream: {message[:500]}",
                code="upstream_error",
            )
        choices = event.get("choices")
        if choices:
            yield from _choice_events(choices[0], streamed=True)
        response = event.get("response")
        if response is not None and response != "":
            yield TextDelta(_text_of(response))
        tool_calls = event.get("tool_calls")
        if tool_calls:
            for call in tool_calls:
                delta = self._tool_delta(call)
                if delta is not None:
                    yield delta
        finish = event.get("finish_reason")
        if isinstance(finish, str):
            yield Finish(finish_reason(finish))
        usage = event.get("usage")
        if isinstance(usage, dict):
            yield _usage(usage)

    def _tool_delta(self, call: Any) -> ToolCallDelta | None:
        if not isinstance(call, dict):
            return None
        if "function" not in call and "name" in call:  # legacy flat call, always complete
            index = self._flat_calls
            self._flat_calls += 1
            return ToolCallDelta(index, str(call["name"]), _arguments_of(call.get("arguments")))
        return _openai_tool_delta(call, fallback_index=0)


def _openai_tool_delta(call: dict[str, Any], *, fallback_index: int) -> ToolCallDelta | None:
    function = call.get("function") or {}
    name = function.get("name") or None
    arguments = function.get("arguments")
    arguments_text = "" if arguments is None else _arguments_of(arguments)
    if name is None and not arguments_text:
        return None  # the null finalisation sentinel, or an empty piece
    index = call.get("index")
    return ToolCallDelta(index if isinstance(index, int) else fallback_index, name, arguments_text)


def _choice_events(choice: Any, *, streamed: bool) -> Iterator[Event]:
    if not isinstance(choice, dict):
        return
    part = choice.get("delta" if streamed else "message") or {}
    reasoning = part.get("reasoning_content") or part.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        yield ReasoningDelta(reasoning)
    content = part.get("content")
    if content is not None and content != "":
        yield TextDelta(_text_of(content))
    calls = part.get("tool_calls")
    if calls:
        for position, call in enumerate(calls):
            if isinstance(call, dict):
                delta = _openai_tool_delta(call, fallback_index=position)
                if delta is not None:
                    yield delta
    finish = choice.get("finish_reason")
    if isinstance(finish, str):
        yield Finish(finish_reason(finish))


def result_events(result: Any, backend: str) -> Iterator[Event]:
    """Events of a non-streamed `result`, whichever of its shapes it has."""
    if isinstance(result, str):
        if result:
            yield TextDelta(result)
        return
    if not isinstance(result, dict):
        if result is not None:
            yield TextDelta(_text_of(result))
        return
    choices = result.get("choices")
    if isinstance(choices, list) and choices:
        yield from _choice_events(choices[0], streamed=False)
    elif isinstance(result.get("output"), list):
        yield from _responses_output_events(result["output"])
    else:
        response = result.get("response", result.get("response_text"))
        if response is not None and response != "":
            yield TextDelta(_text_of(response))
        calls = result.get("tool_calls")
        if isinstance(calls, list):
            for position, call in enumerate(c for c in calls if isinstance(c, dict)):
                if "function" in call:
                    delta = _openai_tool_delta(call, fallback_index=position)
                    if delta is not None:
                        yield delta
                elif "name" in call:
                    yield ToolCallDelta(position, str(call["name"]), _arguments_of(call.get("arguments")))
        finish = result.get("finish_reason")
        if isinstance(finish, str):
            yield Finish(finish_reason(finish))
    usage = result.get("usage")
    if isinstance(usage, dict):
        yield _usage(usage)


def _responses_output_events(output: list[Any]) -> Iterator[Event]:
    for item in output:
        if not isinstance(item, dict):
            continue
        texts = [part.get("text", "") for part in item.get("content") or [] if isinstance(part, dict)]
        text = "".join(t for t in texts if isinstance(t, str))
        if not text:
            continue
        if item.get("type") == "reasoning":
            yield ReasoningDelta(text)
        elif item.get("type") == "message":
            yield TextDelta(text)


def _text_of(value: Any) -> str:
    """Workers AI's `response` may be a string, a number or (JSON mode) an object: always text for OpenAI."""
    if isinstance(value, str):
        return value
    return _encoder.encode(value).decode()


def _arguments_of(value: Any) -> str:
    if value is None:
        return "{}"
    if isinstance(value, str):
        return value
    return _encoder.encode(value).decode()


def _usage(usage: dict[str, Any]) -> Usage:
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    completion_details = usage.get("completion_tokens_details")
    reasoning = completion_details.get("reasoning_tokens") if isinstance(completion_details, dict) else None
    return Usage(
        prompt_tokens=_int(usage.get("prompt_tokens")),
        completion_tokens=_int(usage.get("completion_tokens")),
        cached_tokens=cached if isinstance(cached, int) else None,
        reasoning_tokens=reasoning if isinstance(reasoning, int) else None,
    )


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


_FINISH_REASONS: Final[dict[str, FinishReason]] = {
    "stop": "stop",
    "length": "length",
    "model_length": "length",
    "max_tokens": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def finish_reason(value: str) -> FinishReason:
    return _FINISH_REASONS.get(value, "stop")


def create(name: str, config: WorkersAIConfig) -> WorkersAIAdapter:
    return WorkersAIAdapter(name, config)


__all__ = (
    "AIGatewayConfig",
    "StreamParser",
    "WorkersAIAdapter",
    "WorkersAIConfig",
    "create",
    "finish_reason",
    "prompt_body",
    "result_events",
    "status_error",
    "upstream_body",
)
