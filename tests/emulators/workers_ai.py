"""Cloudflare Workers AI REST emulator (``POST /client/v4/accounts/{account}/ai/run/{model}``).

Validates bodies against per-model JSON Schemas the way the real service does (HTTP 400, code 5006
"AiError: Bad input: ..."), answers in the model's result shape (legacy ``{response, tool_calls,
usage}``, an OpenAI ``chat.completion`` inside ``result``, or gpt-oss's JSON-instead-of-SSE), and
streams the native SSE dialects. See README.md for the contract.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from jsonschema import Draft202012Validator

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
    continue_answer,
    conversation_from_messages,
    conversation_from_prompt,
    count_prompt_tokens,
    dumps,
    embedding_vector,
    json_reply,
    last_user_text,
    new_hex,
    padding,
    parse_llama_3,
    partial_tokens,
    sse,
    tokenize,
)

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

# --------------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------------

MAX_CONTENT: Final = 131072


def _num(lo: float, hi: float) -> dict[str, Any]:
    return {"type": "number", "minimum": lo, "maximum": hi}


def _int(lo: int, hi: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": lo, "maximum": hi}


_PROPERTY: Final = {
    "type": "object",
    "properties": {"type": {"type": "string"}, "description": {"type": "string"}},
    "required": ["type", "description"],
}
_PARAMETERS: Final = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "required": {"type": "array", "items": {"type": "string"}},
        "properties": {"type": "object", "additionalProperties": _PROPERTY},
    },
    "required": ["type", "properties"],
}
_FUNCTION_FIELDS: Final = {
    "name": {"type": "string"},
    "description": {"type": "string"},
    "parameters": _PARAMETERS,
}
_LEGACY_TOOL: Final = {
    "type": "object",
    "oneOf": [
        {"properties": _FUNCTION_FIELDS, "required": ["name", "description", "parameters"]},
        {
            "properties": {
                "type": {"type": "string"},
                "function": {
                    "type": "object",
                    "properties": _FUNCTION_FIELDS,
                    "required": ["name", "description", "parameters"],
                },
            },
            "required": ["type", "function"],
        },
    ],
}
_FUNCTIONS: Final = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "code": {"type": "string"}},
        "required": ["name", "code"],
    },
}
_LEGACY_RESPONSE_FORMAT: Final = {
    "type": "object",
    "properties": {"type": {"type": "string", "enum": ["json_object", "json_schema"]}, "json_schema": {}},
    "required": ["type"],
}


def _legacy_sampling(top_p: tuple[float, float]) -> dict[str, Any]:
    return {
        "stream": {"type": "boolean"},
        "max_tokens": {"type": "integer"},
        "temperature": _num(0, 5),
        "top_p": _num(*top_p),
        "top_k": _int(1, 50),
        "seed": _int(1, 9999999999),
        "repetition_penalty": _num(0, 2),
        "frequency_penalty": _num(0, 2),
        "presence_penalty": _num(0, 2),
        "response_format": _LEGACY_RESPONSE_FORMAT,
    }


def legacy_schema(top_p: tuple[float, float], *, vision: bool = False) -> dict[str, Any]:
    """The published llama-3.x / hermes input schema: oneOf [Prompt, Messages]."""
    sampling = _legacy_sampling(top_p)
    content: dict[str, Any] = {"type": "string", "maxLength": MAX_CONTENT}
    message_props: dict[str, Any] = {"role": {"type": "string"}, "content": content}
    prompt_props: dict[str, Any] = {
        "prompt": {"type": "string", "minLength": 1, "maxLength": MAX_CONTENT},
        "raw": {"type": "boolean"},
        "lora": {"type": "string"},
        **sampling,
    }
    if vision:
        part = {
            "type": "object",
            "oneOf": [
                {
                    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
                    "required": ["type", "text"],
                },
                {
                    "properties": {
                        "type": {"const": "image_url"},
                        "image_url": {
                            "type": "object",
                            "properties": {"url": {"type": "string"}},
                            "required": ["url"],
                        },
                    },
                    "required": ["type", "image_url"],
                },
            ],
        }
        message_props["content"] = {"oneOf": [content, {"type": "array", "items": part}]}
        message_props["tool_call_id"] = {"type": "string", "pattern": "[a-zA-Z0-9]{9}"}
        prompt_props["image"] = {
            "oneOf": [{"type": "array", "items": _num(0, 255)}, {"type": "string"}],
        }
    return {
        "type": "object",
        "oneOf": [
            {"title": "Prompt", "properties": prompt_props, "required": ["prompt"]},
            {
                "title": "Messages",
                "properties": {
                    "messages": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": message_props,
                            "required": ["role", "content"],
                        },
                    },
                    "functions": _FUNCTIONS,
                    "tools": {"type": "array", "items": _LEGACY_TOOL},
                    **sampling,
                },
                "required": ["messages"],
            },
        ],
    }


def _chat_properties() -> dict[str, Any]:
    """OpenAI-shaped (vLLM-backed) models: ChatCompletions-style options."""
    return {
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
                "required": ["role", "content"],
            },
        },
        "tools": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"const": "function"},
                    "function": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                        "required": ["name"],
                    },
                },
                "required": ["type", "function"],
            },
        },
        "max_tokens": {"type": "integer", "minimum": 1},
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "temperature": _num(0, 2),
        "top_p": _num(0.001, 1),
        "top_k": {"type": "integer"},
        "frequency_penalty": _num(-2, 2),
        "presence_penalty": _num(-2, 2),
        "repetition_penalty": _num(0, 2),
        "seed": {"type": "integer"},
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object"},
        "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "n": {"type": "integer", "minimum": 1},
        "parallel_tool_calls": {"type": "boolean"},
        "response_format": {
            "type": "object",
            "properties": {
                "type": {"enum": ["text", "json_object", "json_schema"]},
                "json_schema": {"type": "object"},
            },
            "required": ["type"],
        },
        "reasoning_effort": {"enum": ["low", "medium", "high", None]},
        "chat_template_kwargs": {"type": "object"},
    }


def chat_schema() -> dict[str, Any]:
    return {"type": "object", "properties": _chat_properties(), "required": ["messages"]}


def gpt_oss_schema() -> dict[str, Any]:
    responses = {
        "title": "Responses",
        "properties": {
            "input": {
                "oneOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
                            "required": ["role", "content"],
                        },
                    },
                ]
            },
            "reasoning": {
                "type": "object",
                "properties": {
                    "effort": {"enum": ["low", "medium", "high"]},
                    "summary": {"enum": ["auto", "concise", "detailed"]},
                },
            },
        },
        "required": ["input"],
    }
    chat = {"title": "Messages", "properties": _chat_properties(), "required": ["messages"]}
    return {"type": "object", "oneOf": [responses, chat]}


# --------------------------------------------------------------------------------------------------
# Model table
# --------------------------------------------------------------------------------------------------

Shape = Literal["legacy", "openai"]


@dataclass(frozen=True)
class WAModel:
    name: str
    shape: Shape
    schema: dict[str, Any]
    reasoning_field: str | None = None
    """`reasoning_content` / `reasoning` for reasoning models (shape "openai")."""
    stream_as_json: bool = False
    """gpt-oss: `stream: true` is ignored and a JSON envelope comes back."""
    vision: bool = False
    json_mode_streams: bool = False
    """False: `stream` + `response_format` → 400 "JSON Mode currently doesn't support streaming"."""
    context_window: int = 24000

    def validator(self) -> Draft202012Validator:
        return Draft202012Validator(self.schema)


LLAMA_33: Final = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
HERMES: Final = "@hf/nousresearch/hermes-2-pro-mistral-7b"
QWEN3: Final = "@cf/qwen/qwen3-30b-a3b-fp8"
GPT_OSS: Final = "@cf/openai/gpt-oss-120b"
LLAMA_VISION: Final = "@cf/meta/llama-3.2-11b-vision-instruct"

DEFAULT_MODELS: Final[tuple[WAModel, ...]] = (
    WAModel(LLAMA_33, "legacy", legacy_schema((0.001, 1))),
    WAModel(HERMES, "legacy", legacy_schema((0, 2))),
    WAModel(QWEN3, "openai", chat_schema(), reasoning_field="reasoning_content", json_mode_streams=True),
    WAModel(
        GPT_OSS,
        "openai",
        gpt_oss_schema(),
        reasoning_field="reasoning",
        stream_as_json=True,
        json_mode_streams=True,
        context_window=128000,
    ),
    WAModel(LLAMA_VISION, "legacy", legacy_schema((0, 2), vision=True), vision=True, context_window=128000),
)


@dataclass(frozen=True)
class WAEmbeddingModel:
    """An embedding model on `/ai/run` (contract §3.2): `{text: str | str[]}` → `{shape, data}`."""

    name: str
    dimensions: int
    batch_limit: int = 100
    max_tokens: int = 512
    """Longer texts (counted as ceil(characters / 4)) are refused with 5006."""
    pooling: bool = True
    """bge v1.5: `pooling` (`mean` | `cls`) is accepted and echoed in the result."""

    def schema(self) -> dict[str, Any]:
        text = {"type": "string", "minLength": 1}
        properties: dict[str, Any] = {
            "text": {"oneOf": [text, {"type": "array", "items": text, "maxItems": self.batch_limit}]}
        }
        if self.pooling:
            properties["pooling"] = {"type": "string", "enum": ["mean", "cls"]}
        return {"type": "object", "properties": properties, "required": ["text"]}


BGE_SMALL: Final = "@cf/baai/bge-small-en-v1.5"
BGE_BASE: Final = "@cf/baai/bge-base-en-v1.5"
BGE_LARGE: Final = "@cf/baai/bge-large-en-v1.5"
BGE_M3: Final = "@cf/baai/bge-m3"
QWEN3_EMBEDDING: Final = "@cf/qwen/qwen3-embedding-0.6b"

DEFAULT_EMBEDDING_MODELS: Final[tuple[WAEmbeddingModel, ...]] = (
    WAEmbeddingModel(BGE_SMALL, 384),
    WAEmbeddingModel(BGE_BASE, 768),
    WAEmbeddingModel(BGE_LARGE, 1024),
    WAEmbeddingModel(BGE_M3, 1024, max_tokens=8192, pooling=False),
    WAEmbeddingModel(QWEN3_EMBEDDING, 1024, batch_limit=32, max_tokens=8192, pooling=False),
)

# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------

CF_MESSAGES: Final[dict[int, str]] = {
    3003: "Request is missing headers or body: body",
    3006: "Request is too large",
    3007: "Request timeout",
    3008: "Request was aborted",
    3021: "rate limiting: inference request per min rate reached",
    3023: "Service unavailable for account",
    3036: (
        "You have used up your daily free allocation of 10,000 neurons, please upgrade to Cloudflare's "
        "Workers Paid plan if you would like to continue usage."
    ),
    3040: "No more data centers to forward the request to",
    3042: "The model name is invalid",
    3043: "Internal server error",
    4006: "you have used up your daily free allocation of 10,000 neurons",
    5004: "Invalid data type for base64 input: string",
    5006: "AiError: Bad input: Error: Invalid input",
    5016: "User has not agreed to Llama3.2 model terms",
    5035: "This model requires a Workers Paid plan.",
    7003: "Could not route to /client/v4/accounts, perhaps your object identifier is invalid?",
    7009: "Upstream service unavailable",
    8001: "Invalid input",
    8006: "AiError: forced tool call could not be produced within max_tokens",
    10000: "Authentication error",
}
DEFAULT_CODE_BY_STATUS: Final[dict[int, int]] = {
    400: 5006,
    401: 10000,
    403: 10000,
    404: 7003,
    408: 3007,
    413: 3006,
    429: 3040,
    502: 7009,
    503: 7009,
}


def cf_error(
    status: int, code: int, message: str, *, full: bool = True, headers: Headers | None = None
) -> JsonReply:
    """A Cloudflare v4 error envelope. `full` adds `"result": {}` and `"messages": []` (5006/5007 form)."""
    errors = [{"message": message, "code": code}]
    obj: dict[str, Any]
    if full:
        obj = {"errors": errors, "success": False, "result": {}, "messages": []}
    else:
        obj = {"success": False, "errors": [{"code": code, "message": message}]}
    return json_reply(status, obj, headers)


def route_error(target: str) -> JsonReply:
    return json_reply(
        404,
        {
            "success": False,
            "errors": [
                {
                    "code": 7003,
                    "message": f"Could not route to {target}, perhaps your object identifier is invalid?",
                }
            ],
            "messages": [],
            "result": None,
        },
    )


def _ai_gateway_error(code: int, message: str) -> dict[str, Any]:
    """AI Gateway's own error body (its `error` list, unlike the v4 API's `errors`)."""
    return {"success": False, "result": [], "messages": [], "error": [{"code": code, "message": message}]}


def _retried_by_ai_gateway(fault: Fault | None) -> bool:
    return fault is not None and fault.kind == "status" and (fault.status == 429 or fault.status >= 500)


def bad_input(detail: str) -> JsonReply:
    return cf_error(400, 5006, f"AiError: Bad input: Error: {detail}")


def _js_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _pointer(err: ValidationError) -> str:
    return "/" + "/".join(str(p) for p in err.absolute_path)


def format_error(err: ValidationError) -> str:
    """One schema failure in Cloudflare's wording (oneOf/required/type verbatim, the rest approximated)."""
    path = _pointer(err)
    kind = err.validator
    if kind in ("oneOf", "anyOf"):
        options = err.validator_value if isinstance(err.validator_value, list) else []
        failing = {e.relative_schema_path[0] for e in err.context or [] if e.relative_schema_path}
        matches = len(options) - len(failing)
        subs = list(dict.fromkeys(format_error(e) for e in err.context or []))
        text = f"{kind} at '{path}' not met, {matches} matches"
        return f"{text}: {', '.join(subs)}" if subs else text
    if kind == "required":
        instance = err.instance if isinstance(err.instance, dict) else {}
        required = err.validator_value if isinstance(err.validator_value, list) else []
        missing = [r for r in required if r not in instance]
        return f"required properties at '{path}' are '{','.join(missing)}'"
    if kind == "type":
        expected = err.validator_value
        names = ",".join(expected) if isinstance(expected, list) else str(expected)
        return f"Type mismatch of '{path}', '{_js_type(err.instance)}' not in '{names}'"
    if kind in ("minimum", "exclusiveMinimum"):
        return f"Value {err.instance} at '{path}' is less than minimum {err.validator_value}"
    if kind in ("maximum", "exclusiveMaximum"):
        return f"Value {err.instance} at '{path}' is greater than maximum {err.validator_value}"
    if kind == "maxLength":
        return f"String at '{path}' is longer than {err.validator_value} characters"
    if kind == "minLength":
        return f"String at '{path}' is shorter than {err.validator_value} characters"
    if kind in ("enum", "const"):
        return f"Value at '{path}' is not one of the allowed values"
    if kind == "pattern":
        return f"String at '{path}' does not match pattern {err.validator_value}"
    return f"{err.message} at '{path}'"


