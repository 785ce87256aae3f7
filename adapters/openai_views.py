"""Typed views of OpenAI-shaped answers, and their canonical events; shared by every backend that
answers in OpenAI's shape (vLLM, and Workers AI's OpenAI-shaped `result` and stream chunks).

The views hold only the fields the gateway reads (msgspec skips the rest), so the per-token work is
one typed decode. What differs between backends (which choices count, how `finish_reason` is read)
is passed in by the caller.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from adapters.canonical import ChoiceEvent, FinishReason, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from adapters.canonical import Finish as FinishEvent
from adapters.errors import UpstreamProtocolError


class FunctionView(msgspec.Struct):
    name: str | None = None
    arguments: str | dict[str, Any] | None = None


class ToolCallView(msgspec.Struct):
    index: int | None = None
    function: FunctionView | None = None


class MessageView(msgspec.Struct):
    """A `message` (whole answer) or a `delta` (stream chunk)."""

    content: str | dict[str, Any] | None = None
    """Text; an object only from Workers AI models that answer JSON mode with one."""
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
    prompt_tokens: int | float | None = 0
    """An integer; Workers AI's legacy models have been seen sending floats and nulls."""
    completion_tokens: int | float | None = 0
    prompt_tokens_details: PromptDetailsView | None = None
    completion_tokens_details: CompletionDetailsView | None = None


class BodyView(msgspec.Struct):
    """A chat.completion, a chat.completion.chunk, a text_completion, or an error in their place."""

    choices: list[ChoiceView] = []
    usage: UsageView | None = None
    error: Any = None
    object: str | None = None


FINISH_REASONS: Final[dict[str, FinishReason]] = {
    "stop": "stop",
    "length": "length",
    "model_length": "length",
    "max_tokens": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}
"""OpenAI's finish reasons, and the other names upstreams use for them; anything else is `stop`."""

_encoder: Final = msgspec.json.Encoder()


def json_text(value: Any) -> str:
    """`value` as OpenAI wants it: a string stays itself, anything else becomes its JSON text."""
    if isinstance(value, str):
        return value
    return _encoder.encode(value).decode()


def finish_reason(value: str, backend: str, broken: frozenset[str] = frozenset()) -> FinishReason:
    """An upstream's `finish_reason` in OpenAI's terms; one in `broken` (the upstream gave up on the
    answer) is a protocol error, never relayed as a normal end."""
    if value in broken:
        raise UpstreamProtocolError(
            backend,
            f"backend '{backend}' gave up on the answer (finish_reason '{value}')",
            code="upstream_aborted",
        )
    return FINISH_REASONS.get(value, "stop")


def choice_events(
    choice: ChoiceView, part: MessageView | None, backend: str, broken: frozenset[str] = frozenset()
) -> list[ChoiceEvent]:
    """The events of one choice: reasoning, text, tool-call pieces, then its finish (see `finish_reason`)."""
    events: list[ChoiceEvent] = []
    if part is not None:
        reasoning = part.reasoning_content or part.reasoning
        if reasoning:
            events.append(ReasoningDelta(reasoning))
        content = part.content
        if content:
            events.append(TextDelta(content if isinstance(content, str) else json_text(content)))
        if part.tool_calls:
            append_tool_calls(events, part.tool_calls)
    if choice.finish_reason is not None:
        events.append(FinishEvent(finish_reason(choice.finish_reason, backend, broken)))
    return events


def tool_call_delta(call: ToolCallView, position: int) -> ToolCallDelta | None:
    """One piece of a tool call; None for an empty piece (e.g. the closing `arguments: ""`)."""
    function = call.function
    if function is None:
        return None
    arguments = function.arguments
    text = "" if arguments is None else json_text(arguments)
    if not function.name and not text:
        return None
    index = call.index if call.index is not None else position
    return ToolCallDelta(index, function.name or None, text)


def append_tool_calls(events: list[ChoiceEvent], calls: list[ToolCallView]) -> None:
    for position, call in enumerate(calls):
        delta = tool_call_delta(call, position)
        if delta is not None:
            events.append(delta)


def usage_event(usage: UsageView) -> Usage:
    prompt_details = usage.prompt_tokens_details
    completion_details = usage.completion_tokens_details
    return Usage(
        prompt_tokens=int(usage.prompt_tokens or 0),
        completion_tokens=int(usage.completion_tokens or 0),
        cached_tokens=prompt_details.cached_tokens if prompt_details is not None else None,
        reasoning_tokens=completion_details.reasoning_tokens if completion_details is not None else None,
    )


__all__ = (
    "FINISH_REASONS",
    "BodyView",
    "ChoiceView",
    "CompletionDetailsView",
    "FunctionView",
    "MessageView",
    "PromptDetailsView",
    "ToolCallView",
    "UsageView",
    "append_tool_calls",
    "choice_events",
    "finish_reason",
    "json_text",
    "tool_call_delta",
    "usage_event",
)
