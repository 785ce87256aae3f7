"""Canonical events → OpenAI `chat.completion` JSON or `chat.completion.chunk` SSE.

Every framing rule lives here, so all backends behave alike: `role` only in the first delta; a tool
call's `id`/`type`/`name` only in its first delta, with dense indexes in order of appearance and ids
the gateway generates (upstream ids collide across turns on some models); `finish_reason` on its own
final chunk; the usage chunk (`choices: []`) last, when `stream_options.include_usage` asks for it;
then `data: [DONE]`. A failure after the first byte is sent in-band as `data: {"error": {...}}` and
the stream ends without `[DONE]`, so no client mistakes a cut answer for a finished one.

Stop sequences are applied here too (Workers AI has no `stop`): text is held back while it could be
the start of a stop sequence, and the upstream is closed as soon as one matches.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Final

from adapters.canonical import Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from adapters.errors import UpstreamError
from gateway.errors import GatewayError, in_band_error
from gateway.ids import hex_id
from gateway.logs import get_logger
from gateway.openai.responses import (
    AssistantMessageOut,
    ChatCompletion,
    Choice,
    ChunkDelta,
    CompletionTokensDetails,
    CompletionUsage,
    FunctionCallOut,
    PromptTokensDetails,
    ToolCallDeltaOut,
    ToolCallOut,
    encoder,
)

if TYPE_CHECKING:
    from gateway.translate import Translated

_ROLE_DELTA: Final = encoder.encode(ChunkDelta(role="assistant", content="", refusal=None))
DONE: Final = b"data: [DONE]\n\n"
"""The last event of a complete stream (the very object `stream` yields, so `is` recognises it)."""
log = get_logger("gateway.writer")
_CHOICE_TAIL: Final = b',"logprobs":null,"finish_reason":null}]}\n\n'


def completion_id() -> str:
    return "chatcmpl-" + hex_id(15)[:29]


def tool_call_id() -> str:
    return "call_" + hex_id(12)


class AnswerStats:
    """What one answer produced, for usage accounting, limits and the request's log line."""

    __slots__ = ("chars", "error_code", "finish_reason", "first_token_at", "usage")

    def __init__(self) -> None:
        self.first_token_at: float | None = None
        self.usage: Usage | None = None
        self.chars = 0
        self.finish_reason: str | None = None
        self.error_code: str | None = None


class _ToolCall:
    __slots__ = ("arguments", "id", "name", "pending")

    def __init__(self) -> None:
        self.id = tool_call_id()
        self.name: str | None = None
        self.arguments: list[str] = []
        self.pending: list[str] = []  # argument pieces that arrived before the call's name


class _ToolCalls:
    """Maps upstream tool indexes onto dense, ordered ones and remembers what was announced."""

    __slots__ = ("_by_upstream", "_single", "calls")

    def __init__(self, *, single: bool) -> None:
        self._by_upstream: dict[int, int] = {}
        self._single = single
        self.calls: list[_ToolCall] = []

    def feed(self, delta: ToolCallDelta) -> tuple[int, _ToolCall, bool, str] | None:
        """(index, call, newly named, argument text to emit), or None when nothing can be emitted yet."""
        index = self._by_upstream.get(delta.index)
        if index is None:
            if self._single and self.calls:
                return None
            index = self._by_upstream[delta.index] = len(self.calls)
            self.calls.append(_ToolCall())
        call = self.calls[index]
        newly_named = False
        if call.name is None:
            if delta.name is None:
                call.pending.append(delta.arguments)
                return None
            call.name = delta.name
            newly_named = True
        arguments = delta.arguments
        if call.pending:
            arguments = "".join(call.pending) + arguments
            call.pending.clear()
        if arguments:
            call.arguments.append(arguments)
        return index, call, newly_named, arguments