def schema_failure(validator: Draft202012Validator, body: Any) -> str | None:
    errors = list(validator.iter_errors(body))
    if not errors:
        return None
    return ", ".join(dict.fromkeys(format_error(e) for e in errors))


# --------------------------------------------------------------------------------------------------
# Emulator
# --------------------------------------------------------------------------------------------------

_RUN_RE: Final = re.compile(r"^/client/v4/accounts/([^/]+)/ai/run/(.+)$")
_SEARCH_RE: Final = re.compile(r"^/client/v4/accounts/([^/]+)/ai/models/search$")
_AI_GATEWAY_RE: Final = re.compile(r"^/v1/([^/]+)/([^/]+)/workers-ai/(.+)$")
"""Cloudflare AI Gateway's Workers AI route: /v1/{account_id}/{gateway_id}/workers-ai/{model}."""
AI_GATEWAY_MAX_ATTEMPTS: Final = 5
"""AI Gateway's documented ceiling for `cf-aig-max-attempts`."""
_SSE_HEADERS: Final[Headers] = [(b"content-type", b"text/event-stream")]
_JSON_MARKER: Final = "\u2063EMU-INVALID-UTF8\u2063"


def _envelope(result: Any) -> dict[str, Any]:
    return {"result": result, "success": True, "errors": [], "messages": []}


