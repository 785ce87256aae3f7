"""Canonical events → OpenAI `chat.completion` JSON or `chat.completion.chunk` SSE.

The chat framing rules beyond the shared ones (`framing.py`): `role` only in the first delta; a tool
call's `id`/`type`/`name` only in its first delta, with dense indexes in order of appearance and ids
the gateway generates (upstream ids collide across turns on some models); reasoning as
`reasoning_content`. Each choice is a `_ChatChoice` on the shared `ChoiceWriter`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Final

from adapters.canonical import (
    ChoiceEvent,
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from gateway.ids import hex_id
from gateway.observability.logs import get_logger
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
from gateway.translation.framing import (
    DONE,
    ChoiceState,
    ChoiceWriter,
    estimated_usage,
    finish_reason,
    stream_failure,
)

if TYPE_CHECKING:
    from adapters.canonical import CanonicalRequest
    from gateway.translation.translate import Translated

log = get_logger("gateway.writer")
_ROLE_DELTA: Final = encoder.encode(ChunkDelta(role="assistant", content="", refusal=None))
_CHOICE_TAIL: Final = b',"logprobs":null,"finish_reason":null}]}\n\n'


def completion_id() -> str:
    return "chatcmpl-" + hex_id(15)[:29]


def tool_call_id() -> str:
    return "call_" + hex_id(12)


class _ToolCall:
    __slots__ = ("arguments", "id", "name", "pending")

    def __init__(self) -> None:
        self.id = tool_call_id()
        self.name: str | None = None
        self.arguments: list[str] = []
        self.pending: list[str] = []  # argument pieces that arrived before the call's name


class ToolCalls:
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


class _ChatChoice(ChoiceState):
    __slots__ = ("_eager", "_legacy", "_max_tokens", "_prefix", "reasoning", "started", "texts", "tools")

    def __init__(
        self, index: int, translated: Translated[CanonicalRequest], prefix: bytes, *, eager: bool
    ) -> None:
        super().__init__(index, translated)
        self._prefix = prefix
        self._eager = eager
        self._legacy = translated.legacy_functions
        self._max_tokens = translated.request.max_tokens
        self.tools = ToolCalls(single=translated.single_tool_call)
        self.started = False
        self.texts: list[str] = []
        self.reasoning: list[str] = []

    # Streaming

    def begin(self) -> list[bytes]:
        # With several choices every role chunk goes first, in index order: the SDK's accumulator
        # appends a choice where it first sees it.
        if not self._eager:
            return []
        self.started = True
        return [self._prefix + _ROLE_DELTA + _CHOICE_TAIL]

    def feed(self, event: ChoiceEvent) -> list[bytes]:
        if type(event) is TextDelta:
            text = event.text
            if self.shaper is not None:
                text = self.shaper.text(text)
            return self._text(text) if text else []
        if type(event) is ToolCallDelta:
            out: list[bytes] = []
            if self.shaper is not None:
                held = self.shaper.tool_call()
                if held:
                    out = self._text(held)
            return out + self._tool(event)
        if type(event) is ReasoningDelta:
            out = self._start()
            self.chars += len(event.text)
            reasoning = encoder.encode(event.text)
            out.append(self._prefix + b'{"reasoning_content":' + reasoning + b"}" + _CHOICE_TAIL)
            return out
        if type(event) is Finish:
            self.finish = event.reason
        return []

    def end(self, usage: Usage | None) -> list[bytes]:
        out: list[bytes] = []
        if self.shaper is not None:
            for event in self.shaper.finish():
                if type(event) is TextDelta:
                    out += self._text(event.text)
                elif type(event) is ToolCallDelta:
                    out += self._tool(event)
        out += self._start()
        reason = self._reason(usage)
        out.append(self._prefix + b'{},"logprobs":null,"finish_reason":"' + reason.encode() + b'"}]}\n\n')
        return out

    def _start(self) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        return [self._prefix + _ROLE_DELTA + _CHOICE_TAIL]

    def _text(self, text: str) -> list[bytes]:
        out = self._start()
        self.chars += len(text)
        out.append(self._prefix + b'{"content":' + encoder.encode(text) + b"}" + _CHOICE_TAIL)
        return out

    def _tool(self, delta: ToolCallDelta) -> list[bytes]:
        fed = self.tools.feed(delta)
        if fed is None:
            return []
        index, call, newly_named, arguments = fed
        self.chars += len(arguments)
        out: list[bytes] = []
        if newly_named:
            header = _tool_header(index, call, self._legacy, first=not self.started)
            self.started = True
            out.append(self._prefix + encoder.encode(header) + _CHOICE_TAIL)
        if arguments:
            out.append(
                self._prefix + encoder.encode(_tool_arguments(index, arguments, self._legacy)) + _CHOICE_TAIL
            )
        return out

    def _reason(self, usage: Usage | None) -> str:
        reason = finish_reason(
            self.finish,
            stopped=self.done,
            called_tools=bool(self.tools.calls),
            usage=usage,
            max_tokens=self._max_tokens,
        )
        if reason == "tool_calls" and self._legacy:
            reason = "function_call"
        self.finish = reason
        return reason

    # Whole answers

    def collect(self, event: ChoiceEvent) -> None:
        if type(event) is Usage:
            self.usage = event
        elif type(event) is Finish:
            self.finish = event.reason
        elif self.done:
            return
        elif type(event) is TextDelta:
            self.texts.append(self.shaper.text(event.text) if self.shaper is not None else event.text)
        elif type(event) is ToolCallDelta:
            if self.shaper is not None:
                self.texts.append(self.shaper.tool_call())
            self.tools.feed(event)
        elif type(event) is ReasoningDelta:
            self.reasoning.append(event.text)

    def result(self, usage: Usage | None) -> Choice:
        if self.shaper is not None:
            for event in self.shaper.finish():
                if type(event) is TextDelta:
                    self.texts.append(event.text)
                elif type(event) is ToolCallDelta:
                    self.tools.feed(event)
        text = "".join(self.texts)
        calls = [call for call in self.tools.calls if call.name is not None]
        self.chars = len(text) + sum(len(a) for call in calls for a in call.arguments)
        message = AssistantMessageOut(content=text if text or not calls else None)
        if self.reasoning:
            message.reasoning_content = "".join(self.reasoning)
        if calls and self._legacy:
            first = calls[0]
            message.function_call = FunctionCallOut(first.name or "", "".join(first.arguments))
        elif calls:
            message.tool_calls = [
                ToolCallOut(call.id, FunctionCallOut(call.name or "", "".join(call.arguments)))
                for call in calls
            ]
        reason = self._reason(usage)
        return Choice(index=self.index, message=message, finish_reason=reason)


class ResponseWriter(ChoiceWriter):
    """Chat completions: `chat.completion` bodies and `chat.completion.chunk` streams."""

    __slots__ = ("_prefix",)

    object_json = b'","object":"chat.completion.chunk","created":'

    def __init__(self, translated: Translated[CanonicalRequest]) -> None:
        ChoiceWriter.__init__(self, translated, completion_id())
        self._prefix = self._shell + b'"choices":[{"index":0,"delta":'

    def stream(self, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
        """SSE bytes for a stream whose upstream has already produced (or is about to produce) events."""
        translated = self.translated
        # `_plain_stream` repeats the general path's framing for one plain choice, because every token
        # pays for it: the writer's work per streamed text event is 1.0-1.3 us with it and 2.0-2.8 us
        # through `ChoiceWriter` (tests/bench_api.py, 2026-12-02; `make bench` on that loaded 2-core
        # machine could not resolve the difference from noise).
        if translated.n == 1 and not translated.stop and not translated.recover_tools:
            return self._plain_stream(events)
        return self._stream_choices(events)

    def _choices(self) -> list[_ChatChoice]:
        n = self.translated.n
        return [
            _ChatChoice(
                i,
                self.translated,
                self._shell + b'"choices":[{"index":' + str(i).encode() + b',"delta":',
                eager=n > 1,
            )
            for i in range(n)
        ]

    def _usage_json(self, usage: Usage) -> bytes:
        return encoder.encode(_usage_out(usage))

    async def _plain_stream(self, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
        """One choice and none of the gateway's own rules: the per-token hot path, kept minimal."""
        translated = self.translated
        stats = self.stats
        tools = ToolCalls(single=translated.single_tool_call)
        legacy = translated.legacy_functions
        prefix = self._prefix
        finish: str | None = None
        started = False
        try:
            async for event in events:
                if type(event) is TextDelta:
                    if not started:
                        started = True
                        stats.first_token_at = time.monotonic()
                        yield prefix + _ROLE_DELTA + _CHOICE_TAIL
                    text = event.text
                    if text:
                        stats.chars += len(text)
                        yield prefix + b'{"content":' + encoder.encode(text) + b"}" + _CHOICE_TAIL
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
        except Exception as exc:  # noqa: BLE001 - every failure ends the stream in-band (stream_failure)
            yield stream_failure(stats, exc)
            return
        if not started:
            yield prefix + _ROLE_DELTA + _CHOICE_TAIL
        reason = finish_reason(
            finish,
            stopped=False,
            called_tools=bool(tools.calls),
            usage=stats.usage,
            max_tokens=translated.request.max_tokens,
        )
        if reason == "tool_calls" and legacy:
            reason = "function_call"
        stats.finish_reason = reason
        yield prefix + b'{},"logprobs":null,"finish_reason":"' + reason.encode() + b'"}]}\n\n'
        if translated.include_usage:
            usage = stats.usage
            if usage is None:
                usage = stats.usage = estimated_usage(translated.prompt_estimate, stats.chars)
            yield self._shell + b'"choices":[],"usage":' + encoder.encode(_usage_out(usage)) + b"}\n\n"
        yield DONE

    def complete(self, events: Iterable[Event]) -> bytes:
        """The `chat.completion` body for an answer collected in full."""
        translated = self.translated
        if translated.n == 1 and not translated.stop and not translated.recover_tools:
            # The single-choice fast path pays: tests/bench_api.py on one pinned core, mean of a whole
            # chat answer 87.7 us with it, 99.9 us without (2026-12-02), about 12 us of the ~340 us
            # `make bench` measures per request.
            return self._plain_complete(events)
        results, usage = self._results(events, self._choices())
        completion = ChatCompletion(
            id=self._id,
            created=self._created,
            model=self.translated.public_model,
            choices=results,
            usage=_usage_out(usage),
        )
        return encoder.encode(completion)

    def _plain_complete(self, events: Iterable[Event]) -> bytes:
        """One choice and none of the gateway's own rules: a straight pass over the events."""
        translated = self.translated
        stats = self.stats
        tools = ToolCalls(single=translated.single_tool_call)
        texts: list[str] = []
        reasoning: list[str] = []
        finish: str | None = None
        for event in events:
            if type(event) is TextDelta:
                texts.append(event.text)
            elif type(event) is ToolCallDelta:
                tools.feed(event)
            elif type(event) is ReasoningDelta:
                reasoning.append(event.text)
            elif type(event) is Usage:
                stats.usage = event
            elif type(event) is Finish:
                finish = event.reason
        text = "".join(texts)
        calls = [call for call in tools.calls if call.name is not None]
        stats.chars = len(text) + sum(len(a) for call in calls for a in call.arguments)
        message = AssistantMessageOut(content=text if text or not calls else None)
        if reasoning:
            message.reasoning_content = "".join(reasoning)
        legacy = translated.legacy_functions
        if calls and legacy:
            first = calls[0]
            message.function_call = FunctionCallOut(first.name or "", "".join(first.arguments))
        elif calls:
            message.tool_calls = [
                ToolCallOut(call.id, FunctionCallOut(call.name or "", "".join(call.arguments)))
                for call in calls
            ]
        reason = finish_reason(
            finish,
            stopped=False,
            called_tools=bool(calls),
            usage=stats.usage,
            max_tokens=translated.request.max_tokens,
        )
        if reason == "tool_calls" and legacy:
            reason = "function_call"
        stats.finish_reason = reason
        usage = stats.usage
        if usage is None:
            usage = stats.usage = estimated_usage(translated.prompt_estimate, stats.chars)
        completion = ChatCompletion(
            id=self._id,
            created=self._created,
            model=translated.public_model,
            choices=[Choice(index=0, message=message, finish_reason=reason)],
            usage=_usage_out(usage),
        )
        return encoder.encode(completion)


def _usage_out(usage: Usage) -> CompletionUsage:
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


__all__ = ("ResponseWriter", "ToolCalls", "completion_id", "tool_call_id")
