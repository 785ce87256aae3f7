"""The OpenAI Responses API: `POST /v1/responses` and the stored-response routes.

`create_response`: decode (strictly) → resolve the model → expand `previous_response_id` and
`item_reference`s from the store → translate to the canonical chat request
(`gateway.translation.responses`) → `serve_translated` (limits, routing, failover, settle: exactly
the chat pipeline) → write a Response object or its event stream
(`gateway.translation.responses_writer`) → store it (`store`, OpenAI's default, true), before the
terminal event is sent so the client's next request can continue it at once.

GET / DELETE `/v1/responses/{id}`, GET `/v1/responses/{id}/input_items` (OpenAI's cursor page:
`limit` 1-100, default 20; `order` desc by default; `after`) and POST `/v1/responses/{id}/cancel`
(only background responses can be cancelled, and the gateway has none: a stored response gets a 400)
read the store (`gateway.state.responses`), scoped to the calling key.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import msgspec

from gateway.api.chat import decode_request, serve_translated, validation_error
from gateway.edge.auth import check_model
from gateway.errors import (
    InvalidRequestError,
    NotFoundError,
    ServiceUnavailableError,
    UnsupportedParameterError,
)
from gateway.ids import hex_id
from gateway.observability.logs import get_logger
from gateway.openai.limits import check_chat_request
from gateway.openai.responses_api import (
    DeletedResponse,
    InputItem,
    InputItemList,
    ItemReference,
    ResponseObject,
    ResponseReasoning,
    ResponsesRequest,
    ResponseText,
    ResponseTextFormat,
    TextFormatJSONObject,
    TextFormatJSONSchema,
    UnsupportedItemError,
    decode_items,
    encoder,
    responses_request_decoder,
)
from gateway.state.responses import VALID_ID, StoredResponse, StoreUnavailable
from gateway.translation.responses import rename_param, translate_responses
from gateway.translation.responses_writer import ResponsesWriter, response_id

if TYPE_CHECKING:
    from gateway.api.chat import ChatResult
    from gateway.context import RequestInfo
    from gateway.edge.auth import KeyPolicy
    from gateway.limits import RateLimits
    from gateway.routing.router import Router
    from gateway.state.responses import ResponseStore

ANONYMOUS: Final = "-"
"""The owner of responses created without keys (no `keys:` section)."""
_ITEM_ID_PREFIX: Final = {
    "message": "msg_",
    "function_call": "fc_",
    "function_call_output": "fco_",
    "reasoning": "rs_",
}
log = get_logger("gateway.responses")


def owner_of(key: KeyPolicy | None) -> str:
    return key.id if key is not None else ANONYMOUS


async def create_response(
    router: Router,
    raw_body: bytes,
    *,
    key: KeyPolicy | None,
    limits: RateLimits | None,
    info: RequestInfo,
    store: ResponseStore,
) -> ChatResult:
    request_id = info.request_id
    payload = decode_request(responses_request_decoder, raw_body)
    info.stream = bool(payload.stream)
    info.user, info.metadata = payload.user, payload.metadata  # for the log line, never upstream
    if payload.input is None and payload.previous_response_id is None:
        raise InvalidRequestError("Missing required parameter: 'input'.", param="input")
    model = router.resolve(payload.model)
    check_model(key, payload.model, model.name)
    owner = owner_of(key)
    raw_items = _raw_input(payload)
    try:
        items = decode_items(raw_items)
    except msgspec.ValidationError as exc:
        raise validation_error(str(exc)) from None
    except UnsupportedItemError as exc:
        raise UnsupportedParameterError(
            f"Input items of type '{exc.kind}' are not supported by this gateway.", param=f"{exc.where}.type"
        ) from None
    history: list[dict[str, Any]] = []
    if payload.previous_response_id is not None:
        previous = None
        if VALID_ID.fullmatch(payload.previous_response_id):
            previous = await _read(store.get(owner, payload.previous_response_id), "previous_response_id")
        if previous is None:
            raise NotFoundError(
                f"Previous response with id '{payload.previous_response_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        history = previous.input_items + [msgspec.to_builtins(item) for item in previous.response.output]
    raw_items, items = await _resolve_references(store, owner, raw_items, items)
    new_input = [_with_id(raw) for raw in raw_items]
    conversation = decode_items(history, "previous_response_id") + items if history else items
    origins = ["previous_response_id"] * len(history) + [f"input[{i}]" for i in range(len(items))]
    chat, translated = translate_responses(
        payload, conversation, origins, public_model=model.name, model=model.config, native=model.native
    )
    try:
        check_chat_request(chat, router.request_limits)
    except InvalidRequestError as exc:
        raise rename_param(exc, []) from None
    shell = response_shell(payload, model.name, translated.request.max_tokens)
    keep = payload.store is not False

    async def persist(response: ResponseObject) -> None:
        await _store(store, owner, response, history, new_input, request_id)

    writer = ResponsesWriter(
        translated, shell, persist=persist if keep else None, max_tool_calls=payload.max_tool_calls
    )
    result = await serve_translated(
        router,
        model,
        translated,
        writer,
        key=key,
        limits=limits,
        info=info,
        explicit_max_tokens=payload.max_output_tokens is not None,
    )
    if keep and writer.final is not None and result.body is not None:
        await persist(writer.final)
        if writer.final.store is False:  # too large to keep: say so (rare, so encoded twice)
            result.body = encoder.encode(writer.final)
    return result


def _raw_input(payload: ResponsesRequest) -> list[dict[str, Any]]:
    if payload.input is None:
        return []
    if isinstance(payload.input, str):
        return [{"type": "message", "role": "user", "content": payload.input}]
    return payload.input


def _with_id(raw: dict[str, Any]) -> dict[str, Any]:
    """The item as stored and listed by `input_items`: typed, with an id."""
    kind = raw.get("type") or ("item_reference" if "role" not in raw else "message")
    item = {**raw, "type": kind}
    if not item.get("id") or item.get("id") == "__fake_id__":
        item["id"] = _ITEM_ID_PREFIX.get(kind, "item_") + hex_id(24)
    if kind == "message" and isinstance(item.get("content"), str):
        part = "output_text" if item.get("role") == "assistant" else "input_text"
        item["content"] = [{"type": part, "text": item["content"]}]
    return item


async def _resolve_references(
    store: ResponseStore, owner: str, raw_items: list[dict[str, Any]], items: list[InputItem]
) -> tuple[list[dict[str, Any]], list[InputItem]]:
    """Every `item_reference` replaced by the stored item it names (one store read for them all)."""
    wanted = [item.id for item in items if isinstance(item, ItemReference)]
    if not wanted:
        return raw_items, items
    found = await _read(store.items(owner, [w for w in wanted if VALID_ID.fullmatch(w)]), "input")
    raws: list[dict[str, Any]] = []
    resolved: list[InputItem] = []
    for i, (raw, item) in enumerate(zip(raw_items, items, strict=True)):
        if isinstance(item, ItemReference):
            target = found.get(item.id)
            if target is None:
                raise NotFoundError(f"Item with id '{item.id}' not found.", param=f"input[{i}].id")
            raws.append(target)
            resolved.extend(decode_items([target], f"input[{i}]"))
        else:
            raws.append(raw)
            resolved.append(item)
    return raws, resolved


async def _read(call: Any, param: str) -> Any:
    try:
        return await call
    except StoreUnavailable:
        raise ServiceUnavailableError(
            "The store of responses is unreachable, so stored responses cannot be read right now; "
            "requests that do not continue a stored response still work.",
            param=param,
            code="store_unavailable",
        ) from None


async def _store(
    store: ResponseStore,
    owner: str,
    response: ResponseObject,
    history: list[dict[str, Any]],
    new_input: list[dict[str, Any]],
    request_id: str,
) -> None:
    """Keep the response, the conversation before it, and its new items (for `item_reference`)."""
    output = [msgspec.to_builtins(item) for item in response.output]
    record = StoredResponse(response=response, input_items=history + new_input)
    try:
        kept = await store.put(owner, record, new_input + output)
    except StoreUnavailable as exc:
        log.warning("response_not_stored", request_id=request_id, response_id=response.id, reason=str(exc))
        return
    if not kept:
        log.warning("response_not_stored", request_id=request_id, response_id=response.id, reason="too_large")
        response.store = False


def response_shell(payload: ResponsesRequest, model: str, max_tokens: int) -> ResponseObject:
    """The in-progress Response object: everything the request settles, echoed as OpenAI does."""
    fmt = payload.text.format if payload.text is not None else None
    if isinstance(fmt, TextFormatJSONSchema):
        text_format = ResponseTextFormat(
            type="json_schema",
            name=fmt.name,
            schema=fmt.schema,
            description=fmt.description or msgspec.UNSET,
            strict=fmt.strict,
        )
    elif isinstance(fmt, TextFormatJSONObject):
        text_format = ResponseTextFormat(type="json_object")
    else:
        text_format = ResponseTextFormat(type="text")
    verbosity = payload.text.verbosity if payload.text is not None and payload.text.verbosity else "medium"
    reasoning = payload.reasoning
    return ResponseObject(
        id=response_id(),
        created_at=int(time.time()),
        status="in_progress",
        instructions=payload.instructions,
        max_output_tokens=payload.max_output_tokens,
        max_tool_calls=payload.max_tool_calls,
        model=model,
        parallel_tool_calls=payload.parallel_tool_calls is not False,
        previous_response_id=payload.previous_response_id,
        prompt_cache_key=payload.prompt_cache_key,
        reasoning=ResponseReasoning(
            effort=reasoning.effort if reasoning is not None else None,
            summary=(reasoning.summary or reasoning.generate_summary) if reasoning is not None else None,
        ),
        safety_identifier=payload.safety_identifier,
        store=payload.store is not False,
        temperature=1.0 if payload.temperature is None else payload.temperature,
        text=ResponseText(format=text_format, verbosity=verbosity),
        tool_choice=payload.tool_choice if payload.tool_choice is not None else "auto",
        tools=payload.tools or [],
        top_logprobs=payload.top_logprobs or 0,
        top_p=1.0 if payload.top_p is None else payload.top_p,
        truncation=payload.truncation or "disabled",
        user=payload.user,
        metadata=payload.metadata or {},
    )


# Stored responses


StoredResponseAction = Callable[
    ["ResponseStore", "KeyPolicy | None", str, Mapping[str, str]], Awaitable[bytes]
]
"""What a stored-response route does: (store, the caller's key, the id, the query) → the JSON body."""


async def retrieve(
    store: ResponseStore, key: KeyPolicy | None, response_id: str, query: Mapping[str, str]
) -> bytes:
    if query.get("stream") in ("true", "1"):
        raise UnsupportedParameterError(
            "Resuming a response's stream ('stream') is not supported by this gateway.", param="stream"
        )
    record = await _stored(store, key, response_id)
    return encoder.encode(record.response)


async def delete(
    store: ResponseStore, key: KeyPolicy | None, response_id: str, query: Mapping[str, str]
) -> bytes:
    found = VALID_ID.fullmatch(response_id) is not None and await _read(
        store.delete(owner_of(key), response_id), "response_id"
    )
    if not found:
        raise _not_found(response_id)
    return encoder.encode(DeletedResponse(id=response_id))


async def cancel(
    store: ResponseStore, key: KeyPolicy | None, response_id: str, query: Mapping[str, str]
) -> bytes:
    await _stored(store, key, response_id)
    raise InvalidRequestError(
        "Cannot cancel a synchronous response: only background responses can be cancelled.",
        param="response_id",
    )


MAX_PAGE: Final = 100
DEFAULT_PAGE: Final = 20


async def input_items(
    store: ResponseStore,
    key: KeyPolicy | None,
    response_id: str,
    query: Mapping[str, str],
) -> bytes:
    limit, order, after = query.get("limit"), query.get("order"), query.get("after")
    try:
        size = DEFAULT_PAGE if limit is None else int(limit)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_PAGE:
        raise InvalidRequestError(
            f"Invalid 'limit': expected an integer between 1 and {MAX_PAGE}.", param="limit"
        )
    if order not in (None, "asc", "desc"):
        raise InvalidRequestError("Invalid 'order': expected 'asc' or 'desc'.", param="order")
    record = await _stored(store, key, response_id)
    items = record.input_items if order == "asc" else record.input_items[::-1]
    if after is not None:
        position = next((i for i, item in enumerate(items) if item.get("id") == after), None)
        if position is None:
            raise InvalidRequestError(f"No input item with id '{after}' in this response.", param="after")
        items = items[position + 1 :]
    page = items[:size]
    return encoder.encode(
        InputItemList(
            data=page,
            first_id=page[0].get("id") if page else None,
            last_id=page[-1].get("id") if page else None,
            has_more=len(items) > size,
        )
    )


async def _stored(store: ResponseStore, key: KeyPolicy | None, response_id: str) -> StoredResponse:
    record: StoredResponse | None = None
    if VALID_ID.fullmatch(response_id):
        record = await _read(store.get(owner_of(key), response_id), "response_id")
    if record is None:
        raise _not_found(response_id)
    return record


def _not_found(response_id: str) -> NotFoundError:
    return NotFoundError(f"Response with id '{response_id}' not found.", param="response_id")


__all__ = ("cancel", "create_response", "delete", "input_items", "owner_of", "response_shell", "retrieve")
