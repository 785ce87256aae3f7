"""Canonical events → an Anthropic `message` JSON body or its SSE stream.

The stream is what the Anthropic SDKs' accumulators parse: `message_start` (the message with empty
`content`), then each content block in turn — `content_block_start`, its deltas, `content_block_stop` —
with indexes 0, 1, … and deltas only for the block that is open; then `message_delta` (`stop_reason`,
`stop_sequence`, cumulative usage) and `message_stop`. Text is `text_delta`, reasoning `thinking_delta`
(only when the client asked for thinking), and a tool call's arguments `input_json_delta`, each piece
sent as the upstream produces it, never held back to the end. A tool block whose arguments end as
invalid JSON (a call cut by `max_tokens`) is closed with the characters that make it parse, so the
SDK's parser never fails on the gateway's answer. The router fails over only before the first event,
so no frame of a failed attempt ever reaches the client. A failure after the stream began is an
in-band `event: error` in Anthropic's envelope, after which the stream ends without `message_stop`.
While the upstream is silent for `PING_INTERVAL_S`, a `ping` event keeps proxies from closing the
connection: the upstream is read by a pump task into a small buffer, so the stream can speak while
it waits.

Stop sequences and forced tool calls written as text go through the chat writer's `Shaper`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Final

import anyio
import msgspec

from adapters.canonical import Event, Finish, Indexed, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from adapters.errors import UpstreamError
from gateway.anthropic.responses import (
    ContentOut,
    MessageOut,
    TextOut,
    ThinkingOut,
    ToolUseOut,
    UsageOut,
    encoder,
)
from gateway.errors import GatewayError, in_band_error
from gateway.ids import hex_id
from gateway.observability.logs import get_logger
from gateway.translation.framing import AnswerStats, estimated_usage, finish_reason
from gateway.translation.shaping import Shaper
from gateway.translation.writer import ToolCalls

if TYPE_CHECKING:
    from adapters.canonical import CanonicalRequest, ChoiceEvent
    from gateway.translation.translate import Translated

PING_INTERVAL_S: Final = 10.0
"""A `ping` after this long without an upstream event (Anthropic's own streams ping about as often)."""
BUFFERED_EVENTS: Final = 64
"""Upstream events read ahead of a slow client at most (the pump then waits)."""
MESSAGE_STOP: Final = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
PING: Final = b'event: ping\ndata: {"type":"ping"}\n\n'
STOP_REASONS: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
_DELTA: Final = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_TEXT: Final = b',"delta":{"type":"text_delta","text":'
_THINKING: Final = b',"delta":{"type":"thinking_delta","thinking":'
_JSON: Final = b',"delta":{"type":"input_json_delta","partial_json":'
_END: Final = b"}}\n\n"
_MESSAGE_START: Final = b'event: message_start\ndata: {"type":"message_start","message":'
_decoder: Final = msgspec.json.Decoder()
log = get_logger("gateway.messages")


def message_id() -> str:
    return "msg_01" + hex_id(11)


def tool_use_id() -> str:
    return "toolu_01" + hex_id(11)


def json_closers(text: str) -> str:
    """The characters that complete a JSON object cut short (`{"a": "b` → `"}`), "" when it is whole.

    Only used when `text` does not parse: a call cut by `max_tokens` mid-argument. A cut key gets a
    null value, a cut literal or number is finished, a dangling `,` gets a placeholder member.
    """
    stack: list[str] = []
    in_string = escaped = is_key = key_done = high = False
    hex_digits: str | None = None  # inside a `\uXXXX` escape: the digits so far
    last = ""  # the last significant character outside strings
    for char in text:
        if in_string:
            if hex_digits is not None:
                hex_digits += char
                if len(hex_digits) == 4:
                    high = 0xD800 <= int(hex_digits, 16) <= 0xDBFF
                    hex_digits = None
                continue
            if escaped:
                escaped = False
                if char == "u":
                    hex_digits = ""
                    continue
            elif char == "\\":
                escaped = True
                continue
            elif char == '"':
                in_string = False
                key_done = is_key
            high = False
            continue
        if char.isspace():
            continue
        if char == '"':
            in_string = True
            is_key = bool(stack) and stack[-1] == "}" and last in "{,"
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]" and stack:
            stack.pop()
        elif char == ":":
            key_done = False
        last = char
    if in_string:
        tail = ""
        if hex_digits is not None:  # finish the escape; after a high surrogate, as its low half
            low = hex_digits + "dc00"[len(hex_digits) :]
            if high and 0xDC00 <= int(low, 16) <= 0xDFFF:
                tail, high = low[len(hex_digits) :], False
            else:
                tail = "0" * (4 - len(hex_digits))
                high = 0xD800 <= int(hex_digits + tail, 16) <= 0xDBFF
        if high:  # a high surrogate needs its low half
            tail += "udc00" if escaped else "\\udc00"
        elif escaped:
            tail += "\\"
        tail += '"'
        return tail + (":null" if is_key else "") + "".join(reversed(stack))
    if key_done:
        return ":null" + "".join(reversed(stack))
    stripped = text.rstrip()
    tail = ""
    word = stripped[len(stripped.rstrip("aeflnrstu")) :]
    literal = next((lit for lit in ("true", "false", "null") if word and lit.startswith(word)), None)
    if literal is not None and not stripped[: -len(word)].endswith(tuple("0123456789.")):
        tail = literal[len(word) :]
    elif stripped.endswith((".", "-", "+", "e", "E")):
        tail = "0"
    elif stripped.endswith(":"):
        tail = "null"
    elif stripped.endswith(","):
        tail = '"_":null' if stack and stack[-1] == "}" else "null"
    return tail + "".join(reversed(stack))


