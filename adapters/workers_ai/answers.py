"""Workers AI's answers as canonical events.

A whole answer is the v4 envelope `{"result": ..., "success": ..., "errors": [...]}` whose `result` has
one of four shapes: legacy `{response, tool_calls, usage}`, an OpenAI chat.completion, a
Responses-style `output` list, or a bare string. A stream mixes two event formats: native
`{"response": ...}` events and OpenAI chunks, often with a trailing native usage event. Every shape is
decoded into typed views; the OpenAI-shaped parts into the views vLLM uses too (`adapters.openai_views`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import msgspec
from msgspec import UNSET

from adapters.canonical import Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta
from adapters.errors import UpstreamProtocolError, UpstreamStatusError
from adapters.openai_views import (
    ChoiceView,
    ToolCallView,
    UsageView,
    choice_events,
    finish_reason,
    json_text,
    tool_call_delta,
    usage_event,
)
from adapters.workers_ai.errors import parse_error_body

_NO_RESULT: Final = msgspec.Raw(b"")


class CallView(ToolCallView):
    """A tool call in a legacy answer: OpenAI's `{function: {...}}`, or a flat `{name, arguments}`."""

    name: str | None = None
    arguments: Any = None


class OutputPartView(msgspec.Struct):
    text: Any = None


class OutputItemView(msgspec.Struct):
    type: str | None = None
    content: list[OutputPartView] | None = None


class ResultView(msgspec.Struct):
    """A non-streamed `result` that is an object, whichever of its shapes it has."""

    choices: list[ChoiceView] | None = None
    """OpenAI-shaped (a chat.completion)."""
    output: list[OutputItemView] | None = None
    """Responses-shaped."""
    response: Any = None
    """Legacy: text, a number, or (JSON mode) an object."""
    response_text: Any = None
    tool_calls: list[CallView] | None = None
    finish_reason: str | None = None
    usage: UsageView | None = None


class StreamEventView(msgspec.Struct):
    """One stream event: a native event, an OpenAI chunk, or (seen) both in one."""

    choices: list[ChoiceView] | None = None
    response: Any = None
    tool_calls: list[CallView] | None = None
    finish_reason: str | None = None
    usage: UsageView | None = None
    error: Any = UNSET
    errors: Any = UNSET


class Envelope(msgspec.Struct):
    result: msgspec.Raw = _NO_RESULT
    success: Any = None
    errors: Any = None


_envelope_decoder: Final = msgspec.json.Decoder(Envelope)
_result_decoder: Final = msgspec.json.Decoder(ResultView)
_event_decoder: Final = msgspec.json.Decoder(StreamEventView)


def envelope_result(raw: bytes, backend: str) -> bytes | None:
    """The raw `result` of a whole answer; None when the envelope says the call failed."""
    try:
        envelope = _envelope_decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _not_json(backend) from exc
    except msgspec.ValidationError as exc:
        raise _no_result(backend) from exc
    result = bytes(envelope.result)
    if envelope.success is False or (envelope.errors and result in (b"", b"null")):
        return None
    if not result:
        raise _no_result(backend)
    return result


def _no_result(backend: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        backend, f"backend '{backend}' sent an answer without a result", code="upstream_malformed"
    )


def result_events(raw: bytes, backend: str) -> Iterator[Event]:
    """Events of a non-streamed `result` (its raw JSON), whichever of its shapes it has."""
    if raw.lstrip()[:1] != b"{":
        value = _decode_any(raw, backend)  # a bare string (or, seen, a number); null: nothing
        if value is not None and value != "":
            yield TextDelta(json_text(value))
        return
    try:
        result = _result_decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _not_json(backend) from exc
    except msgspec.ValidationError as exc:
        raise _malformed(backend, "answer", exc) from exc
    if result.choices:
        choice = result.choices[0]
        yield from choice_events(choice, choice.message, backend)
    elif result.output is not None:
        yield from _output_events(result.output)
    else:
        response = result.response if result.response is not None else result.response_text
        if response is not None and response != "":
            yield TextDelta(json_text(response))
        for position, call in enumerate(result.tool_calls or ()):
            delta = _legacy_tool_delta(call, position)
            if delta is not None:
                yield delta
        if result.finish_reason is not None:
            yield Finish(finish_reason(result.finish_reason, backend))
    if result.usage is not None:
        yield usage_event(result.usage)


def _output_events(output: list[OutputItemView]) -> Iterator[Event]:
    for item in output:
        text = "".join(part.text for part in item.content or () if isinstance(part.text, str))
        if not text:
            continue
        if item.type == "reasoning":
            yield ReasoningDelta(text)
        elif item.type == "message":
            yield TextDelta(text)


def _legacy_tool_delta(call: CallView, position: int) -> ToolCallDelta | None:
    if call.function is None and call.name is not None:  # legacy flat call, always complete
        return ToolCallDelta(position, call.name, _arguments_of(call.arguments))
    return tool_call_delta(call, position)


def _arguments_of(value: Any) -> str:
    return "{}" if value is None else json_text(value)


class StreamParser:
    """Turns one stream event (native, OpenAI chunk, or both in one stream) into canonical events."""

    __slots__ = ("_backend", "_flat_calls")

    def __init__(self, backend: str) -> None:
        self._backend = backend
        self._flat_calls = 0  # complete flat tool calls carry no index: number them in arrival order

    def parse(self, payload: bytes) -> Iterator[Event]:
        backend = self._backend
        try:
            event = _event_decoder.decode(payload)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise UpstreamProtocolError(
                backend,
                f"backend '{backend}' sent a stream event that is not valid JSON",
                code="upstream_malformed",
            ) from exc
        except msgspec.ValidationError as exc:
            raise _malformed(backend, "stream event", exc) from exc
        if event.error is not UNSET or event.errors is not UNSET:
            message = parse_error_body(payload).message
            raise UpstreamStatusError(
                backend, f"backend '{backend}' failed mid-stream: {message[:500]}", code="upstream_error"
            )
        if event.choices:
            choice = event.choices[0]
            yield from choice_events(choice, choice.delta, backend)
        response = event.response
        if response is not None and response != "":
            yield TextDelta(json_text(response))
        for call in event.tool_calls or ():
            delta = self._tool_delta(call)
            if delta is not None:
                yield delta
        if event.finish_reason is not None:
            yield Finish(finish_reason(event.finish_reason, backend))
        if event.usage is not None:
            yield usage_event(event.usage)

    def _tool_delta(self, call: CallView) -> ToolCallDelta | None:
        if call.function is None and call.name is not None:  # legacy flat call, always complete
            index = self._flat_calls
            self._flat_calls += 1
            return ToolCallDelta(index, call.name, _arguments_of(call.arguments))
        return tool_call_delta(call, 0)


def _decode_any(raw: bytes, backend: str) -> Any:
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _not_json(backend) from exc


def _not_json(backend: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        backend, f"backend '{backend}' sent a body that is not valid JSON", code="upstream_malformed"
    )


def _malformed(backend: str, what: str, exc: msgspec.ValidationError) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        backend, f"backend '{backend}' sent a malformed {what}: {exc}", code="upstream_malformed"
    )


__all__ = ("StreamParser", "envelope_result", "result_events")