def _is_openai_envelope(json_schema: Any) -> bool:
    return (
        isinstance(json_schema, dict)
        and "name" in json_schema
        and "schema" in json_schema
        and "type" not in json_schema
        and "properties" not in json_schema
    )


def _tool_call_as_text(answer: Answer, form: str) -> None:
    """`[[emu:tool-in-text]]`: the model writes its tool call as JSON text (llama, gpt-oss; contract §4.5).

    Forms: "" → `{"name", "arguments"}`, `parameters` → `{"name", "parameters"}` (llama 3's own),
    `bare` → the arguments object alone, `fenced` → the default form in a ```json fence. No
    `tool_calls`, finish `stop`; the text streams token by token like any answer.
    """
    call = answer.tool_calls[0]
    value: Any = {"name": call.name, "arguments": call.arguments}
    if form == "parameters":
        value = {"name": call.name, "parameters": call.arguments}
    elif form == "bare":
        value = call.arguments
    text = json.dumps(value, ensure_ascii=False)
    if form == "fenced":
        text = f"```json\n{text}\n```"
    answer.tool_calls = []
    answer.tokens = tokenize(text)
    answer.finish = "stop"
    answer.completion_tokens = len(answer.reasoning) + len(answer.tokens)


class WorkersAIEmulator(EmulatorBase):
    """Emulates ``api.cloudflare.com/client/v4/accounts/{account_id}/ai/run/{model}``.

    With `ai_gateway_id`, it also serves Cloudflare AI Gateway's form of the same route,
    ``/v1/{account_id}/{gateway_id}/workers-ai/{model}``: `cf-aig-authorization` is checked against
    `ai_gateway_token` (when set; 401 with AI Gateway's error 2009 otherwise), and a failed attempt
    (429 or 5xx, from a fault) is retried inside the emulated gateway up to `cf-aig-max-attempts`
    times, or `ai_gateway_max_attempts` (the gateway's own retry policy) without that header. Each AI
    Gateway request's attempt count is appended to `ai_gateway_attempts`.
    """

    fault_kinds: ClassVar[frozenset[str]] = COMMON_FAULT_KINDS | {"json-body"}

    def __init__(
        self,
        account_id: str = "acct-123",
        api_token: str = "cf-test-token",
        models: tuple[WAModel, ...] = DEFAULT_MODELS,
        embedding_models: tuple[WAEmbeddingModel, ...] = DEFAULT_EMBEDDING_MODELS,
        *,
        ai_gateway_id: str | None = None,
        ai_gateway_token: str | None = None,
        ai_gateway_max_attempts: int = 1,
    ) -> None:
        super().__init__()
        self.ai_gateway_id = ai_gateway_id
        self.ai_gateway_token = ai_gateway_token
        self.ai_gateway_max_attempts = ai_gateway_max_attempts
        self.ai_gateway_attempts: list[int] = []
        self.account_id = account_id
        self.api_token = api_token
        self.models: dict[str, WAModel] = {m.name: m for m in models}
        self._validators: dict[str, Draft202012Validator] = {m.name: m.validator() for m in models}
        self.embedding_models: dict[str, WAEmbeddingModel] = {m.name: m for m in embedding_models}
        for embedding in embedding_models:
            self._validators[embedding.name] = Draft202012Validator(embedding.schema())

    def embedding_for(self, model: str, text: str, pooling: str = "mean") -> list[float]:
        """The vector this emulator answers for `text` (what a test compares the client's with)."""
        spec = self.embedding_models[model]
        return embedding_vector(model, text, spec.dimensions, pooling if spec.pooling else "")

    def base_url(self, server_url: str) -> str:
        """`server_url` + ``/client/v4/accounts/{account_id}/ai/run/`` (append the model name)."""
        return f"{server_url}/client/v4/accounts/{self.account_id}/ai/run/"

    # -- routing -----------------------------------------------------------------------------------------

    def _authorized(self, conn: Connection) -> bool:
        scheme, _, token = conn.record.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token.strip() == self.api_token

    def reset(self) -> None:
        super().reset()
        self.ai_gateway_attempts.clear()

    def _ai_gateway_refusal(self, conn: Connection, gateway_id: str) -> JsonReply | None:
        if gateway_id != self.ai_gateway_id:
            return json_reply(404, _ai_gateway_error(2001, "Gateway not found"))
        if self.ai_gateway_token is not None:
            presented = conn.record.headers.get("cf-aig-authorization", "")
            if presented != f"Bearer {self.ai_gateway_token}":
                return json_reply(401, _ai_gateway_error(2009, "Unauthorized"))
        return None

    def _ai_gateway_attempts(self, conn: Connection) -> int:
        value = conn.record.headers.get("cf-aig-max-attempts")
        attempts = int(value) if value is not None and value.isdigit() else self.ai_gateway_max_attempts
        return max(1, min(attempts, AI_GATEWAY_MAX_ATTEMPTS))

    async def dispatch(self, conn: Connection) -> None:
        path = conn.record.path
        match = _RUN_RE.match(path)
        gateway = _AI_GATEWAY_RE.match(path) if match is None and self.ai_gateway_id is not None else None
        if gateway is not None:
            refusal = self._ai_gateway_refusal(conn, gateway.group(2))
            if refusal is not None:
                await self.send_reply(conn, refusal)
                return
            match = gateway
        if match is None:
            search = _SEARCH_RE.match(path)
            if search is not None and conn.record.method == "GET":
                await self._models_search(conn, search.group(1))
                return
            await self.send_reply(conn, route_error(path))
            return
        account, model_name = match.group(1), match.group(match.lastindex or 2)
        if not self._authorized(conn):
            await self.send_reply(conn, cf_error(403, 10000, "Authentication error", full=False))
            return
        if account != self.account_id or conn.record.method != "POST":
            await self.send_reply(conn, route_error(f"/client/v4/accounts/{account}/ai/run"))
            return
        embedding = self.embedding_models.get(model_name)
        if embedding is not None:
            await self._embeddings(conn, embedding)
            return
        model = self.models.get(model_name)
        if model is None:
            await self.send_reply(conn, cf_error(400, 5007, f"No such model {model_name} or task"))
            return
        body = conn.record.body
        directive_text = ""
        if isinstance(body, dict):
            directive_text = last_user_text(body.get("messages"))
            if isinstance(body.get("prompt"), str):
                directive_text = body["prompt"]
            elif isinstance(body.get("input"), str):
                directive_text = body["input"]
        try:
            fault = self.take_fault(conn.record, directive_text)
            if gateway is not None:
                attempts, allowed = 1, self._ai_gateway_attempts(conn)
                while attempts < allowed and _retried_by_ai_gateway(fault):
                    attempts += 1  # the gateway calls the model again; the client sees only the last try
                    fault = self.take_fault(conn.record, directive_text)
                self.ai_gateway_attempts.append(attempts)
        except BadDirective as exc:
            await self.bad_directive(conn, exc)
            return
        if await self.prelude(conn, fault):
            return
        if fault is not None and fault.kind == "status":
            await self.send_reply(conn, self._status_reply(fault, model_name))
            return
        reply = self._handle(conn, model, fault)
        await self.send_reply(
            conn, reply, fault if isinstance(reply, StreamReply) or reply.status == 200 else None
        )

    async def _embeddings(self, conn: Connection, model: WAEmbeddingModel) -> None:
        """`{text}` → `{shape: [n, dim], data, pooling?}`; faults as for the other models (README)."""
        body = conn.record.body
        text = body.get("text") if isinstance(body, dict) else None
        texts = [text] if isinstance(text, str) else [t for t in text or [] if isinstance(t, str)]
        try:
            fault = self.take_fault(conn.record, " ".join(texts))
        except BadDirective as exc:
            await self.bad_directive(conn, exc)
            return
        if await self.prelude(conn, fault):
            return
        if fault is not None and fault.kind == "status":
            await self.send_reply(conn, self._status_reply(fault, model.name))
            return
        raw = conn.record.raw_body
        if not raw.strip():
            await self.send_reply(conn, cf_error(400, 3003, CF_MESSAGES[3003]))
            return
        if body is None:
            await self.send_reply(conn, bad_input("Invalid JSON in request body"))
            return
        failure = schema_failure(self._validators[model.name], body)
        if failure is not None:
            await self.send_reply(conn, bad_input(failure))
            return
        for index, item in enumerate(texts):
            tokens = count_prompt_tokens([item])
            if tokens > model.max_tokens:
                detail = f"input {index} has {tokens} tokens, more than the model's {model.max_tokens}"
                await self.send_reply(conn, bad_input(detail))
                return
        pooling = str(body.get("pooling", "mean")) if model.pooling else ""
        result: dict[str, Any] = {
            "shape": [len(texts), model.dimensions],
            "data": [embedding_vector(model.name, item, model.dimensions, pooling) for item in texts],
        }
        if model.pooling:
            result["pooling"] = pooling
        kind = fault.kind if fault is not None else None
        if kind == "malformed":
            await self.send_reply(conn, JsonReply(200, b'{"result": {"shape": [1, 3], "data": [[0.1,'))
            return
        reply = json_reply(200, _envelope(result))
        if kind == "invalid-utf8":
            reply = JsonReply(200, reply.body.replace(b'"data"', b'"d\xff\xfeta"', 1))
        await self.send_reply(conn, reply, fault)

    async def _models_search(self, conn: Connection, account: str) -> None:
        if not self._authorized(conn):
            await self.send_reply(conn, cf_error(403, 10000, "Authentication error", full=False))
            return
        if account != self.account_id:
            await self.send_reply(conn, route_error(conn.record.path))
            return
        result = [
            {
                "id": new_hex(),
                "name": m.name,
                "task": {"name": "Text Generation"},
                "properties": [{"property_id": "context_window", "value": str(m.context_window)}],
            }
            for m in self.models.values()
        ]
        await self.send_reply(conn, json_reply(200, _envelope(result)))

    def _status_reply(self, fault: Fault, model_name: str) -> JsonReply:
        code = fault.code if fault.code is not None else DEFAULT_CODE_BY_STATUS.get(fault.status, 3043)
        headers: Headers = []
        if fault.retry_after is not None:
            headers.append((b"retry-after", fault.retry_after.encode()))
        if code == 7003:
            return route_error(f"/client/v4/accounts/{self.account_id}/ai/run")
        if code == 5007:
            return cf_error(fault.status, code, f"No such model {model_name} or task", headers=headers)
        message = CF_MESSAGES.get(code, "Internal server error")
        full = code in (5006, 5007, 8001, 3003, 5004)
        return cf_error(fault.status, code, message, full=full, headers=headers)

    # -- request handling -------------------------------------------------------------------------------

    def _handle(self, conn: Connection, model: WAModel, fault: Fault | None) -> Reply:
        raw = conn.record.raw_body
        if not raw.strip():
            return cf_error(400, 3003, CF_MESSAGES[3003])
        body = conn.record.body
        if body is None and raw.strip() != b"null":
            return bad_input("Invalid JSON in request body")
        failure = schema_failure(self._validators[model.name], body)
        if failure is not None:
            return bad_input(failure)
        assert isinstance(body, dict)
        stream = body.get("stream") is True
        response_format = body.get("response_format")
        json_mode: JsonMode | None = None
        if isinstance(response_format, dict) and response_format.get("type") in (
            "json_object",
            "json_schema",
        ):
            schema = response_format.get("json_schema")
            if model.shape == "legacy" and _is_openai_envelope(schema):
                return bad_input(
                    "response_format.json_schema must be a JSON Schema object; got an OpenAI "
                    "{name, schema} envelope"
                )
            if stream and not model.json_mode_streams:
                return cf_error(400, 5006, "JSON Mode currently doesn't support streaming")
            if _is_openai_envelope(schema):
                assert isinstance(schema, dict)
                schema = schema["schema"]
            if response_format.get("type") == "json_object" or not isinstance(schema, dict):
                schema = None
            json_mode = JsonMode(schema)
        if model.vision:
            error = self._vision_check(body)
            if error is not None:
                return error
        if model.shape == "openai":
            error = self._openai_checks(body)
            if error is not None:
                return error
        if model.name == GPT_OSS and "input" in body:
            return self._responses_reply(model, body)
        messages = body.get("messages")
        partial: str | None = None
        if isinstance(messages, list):
            conv = conversation_from_messages(messages)
        else:
            prompt = str(body.get("prompt", ""))
            templated = parse_llama_3(prompt) if body.get("raw") is True else None
            if templated is not None:
                # A continuation: the conversation in Llama 3's template, ending inside the answer.
                turns, partial = templated
                conn.record.continued = partial
                conv = conversation_from_messages(turns)
            else:
                conv = conversation_from_prompt(prompt)
        answer = self._answer(model, body, conv, json_mode, fault, partial)
        if partial is not None:
            continued = continue_answer(answer, partial)
            if continued is None:
                return bad_input("emulator: the prompt's assistant turn is not the start of this answer")
            answer = continued
        if model.shape == "legacy":
            if stream and not (fault is not None and fault.kind == "json-body"):
                return self._legacy_stream(answer, conv, fault)
            return self._legacy_json(answer, conv, fault)
        if stream and not model.stream_as_json and not (fault is not None and fault.kind == "json-body"):
            return self._openai_stream(model, answer, fault)
        return self._openai_json(model, answer, fault)

    def _vision_check(self, body: dict[str, Any]) -> JsonReply | None:
        for msg in body.get("messages") or []:
            content = msg.get("content") if isinstance(msg, dict) else None
            if not isinstance(content, list):
                continue
            for part in content:
                url = part.get("image_url", {}).get("url") if isinstance(part, dict) else None
                if isinstance(url, str) and not url.startswith("data:"):
                    return bad_input("HTTP URL will not be accepted")
        return None

    def _openai_checks(self, body: dict[str, Any]) -> JsonReply | None:
        invalid = cf_error(400, 8001, CF_MESSAGES[8001])
        tool_choice = body.get("tool_choice")
        tools = body.get("tools")
        names = {
            t["function"]["name"]
            for t in tools or []
            if isinstance(t, dict) and isinstance(t.get("function"), dict) and "name" in t["function"]
        }
        if tool_choice is not None:
            if isinstance(tool_choice, str):
                if tool_choice not in ("auto", "none", "required"):
                    return invalid
            elif isinstance(tool_choice, dict):
                fn = tool_choice.get("function")
                if (
                    tool_choice.get("type") != "function"
                    or not isinstance(fn, dict)
                    or fn.get("name") not in names
                ):
                    return invalid
            else:
                return invalid
        for tool in tools or []:
            fn = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(fn, dict) and "description" in fn and not isinstance(fn["description"], str):
                return invalid
        return None

    def _answer(
        self,
        model: WAModel,
        body: dict[str, Any],
        conv: Conversation,
        json_mode: JsonMode | None,
        fault: Fault | None,
        partial: str | None = None,
    ) -> Answer:
        max_tokens = body.get("max_tokens")
        if model.shape == "openai" and isinstance(body.get("max_completion_tokens"), int):
            max_tokens = body["max_completion_tokens"]
        if partial is not None:  # the budget is the continuation's: the whole answer has the partial too
            max_tokens = (max_tokens if isinstance(max_tokens, int) else 256) + partial_tokens(partial)
        reasoning = False
        if model.reasoning_field is not None:
            kwargs = body.get("chat_template_kwargs")
            reasoning = not (isinstance(kwargs, dict) and kwargs.get("enable_thinking") is False)
        stop = body.get("stop") if model.shape == "openai" else None
        stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]
        answer = build_answer(
            conv,
            tools=body.get("tools"),
            tool_choice=body.get("tool_choice"),
            max_tokens=max_tokens if isinstance(max_tokens, int) else 256,
            reasoning=reasoning,
            json_mode=json_mode,
            stop=stops,
            huge=fault.count if fault is not None and fault.kind == "huge" else None,
        )
        form = conv.directives.get("tool-in-text")
        if form is not None and answer.tool_calls:
            _tool_call_as_text(answer, form)
        return answer

    # -- legacy shape (A) -------------------------------------------------------------------------------

    def _legacy_result(self, answer: Answer, conv: Conversation) -> Any:
        usage = answer.usage()
        directives = conv.directives
        if answer.tool_calls:
            if directives.get("toolcalls") == "openai":
                calls: list[dict[str, Any]] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments_json},
                    }
                    for c in answer.tool_calls
                ]
                return {"tool_calls": calls, "usage": usage}
            flat = [{"name": c.name, "arguments": c.arguments} for c in answer.tool_calls]
            return {"response": None, "tool_calls": flat, "usage": usage}
        if directives.get("result") == "string":
            return answer.text
        if directives.get("response") == "number":
            return {"response": 42, "tool_calls": [], "usage": usage}
        if directives.get("response") == "null":
            return {"response": None, "tool_calls": [], "usage": usage}
        response: Any = answer.json_value if answer.is_json else answer.text
        return {"response": response, "tool_calls": [], "usage": usage}

    def _legacy_json(self, answer: Answer, conv: Conversation, fault: Fault | None) -> JsonReply:
        kind = fault.kind if fault is not None else None
        if kind == "malformed":
            return JsonReply(200, b'{"result": {"response": "oops')
        if kind == "invalid-utf8":
            answer.tokens = [_JSON_MARKER]
            answer.is_json = False
            body = dumps(_envelope(self._legacy_result(answer, conv)))
            return JsonReply(200, body.replace(_JSON_MARKER.encode(), b"\xff\xfe oops"))
        return json_reply(200, _envelope(self._legacy_result(answer, conv)))

    def _legacy_stream(self, answer: Answer, conv: Conversation, fault: Fault | None) -> StreamReply:
        events: list[bytes] = [sse({"response": "", "tool_calls": [], "p": padding()})]
        if answer.tool_calls:
            if conv.directives.get("toolstream") == "incremental":
                for i, call in enumerate(answer.tool_calls):
                    events.append(
                        sse(
                            {
                                "tool_calls": [
                                    {
                                        "id": call.id,
                                        "type": "function",
                                        "index": i,
                                        "function": {"name": call.name},
                                    }
                                ]
                            }
                        )
                    )
                    events.extend(
                        sse({"tool_calls": [{"index": i, "function": {"arguments": frag}}]})
                        for frag in call.fragments()
                    )
                events.append(
                    sse(
                        {
                            "tool_calls": [
                                {"id": None, "type": None, "function": {"name": None, "arguments": ""}}
                            ]
                        }
                    )
                )
                events.append(sse({"finish_reason": "tool_calls"}))
            else:
                flat = [{"name": c.name, "arguments": c.arguments} for c in answer.tool_calls]
                events.append(sse({"response": "", "tool_calls": flat, "p": padding()}))
        else:
            events.extend(sse({"response": tok, "tool_calls": [], "p": padding()}) for tok in answer.tokens)
            events.append(sse({"response": "", "tool_calls": [], "p": padding()}))
        events.append(sse({"tool_calls": [], "p": padding()}))
        self._stream_faults(events, fault, b'data: {"response": "oops\n\n', b'{"response":"\xff\xfe oops"}')
        return StreamReply(
            events, [sse({"response": "", "usage": answer.usage()}), DONE_EVENT], list(_SSE_HEADERS)
        )

    @staticmethod
    def _stream_faults(
        events: list[bytes], fault: Fault | None, malformed: bytes, invalid_json: bytes
    ) -> None:
        if fault is None:
            return
        if fault.kind == "malformed":
            events[0] = malformed
        elif fault.kind == "invalid-utf8":
            events.insert(1, b"data: " + invalid_json + b"\n\n")

    # -- OpenAI shape (B) ----------------------------------------------------------------------------------

    def _openai_message(self, model: WAModel, answer: Answer) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant"}
        if model.reasoning_field is not None:
            message[model.reasoning_field] = answer.reasoning_text if answer.reasoning else None
        if answer.tool_calls:
            message["content"] = "\n\n" if model.name == QWEN3 else None
        else:
            message["content"] = answer.text
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
            for c in answer.tool_calls
        ]
        return message

    def _openai_json(self, model: WAModel, answer: Answer, fault: Fault | None) -> JsonReply:
        kind = fault.kind if fault is not None else None
        if kind == "malformed":
            return JsonReply(200, b'{"result": {"id": "chatcmpl-oops", "choices": [{')
        if kind == "invalid-utf8":
            answer.tokens = [_JSON_MARKER]
        result = {
            "id": "chatcmpl-" + new_hex(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model.name,
            "choices": [
                {
                    "index": 0,
                    "message": self._openai_message(model, answer),
                    "logprobs": None,
                    "finish_reason": answer.finish,
                    "stop_reason": answer.stop_reason,
                }
            ],
            "usage": answer.usage(),
            "prompt_logprobs": None,
        }
        body = dumps(_envelope(result))
        if kind == "invalid-utf8":
            body = body.replace(_JSON_MARKER.encode(), b"\xff\xfe oops")
        return JsonReply(200, body)

    def _openai_stream(self, model: WAModel, answer: Answer, fault: Fault | None) -> StreamReply:
        field = model.reasoning_field or "reasoning_content"
        chunk_id = "chatcmpl-" + new_hex()
        created = int(time.time())
        counter = [0]

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            obj: dict[str, Any] = {}
            if counter[0] % 2 == 1:  # every other chunk carries the OpenAI envelope fields
                obj = {
                    "id": chunk_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model.name,
                }
            counter[0] += 1
            obj["choices"] = [{"delta": delta, "finish_reason": finish, "index": 0}]
            obj.update(extra)
            return sse(obj)

        events = [chunk({"content": "", field: None, "role": "assistant"})]
        events.extend(chunk({"content": None, field: tok}) for tok in answer.reasoning)
        events.extend(chunk({"content": tok, field: None}) for tok in answer.tokens)
        for i, call in enumerate(answer.tool_calls):
            header = {
                "function": {"arguments": "", "name": call.name},
                "id": call.id,
                "index": i,
                "type": "function",
            }
            events.append(chunk({"content": None, "tool_calls": [header]}))
            events.extend(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "function": {"arguments": frag, "name": None},
                                "id": None,
                                "index": i,
                                "type": "function",
                            }
                        ]
                    }
                )
                for frag in call.fragments()
            )
        events.append(chunk({field: None}, answer.finish, usage={"prompt_tokens": 0, "completion_tokens": 0}))
        self._stream_faults(
            events,
            fault,
            b'data: {"choices": [{"delta": {"content": "oops\n\n',
            b'{"choices":[{"delta":{"content":"\xff\xfe oops"},"finish_reason":null,"index":0}]}',
        )
        tail = [sse({"response": "", "usage": answer.usage()}), DONE_EVENT]
        return StreamReply(events, tail, list(_SSE_HEADERS))

    def _responses_reply(self, model: WAModel, body: dict[str, Any]) -> JsonReply:
        raw_input = body["input"]
        if isinstance(raw_input, str):
            conv = conversation_from_prompt(raw_input)
        else:
            conv = conversation_from_messages(raw_input)
        answer = build_answer(conv, reasoning=True)
        result = {
            "id": "resp_" + new_hex(),
            "object": "response",
            "created_at": int(time.time()),
            "model": model.name,
            "status": "completed",
            "output": [
                {
                    "id": "rs_" + new_hex(),
                    "type": "reasoning",
                    "summary": [],
                    "content": [{"type": "reasoning_text", "text": answer.reasoning_text}],
                },
                {
                    "id": "msg_" + new_hex(),
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": answer.text, "annotations": []}],
                },
            ],
            "usage": {
                "input_tokens": answer.prompt_tokens,
                "output_tokens": answer.completion_tokens,
                "total_tokens": answer.prompt_tokens + answer.completion_tokens,
            },
        }
        return json_reply(200, _envelope(result))
