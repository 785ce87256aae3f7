"""vLLM OpenAI-compatible server emulator (``vllm serve``), in three wire flavours.

``legacy`` (< v0.10.1: flat error objects), ``v0.11`` (nested errors, ``reasoning_content``,
``include_usage`` defaulting to true once ``stream_options`` is present) and ``v0.33`` (``param`` filled
in errors, ``reasoning``, empty ``tool_calls`` dropped, temperature capped at 2). See README.md.
"""

from __future__ import annotations

import base64
import time
from array import array
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar, Final, Literal, TypeGuard

from .common import (
    COMMON_FAULT_KINDS,
    DONE_EVENT,
    Answer,
    BadDirective,
    Connection,
    Conversation,
    EmulatorBase,
    Fault,
    Headers,
    JsonMode,
    JsonReply,
    Reply,
    StreamReply,
    build_answer,
    content_text,
    continue_answer,
    conversation_from_messages,
    conversation_from_prompt,
    count_prompt_tokens,
    dumps,
    embedding_vector,
    empty_reply,
    find_continuation,
    json_reply,
    last_user_text,
    new_hex,
    partial_tokens,
    sse,
)

Flavor = Literal["legacy", "v0.11", "v0.33"]
VERSIONS: Final[dict[str, str]] = {"legacy": "0.9.2", "v0.11": "0.11.0", "v0.33": "0.33.0"}
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
_SSE_HEADERS: Final[Headers] = [(b"content-type", b"text/event-stream; charset=utf-8")]
_MARKER: Final = "\u2063EMU-INVALID-UTF8\u2063"

_NUMBER_FIELDS: Final = (
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "min_p",
    "length_penalty",
)
_INT_FIELDS: Final = ("max_tokens", "max_completion_tokens", "n", "top_k", "seed", "min_tokens", "best_of")
_CHAT_BOOL_FIELDS: Final = (
    "stream",
    "logprobs",
    "echo",
    "ignore_eos",
    "parallel_tool_calls",
    "include_reasoning",
)
_COMPLETION_BOOL_FIELDS: Final = ("stream", "echo", "ignore_eos")

_STATUS_TYPES: Final[dict[int, tuple[str, str]]] = {
    400: ("BadRequestError", "Emulated bad request."),
    404: ("NotFoundError", "Not Found"),
    408: ("RequestTimeoutError", "Request Timeout"),
    413: ("RequestEntityTooLargeError", "Request Entity Too Large"),
    422: ("UnprocessableEntityError", "Unprocessable Entity"),
    429: ("RateLimitError", "Too Many Requests"),
    500: ("InternalServerError", "Internal Server Error"),
    501: ("NotImplementedError", "Not Implemented"),
    502: ("BadGatewayError", "Bad Gateway"),
    503: (
        "ServiceUnavailableError",
        "The engine is currently busy and cannot accept new requests. Please try again later.",
    ),
    504: ("GatewayTimeoutError", "Gateway Timeout"),
}


@dataclass(frozen=True, slots=True)
class _ChatCtx:
    id: str
    created: int
    model: str
    n: int
    reasoning: bool
    forced: bool
    required: bool
    logprobs: bool


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "BadRequestError", param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    return str(float(value)) if _is_number(value) else str(value)


