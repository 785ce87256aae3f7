"""`POST /v1/chat/completions`: decode → resolve → translate → route → write.

Kept apart from the Litestar wiring so each phase is a plain function call that can be read (and
measured) in order.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

import msgspec

from gateway.errors import InvalidRequestError
from gateway.openai.requests import ChatCompletionRequest, chat_request_decoder
from gateway.translate import translate
from gateway.writer import ResponseWriter

if TYPE_CHECKING:
    from gateway.routing import Answer, Router

SSE_HEADERS: Final = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_MSGSPEC_PATH: Final = re.compile(r" - at `\$\.?([^`]*)`$")


class ChatResult:
    """What the HTTP layer sends: a whole JSON body, or an SSE body still to be produced."""

    __slots__ = ("body", "headers", "stream")

    def __init__(
        self,
        headers: dict[str, str],
        *,
        body: bytes | None = None,
        stream: AsyncIterator[bytes] | None = None,
    ) -> None:
        self.headers = headers
        self.body = body
        self.stream = stream


def new_request_id() -> str:
    return "req_" + os.urandom(12).hex()


async def chat_completion(router: Router, raw_body: bytes, *, request_id: str) -> ChatResult:
    payload = decode_chat_request(raw_body)
    model = router.resolve(payload.model)
    translated = translate(payload, public_model=model.name, model=model.config)
    answer = await router.open(translated, model, request_id=request_id)
    writer = ResponseWriter(translated)
    headers = {
        "x-request-id": request_id,
        "x-gateway-backend": answer.route.backend,
        "x-gateway-attempts": str(answer.attempts),
    }
    if answer.collected is not None:
        await answer.aclose()
        return ChatResult(headers, body=writer.complete(answer.collected))
    headers.update(SSE_HEADERS)
    relay = _relay(writer, answer)
    await anext(relay)  # enter its try block: from now on, closing or dropping `relay` closes the upstream
    return ChatResult(headers, stream=relay)


async def _relay(writer: ResponseWriter, answer: Answer) -> AsyncIterator[bytes]:
    """The SSE body; closing it (end, error or client disconnect) closes the upstream call.

    Its first item is an empty priming chunk, taken by `chat_completion`: a generator that was never
    started has no `finally` to run, and a client can vanish before the server starts the body.
    """
    try:
        yield b""
        async for chunk in writer.stream(answer.events()):
            yield chunk
    finally:
        await answer.aclose()


def decode_chat_request(body: bytes) -> ChatCompletionRequest:
    """Strict decode; any problem becomes a 400 that names the offending parameter."""
    try:
        return chat_request_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise _validation_error(str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise InvalidRequestError(
            "We could not parse the JSON body of your request. The API expects a JSON payload "
            "(Content-Type: application/json) with a JSON object as its body."
        ) from None


def _validation_error(text: str) -> InvalidRequestError:
    match = _MSGSPEC_PATH.search(text)
    where = match.group(1) if match else ""
    message = text[: match.start()] if match else text
    if missing := re.match(r"Object missing required field `([^`]+)`", message):
        param = f"{where}.{missing.group(1)}" if where else missing.group(1)
        return InvalidRequestError(f"Missing required parameter: '{param}'.", param=param)
    if unknown := re.match(r"Object contains unknown field `([^`]+)`", message):
        name = f"{where}.{unknown.group(1)}" if where else unknown.group(1)
        return InvalidRequestError(f"Unrecognized request argument supplied: {name}", param=name)
    if not where:
        return InvalidRequestError(f"The request body must be a JSON object ({message}).")
    kind = "type" if message.startswith("Expected `") and ", got `" in message else "value"
    return InvalidRequestError(
        f"Invalid {kind} for '{where}': {message[0].lower()}{message[1:]}.", param=where
    )


__all__ = ("ChatResult", "chat_completion", "decode_chat_request", "new_request_id")
