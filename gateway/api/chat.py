"""`POST /v1/chat/completions`: decode → resolve → translate → limit → route → write → settle.

Kept apart from the Litestar wiring so each phase is a plain function call that can be read (and
measured) in order. The caller has already authenticated the key (before reading the body). The
rate-limit decision needs the translated request's token estimate and comes before any upstream
call; the answer's real usage is settled when it ends: before a whole answer is returned, before a
stream's last event (`data: [DONE]`; the writer's `final_event`, so the client's next request sees
the charge), or, for a stream that fails or whose client goes away, when the relay closes.
`serve_translated` (limit → route → write → settle) is shared with the legacy completions endpoint
(`gateway.api.completions`) and Anthropic's Messages (`gateway.api.messages`).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from time import monotonic
from typing import TYPE_CHECKING, Final, TypeVar

import anyio
import msgspec

from gateway.edge.auth import check_model
from gateway.errors import InvalidRequestError
from gateway.observability.logs import get_logger
from gateway.openai.limits import check_chat_request
from gateway.openai.requests import ChatCompletionRequest, chat_request_decoder
from gateway.routing import resume
from gateway.routing.choices import open_answer
from gateway.routing.router import require_kind
from gateway.translation.translate import translate
from gateway.translation.writer import ResponseWriter

if TYPE_CHECKING:
    from adapters.canonical import CanonicalRequest
    from gateway.context import RequestInfo
    from gateway.edge.auth import KeyPolicy
    from gateway.limits import Grant, RateLimits
    from gateway.routing.choices import MultiAnswer
    from gateway.routing.resume import Resumed
    from gateway.routing.router import Answer, ResolvedModel, Router
    from gateway.translation.framing import Writer
    from gateway.translation.translate import Translated

_MSGSPEC_PATH: Final = re.compile(r" - at `\$\.?([^`]*)`$")
_T = TypeVar("_T")
log = get_logger("gateway.chat")


class ChatResult:
    """What the HTTP layer sends: a whole JSON body, or an SSE body still to be produced."""

    __slots__ = ("body", "finish", "headers", "stream")

    def __init__(
        self,
        headers: dict[str, str],
        *,
        body: bytes | None = None,
        stream: AsyncGenerator[bytes, None] | None = None,
        finish: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.headers = headers
        self.body = body
        self.stream = stream
        self.finish = finish
        """For a stream: run it after the response (idempotent), also when the stream never started."""


async def chat_completion(
    router: Router,
    raw_body: bytes,
    *,
    info: RequestInfo,
    key: KeyPolicy | None = None,
    limits: RateLimits | None = None,
) -> ChatResult:
    payload = decode_chat_request(raw_body)
    check_chat_request(payload, router.request_limits)
    info.stream = bool(payload.stream)
    info.user, info.metadata = payload.user, payload.metadata  # for the log line, never upstream
    model = router.resolve(payload.model)
    check_model(key, payload.model, model.name)
    require_kind(model, payload.model, "chat")
    translated = translate(payload, public_model=model.name, model=model.config, native=model.native)
    return await serve_translated(
        router,
        model,
        translated,
        ResponseWriter(translated),
        key=key,
        limits=limits,
        info=info,
        explicit_max_tokens=payload.max_tokens is not None or payload.max_completion_tokens is not None,
    )


async def serve_translated(
    router: Router,
    model: ResolvedModel,
    translated: Translated[CanonicalRequest],
    writer: Writer,
    *,
    info: RequestInfo,
    key: KeyPolicy | None,
    limits: RateLimits | None,
    explicit_max_tokens: bool,
) -> ChatResult:
    """limit → route → write → settle, for a translated request of any endpoint."""
    info.model = model.name
    info.stream = translated.request.stream
    if info.stream and info.http_10:
        # HTTP/1.0 has no chunked framing, and a close-delimited SSE body cannot tell the client
        # whether the stream ended or was cut: refuse before any limit or upstream call.
        raise InvalidRequestError(
            "Streaming needs HTTP/1.1: this request came over HTTP/1.0, which cannot frame a stream. "
            "Send it over HTTP/1.1, or with stream set to false.",
            param="stream",
            code="streaming_requires_http_1_1",
        )
    info.prompt_estimate = translated.prompt_estimate
    info.stats = writer.stats
    if translated.dropped:
        log.info(
            "unsupported_parameters_dropped",
            model=model.name,
            params=list(translated.dropped),
        )
    grant = None
    if limits is not None:
        grant = await limits.admit(
            key.scopes if key is not None else (),
            model.name,
            prompt_tokens=translated.prompt_estimate,
            max_tokens=translated.request.max_tokens,
            explicit_max_tokens=explicit_max_tokens,
            info=info,
            requests=translated.n,
            price=model.max_price,
        )
    began = monotonic()
    try:
        if translated.n == 1:
            answer: Answer | Resumed | MultiAnswer = await resume.open_answer(
                router, translated, model, info=info
            )
        else:
            answer = await open_answer(router, translated, model, info=info)
            info.backend, info.attempts = answer.backend, answer.attempts
        info.upstream_s = monotonic() - began
    except BaseException:
        if grant is not None:
            with anyio.CancelScope(shield=True):  # also when the request itself was cancelled
                await grant.settle(0)  # no answer: the request counts, its tokens do not
        raise
    headers = {
        "x-gateway-backend": answer.backend,
        "x-gateway-attempts": str(answer.attempts),
    }
    if grant is not None:
        headers.update(grant.headers)
    if answer.collected is not None:
        try:
            await answer.aclose()
            body = writer.complete(answer.collected)
        except BaseException:
            if grant is not None:
                with anyio.CancelScope(shield=True):
                    await grant.settle(tokens_used(writer))
            raise
        if grant is None:
            return ChatResult(headers, body=body)
        # Settled once the body is sent, off the client's wait: the reservation made at admission
        # already covers this answer, so the store only learns a smaller, exact figure slightly later.
        return ChatResult(headers, body=body, finish=functools.partial(grant.settle, tokens_used(writer)))
    # `cache-control` and `x-accel-buffering` are added once, with the content type, by `gateway.edge.asgi`.
    relay = _Relay(writer, answer, grant)
    return ChatResult(headers, stream=relay.stream(), finish=relay.close)


def tokens_used(writer: Writer) -> int:
    """What an answer costs: the upstream's usage, else estimated from what was produced."""
    usage = writer.stats.usage
    if usage is not None:
        return usage.prompt_tokens + usage.completion_tokens
    return writer.translated.prompt_estimate + math.ceil(writer.stats.chars / 4)


