"""The gateway's OpenAPI 3.1 document, built once from the very msgspec Structs that decode requests.

Litestar documents only its own handlers, and the inference endpoints are raw ASGI routes (see
`gateway.asgi`), so its document had no request bodies for them. This one describes what the gateway
really accepts and answers: the request Structs (`gateway.openai.requests`), the response Structs
and, for every error, OpenAI's envelope (`ErrorBody`). It is encoded once at start-up and served as
bytes at `/schema/openapi.json`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from gateway.openai.requests import ChatCompletionRequest, CompletionRequest, EmbeddingCreateRequest
from gateway.openai.responses import ChatCompletion, EmbeddingList, ErrorBody, ModelList, TextCompletion
from gateway.openai.responses_api import DeletedResponse, InputItemList, ResponseObject, ResponsesRequest

OPENAPI_PATH: Final = "/schema/openapi.json"
_REF: Final = "#/components/schemas/{name}"


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF.format(name=ref)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    """Every listed status, and any other, answers with OpenAI's error envelope."""
    error = {"description": "An OpenAI-style error", "content": _json("ErrorBody")}
    responses: dict[str, Any] = {str(status): error for status in statuses}
    responses["default"] = error
    return responses


def _inference(summary: str, request: str, answer: str, chunk_doc: str | None) -> dict[str, Any]:
    """One inference operation; `chunk_doc` describes its stream (None: it never streams)."""
    ok: dict[str, Any] = {"description": "The whole answer", "content": _json(answer)}
    if chunk_doc is not None:
        ok["description"] += f", or with `stream: true` {chunk_doc}"
        ok["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "post": {
            "summary": summary,
            "operationId": request[0].lower() + request[1:],
            "requestBody": {"required": True, "content": _json(request)},
            "responses": {
                "200": ok,
                **_errors(400, 401, 403, 404, 408, 413, 429, 502, 503, 504),
            },
        }
    }


def _any_value(type_: Any) -> dict[str, Any]:
    """Fields typed `object` (e.g. a choice's `logprobs`) hold any JSON value."""
    if type_ is object:
        return {"description": "Any JSON value"}
    raise NotImplementedError(type_)


def build_openapi(
    title: str, version: str, models: Sequence[str] = (), embedding_models: Sequence[str] = ()
) -> bytes:
    """The document, encoded; `models` are the public chat model names (and aliases) the gateway
    serves, `embedding_models` those of kind `embeddings`."""
    _, components = msgspec.json.schema_components(
        (
            ChatCompletionRequest,
            CompletionRequest,
            EmbeddingCreateRequest,
            ResponsesRequest,
            ChatCompletion,
            TextCompletion,
            EmbeddingList,
            ResponseObject,
            DeletedResponse,
            InputItemList,
            ModelList,
            ErrorBody,
        ),
        ref_template=_REF,
        schema_hook=_any_value,
    )
    # Only configured names are served (others get a 404): say so, so clients and fuzzers know.
    for request, names in (
        ("ChatCompletionRequest", models),
        ("CompletionRequest", models),
        ("ResponsesRequest", models),
        ("EmbeddingCreateRequest", embedding_models),
    ):
        if names:
            components[request]["properties"]["model"] = {"type": "string", "enum": list(names)}
    model_id = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
    response_id = {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}
    stored = _errors(401, 404, 503)
    plain_ok = {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}}
    document = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": {
            "/v1/chat/completions": _inference(
                "Create a chat completion",
                "ChatCompletionRequest",
                "ChatCompletion",
                "`chat.completion.chunk` server-sent events ending in `data: [DONE]`",
            ),
            "/v1/completions": _inference(
                "Create a (legacy) text completion",
                "CompletionRequest",
                "TextCompletion",
                "`text_completion` server-sent events ending in `data: [DONE]`",
            ),
            "/v1/responses": _inference(
                "Create a model response (OpenAI's Responses API)",
                "ResponsesRequest",
                "ResponseObject",
                "Responses server-sent events (`response.created` ... `response.completed`)",
            ),
            "/v1/responses/{response_id}": {
                "get": {
                    "summary": "Retrieve a stored response",
                    "operationId": "getResponse",
                    "parameters": [response_id],
                    "responses": {"200": {"description": "OK", "content": _json("ResponseObject")}, **stored},
                },
                "delete": {
                    "summary": "Delete a stored response",
                    "operationId": "deleteResponse",
                    "parameters": [response_id],
                    "responses": {
                        "200": {"description": "OK", "content": _json("DeletedResponse")},
                        **stored,
                    },
                },
            },
            "/v1/responses/{response_id}/input_items": {
                "get": {
                    "summary": "List a stored response's input items",
                    "operationId": "listInputItems",
                    "parameters": [
                        response_id,
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                        },
                        {
                            "name": "order",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["asc", "desc"]},
                        },
                        {"name": "after", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {"description": "OK", "content": _json("InputItemList")},
                        **_errors(400, 401, 404, 503),
                    },
                }
            },
            "/v1/responses/{response_id}/cancel": {
                "post": {
                    "summary": "Cancel a background response (the gateway has none: a stored one is a 400)",
                    "operationId": "cancelResponse",
                    "parameters": [response_id],
                    "responses": {"200": {"description": "OK", "content": _json("ResponseObject")}, **stored},
                }
            },
            "/v1/embeddings": _inference(
                "Create embeddings", "EmbeddingCreateRequest", "EmbeddingList", chunk_doc=None
            ),
            "/v1/models": {
                "get": {
                    "summary": "List the models",
                    "operationId": "listModels",
                    "responses": {
                        "200": {"description": "OK", "content": _json("ModelList")},
                        **_errors(401),
                    },
                }
            },
            "/v1/models/{model_id}": {
                "get": {
                    "summary": "Describe one model",
                    "operationId": "getModel",
                    "parameters": [model_id],
                    "responses": {
                        "200": {"description": "OK", "content": _json("ModelObject")},
                        **_errors(401, 403, 404),
                    },
                }
            },
            "/healthz": {"get": {"summary": "Liveness", "operationId": "healthz", "responses": plain_ok}},
            "/readyz": {
                "get": {
                    "summary": "Readiness: 503 while a model has no healthy target",
                    "operationId": "readyz",
                    "responses": {**plain_ok, "503": {"description": "Not ready"}},
                }
            },
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # Keys are optional: without a `keys:` section the gateway serves without one.
        "security": [{"bearer": []}, {}],
    }
    return msgspec.json.encode(document)


__all__ = ("OPENAPI_PATH", "build_openapi")
