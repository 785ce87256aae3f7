"""vLLM's answers as canonical events: stream chunks and whole bodies, one choice or several.

Chunks and bodies are decoded into the shared OpenAI views (`adapters.openai_views`). vLLM's quirks
become canonical events (the writer re-frames everything OpenAI's way): `finish_reason` on the last
content chunk, `reasoning` or `reasoning_content`, tool-call headers without `arguments`, a role
chunk with `content: ""`, and `finish_reason` `abort`/`error` for an answer it could not complete.
An error object in place of a chunk or body becomes the `UpstreamError` the error table says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec

from adapters.canonical import ChoiceEvent, Event, Indexed, TextDelta
from adapters.canonical import Finish as FinishEvent
from adapters.errors import UpstreamError, UpstreamProtocolError
from adapters.openai_views import BodyView, choice_events, finish_reason, usage_event
from adapters.upstream import MAX_MESSAGE_CHARS
from adapters.vllm.errors import ERRORS, parse_error_body

Parse = Callable[[bytes, str], list[Event]]
"""Turns one streamed chunk or one whole body of the named backend into canonical events."""

_body_decoder: Final = msgspec.json.Decoder(BodyView)

BROKEN_FINISH: Final = frozenset({"abort", "error"})
"""vLLM ends an answer it could not complete with these: never relay one as a normal end."""


def chunk_events(payload: bytes, backend: str) -> list[Event]:
    """The canonical events of one `chat.completion.chunk` (runs once per token: keep it lean)."""
    chunk = _chunk(payload, backend)
    events: list[Event] = []
    for choice in chunk.choices:
        if choice.index:
            continue  # several choices are parsed by `multi_chunk_events`; never mix them
        events.extend(choice_events(choice, choice.delta, backend, BROKEN_FINISH))
    if chunk.usage is not None:
        events.append(usage_event(chunk.usage))
    return events


def answer_events(raw: bytes, backend: str) -> list[Event]:
    """The canonical events of a whole `chat.completion` body."""
    body = _answer_body(raw, backend)
    choice = body.choices[0]
    events: list[Event] = [*choice_events(choice, choice.message or choice.delta, backend, BROKEN_FINISH)]
    if body.usage is not None:
        events.append(usage_event(body.usage))
    return events


def multi_chunk_events(payload: bytes, backend: str) -> list[Event]:
    """The events of one chunk of an answer with several choices (`n`), each wrapped in `Indexed`."""
    return _multi_events(_chunk(payload, backend), backend, streamed=True)


def multi_answer_events(raw: bytes, backend: str) -> list[Event]:
    """The events of a whole `chat.completion` with several choices, each wrapped in `Indexed`."""
    return _multi_events(_answer_body(raw, backend), backend, streamed=False)


def _multi_events(body: BodyView, backend: str, *, streamed: bool) -> list[Event]:
    events: list[Event] = []
    for choice in body.choices:
        index = choice.index
        part = choice.delta if streamed else choice.message or choice.delta
        events.extend(Indexed(index, event) for event in choice_events(choice, part, backend, BROKEN_FINISH))
    if body.usage is not None:
        events.append(usage_event(body.usage))
    return events


def text_chunk_events(payload: bytes, backend: str) -> list[Event]:
    """The events of one streamed `text_completion` chunk with a single choice."""
    return _text_events(_chunk(payload, backend), backend, indexed=False)


def text_answer_events(raw: bytes, backend: str) -> list[Event]:
    """The events of a whole `text_completion` body with a single choice."""
    return _text_events(_answer_body(raw, backend), backend, indexed=False)


def multi_text_chunk_events(payload: bytes, backend: str) -> list[Event]:
    """As `text_chunk_events`, for several prompts or `n`: each choice's events wrapped in `Indexed`."""
    return _text_events(_chunk(payload, backend), backend, indexed=True)


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
            found.append(FinishEvent(finish_reason(choice.finish_reason, backend, BROKEN_FINISH)))
        if indexed:
            index = choice.index
            events.extend(Indexed(index, event) for event in found)
        elif not choice.index:
            events.extend(found)
    if body.usage is not None:
        events.append(usage_event(body.usage))
    return events


def _chunk(payload: bytes, backend: str) -> BodyView:
    chunk = _decode(payload, backend, "stream event")
    if chunk.error is not None or chunk.object == "error":
        raise in_band_error(payload, backend)
    return chunk


def _answer_body(raw: bytes, backend: str) -> BodyView:
    body = _decode(raw, backend, "answer")
    if body.error is not None or body.object == "error":
        raise in_band_error(raw, backend)
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


def in_band_error(raw: bytes, backend: str) -> UpstreamError:
    """An error object where an answer or chunk was expected (vLLM's in-stream failures)."""
    fault = parse_error_body(raw)
    message = fault.message
    fault = msgspec.structs.replace(fault, message=message[:MAX_MESSAGE_CHARS], param=None)
    error = ERRORS.error(backend, fault.status or 500, fault)
    if not error.client_fault:
        error.message = f"backend '{backend}' failed while answering: {message[:500]}"
    return error


__all__ = (
    "Parse",
    "answer_events",
    "chunk_events",
    "in_band_error",
    "multi_answer_events",
    "multi_chunk_events",
    "multi_text_answer_events",
    "multi_text_chunk_events",
    "text_answer_events",
    "text_chunk_events",
)
