"""What every writer shares: the stream's framing around each endpoint's own chunks.

The rules every endpoint's stream follows, so all backends and all endpoints behave alike: each
choice's chunks in order (with `n` > 1 interleaved, each choice's first chunk sent first, in index
order, as the SDKs' accumulators need); `finish_reason` on each choice's own final chunk; the usage
chunk (`choices: []`) last, when `stream_options.include_usage` asks for it; then `data: [DONE]`. A
failure after the first byte is sent in-band as `data: {"error": {...}}` and the stream ends without
`[DONE]`, so no client mistakes a cut answer for a finished one.

`ChoiceWriter` is that framing; it keeps one `ChoiceState` per choice, which applies the gateway's
own rules (`gateway.translation.shaping`: stop sequences, a forced tool call written as text) and
frames the endpoint's chunks. A stop sequence ends its choice at once: with one choice the upstream
is closed, with several the merged answer is told to close that choice's upstream. The chat writer
(`writer.py`) and the text-completions writer (`text_writer.py`) are built on it.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from adapters.canonical import ChoiceEvent, Event, Indexed, Usage
from adapters.errors import UpstreamError
from gateway.errors import GatewayError, in_band_error
from gateway.observability.logs import get_logger
from gateway.openai.responses import encoder
from gateway.translation.shaping import Shaper

if TYPE_CHECKING:
    from adapters.canonical import CanonicalRequest
    from gateway.translation.translate import Translated

DONE: Final = b"data: [DONE]\n\n"
"""The last event of a complete stream (the very object `stream` yields, so `is` recognises it)."""
log = get_logger("gateway.writer")


class AnswerStats:
    """What one answer produced, for usage accounting, limits and the request's log line."""

    __slots__ = ("chars", "error_code", "finish_reason", "first_token_at", "usage")

    def __init__(self) -> None:
        self.first_token_at: float | None = None
        self.usage: Usage | None = None
        self.chars = 0
        self.finish_reason: str | None = None
        self.error_code: str | None = None


class Writer(Protocol):
    """What the pipeline needs from a writer (chat or text completions)."""

    translated: Translated[CanonicalRequest]
    stats: AnswerStats
    final_event: bytes
    """The last event of a complete stream (`stream` yields this very object): the answer's usage is
    settled before it is sent, so the client's next request sees the charge."""

    def stream(self, events: AsyncIterator[Event]) -> AsyncIterator[bytes]: ...

    def complete(self, events: Iterable[Event]) -> bytes: ...


def finish_reason(
    upstream: str | None, *, stopped: bool, called_tools: bool, usage: Usage | None, max_tokens: int
) -> str:
    """The OpenAI finish reason of one choice (before the legacy-functions rename)."""
    if stopped:
        reason = "stop"
    elif upstream is not None:
        reason = upstream
    elif usage is not None and usage.completion_tokens >= max_tokens:
        reason = "length"  # Workers AI's legacy answers carry no finish reason: infer truncation
    else:
        reason = "stop"
    if called_tools and reason == "stop":
        reason = "tool_calls"
    return reason


def stream_failure(stats: AnswerStats, exc: Exception) -> bytes:
    """The in-band error event that ends a stream which failed after its first byte.

    An upstream or gateway error is sent as it is; anything else is a bug, logged, and still ends
    the stream visibly (never as a silent stop)."""
    if isinstance(exc, UpstreamError | GatewayError):
        stats.error_code = exc.code or "upstream_error"
        return in_band_error(exc)
    log.error("stream_failed", exc_info=exc)
    stats.error_code = "internal_error"
    return in_band_error(GatewayError("The gateway failed while relaying the answer.", code="internal_error"))


def estimated_usage(prompt_tokens: int, chars: int) -> Usage:
    """For an answer whose upstream reported nothing (or that a stop sequence ended early)."""
    return Usage(prompt_tokens, math.ceil(chars / 4))


class ChoiceState:
    """One choice of an answer on the general path: its shaping, its framing state, what it produced.

    Subclasses frame for chat (`_ChatChoice`) and for text completions (`text_writer._TextChoice`):
    `begin`/`feed`/`end` return the SSE chunks to send, `collect`/`result` build a whole answer.
    """

    __slots__ = ("chars", "finish", "index", "shaper", "usage")

    def __init__(self, index: int, translated: Translated[CanonicalRequest]) -> None:
        self.index = index
        self.shaper = (
            Shaper(translated.stop, translated.recover_tools)
            if translated.stop or translated.recover_tools
            else None
        )
        self.finish: str | None = None
        self.usage: Usage | None = None
        self.chars = 0

    @property
    def done(self) -> bool:
        """A stop sequence ended this choice: whatever else its upstream sends is ignored."""
        return self.shaper is not None and self.shaper.stopped

    def begin(self) -> list[bytes]:
        return []

    def feed(self, event: ChoiceEvent) -> list[bytes]:
        raise NotImplementedError

    def end(self, usage: Usage | None) -> list[bytes]:
        raise NotImplementedError

    def collect(self, event: ChoiceEvent) -> None:
        raise NotImplementedError

    def result(self, usage: Usage | None) -> Any:
        """The choice as its endpoint's body writes it (`Choice`, `TextChoice`)."""
        raise NotImplementedError