def _valid_object(text: str) -> bool:
    try:
        return isinstance(_decoder.decode(text), dict)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False


class _Block:
    __slots__ = ("id", "index", "kind", "name", "parts")

    def __init__(self, index: int, kind: str, id: str = "", name: str = "") -> None:
        self.index = index
        self.kind = kind
        self.id = id
        self.name = name
        self.parts: list[str] = []


class _Content:
    """Canonical events → content blocks, in order; each call returns the SSE frames to send."""

    __slots__ = ("_calls", "_index_json", "_thinking", "_tools", "blocks", "chars", "open", "stream")

    def __init__(self, *, single_tool_call: bool, thinking: bool, stream: bool) -> None:
        self._calls = ToolCalls(single=single_tool_call)
        self._tools: dict[int, _Block] = {}
        self._thinking = thinking
        self._index_json = b""
        self.blocks: list[_Block] = []
        self.open: _Block | None = None
        self.chars = 0
        self.stream = stream

    def text(self, text: str) -> list[bytes]:
        self.chars += len(text)
        return self._append("text", _TEXT, text)

    def reasoning(self, text: str) -> list[bytes]:
        self.chars += len(text)
        return self._append("thinking", _THINKING, text) if self._thinking else []

    def _append(self, kind: str, delta: bytes, text: str) -> list[bytes]:
        """Text or thinking: to the open block of that kind, else to a new one."""
        out = self._begin(kind) if self.open is None or self.open.kind != kind else []
        assert self.open is not None
        self.open.parts.append(text)
        if self.stream:
            out.append(_DELTA + self._index_json + delta + encoder.encode(text) + _END)
        return out

    def tool(self, delta: ToolCallDelta) -> list[bytes]:
        fed = self._calls.feed(delta)
        if fed is None:
            return []
        index, _, newly_named, arguments = fed
        self.chars += len(arguments)
        out: list[bytes] = []
        if newly_named:
            out = self._begin("tool_use", delta.name or "")
            assert self.open is not None
            self._tools[index] = self.open
        block = self._tools[index]
        if not arguments:
            return out
        block.parts.append(arguments)
        if block is not self.open:
            # Arguments of a call whose block is closed (upstreams interleaving parallel calls):
            # the whole body has them; a stream cannot reopen a block.
            log.warning("tool_arguments_after_block_closed", tool=block.name)
            return out
        if self.stream:
            out.append(_DELTA + self._index_json + _JSON + encoder.encode(arguments) + _END)
        return out

    def close(self) -> list[bytes]:
        block = self.open
        if block is None:
            return []
        self.open = None
        out: list[bytes] = []
        if block.kind == "tool_use" and block.parts:
            arguments = "".join(block.parts)
            if not _valid_object(arguments):
                tail = json_closers(arguments)
                block.parts.append(tail)
                if self.stream and tail:
                    out.append(_DELTA + self._index_json + _JSON + encoder.encode(tail) + _END)
        if self.stream:
            out.append(
                b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'
                + self._index_json
                + b"}\n\n"
            )
        return out

    def _begin(self, kind: str, name: str = "") -> list[bytes]:
        out = self.close()
        index = len(self.blocks)
        block = _Block(index, kind, tool_use_id() if kind == "tool_use" else "", name)
        self.blocks.append(block)
        self.open = block
        self._index_json = str(index).encode()
        if self.stream:
            if kind == "text":
                start = b'{"type":"text","text":""}'
            elif kind == "thinking":
                start = b'{"type":"thinking","thinking":"","signature":""}'
            else:
                start = (
                    b'{"type":"tool_use","id":"'
                    + block.id.encode()
                    + b'","name":'
                    + encoder.encode(name)
                    + b',"input":{}}'
                )
            out.append(
                b'event: content_block_start\ndata: {"type":"content_block_start","index":'
                + self._index_json
                + b',"content_block":'
                + start
                + b"}\n\n"
            )
        return out

    def result(self) -> list[ContentOut]:
        content: list[ContentOut] = []
        for block in self.blocks:
            text = "".join(block.parts)
            if block.kind == "text":
                content.append(TextOut(text))
            elif block.kind == "thinking":
                content.append(ThinkingOut(text))
            else:
                if not text or not _valid_object(text):
                    text = text + json_closers(text) if text else "{}"
                    if not _valid_object(text):
                        text = "{}"
                content.append(ToolUseOut(block.id, block.name, msgspec.Raw(text.encode())))
        return content