class _StopFilter:
    """Cuts text at the first stop sequence, holding back a tail that might begin one."""

    __slots__ = ("_held", "_longest", "_stops")

    def __init__(self, stops: list[str]) -> None:
        self._stops = stops
        self._longest = max(len(s) for s in stops)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        text = self._held + text
        cut = min((p for p in (text.find(s) for s in self._stops) if p >= 0), default=-1)
        if cut >= 0:
            self._held = ""
            return text[:cut], True
        keep = 0
        for size in range(min(self._longest - 1, len(text)), 0, -1):
            tail = text[-size:]
            if any(s.startswith(tail) for s in self._stops):
                keep = size
                break
        self._held = text[len(text) - keep :] if keep else ""
        return (text[: len(text) - keep] if keep else text), False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


class ResponseWriter:
    __slots__ = ("_created", "_id", "_model_json", "_prefix", "_shell", "stats", "translated")

    def __init__(self, translated: Translated) -> None:
        self.translated = translated
        self.stats = AnswerStats()
        self._id = completion_id()
        self._created = int(time.time())
        self._model_json = encoder.encode(translated.public_model)
        # Everything before a chunk's `choices`, encoded once per answer rather than once per token.
        self._shell = (
            b'data: {"id":"'
            + self._id.encode()
            + b'","object":"chat.completion.chunk","created":'
            + str(self._created).encode()
            + b',"model":'
            + self._model_json
            + b',"system_fingerprint":null,'
        )
        self._prefix = self._shell + b'"choices":[{"index":0,"delta":'

    # Streaming

    async def stream(self, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
        """SSE bytes for a stream whose upstream has already produced (or is about to produce) events."""
        translated = self.translated
        stats = self.stats
        tools = _ToolCalls(single=translated.single_tool_call)
        stop = _StopFilter(translated.stop) if translated.stop else None
        legacy = translated.legacy_functions
        prefix = self._prefix
        finish: str | None = None
        stopped = False
        started = False
        try:
            async for event in events:
                if type(event) is TextDelta:
                    text = event.text
                    if stop is not None:
                        text, stopped = stop.feed(text)
                    if not started:
                        started = True
                        stats.first_token_at = time.monotonic()
                        yield prefix + _ROLE_DELTA + _CHOICE_TAIL
                    if text:
                        stats.chars += len(text)
                        yield prefix + b'{"content":' + encoder.encode(text) + b"}" + _CHOICE_TAIL
                    if stopped:
                        break
                elif type(event) is ToolCallDelta:
                    fed = tools.feed(event)
                    if fed is None:
                        continue
                    index, call, newly_named, arguments = fed
                    stats.chars += len(arguments)
                    if newly_named:
                        delta = _tool_header(index, call, legacy, first=not started)
                        if not started:
                            started = True
                            stats.first_token_at = time.monotonic()
                        yield prefix + encoder.encode(delta) + _CHOICE_TAIL
                    if arguments:
                        yield (
                            prefix + encoder.encode(_tool_arguments(index, arguments, legacy)) + _CHOICE_TAIL
                        )
                elif type(event) is ReasoningDelta:
                    if not started:
                        started = True
                        stats.first_token_at = time.monotonic()
                        yield prefix + _ROLE_DELTA + _CHOICE_TAIL
                    stats.chars += len(event.text)
                    yield prefix + b'{"reasoning_content":' + encoder.encode(event.text) + b"}" + _CHOICE_TAIL
                elif type(event) is Usage:
                    stats.usage = event
                elif type(event) is Finish:
                    finish = event.reason
        except (UpstreamError, GatewayError) as exc:
            stats.error_code = exc.code or "upstream_error"
            yield in_band_error(exc)
            return
        except Exception as exc:  # a bug must still end the stream visibly, never as a silent stop
            log.error("stream_failed", exc_info=exc)
            stats.error_code = "internal_error"
            yield in_band_error(
                GatewayError("The gateway failed while relaying the answer.", code="internal_error")
            )
            return
        if not started:
            yield prefix + _ROLE_DELTA + _CHOICE_TAIL
        if stop is not None and not stopped:
            tail = stop.flush()
            if tail:
                stats.chars += len(tail)
                yield prefix + b'{"content":' + encoder.encode(tail) + b"}" + _CHOICE_TAIL
        reason = self._finish_reason(finish, stopped, bool(tools.calls))
        yield prefix + b'{},"logprobs":null,"finish_reason":"' + reason.encode() + b'"}]}\n\n'
        if translated.include_usage:
            yield self._shell + b'"choices":[],"usage":' + encoder.encode(self._usage()) + b"}\n\n"
        yield DONE

    # Whole answers

    def complete(self, events: Iterable[Event]) -> bytes:
        """The `chat.completion` body for an answer collected in full."""
        translated = self.translated
        stats = self.stats
        tools = _ToolCalls(single=translated.single_tool_call)
        stop = _StopFilter(translated.stop) if translated.stop else None
        texts: list[str] = []
        reasoning: list[str] = []
        finish: str | None = None
        stopped = False
        for event in events:
            if type(event) is TextDelta:
                if stopped:
                    continue
                text = event.text
                if stop is not None:
                    text, stopped = stop.feed(text)
                texts.append(text)
            elif type(event) is ToolCallDelta:
                tools.feed(event)
            elif type(event) is ReasoningDelta:
                reasoning.append(event.text)
            elif type(event) is Usage:
                stats.usage = event
            elif type(event) is Finish:
                finish = event.reason
        if stop is not None and not stopped:
            texts.append(stop.flush())
        text = "".join(texts)
        calls = [call for call in tools.calls if call.name is not None]
        stats.chars = len(text) + sum(len(a) for call in calls for a in call.arguments)
        message = AssistantMessageOut(content=text if text or not calls else None)
        if reasoning:
            message.reasoning_content = "".join(reasoning)
        if calls and translated.legacy_functions:
            first = calls[0]
            message.function_call = FunctionCallOut(first.name or "", "".join(first.arguments))
        elif calls:
            message.tool_calls = [
                ToolCallOut(call.id, FunctionCallOut(call.name or "", "".join(call.arguments)))
                for call in calls
            ]
        reason = self._finish_reason(finish, stopped, bool(calls))
        completion = ChatCompletion(
            id=self._id,
            created=self._created,
            model=translated.public_model,
            choices=[Choice(index=0, message=message, finish_reason=reason)],
            usage=self._usage(),
        )
        return encoder.encode(completion)

    # Shared rules

    def _finish_reason(self, upstream: str | None, stopped: bool, called_tools: bool) -> str:
        if stopped:
            reason = "stop"
        elif upstream is not None:
            reason = upstream
        elif (
            self.stats.usage is not None
            and self.stats.usage.completion_tokens >= self.translated.request.max_tokens
        ):
            reason = "length"  # Workers AI's legacy answers carry no finish reason: infer truncation
        else:
            reason = "stop"
        if called_tools and reason == "stop":
            reason = "tool_calls"
        if reason == "tool_calls" and self.translated.legacy_functions:
            reason = "function_call"
        self.stats.finish_reason = reason
        return reason

    def _usage(self) -> CompletionUsage:
        usage = self.stats.usage
        if usage is None:
            # The upstream reported nothing (or was stopped early by a stop sequence): estimate.
            usage = self.stats.usage = Usage(self.translated.prompt_estimate, math.ceil(self.stats.chars / 4))
        return CompletionUsage(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.prompt_tokens + usage.completion_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens or 0),
            completion_tokens_details=CompletionTokensDetails(reasoning_tokens=usage.reasoning_tokens or 0),
        )


def _tool_header(index: int, call: _ToolCall, legacy: bool, *, first: bool) -> ChunkDelta:
    delta = ChunkDelta(role="assistant", content=None, refusal=None) if first else ChunkDelta()
    if legacy:
        delta.function_call = FunctionCallOut(name=call.name or "", arguments="")
    else:
        delta.tool_calls = [
            ToolCallDeltaOut(
                index, FunctionCallOut(name=call.name or "", arguments=""), id=call.id, type="function"
            )
        ]
    return delta


def _tool_arguments(index: int, arguments: str, legacy: bool) -> ChunkDelta:
    if legacy:
        return ChunkDelta(function_call=FunctionCallOut(arguments=arguments))
    return ChunkDelta(tool_calls=[ToolCallDeltaOut(index, FunctionCallOut(arguments=arguments))])


__all__ = ("DONE", "AnswerStats", "ResponseWriter", "completion_id", "tool_call_id")