class VLLMEmulator(EmulatorBase):
    """Emulates ``vllm serve`` (``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``, ...)."""

    fault_kinds: ClassVar[frozenset[str]] = COMMON_FAULT_KINDS | {"stream-error", "unhealthy"}

    def __init__(
        self,
        api_key: str | list[str] | None = None,
        flavor: Flavor = "v0.11",
        served_models: list[str] | None = None,
        max_model_len: int = 8192,
        enable_auto_tool_choice: bool = True,
        reasoning: bool = False,
        model_path: str | None = None,
        embedding_models: dict[str, int] | None = None,
        matryoshka: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__()
        self.embedding_models: dict[str, int] = dict(embedding_models or {})
        """Pooling models served on `/v1/embeddings`, name → dimensions (none: the route is not there,
        as on a generate-only `vllm serve`)."""
        self.matryoshka = matryoshka
        """Embedding models that take `dimensions` (others refuse it, as vLLM does)."""
        if flavor not in VERSIONS:
            raise ValueError(f"unknown flavor {flavor!r}")
        self.api_keys: list[str] = [api_key] if isinstance(api_key, str) else list(api_key or [])
        self.flavor: Flavor = flavor
        self.served_models = list(served_models or ["meta-llama/Llama-3.3-70B-Instruct"])
        self.max_model_len = max_model_len
        self.enable_auto_tool_choice = enable_auto_tool_choice
        self.reasoning = reasoning
        self.model_path = model_path or self.served_models[0]
        self.fingerprint = f"vllm-{VERSIONS[flavor]}-{new_hex(8)}"
        self.continue_prompts = False
        """Completions: read a prompt ending with the start of its own answer as a continuation (the
        prompt plus a partial answer, sent after a cut) and answer only the rest. Off by default: a
        prompt may quote an answer's first word by chance."""

    @property
    def reasoning_field(self) -> str:
        return "reasoning" if self.flavor == "v0.33" else "reasoning_content"

    # -- errors ------------------------------------------------------------------------------------------

    def error_reply(self, err: ApiError, headers: Headers | None = None) -> JsonReply:
        if self.flavor == "legacy":
            obj: dict[str, Any] = {
                "object": "error",
                "message": err.message,
                "type": err.type,
                "param": None,
                "code": err.status,
            }
        else:
            param = err.param if self.flavor == "v0.33" else None
            obj = {"error": {"message": err.message, "type": err.type, "param": param, "code": err.status}}
        return json_reply(err.status, obj, headers)

    def _validation_error(self, items: list[dict[str, Any]], param: str | None = None) -> ApiError:
        """A pydantic/FastAPI request-validation failure (HTTP 400)."""
        if self.flavor == "v0.33":
            count = len(items)
            message = f"{count} validation error{'s' if count != 1 else ''}:\n" + "\n".join(
                f"  {item!r}" for item in items
            )
        else:
            message = repr(items)
        type_ = "BadRequestError" if self.flavor == "legacy" else "Bad Request"
        if param is None and items:
            loc = items[0].get("loc", ())
            fields = [str(p) for p in loc[1:2]] if isinstance(loc, tuple) else []
            param = fields[0] if fields else None
        return ApiError(400, message, type_, param)

    def _value_error(self, text: str, param: str | None) -> ApiError:
        return self._validation_error(
            [{"type": "value_error", "loc": ("body",), "msg": f"Value error, {text}"}], param
        )

    # -- routing -----------------------------------------------------------------------------------------

    def _authorized(self, conn: Connection) -> bool:
        scheme, _, token = conn.record.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token in self.api_keys

    async def dispatch(self, conn: Connection) -> None:
        path, method = conn.record.path, conn.record.method
        if path in ("/health", "/ping") and (method == "GET" or (path == "/ping" and method == "POST")):
            ok = self.healthy and not self.faults.has("unhealthy")
            await self.send_reply(conn, empty_reply(200 if ok else 503))
            return
        if path == "/version" and method == "GET":
            await self.send_reply(conn, json_reply(200, {"version": VERSIONS[self.flavor]}))
            return
        if path.startswith("/v1") and self.api_keys and method != "OPTIONS" and not self._authorized(conn):
            await self.send_reply(conn, json_reply(401, {"error": "Unauthorized"}))
            return
        routes = {"/v1/models": "GET", "/v1/chat/completions": "POST", "/v1/completions": "POST"}
        if self.embedding_models:
            routes["/v1/embeddings"] = "POST"
        if path not in routes:
            await self.send_reply(conn, json_reply(404, {"detail": "Not Found"}))
            return
        if method != routes[path]:
            await self.send_reply(conn, json_reply(405, {"detail": "Method Not Allowed"}))
            return
        if path == "/v1/models":
            await self.send_reply(conn, json_reply(200, self._models()))
            return
        await self._inference(conn, chat=path == "/v1/chat/completions", embeddings=path == "/v1/embeddings")

    def embedding_for(self, model: str, item: str | list[int]) -> list[float]:
        """The vector this emulator answers for one input (what a test compares the client's with)."""
        return embedding_vector(model, item, self.embedding_models[model])

    def _embeddings(self, conn: Connection) -> Reply:
        """`POST /v1/embeddings` (contract §3.3): OpenAI's fields, vLLM's errors and answer shape."""
        body = self._parse_body(conn)
        model = body.get("model") or next(iter(self.embedding_models))
        if model not in self.embedding_models:
            raise ApiError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        raw = body.get("input")
        items: list[str | list[int]]
        if isinstance(raw, str):
            items = [raw]
        elif isinstance(raw, list) and raw and all(_is_int(t) for t in raw):
            items = [list(raw)]
        elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
            items = list(raw)
        elif isinstance(raw, list) and raw and all(isinstance(t, list) and t for t in raw):
            items = [list(t) for t in raw]
        else:
            raise self._validation_error(
                [{"type": "value_error", "loc": ("body", "input"), "msg": "Input should be a valid input"}],
                "input",
            )
        native = self.embedding_models[model]
        size = native
        dimensions = body.get("dimensions")
        if dimensions is not None:
            if model not in self.matryoshka:
                raise ApiError(
                    400,
                    f'Model "{model}" does not support matryoshka representation, changing output '
                    "dimensions will lead to poor results.",
                    param="dimensions",
                )
            if not _is_int(dimensions) or not 1 <= dimensions <= native:
                raise ApiError(400, f"Dimensions must be between 1 and {native}.", param="dimensions")
            size = dimensions
        counts = [len(item) if isinstance(item, list) else count_prompt_tokens([item]) for item in items]
        for count in counts:
            if count > self.max_model_len:
                raise ApiError(
                    400,
                    f"This model's maximum context length is {self.max_model_len} tokens. However, you "
                    f"requested {count} tokens in the input for embedding generation. Please reduce the "
                    "length of the input.",
                    param="input",
                )
        encoding = body.get("encoding_format", "float")
        data = []
        for index, item in enumerate(items):
            vector = self.embedding_for(model, item)
            if size < native:  # Matryoshka: the first `size` values, renormalised
                head = vector[:size]
                norm = sum(v * v for v in head) ** 0.5 or 1.0
                vector = array("f", [v / norm for v in head]).tolist()
            value: Any = vector
            if encoding == "base64":
                value = base64.b64encode(array("f", vector).tobytes()).decode()
            data.append({"index": index, "object": "embedding", "embedding": value})
        prompt_tokens = sum(counts)
        return json_reply(
            200,
            {
                "id": "embd-" + new_hex(),
                "object": "list",
                "created": int(time.time()),
                "model": model,
                "data": data,
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "total_tokens": prompt_tokens,
                    "completion_tokens": 0,
                    "prompt_tokens_details": None,
                },
            },
        )

    def _models(self) -> dict[str, Any]:
        now = int(time.time())
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": now,
                    "owned_by": "vllm",
                    "root": self.model_path,
                    "parent": None,
                    "max_model_len": self.max_model_len,
                    "permission": [
                        {
                            "id": "modelperm-" + new_hex(16),
                            "object": "model_permission",
                            "created": now,
                            "allow_create_engine": False,
                            "allow_sampling": True,
                            "allow_logprobs": True,
                            "allow_search_indices": False,
                            "allow_view": True,
                            "allow_fine_tuning": False,
                            "organization": "*",
                            "group": None,
                            "is_blocking": False,
                        }
                    ],
                }
                for name in self.served_models
            ],
        }

    async def _inference(self, conn: Connection, *, chat: bool, embeddings: bool = False) -> None:
        media_type = conn.record.headers.get("content-type", "").lower().split(";", 1)[0].strip()
        if media_type != "application/json":
            message = "Unsupported Media Type: Only 'application/json' is allowed"
            if self.flavor == "legacy":
                await self.send_reply(conn, json_reply(400, {"detail": message}))
            else:
                await self.send_reply(conn, self.error_reply(ApiError(400, message, "Bad Request")))
            return
        body = conn.record.body
        directive_text = ""
        if isinstance(body, dict):
            if chat:
                directive_text = last_user_text(body.get("messages"))
            elif isinstance(body.get("prompt"), str):
                directive_text = body["prompt"]
            elif embeddings and isinstance(body.get("input"), list | str):
                value = body["input"]
                directive_text = " ".join(
                    t for t in ([value] if isinstance(value, str) else value) if isinstance(t, str)
                )
        try:
            fault = self.take_fault(conn.record, directive_text)
        except BadDirective as exc:
            await self.bad_directive(conn, exc)
            return
        if await self.prelude(conn, fault):
            return
        if fault is not None and fault.kind == "status":
            await self.send_reply(conn, self._status_reply(fault))
            return
        try:
            if embeddings:
                reply = self._embeddings(conn)
            else:
                reply = self._chat(conn, fault) if chat else self._completions(conn, fault)
        except ApiError as err:
            await self.send_reply(conn, self.error_reply(err))
            return
        await self.send_reply(conn, reply, fault)

    def _status_reply(self, fault: Fault) -> JsonReply:
        headers: Headers = []
        if fault.retry_after is not None:
            headers.append((b"retry-after", fault.retry_after.encode()))
        if fault.status == 401:
            return json_reply(401, {"error": "Unauthorized"}, headers)
        type_, message = _STATUS_TYPES.get(fault.status, ("", ""))
        if not type_:
            phrase = HTTPStatus(fault.status).phrase
            type_, message = phrase.replace(" ", "") + "Error", phrase
        return self.error_reply(ApiError(fault.status, message, type_), headers)

    # -- shared validation ---------------------------------------------------------------------------------

    def _parse_body(self, conn: Connection) -> dict[str, Any]:
        body = conn.record.body
        raw = conn.record.raw_body
        if body is None and raw.strip() != b"null":
            raise self._validation_error(
                [{"type": "json_invalid", "loc": ("body", 0), "msg": "JSON decode error", "input": {}}]
            )
        if not isinstance(body, dict):
            raise self._validation_error(
                [
                    {
                        "type": "model_attributes_type",
                        "loc": ("body",),
                        "msg": "Input should be a valid dictionary or object to extract fields from",
                        "input": body,
                    }
                ]
            )
        return body

    def _field_errors(self, body: dict[str, Any], bool_fields: tuple[str, ...]) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []

        def err(loc: tuple[Any, ...], typ: str, msg: str, value: Any) -> None:
            errors.append({"type": typ, "loc": ("body", *loc), "msg": msg, "input": value})

        model = body.get("model")
        if model is not None and not isinstance(model, str):
            err(("model",), "string_type", "Input should be a valid string", model)
        for name in _NUMBER_FIELDS:
            value = body.get(name)
            if value is not None and not _is_number(value):
                err((name,), "float_type", "Input should be a valid number", value)
        for name in _INT_FIELDS:
            value = body.get(name)
            if value is not None and not _is_int(value):
                err((name,), "int_type", "Input should be a valid integer", value)
        seed = body.get("seed")
        if _is_int(seed) and seed < INT64_MIN:
            err(
                ("seed",), "greater_than_equal", f"Input should be greater than or equal to {INT64_MIN}", seed
            )
        if _is_int(seed) and seed > INT64_MAX:
            err(("seed",), "less_than_equal", f"Input should be less than or equal to {INT64_MAX}", seed)
        for name in bool_fields:
            value = body.get(name)
            if value is not None and not isinstance(value, bool):
                err((name,), "bool_type", "Input should be a valid boolean", value)
        stop = body.get("stop")
        if (stop is not None and not isinstance(stop, str)) and (
            not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)
        ):
            err(("stop",), "string_type", "Input should be a valid string", stop)
        stream_options = body.get("stream_options")
        if stream_options is not None:
            if not isinstance(stream_options, dict):
                err(("stream_options",), "model_type", "Input should be a valid dictionary", stream_options)
            else:
                for key in ("include_usage", "continuous_usage_stats"):
                    value = stream_options.get(key)
                    if value is not None and not isinstance(value, bool):
                        err(("stream_options", key), "bool_type", "Input should be a valid boolean", value)
        return errors

    def _stream_options_check(self, body: dict[str, Any]) -> None:
        if body.get("stream_options") is not None and body.get("stream") is not True:
            raise self._value_error(
                "Stream options can only be defined when `stream=True`.", "stream_options"
            )

    def _check_model(self, body: dict[str, Any]) -> str:
        model = body.get("model")
        if model is None:
            return self.served_models[0]
        if model not in self.served_models:
            message = f"The model `{model}` does not exist."
            if self.flavor == "v0.33":
                message += f" Valid aliases: {', '.join(self.served_models)}."
            raise ApiError(404, message, "NotFoundError", "model")
        return str(model)

    def _check_context(self, prompt_tokens: int, max_tokens: int | None, *, chat: bool) -> None:
        limit = self.max_model_len
        suffix = " None" if chat else ""
        if self.flavor == "v0.33":
            requested = max_tokens if max_tokens is not None else 1
            if prompt_tokens + requested > limit:
                raise ApiError(
                    400,
                    f"You passed {prompt_tokens} input tokens and requested {requested} output tokens. "
                    f"However, the model's context length is only {limit} tokens, resulting in a maximum "
                    f"input length of {limit - requested} tokens. Please reduce the length of the input "
                    f"prompt. (parameter=input_tokens, value={prompt_tokens})",
                    param="input_tokens",
                )
            return
        if prompt_tokens >= limit:
            if self.flavor == "legacy":
                message = (
                    f"This model's maximum context length is {limit} tokens. However, you requested "
                    f"{prompt_tokens} tokens in the messages, Please reduce the length of the messages."
                )
            else:
                message = (
                    f"This model's maximum context length is {limit} tokens. However, your request has "
                    f"{prompt_tokens} input tokens. Please reduce the length of the input messages.{suffix}"
                )
            raise ApiError(400, message, param="messages")
        if max_tokens is not None and prompt_tokens + max_tokens > limit:
            if self.flavor == "legacy":
                message = (
                    f"This model's maximum context length is {limit} tokens. However, you requested "
                    f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in "
                    "the completion). Please reduce the length of the messages or completion."
                )
            else:
                message = (
                    f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. "
                    f"This model's maximum context length is {limit} tokens and your request has "
                    f"{prompt_tokens} input tokens "
                    f"({max_tokens} > {limit} - {prompt_tokens}).{suffix}"
                )
            raise ApiError(400, message, param="max_tokens")

    def _sampling_checks(self, body: dict[str, Any], n: int) -> None:
        def bad(message: str, param: str) -> ApiError:
            return ApiError(400, message, param=param)

        if n < 1:
            raise bad(f"n must be at least 1, got {n}.", "n")
        for name in ("presence_penalty", "frequency_penalty"):
            value = body.get(name)
            if value is not None and not -2 <= value <= 2:
                raise bad(f"{name} must be in [-2, 2], got {_fmt(value)}.", name)
        rep = body.get("repetition_penalty")
        if rep is not None and rep <= 0:
            raise bad(f"repetition_penalty must be greater than zero, got {_fmt(rep)}.", "repetition_penalty")
        temperature = body.get("temperature")
        temp = 1.0 if temperature is None else float(temperature)
        if self.flavor == "v0.33" and not 0 <= temp <= 2:
            raise bad(f"temperature must be in [0, 2], got {temp}.", "temperature")
        if temp < 0:
            raise bad(f"temperature must be non-negative, got {temp}.", "temperature")
        top_p = body.get("top_p")
        if top_p is not None and not 0 < top_p <= 1:
            raise bad(f"top_p must be in (0, 1], got {_fmt(top_p)}.", "top_p")
        top_k = body.get("top_k")
        if top_k is not None and top_k < -1:
            raise bad(f"top_k must be 0 (disable), or at least 1, got {top_k}.", "top_k")
        min_p = body.get("min_p")
        if min_p is not None and not 0 <= min_p <= 1:
            raise bad(f"min_p must be in [0, 1], got {_fmt(min_p)}.", "min_p")
        for name in ("max_tokens", "max_completion_tokens"):
            value = body.get(name)
            if value is not None and value < 1:
                raise bad(f"max_tokens must be at least 1, got {value}.", name)
        if n > 1 and temp < 1e-5:
            raise bad(f"n must be 1 when using greedy sampling, got {n}.", "n")
        stop = body.get("stop")
        if stop == "" or (isinstance(stop, list) and "" in stop):
            raise bad("stop cannot contain an empty string.", "stop")

    def _usage_flags(self, body: dict[str, Any]) -> tuple[bool, bool]:
        options = body.get("stream_options")
        if not isinstance(options, dict):
            return False, False
        include = options.get("include_usage")
        # v0.33: only an explicit true; older: defaults to True once stream_options is present.
        include_usage = include is True if self.flavor == "v0.33" else include is not False
        return include_usage, include_usage and options.get("continuous_usage_stats") is True

    @staticmethod
    def _stops(body: dict[str, Any]) -> list[str]:
        stop = body.get("stop")
        if isinstance(stop, str):
            return [stop]
        return [s for s in stop or [] if isinstance(s, str)]

    def _completion_id(self, conn: Connection, prefix: str) -> str:
        request_id = conn.record.headers.get("x-request-id")
        return prefix + (request_id if request_id else new_hex())

    # -- chat ----------------------------------------------------------------------------------------------

    def _chat_fields(self, body: dict[str, Any]) -> None:
        errors = self._field_errors(body, _CHAT_BOOL_FIELDS)
        messages = body.get("messages")
        if "messages" not in body:
            errors.append(
                {"type": "missing", "loc": ("body", "messages"), "msg": "Field required", "input": body}
            )
        elif not isinstance(messages, list):
            errors.append(
                {
                    "type": "list_type",
                    "loc": ("body", "messages"),
                    "msg": "Input should be a valid list",
                    "input": messages,
                }
            )
        else:
            for i, msg in enumerate(messages):
                if not isinstance(msg, dict):
                    errors.append(
                        {
                            "type": "model_type",
                            "loc": ("body", "messages", i),
                            "msg": "Input should be a valid dictionary",
                            "input": msg,
                        }
                    )
                elif not isinstance(msg.get("role"), str):
                    errors.append(
                        {
                            "type": "missing",
                            "loc": ("body", "messages", i, "role"),
                            "msg": "Field required",
                            "input": msg,
                        }
                    )
                elif msg.get("content") is not None and not isinstance(msg.get("content"), (str, list)):
                    errors.append(
                        {
                            "type": "string_type",
                            "loc": ("body", "messages", i, "content"),
                            "msg": "Input should be a valid string",
                            "input": msg.get("content"),
                        }
                    )
        tools = body.get("tools")
        if tools is not None:
            if not isinstance(tools, list):
                errors.append(
                    {
                        "type": "list_type",
                        "loc": ("body", "tools"),
                        "msg": "Input should be a valid list",
                        "input": tools,
                    }
                )
            else:
                for i, tool in enumerate(tools):
                    fn = tool.get("function") if isinstance(tool, dict) else None
                    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
                        errors.append(
                            {
                                "type": "literal_error",
                                "loc": ("body", "tools", i, "type"),
                                "msg": "Input should be 'function'",
                                "input": tool.get("type") if isinstance(tool, dict) else tool,
                            }
                        )
                    elif not isinstance(fn, dict):
                        errors.append(
                            {
                                "type": "missing",
                                "loc": ("body", "tools", i, "function"),
                                "msg": "Field required",
                                "input": tool,
                            }
                        )
                    elif not isinstance(fn.get("name"), str):
                        errors.append(
                            {
                                "type": "missing",
                                "loc": ("body", "tools", i, "function", "name"),
                                "msg": "Field required",
                                "input": fn,
                            }
                        )
        response_format = body.get("response_format")
        if response_format is not None:
            rf_type = response_format.get("type") if isinstance(response_format, dict) else None
            if rf_type not in ("text", "json_object", "json_schema", "structural_tag"):
                errors.append(
                    {
                        "type": "literal_error",
                        "loc": ("body", "response_format", "type"),
                        "msg": "Input should be 'text', 'json_object', 'json_schema' or 'structural_tag'",
                        "input": rf_type,
                    }
                )
            elif rf_type == "json_schema":
                assert isinstance(response_format, dict)
                schema = response_format.get("json_schema")
                if schema is None and self.flavor == "v0.33":
                    errors.append(
                        {
                            "type": "missing",
                            "loc": ("body", "response_format", "json_schema"),
                            "msg": "Field required",
                            "input": response_format,
                        }
                    )
                elif schema is not None and (
                    not isinstance(schema, dict) or not isinstance(schema.get("name"), str)
                ):
                    errors.append(
                        {
                            "type": "missing",
                            "loc": ("body", "response_format", "json_schema", "name"),
                            "msg": "Field required",
                            "input": schema,
                        }
                    )
        if errors:
            raise self._validation_error(errors)

    def _chat_model_validators(self, body: dict[str, Any]) -> None:
        self._stream_options_check(body)
        top_logprobs = body.get("top_logprobs")
        if _is_int(top_logprobs) and top_logprobs > 0 and body.get("logprobs") is not True:
            raise self._value_error(
                "when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs"
            )
        tools = body.get("tools")
        if self.flavor == "v0.33" and tools == []:
            raise self._value_error("`tools` must contain at least one tool when provided.", "tools")
        tool_choice = body.get("tool_choice")
        if tool_choice is None or tool_choice == "none":
            return
        if tools is None:
            raise self._value_error("When using `tool_choice`, `tools` must be set.", "tool_choice")
        if tool_choice not in ("auto", "required") and not isinstance(tool_choice, dict):
            raise self._value_error(
                f"Invalid value for `tool_choice`: {tool_choice}! "
                'Only named tools, "none", "auto" or "required" are supported.',
                "tool_choice",
            )
        if isinstance(tool_choice, dict):
            usage = 'Correct usage: `{"type": "function", "function": {"name": "my_function"}}`'
            fn = tool_choice.get("function")
            if not isinstance(fn, dict):
                raise self._value_error(
                    f"Invalid value for `function`: `{fn}` in `tool_choice`! {usage}", "tool_choice"
                )
            name = fn.get("name")
            if not isinstance(name, str) or not name:
                raise self._value_error(
                    f"Expected field `name` in `function` in `tool_choice`! {usage}", "tool_choice"
                )
            if not any(
                isinstance(t, dict) and t.get("function", {}).get("name") == name for t in tools or []
            ):
                raise self._value_error(
                    "The tool specified in `tool_choice` does not match any of the specified `tools`",
                    "tool_choice",
                )

    def _chat(self, conn: Connection, fault: Fault | None) -> Reply:
        body = self._parse_body(conn)
        self._chat_fields(body)
        self._chat_model_validators(body)
        model = self._check_model(body)
        tools = body.get("tools")
        tool_choice = body.get("tool_choice")
        if tools and tool_choice is None:
            tool_choice = "auto"
        if tools and tool_choice == "auto" and not self.enable_auto_tool_choice:
            raise ApiError(
                400, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
            )
        messages: list[Any] = body["messages"]
        partial = self._continued(conn, body, messages)
        if partial is not None:
            messages = messages[:-1]
        conv = conversation_from_messages(messages)
        max_completion = body.get("max_completion_tokens")
        max_tokens: int | None = max_completion if max_completion is not None else body.get("max_tokens")
        self._check_context(conv.prompt_tokens, max_tokens, chat=True)
        n: int = body["n"] if body.get("n") is not None else 1
        self._sampling_checks(body, n)
        if max_tokens is None:
            max_tokens = self.max_model_len - conv.prompt_tokens
        json_mode: JsonMode | None = None
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") in (
            "json_object",
            "json_schema",
        ):
            schema = response_format.get("json_schema")
            json_mode = JsonMode(schema.get("schema") if isinstance(schema, dict) else None)
        reasoning = (self.reasoning or "reasoning" in conv.directives) and body.get(
            "include_reasoning"
        ) is not False
        allow_parallel = not (self.flavor == "v0.33" and body.get("parallel_tool_calls") is False)
        answer = build_answer(
            conv,
            tools=tools,
            tool_choice=tool_choice,
            max_tokens=max_tokens if partial is None else max_tokens + partial_tokens(partial),
            reasoning=reasoning,
            json_mode=json_mode,
            stop=self._stops(body),
            huge=fault.count if fault is not None and fault.kind == "huge" else None,
            allow_parallel=allow_parallel,
            tool_id=lambda: "chatcmpl-tool-" + new_hex(16 if self.flavor == "v0.33" else 32),
        )
        if partial is not None:
            continued = continue_answer(answer, partial)
            if continued is None:
                raise ApiError(400, "emulator: the final assistant message is not the start of this answer")
            answer = continued
        forced = isinstance(tool_choice, dict)
        ctx = _ChatCtx(
            id=self._completion_id(conn, "chatcmpl-"),
            created=int(time.time()),
            model=model,
            n=n,
            reasoning=reasoning,
            forced=forced,
            required=tool_choice == "required",
            logprobs=body.get("logprobs") is True,
        )
        if body.get("stream") is True:
            include_usage, continuous = self._usage_flags(body)
            return self._chat_stream(ctx, answer, fault, include_usage, continuous)
        return self._chat_json(ctx, answer, fault)

    @staticmethod
    def _continued(conn: Connection, body: dict[str, Any], messages: list[Any]) -> str | None:
        """The partial answer of a `continue_final_message` request (recorded), else None."""
        if body.get("continue_final_message") is not True:
            return None
        if body.get("add_generation_prompt", True) is not False:
            raise ApiError(
                400, "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
            )
        last = messages[-1] if messages else None
        if not isinstance(last, dict) or last.get("role") != "assistant":
            raise ApiError(400, "continue_final_message requires the final message to be from the assistant")
        conn.record.continued = content_text(last.get("content"))
        # As the real chat template (Llama 3's `message['content'] | trim`): the model continues the
        # message without its surrounding whitespace, so whitespace cut off its end comes again.
        return conn.record.continued.strip()

    def _tool_finish(self, ctx: _ChatCtx, *, stream: bool) -> str:
        if self.flavor == "v0.33":
            return "stop" if ctx.forced else "tool_calls"
        if stream:
            return "tool_calls"
        return "stop" if ctx.forced or ctx.required else "tool_calls"

    @staticmethod
    def _logprobs(tokens: list[str]) -> dict[str, Any]:
        return {
            "content": [
                {"token": t, "logprob": -0.0123, "bytes": list(t.encode()), "top_logprobs": []}
                for t in tokens
            ]
        }

    def _chat_json(self, ctx: _ChatCtx, answer: Answer, fault: Fault | None) -> JsonReply:
        kind = fault.kind if fault is not None else None
        if kind == "malformed":
            return JsonReply(200, b'{"id": "chatcmpl-oops", "object": "chat.completion", "choices": [{')
        if kind == "invalid-utf8" and not answer.tool_calls:
            answer.tokens = [_MARKER]
        flavor = self.flavor
        tool_calls = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
            for c in answer.tool_calls
        ]
        content: str | None = answer.text
        finish = answer.finish
        if answer.tool_calls:
            finish = self._tool_finish(ctx, stream=False)
            content = "" if flavor != "v0.33" and (ctx.forced or ctx.required) else None
        reasoning = answer.reasoning_text if answer.reasoning else None
        message: dict[str, Any]
        if flavor == "legacy":
            message = {
                "role": "assistant",
                "reasoning_content": reasoning,
                "content": content,
                "tool_calls": tool_calls,
            }
        else:
            message = {
                "role": "assistant",
                "content": content,
                "refusal": None,
                "annotations": None,
                "audio": None,
                "function_call": None,
            }
            if tool_calls or flavor != "v0.33":
                message["tool_calls"] = tool_calls
            message[self.reasoning_field] = reasoning
        choices = []
        for i in range(ctx.n):
            choice: dict[str, Any] = {
                "index": i,
                "message": message,
                "logprobs": self._logprobs(answer.tokens) if ctx.logprobs else None,
                "finish_reason": finish,
                "stop_reason": answer.stop_reason,
            }
            if flavor != "legacy":
                choice["token_ids"] = None
            if flavor == "v0.33":
                choice["routed_experts"] = None
            choices.append(choice)
        usage = {
            "prompt_tokens": answer.prompt_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens * ctx.n,
            "completion_tokens": answer.completion_tokens * ctx.n,
            "prompt_tokens_details": None,
        }
        obj: dict[str, Any] = {
            "id": ctx.id,
            "object": "chat.completion",
            "created": ctx.created,
            "model": ctx.model,
            "choices": choices,
        }
        if flavor == "legacy":
            obj.update(usage=usage, prompt_logprobs=None)
        else:
            obj.update(
                service_tier=None,
                system_fingerprint=self.fingerprint if flavor == "v0.33" else None,
                usage=usage,
                prompt_logprobs=None,
                prompt_token_ids=None,
            )
            if flavor == "v0.33":
                obj.update(prompt_text=None, kv_transfer_params=None, ec_transfer_params=None, metrics=None)
            else:
                obj["kv_transfer_params"] = None
        data = dumps(obj)
        if kind == "invalid-utf8":
            data = data.replace(_MARKER.encode(), b"\xff\xfe oops")
        return JsonReply(200, data)

    def _chat_stream(
        self,
        ctx: _ChatCtx,
        answer: Answer,
        fault: Fault | None,
        include_usage: bool,
        continuous: bool,
    ) -> StreamReply:
        flavor = self.flavor
        rf = self.reasoning_field
        base = {"id": ctx.id, "object": "chat.completion.chunk", "created": ctx.created, "model": ctx.model}
        prompt = answer.prompt_tokens

        def usage(completion: int) -> dict[str, int]:
            return {
                "prompt_tokens": prompt,
                "total_tokens": prompt + completion,
                "completion_tokens": completion,
            }

        # Per choice: list of (choice-dict, completion tokens so far).
        per_choice: list[list[tuple[dict[str, Any], int]]] = []
        for i in range(ctx.n):
            seq: list[tuple[dict[str, Any], int]] = []
            first_delta: dict[str, Any] = {"role": "assistant", "content": ""}
            if ctx.reasoning:
                first_delta[rf] = None
            seq.append(({"index": i, "delta": first_delta, "logprobs": None, "finish_reason": None}, 0))
            deltas: list[tuple[dict[str, Any], Any]] = []
            deltas.extend(({rf: tok}, None) for tok in answer.reasoning)
            deltas.extend(
                ({"content": tok}, self._logprobs([tok]) if ctx.logprobs else None) for tok in answer.tokens
            )
            for k, call in enumerate(answer.tool_calls):
                header = {"index": k, "type": "function", "id": call.id, "function": {"name": call.name}}
                deltas.append(({"tool_calls": [header]}, None))
                deltas.extend(
                    ({"tool_calls": [{"index": k, "function": {"arguments": frag}}]}, None)
                    for frag in call.fragments()
                )
            finish = answer.finish
            if answer.tool_calls:
                finish = self._tool_finish(ctx, stream=True)
                deltas.append(({"content": ""}, None))
            elif not deltas:
                deltas.append(({"content": ""}, None))
            done = 0
            for j, (delta, lp) in enumerate(deltas):
                done += 0 if "content" in delta and delta["content"] == "" else 1
                choice: dict[str, Any] = {"index": i, "delta": delta, "logprobs": lp, "finish_reason": None}
                if j == len(deltas) - 1:
                    choice["finish_reason"] = finish
                    choice["stop_reason"] = answer.stop_reason
                if flavor != "legacy":
                    choice["token_ids"] = None
                seq.append((choice, min(done, answer.completion_tokens)))
            per_choice.append(seq)
        objs: list[dict[str, Any]] = []
        longest = max(len(s) for s in per_choice)
        for step in range(longest):
            for seq in per_choice:
                if step >= len(seq):
                    continue
                choice, completed = seq[step]
                obj = dict(base)
                obj["choices"] = [choice]
                if step == 0 and flavor != "legacy":
                    obj["prompt_token_ids"] = None
                if continuous:
                    obj["usage"] = usage(completed)
                objs.append(obj)
        tail: list[bytes] = []
        if include_usage:
            final: dict[str, Any] = dict(base)
            final["choices"] = []
            final["usage"] = usage(answer.completion_tokens * ctx.n)
            if flavor == "v0.33":
                final["system_fingerprint"] = self.fingerprint
            tail.append(sse(final))
        elif flavor == "v0.33":
            objs[-1]["system_fingerprint"] = self.fingerprint
        tail.append(DONE_EVENT)
        events = [sse(o) for o in objs]
        kind = fault.kind if fault is not None else None
        if kind == "malformed":
            events[0] = b'data: {"choices": [{"delta": {"content": "oops\n\n'
        elif kind == "invalid-utf8":
            bad = dict(base)
            bad["choices"] = [
                {"index": 0, "delta": {"content": _MARKER}, "logprobs": None, "finish_reason": None}
            ]
            events.insert(1, sse(bad).replace(_MARKER.encode(), b"\xff\xfe oops"))
        elif kind == "stream-error":
            assert fault is not None
            events = events[: fault.count]
            events.append(sse(self._stream_error_body()))
            tail = [DONE_EVENT]
        return StreamReply(events, tail, list(_SSE_HEADERS))

    def _stream_error_body(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "message": "Emulated error while streaming (stream-error fault).",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
        if self.flavor == "legacy":
            return {"object": "error", **info}
        return {"error": info}

    # -- completions --------------------------------------------------------------------------------------

    @staticmethod
    def _text_answer(prompt: str) -> Answer:
        return build_answer(conversation_from_prompt(prompt))

    def _completions(self, conn: Connection, fault: Fault | None) -> Reply:
        body = self._parse_body(conn)
        errors = self._field_errors(body, _COMPLETION_BOOL_FIELDS)
        prompt = body.get("prompt")
        prompts: list[str | list[int]] = []
        if "prompt" not in body or prompt is None:
            errors.append(
                {"type": "missing", "loc": ("body", "prompt"), "msg": "Field required", "input": body}
            )
        elif isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            prompts = list(prompt)
        elif isinstance(prompt, list) and prompt and all(_is_int(p) for p in prompt):
            prompts = [list(prompt)]
        elif (
            isinstance(prompt, list)
            and prompt
            and all(isinstance(p, list) and all(_is_int(x) for x in p) for p in prompt)
        ):
            prompts = [list(p) for p in prompt]
        else:
            errors.append(
                {
                    "type": "string_type",
                    "loc": ("body", "prompt"),
                    "msg": "Input should be a valid string",
                    "input": prompt,
                }
            )
        if errors:
            raise self._validation_error(errors)
        self._stream_options_check(body)
        model = self._check_model(body)
        if body.get("suffix") is not None:
            raise ApiError(400, "suffix is not currently supported", param="suffix")
        max_tokens: int = body["max_tokens"] if body.get("max_tokens") is not None else 16
        convs: list[Conversation] = []
        partial: str | None = None
        if self.continue_prompts and len(prompts) == 1 and isinstance(prompts[0], str):
            found = find_continuation(prompts[0], self._text_answer)
            if found is not None:
                prompts[0], partial = found
                conn.record.continued = partial
        for p in prompts:
            if isinstance(p, str):
                convs.append(conversation_from_prompt(p))
            else:
                convs.append(Conversation("user", "", [], {}, max(1, len(p))))
        for conv in convs:
            self._check_context(conv.prompt_tokens, max_tokens, chat=False)
        n: int = body["n"] if body.get("n") is not None else 1
        self._sampling_checks(body, n)
        huge = fault.count if fault is not None and fault.kind == "huge" else None
        budget = max_tokens if partial is None else max_tokens + partial_tokens(partial)
        answers = [build_answer(c, max_tokens=budget, stop=self._stops(body), huge=huge) for c in convs]
        if partial is not None:
            continued = continue_answer(answers[0], partial)
            assert continued is not None  # find_continuation matched this very answer
            answers = [continued]
        echo = body.get("echo") is True
        cid = self._completion_id(conn, "cmpl-")
        created = int(time.time())
        prompt_tokens = sum(a.prompt_tokens for a in answers)
        completion_tokens = sum(a.completion_tokens for a in answers) * n
        usage = {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
        }
        entries: list[tuple[int, Answer, str]] = []
        for pi, answer in enumerate(answers):
            p = prompts[pi]
            echoed = p if echo and isinstance(p, str) else ""
            entries.extend((pi * n + k, answer, echoed) for k in range(n))
        base = {"id": cid, "object": "text_completion", "created": created, "model": model}
        kind = fault.kind if fault is not None else None
        if body.get("stream") is True:
            include_usage, continuous = self._usage_flags(body)
            objs: list[dict[str, Any]] = []
            for index, answer, echoed in entries:
                pieces = list(answer.tokens)
                if echoed:
                    pieces.insert(0, echoed)
                if not pieces:
                    pieces = [""]
                for j, piece in enumerate(pieces):
                    last = j == len(pieces) - 1
                    choice = {
                        "index": index,
                        "text": piece,
                        "logprobs": None,
                        "finish_reason": answer.finish if last else None,
                        "stop_reason": answer.stop_reason if last else None,
                    }
                    obj = dict(base)
                    obj["choices"] = [choice]
                    if continuous:
                        done = j + (0 if echoed else 1)
                        obj["usage"] = {
                            "prompt_tokens": prompt_tokens,
                            "total_tokens": prompt_tokens + done,
                            "completion_tokens": done,
                        }
                    objs.append(obj)
            tail: list[bytes] = []
            if include_usage:
                final: dict[str, Any] = dict(base)
                final["choices"] = []
                final["usage"] = usage
                tail.append(sse(final))
            tail.append(DONE_EVENT)
            events = [sse(o) for o in objs]
            if kind == "malformed":
                events[0] = b'data: {"choices": [{"text": "oops\n\n'
            elif kind == "invalid-utf8":
                events.insert(
                    1, b'data: {"choices":[{"index":0,"text":"\xff\xfe oops","finish_reason":null}]}\n\n'
                )
            elif kind == "stream-error":
                assert fault is not None
                events = events[: fault.count]
                events.append(sse(self._stream_error_body()))
                tail = [DONE_EVENT]
            return StreamReply(events, tail, list(_SSE_HEADERS))
        if kind == "malformed":
            return JsonReply(200, b'{"id": "cmpl-oops", "object": "text_completion", "choices": [{')
        choices = [
            {
                "index": index,
                "text": echoed + (_MARKER if kind == "invalid-utf8" else answer.text),
                "logprobs": None,
                "finish_reason": answer.finish,
                "stop_reason": answer.stop_reason,
                "prompt_logprobs": None,
            }
            for index, answer, echoed in entries
        ]
        obj = dict(base)
        obj["choices"] = choices
        if self.flavor == "legacy":
            obj["usage"] = usage
        else:
            obj.update(
                service_tier=None,
                system_fingerprint=self.fingerprint if self.flavor == "v0.33" else None,
                usage=usage,
                kv_transfer_params=None,
            )
        data = dumps(obj)
        if kind == "invalid-utf8":
            data = data.replace(_MARKER.encode(), b"\xff\xfe oops")
        return JsonReply(200, data)