class MessagesWriter:
    """The Messages surface's writer for `gateway.api.chat.serve_translated`."""

    __slots__ = ("_id", "_ping_s", "_request_id", "_thinking", "stats", "translated")

    final_event: bytes = MESSAGE_STOP

    def __init__(
        self,
        translated: Translated[CanonicalRequest],
        *,
        thinking: bool,
        request_id: str | None = None,
        ping_interval_s: float = PING_INTERVAL_S,
    ) -> None:
        self.translated = translated
        self._request_id = request_id
        self.stats = AnswerStats()
        self._id = message_id()
        self._thinking = thinking
        self._ping_s = ping_interval_s

    def _content(self, *, stream: bool) -> _Content:
        single = self.translated.single_tool_call
        return _Content(single_tool_call=single, thinking=self._thinking, stream=stream)

    def _shaper(self) -> Shaper | None:
        translated = self.translated
        if translated.stop or translated.recover_tools:
            return Shaper(translated.stop, translated.recover_tools)
        return None

    def _feed(self, content: _Content, shaper: Shaper | None, event: ChoiceEvent) -> list[bytes]:
        if type(event) is TextDelta:
            text = event.text if shaper is None else shaper.text(event.text)
            return content.text(text) if text else []
        if type(event) is ToolCallDelta:
            out: list[bytes] = []
            if shaper is not None and (held := shaper.tool_call()):
                out = content.text(held)
            return out + content.tool(event)
        if type(event) is ReasoningDelta:
            return content.reasoning(event.text)
        return []

    def _finish(
        self, content: _Content, shaper: Shaper | None, finish: str | None
    ) -> tuple[list[bytes], str, str | None, Usage]:
        """The frames that close the content, and (stop_reason, stop_sequence, usage)."""
        out: list[bytes] = []
        if shaper is not None:
            for event in shaper.finish():
                out += self._feed(content, None, event)
        out += content.close()
        stats = self.stats
        stats.chars = content.chars
        usage = stats.usage
        stopped = shaper is not None and shaper.stopped
        reason = finish_reason(
            finish,
            stopped=stopped,
            called_tools=any(block.kind == "tool_use" for block in content.blocks),
            usage=usage,
            max_tokens=self.translated.request.max_tokens,
        )
        stats.finish_reason = reason
        if usage is None:
            usage = stats.usage = estimated_usage(self.translated.prompt_estimate, content.chars)
        sequence = shaper.stop_sequence if stopped and shaper is not None else None
        stop_reason = "stop_sequence" if sequence is not None else STOP_REASONS.get(reason, "end_turn")
        return out, stop_reason, sequence, usage

    def complete(self, events: Iterable[Event]) -> bytes:
        content = self._content(stream=False)
        shaper = self._shaper()
        finish: str | None = None
        for event in events:
            inner = event.event if isinstance(event, Indexed) else event
            if type(inner) is Usage:
                self.stats.usage = inner
            elif type(inner) is Finish:
                finish = inner.reason
            elif shaper is None or not shaper.stopped:
                self._feed(content, shaper, inner)
        _, stop_reason, sequence, usage = self._finish(content, shaper, finish)
        message = MessageOut(
            id=self._id,
            model=self.translated.public_model,
            content=content.result(),
            stop_reason=stop_reason,
            stop_sequence=sequence,
            usage=_usage_out(usage),
        )
        return encoder.encode(message)

    async def stream(self, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
        stats = self.stats
        translated = self.translated
        start = MessageOut(
            id=self._id,
            model=translated.public_model,
            content=[],
            stop_reason=None,
            stop_sequence=None,
            usage=UsageOut(
                input_tokens=translated.prompt_estimate,
                cache_creation_input_tokens=0,
                cache_read_input_tokens=0,
                output_tokens=0,
            ),
        )
        yield _MESSAGE_START + encoder.encode(start) + b"}\n\n"
        content = self._content(stream=True)
        shaper = self._shaper()
        finish: str | None = None
        pump = _Pump(events, self._ping_s)
        try:
            async for event in pump:
                if event is None:
                    yield PING
                    continue
                inner = event.event if isinstance(event, Indexed) else event
                if type(inner) is Usage:
                    stats.usage = inner
                    continue
                if type(inner) is Finish:
                    finish = inner.reason
                    continue
                for frame in self._feed(content, shaper, inner):
                    if stats.first_token_at is None:
                        stats.first_token_at = time.monotonic()
                    yield frame
                stats.chars = content.chars  # kept current: a client may leave mid-answer
                if shaper is not None and shaper.stopped:
                    break  # the relay closes the upstream now
        except (UpstreamError, GatewayError) as exc:
            stats.error_code = exc.code or "upstream_error"
            yield in_band_error(exc, "anthropic", request_id=self._request_id)
            return
        except Exception as exc:  # a bug must still end the stream visibly, never as a silent stop
            log.error("stream_failed", exc_info=exc)
            stats.error_code = "internal_error"
            failure = GatewayError("The gateway failed while relaying the answer.", code="internal_error")
            yield in_band_error(failure, "anthropic", request_id=self._request_id)
            return
        finally:
            await pump.aclose()
        frames, stop_reason, sequence, usage = self._finish(content, shaper, finish)
        for frame in frames:
            yield frame
        delta = {"stop_reason": stop_reason, "stop_sequence": sequence}
        yield (
            b'event: message_delta\ndata: {"type":"message_delta","delta":'
            + encoder.encode(delta)
            + b',"usage":'
            + encoder.encode(_usage_out(usage))
            + b"}\n\n"
        )
        yield MESSAGE_STOP


def _usage_out(usage: Usage) -> UsageOut:
    cached = usage.cached_tokens or 0
    return UsageOut(
        input_tokens=max(0, usage.prompt_tokens - cached),
        cache_creation_input_tokens=0,
        cache_read_input_tokens=cached,
        output_tokens=usage.completion_tokens,
    )


_DONE: Final = object()
"""Ends the pump's buffer: the upstream's events are over (or it failed)."""


class _Pump:
    """Reads the upstream's events in a task of its own, so the stream can send `ping` while it waits.

    Iterating yields the events, and None when `ping_s` passed without one. At most `BUFFERED_EVENTS`
    are read ahead; an upstream failure is raised where its event would have been. One repeating
    timer per stream checks for silence: nothing is scheduled per event.
    """

    __slots__ = ("_buffer", "_failure", "_last", "_loop", "_ping_s", "_room", "_task", "_timer", "_waiter")

    def __init__(self, events: AsyncIterator[Event], ping_s: float) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._buffer: deque[object] = deque()
        self._failure: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None
        self._ping_s = ping_s
        self._last = loop.time()
        """When the stream last had something to send (an event or a ping)."""
        self._task = loop.create_task(self._run(events))
        self._timer = loop.call_later(ping_s / 2, self._tick)

    async def _run(self, events: AsyncIterator[Event]) -> None:
        buffer = self._buffer
        try:
            async for event in events:
                buffer.append(event)
                self._wake()
                if len(buffer) >= BUFFERED_EVENTS:
                    self._room = self._loop.create_future()
                    await self._room
        except Exception as exc:  # noqa: BLE001 - raised to the stream where the event would have been
            self._failure = exc
        finally:
            buffer.append(_DONE)
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _tick(self) -> None:
        """Every half interval: a waiting stream that has been silent for `ping_s` gets its ping."""
        loop = self._loop
        waiter = self._waiter
        if waiter is not None and not waiter.done() and loop.time() - self._last >= self._ping_s:
            waiter.set_result(None)
        self._timer = loop.call_later(self._ping_s / 2, self._tick)

    def __aiter__(self) -> _Pump:
        return self

    async def __anext__(self) -> Event | None:
        buffer = self._buffer
        if not buffer:
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
            self._last = self._loop.time()
            if not buffer:
                return None  # the ping is due
        item = buffer.popleft()
        room = self._room
        if room is not None and not room.done() and len(buffer) < BUFFERED_EVENTS // 2:
            room.set_result(None)
        if item is _DONE:
            buffer.appendleft(_DONE)
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            raise StopAsyncIteration
        return item  # type: ignore[return-value]

    async def aclose(self) -> None:
        """Stop reading (the client left, a stop sequence ended the answer, or it is over)."""
        self._timer.cancel()
        task = self._task
        if not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True), contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = (
    "MESSAGE_STOP",
    "PING",
    "PING_INTERVAL_S",
    "STOP_REASONS",
    "MessagesWriter",
    "json_closers",
    "message_id",
    "tool_use_id",
)