_C = TypeVar("_C", bound=ChoiceState)


class ChoiceWriter:
    """The general path: any number of choices, each through the gateway's own rules."""

    __slots__ = ("_created", "_id", "_model_json", "_shell", "_usage", "stats", "translated")

    object_json: bytes = b""
    """`","object":<the chunks' object>,"created":`, JSON (set by each framing)."""
    final_event: bytes = DONE

    def __init__(self, translated: Translated[CanonicalRequest], completion_id: str) -> None:
        self.translated = translated
        self.stats = AnswerStats()
        self._id = completion_id
        self._created = created = int(time.time())
        self._model_json = model_json = encoder.encode(translated.public_model)
        self._usage: Usage | None = None  # a usage event not tied to one choice: the whole answer's
        # Everything before a chunk's `choices`, encoded once per answer rather than once per token.
        self._shell = b"".join(
            (
                b'data: {"id":"',
                completion_id.encode(),
                self.object_json,
                str(created).encode(),
                b',"model":',
                model_json,
                b',"system_fingerprint":null,',
            )
        )

    def _choices(self) -> Sequence[ChoiceState]:
        raise NotImplementedError

    def _usage_json(self, usage: Usage) -> bytes:
        raise NotImplementedError

    async def _stream_choices(self, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
        stats = self.stats
        choices = self._choices()
        count = len(choices)
        close_choice: Callable[[int], Awaitable[None]] | None = getattr(events, "close_choice", None)
        running = count
        try:
            for choice in choices:
                for chunk in choice.begin():
                    if stats.first_token_at is None:
                        stats.first_token_at = time.monotonic()
                    yield chunk
            async for event in events:
                inner: ChoiceEvent
                if isinstance(event, Indexed):
                    if not 0 <= event.choice < count:
                        continue
                    choice = choices[event.choice]
                    inner = event.event
                elif type(event) is Usage:
                    self._usage = stats.usage = event
                    continue
                else:
                    choice = choices[0]
                    inner = event
                if type(inner) is Usage:
                    choice.usage = inner
                    continue
                if choice.done:
                    continue
                chars = choice.chars
                chunks = choice.feed(inner)
                stats.chars += choice.chars - chars  # kept current: a client may leave mid-answer
                for chunk in chunks:
                    if stats.first_token_at is None:
                        stats.first_token_at = time.monotonic()
                    yield chunk
                if choice.done:
                    running -= 1
                    if not running:
                        break  # every choice has ended: the relay closes the upstream now
                    if close_choice is not None:
                        await close_choice(choice.index)
        except Exception as exc:  # noqa: BLE001 - every failure ends the stream in-band (stream_failure)
            yield stream_failure(stats, exc)
            return
        single = self._usage if count == 1 else None
        for choice in choices:
            for chunk in choice.end(choice.usage or single):
                yield chunk
        usage = self._total_usage(choices)
        if self.translated.include_usage:
            yield self._shell + b'"choices":[],"usage":' + self._usage_json(usage) + b"}\n\n"
        yield DONE

    def _total_usage(self, choices: Sequence[ChoiceState]) -> Usage:
        """The whole answer's usage: the upstream's, else each choice's (estimated where missing)."""
        stats = self.stats
        stats.chars = sum(choice.chars for choice in choices)
        stats.finish_reason = choices[0].finish
        if self._usage is not None:
            usage = self._usage
        else:
            estimate = self.translated.prompt_estimate
            parts = [choice.usage or estimated_usage(estimate, choice.chars) for choice in choices]
            if len(parts) == 1:
                usage = parts[0]
            else:
                usage = Usage(
                    sum(p.prompt_tokens for p in parts),
                    sum(p.completion_tokens for p in parts),
                    _sum_optional(p.cached_tokens for p in parts),
                    _sum_optional(p.reasoning_tokens for p in parts),
                )
        stats.usage = usage
        return usage

    def _results(self, events: Iterable[Event], choices: list[_C]) -> tuple[list[Any], Usage]:
        """Each choice's result and the whole answer's usage, for a body collected in full."""
        choices = self._collect(events, choices)
        single = self._usage if len(choices) == 1 else None
        return [choice.result(choice.usage or single) for choice in choices], self._total_usage(choices)

    def _collect(self, events: Iterable[Event], choices: list[_C]) -> list[_C]:
        """Every event of a whole answer, handed to its choice."""
        count = len(choices)
        for event in events:
            if isinstance(event, Indexed):
                if 0 <= event.choice < count:
                    choices[event.choice].collect(event.event)
            elif type(event) is Usage:
                self._usage = event
            else:
                choices[0].collect(event)
        return choices


def _sum_optional(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


__all__ = (
    "DONE",
    "AnswerStats",
    "ChoiceState",
    "ChoiceWriter",
    "Writer",
    "estimated_usage",
    "finish_reason",
    "stream_failure",
)