class _Relay:
    """The SSE body; closing it (end, error or client disconnect) settles and closes the upstream call."""

    __slots__ = ("_answer", "_grant", "_writer")

    def __init__(self, writer: Writer, answer: Answer | Resumed | MultiAnswer, grant: Grant | None) -> None:
        self._writer = writer
        self._answer = answer
        self._grant = grant

    async def stream(self) -> AsyncGenerator[bytes, None]:
        grant = self._grant
        final = self._writer.final_event
        try:
            async for chunk in self._writer.stream(self._answer.events()):
                if chunk is final and grant is not None:
                    await grant.settle(tokens_used(self._writer))
                yield chunk
        finally:
            # On a client disconnect this runs inside a cancelled scope: shield the clean-up.
            with anyio.CancelScope(shield=True):
                await self.close()

    async def close(self) -> None:
        if self._grant is not None and not self._grant.settled:
            await self._grant.settle(tokens_used(self._writer))
        await self._answer.aclose()


def decode_chat_request(body: bytes) -> ChatCompletionRequest:
    """Strict decode; any problem becomes a 400 that names the offending parameter."""
    return decode_request(chat_request_decoder, body)


def decode_request(
    decoder: msgspec.json.Decoder[_T],
    body: bytes,
    describe: Callable[[str], InvalidRequestError] | None = None,
) -> _T:
    """Strict decode of any endpoint's body; any problem becomes a 400 that names the parameter.

    `describe` words a validation failure for the endpoint's clients (OpenAI's wording by default).
    """
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise (describe or validation_error)(str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise InvalidRequestError(
            "We could not parse the JSON body of your request. The API expects a JSON payload "
            "(Content-Type: application/json) with a JSON object as its body."
        ) from None
    except RecursionError:
        # msgspec's decoder stops at its nesting limit (e.g. 100k `[` in a `dict[str, Any]` field).
        raise InvalidRequestError(
            "We could not parse the JSON body of your request: it is nested too deeply."
        ) from None


def validation_parts(text: str) -> tuple[str, str]:
    """(where, what) of a msgspec validation message, e.g. (`messages[0].role`, `Expected ...`)."""
    match = _MSGSPEC_PATH.search(text)
    if match is None:
        return "", text
    return match.group(1), text[: match.start()]


def validation_error(text: str) -> InvalidRequestError:
    where, message = validation_parts(text)
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


__all__ = (
    "ChatResult",
    "chat_completion",
    "decode_chat_request",
    "decode_request",
    "serve_translated",
    "tokens_used",
    "validation_error",
    "validation_parts",
)
