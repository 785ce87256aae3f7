"""Canonical events → an OpenAI Responses object, or its full server-sent event sequence.

The stream (contract §1.4, the openai SDK's `ResponseStreamState`): `response.created` and
`response.in_progress` (the same in-progress snapshot), then per output item `output_item.added`,
its parts and deltas, their `.done` events and `output_item.done`, and one terminal event,
`response.completed`, `response.incomplete` (the answer hit `max_output_tokens` or a content filter)
or `response.failed` followed by an `error` frame. No `[DONE]`. Every frame carries a strictly
increasing `sequence_number`; item ids are the gateway's own (`msg_`, `fc_`, `rs_`), the same in the
events and in the terminal snapshot, whose `output` lists the items in `output_index` order.

Output items open as the answer goes: reasoning (`ReasoningDelta`, as a summary part) and text
(`TextDelta`, one `output_text` part) each open a new item when the previous item was of another
kind; every new tool index (`ToolCallDelta`) opens a `function_call` item whose later argument
fragments are keyed by that tool index, never by an upstream id. A stream mixing text and tool
calls keeps both. Function-call items stay open until the answer ends or another kind of item
begins, so interleaved fragments of parallel calls still land in the right item.

A non-streamed answer runs the same state machine without framing, so both agree on every item.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

import msgspec

from adapters.canonical import Event, Finish, Indexed, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from adapters.errors import UpstreamError
from gateway.errors import GatewayError
from gateway.ids import hex_id
from gateway.observability.logs import get_logger
from gateway.openai.responses_api import (
    IncompleteDetails,
    InputTokensDetails,
    OutputFunctionCall,
    OutputItem,
    OutputMessage,
    OutputReasoning,
    OutputTextPart,
    OutputTokensDetails,
    ResponseError,
    ResponseObject,
    ResponseUsage,
    SummaryTextPart,
    encoder,
)
from gateway.translation.framing import AnswerStats, estimated_usage
from gateway.translation.shaping import Shaper
from gateway.translation.writer import ToolCalls

if TYPE_CHECKING:
    from adapters.canonical import CanonicalRequest
    from gateway.translation.translate import Translated

log = get_logger("gateway.responses")
Persist = Callable[[ResponseObject], Awaitable[None]]
_EMPTY_TEXT_PART: Final = OutputTextPart(text="")
_EMPTY_SUMMARY_PART: Final = SummaryTextPart(text="")
EVENT_END: Final = b"\n\n"
"""The blank line that completes the terminal event, sent as its own chunk (the writer's
`final_event`): the relay settles the answer's usage before it, so the client, which sees the event
only once this arrives, sees the charge on its next request."""


def response_id() -> str:
    return "resp_" + hex_id(24)


def _frame(kind: str) -> bytes:
    return b"event: " + kind.encode() + b'\ndata: {"type":"' + kind.encode() + b'"'


_TEXT_DELTA: Final = _frame("response.output_text.delta")
_ARGS_DELTA: Final = _frame("response.function_call_arguments.delta")
_SUMMARY_DELTA: Final = _frame("response.reasoning_summary_text.delta")


class _Item:
    """One output item while it is produced."""

    __slots__ = ("call", "delta_head", "id", "index", "kind", "parts", "prefix", "status")

    def __init__(self, kind: str, item_id: str, index: int) -> None:
        self.kind = kind  # "message", "reasoning" or "function_call"
        self.id = item_id
        self.index = index
        self.parts: list[str] = []
        self.call: Any = None  # the function call's `writer._ToolCall`
        self.status = "in_progress"
        # `"item_id":…,"output_index":…` once per item, not once per delta.
        self.prefix = b',"item_id":"' + item_id.encode() + b'","output_index":' + str(index).encode()
        self.delta_head = (
            _TEXT_DELTA + self.prefix + b',"content_index":0,"logprobs":[],"sequence_number":'
            if kind == "message"
            else b""
        )

    def done(self, status: str) -> OutputItem:
        text = "".join(self.parts)
        if self.kind == "message":
            return OutputMessage(id=self.id, status=status, content=[OutputTextPart(text=text)])  # type: ignore[arg-type]
        if self.kind == "reasoning":
            return OutputReasoning(id=self.id, summary=[SummaryTextPart(text=text)], status=status)  # type: ignore[arg-type]
        return OutputFunctionCall(
            id=self.id,
            call_id=self.call.id,
            name=self.call.name or "",
            arguments=text,
            status=status,  # type: ignore[arg-type]
        )


class ResponsesWriter:
    """Responses bodies and event streams; `final` is the finished Response object."""

    __slots__ = (
        "_by_call",
        "_calls",
        "_finish",
        "_frames",
        "_items",
        "_max_calls",
        "_open",
        "_persist",
        "_seq",
        "_shaper",
        "_shell",
        "_sse",
        "_usage",
        "final",
        "final_event",
        "stats",
        "translated",
    )

    def __init__(
        self,
        translated: Translated[CanonicalRequest],
        shell: ResponseObject,
        *,
        persist: Persist | None = None,
        max_tool_calls: int | None = None,
    ) -> None:
        self.translated = translated
        self.stats = AnswerStats()
        self.final: ResponseObject | None = None
        self.final_event = EVENT_END
        self._shell = shell
        self._persist = persist
        self._max_calls = max_tool_calls
        self._shaper = (
            Shaper(translated.stop, translated.recover_tools)
            if translated.stop or translated.recover_tools
            else None
        )
        self._calls = ToolCalls(single=translated.single_tool_call)
        self._items: list[_Item] = []
        self._open: list[_Item] = []
        self._by_call: dict[int, _Item] = {}
        self._seq = 0
        self._sse = False
        self._frames: list[bytes] = []
        self._usage: Usage | None = None
        self._finish: str | None = None

    # Framing

    def _emit(self, kind: str, **fields: Any) -> None:
        if not self._sse:
            return
        body = encoder.encode({"type": kind, "sequence_number": self._seq, **fields})
        self._seq += 1
        self._frames.append(b"event: " + kind.encode() + b"\ndata: " + body + b"\n\n")

    def _emit_delta(self, head: bytes, item: _Item, text: str, tail: bytes = b"") -> None:
        if not self._sse:
            return
        seq = str(self._seq).encode()
        self._seq += 1
        self._frames.append(
            head
            + b',"sequence_number":'
            + seq
            + item.prefix
            + tail
            + b',"delta":'
            + encoder.encode(text)
            + b"}\n\n"
        )

    # Items

    def _begin(self, kind: str) -> _Item:
        prefix = {"message": "msg_", "reasoning": "rs_", "function_call": "fc_"}[kind]
        item = _Item(kind, prefix + hex_id(24), len(self._items))
        self._items.append(item)
        self._open.append(item)
        return item

    def _current(self, kind: str) -> _Item:
        """The open item of this kind, closing the others first, or a new one."""
        if self._open and self._open[-1].kind == kind and kind != "function_call":
            return self._open[-1]
        self._close_all("completed")
        item = self._begin(kind)
        if kind == "message":
            added: OutputItem = OutputMessage(id=item.id, status="in_progress")
        else:
            added = OutputReasoning(id=item.id, status="in_progress")
        self._emit("response.output_item.added", output_index=item.index, item=added)
        if kind == "message":
            self._emit_about(item, "response.content_part.added", content_index=0, part=_EMPTY_TEXT_PART)
        else:
            self._emit_about(
                item, "response.reasoning_summary_part.added", summary_index=0, part=_EMPTY_SUMMARY_PART
            )
        return item

    def _emit_about(self, item: _Item, kind: str, **fields: Any) -> None:
        self._emit(kind, item_id=item.id, output_index=item.index, **fields)

    def _close(self, item: _Item, status: str) -> None:
        text = "".join(item.parts)
        if item.kind == "message":
            self._emit_about(item, "response.output_text.done", content_index=0, text=text, logprobs=[])
            self._emit_about(
                item, "response.content_part.done", content_index=0, part=OutputTextPart(text=text)
            )
        elif item.kind == "reasoning":
            self._emit_about(item, "response.reasoning_summary_text.done", summary_index=0, text=text)
            part = SummaryTextPart(text=text)
            self._emit_about(item, "response.reasoning_summary_part.done", summary_index=0, part=part)
        else:
            name = item.call.name or ""
            self._emit_about(item, "response.function_call_arguments.done", name=name, arguments=text)
        item.status = status
        self._emit("response.output_item.done", output_index=item.index, item=item.done(status))

    def _close_all(self, status: str) -> None:
        for item in self._open:
            self._close(item, status)
        self._open.clear()

    # Events

    def _text(self, text: str) -> None:
        if not text:
            return
        item = self._current("message")
        item.parts.append(text)
        self.stats.chars += len(text)
        self._emit_delta(_TEXT_DELTA, item, text, b',"content_index":0,"logprobs":[]')

    def _reasoning(self, text: str) -> None:
        if not text:
            return
        item = self._current("reasoning")
        item.parts.append(text)
        self.stats.chars += len(text)
        self._emit_delta(_SUMMARY_DELTA, item, text, b',"summary_index":0')

    def _tool(self, delta: ToolCallDelta) -> None:
        if self._shaper is not None:
            self._text(self._shaper.tool_call())
        fed = self._calls.feed(delta)
        if fed is None:
            return
        index, call, newly_named, arguments = fed
        if self._max_calls is not None and index >= self._max_calls:
            return  # `max_tool_calls`: calls beyond it are left out of the answer
        if newly_named:
            if self._open and self._open[-1].kind != "function_call":
                self._close_all("completed")
            item = self._begin("function_call")
            item.call = call
            self._by_call[index] = item
            self._emit(
                "response.output_item.added",
                output_index=item.index,
                item=OutputFunctionCall(
                    id=item.id, call_id=call.id, name=call.name or "", arguments="", status="in_progress"
                ),
            )
        item = self._by_call[index]
        if not arguments:
            return
        if item not in self._open:
            log.warning("tool_arguments_after_item_closed", item_id=item.id)
            return
        item.parts.append(arguments)
        self.stats.chars += len(arguments)
        self._emit_delta(_ARGS_DELTA, item, arguments)

    def _feed(self, event: Event) -> None:
        if type(event) is Indexed:
            event = event.event
        kind = type(event)
        if kind is TextDelta:
            text = event.text  # type: ignore[union-attr]
            if self._shaper is not None:
                if self._shaper.stopped:
                    return
                text = self._shaper.text(text)
            self._text(text)
        elif kind is ToolCallDelta:
            self._tool(event)  # type: ignore[arg-type]
        elif kind is ReasoningDelta:
            self._reasoning(event.text)  # type: ignore[union-attr]
        elif kind is Usage:
            self._usage = self.stats.usage = event  # type: ignore[assignment]
        elif kind is Finish:
            self._finish = event.reason  # type: ignore[union-attr]

    def _end(self) -> ResponseObject:
        """Close every item and build the terminal snapshot."""
        shaper = self._shaper
        if shaper is not None:
            for event in shaper.finish():
                if type(event) is TextDelta:
                    self._text(event.text)
                elif type(event) is ToolCallDelta:
                    self._tool(event)
        finish = self._finish
        stats = self.stats
        usage = self._usage
        if usage is None:
            usage = stats.usage = estimated_usage(self.translated.prompt_estimate, stats.chars)
        stopped = shaper is not None and shaper.stopped
        if finish is None and not stopped and usage.completion_tokens >= self.translated.request.max_tokens:
            finish = "length"  # Workers AI's legacy answers carry no finish reason: infer truncation
        incomplete: IncompleteDetails | None = None
        if not stopped and finish == "length":
            incomplete = IncompleteDetails("max_output_tokens")
        elif not stopped and finish == "content_filter":
            incomplete = IncompleteDetails("content_filter")
        stats.finish_reason = "tool_calls" if self._calls.calls and incomplete is None else (finish or "stop")
        self._close_all("incomplete" if incomplete is not None else "completed")
        final = msgspec.structs.replace(
            self._shell,
            status="incomplete" if incomplete is not None else "completed",
            completed_at=int(time.time()) if incomplete is None else None,
            incomplete_details=incomplete,
            output=[item.done(item.status) for item in self._items],
            usage=usage_out(usage),
        )
        self.final = final
        return final

    def _failed(self, exc: GatewayError | UpstreamError) -> ResponseObject:
        code = exc.code or "server_error"
        self.stats.error_code = code
        error = ResponseError(
            code="rate_limit_exceeded" if code == "rate_limit_exceeded" else "server_error",
            message=exc.message,
        )
        final = msgspec.structs.replace(
            self._shell,
            status="failed",
            error=error,
            output=[item.done("incomplete") for item in self._items],
            usage=usage_out(self.stats.usage) if self.stats.usage is not None else None,
        )
        self.final = final
        return final

    # The Writer protocol

    async def stream(self, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
        self._sse = True
        frames = self._frames
        stats = self.stats
        shell = self._shell
        self._emit("response.created", response=shell)
        self._emit("response.in_progress", response=shell)
        stats.first_token_at = time.monotonic()
        yield b"".join(frames)
        frames.clear()
        try:
            shaper = self._shaper
            open_items = self._open
            async for event in events:
                # The per-token hot path: more text for the message item already open.
                if (
                    type(event) is TextDelta
                    and shaper is None
                    and open_items
                    and open_items[-1].kind == "message"
                ):
                    text = event.text
                    if text:
                        item = open_items[-1]
                        item.parts.append(text)
                        stats.chars += len(text)
                        seq = self._seq
                        self._seq = seq + 1
                        yield (
                            item.delta_head
                            + str(seq).encode()
                            + b',"delta":'
                            + encoder.encode(text)
                            + b"}\n\n"
                        )
                    continue
                self._feed(event)
                if frames:
                    if len(frames) == 1:
                        yield frames[0]
                    else:
                        yield b"".join(frames)
                    frames.clear()
                if self._shaper is not None and self._shaper.stopped:
                    break  # a stop sequence matched: the relay closes the upstream
            final = self._end()
        except (UpstreamError, GatewayError) as exc:
            yield self._failure_frames(exc)
            return
        except Exception as exc:  # a bug must still end the stream visibly, never as a silent stop
            log.error("stream_failed", exc_info=exc)
            yield self._failure_frames(
                GatewayError("The gateway failed while relaying the answer.", code="internal_error")
            )
            return
        body = b"".join(frames)
        frames.clear()
        if body:
            yield body
        if self._persist is not None:
            await self._persist(final)
        self._emit(f"response.{final.status}", response=final)
        terminal = b"".join(frames)
        frames.clear()
        yield terminal[: -len(EVENT_END)]
        yield EVENT_END

    def _failure_frames(self, exc: GatewayError | UpstreamError) -> bytes:
        """`response.failed`, then the `error` frame: nested `error` plus the flat fields (§1.5)."""
        final = self._failed(exc)
        self._frames.clear()
        self._emit("response.failed", response=final)
        error_type = getattr(exc, "error_type", "server_error")
        param = getattr(exc, "param", None)
        code = exc.code or "server_error"
        self._emit(
            "error",
            code=code,
            message=exc.message,
            param=param,
            error={"type": error_type, "code": code, "message": exc.message, "param": param},
        )
        body = b"".join(self._frames)
        self._frames.clear()
        return body

    def complete(self, events: Iterable[Event]) -> bytes:
        for event in events:
            self._feed(event)
            if self._shaper is not None and self._shaper.stopped:
                break
        return encoder.encode(self._end())


def usage_out(usage: Usage) -> ResponseUsage:
    return ResponseUsage(
        input_tokens=usage.prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=usage.cached_tokens or 0),
        output_tokens=usage.completion_tokens,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=usage.reasoning_tokens or 0),
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
    )


__all__ = ("Persist", "ResponsesWriter", "response_id", "usage_out")
