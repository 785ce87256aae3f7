"""uvicorn's httptools protocol with a bounded request head: size (`http.max_header_bytes`) and time
(`http.header_timeout_s`).

uvicorn bounds neither when it parses with httptools (its h11-only `h11_max_incomplete_event_size`
does not apply), and arms its keep-alive timer only after a response: a connection that opens and
then sends nothing, or trickles its headers a byte at a time (slowloris), would hold a socket and a
parser forever, and one endless header would grow in memory without limit.

The cost on the request path is a length sum and one extra call per header and an attribute check
per read; the head timer is armed once per connection and again only when a head arrives in more
than one read. Everything else is uvicorn's own code, reached through `super()`.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.config import DEFAULT_HEADER_TIMEOUT_S, DEFAULT_MAX_HEADER_BYTES, HTTPLimits
from gateway.edge.asgi import CONNECTION_STATE, SERVER_STATUS_STATE
from gateway.errors import GatewayError, InvalidRequestError, error_response


class RequestHeaderFieldsTooLargeError(GatewayError):
    status_code = 431
    error_type = "invalid_request_error"
    default_code = "request_header_fields_too_large"


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing; httptools wraps it in HttpParserCallbackError."""


_STATUS_431: Final = b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
_STATUS_400: Final = b"HTTP/1.1 400 Bad Request\r\n"


def _envelope(status_line: bytes, error: GatewayError) -> bytes:
    _, body, _ = error_response(error)
    head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    return status_line + head + body


def _response_431(limit: int) -> bytes:
    return _envelope(
        _STATUS_431,
        RequestHeaderFieldsTooLargeError(
            f"The request's headers are larger than the gateway's limit of {limit} bytes."
        ),
    )


_RESPONSE_400: Final = _envelope(
    _STATUS_400,
    InvalidRequestError(
        "The request is not valid HTTP/1.1 (a malformed request line, header or chunked body).",
        code="invalid_http_request",
    ),
)
"""The parser's refusals in OpenAI's envelope (uvicorn's own is plain text), built once."""


class BoundedHeadProtocol(HttpToolsProtocol):
    """Closes a connection whose request head is too large (431) or too slow (no answer: nobody to
    answer to a client that has not finished asking)."""

    max_header_bytes: ClassVar[int] = DEFAULT_MAX_HEADER_BYTES
    header_timeout_s: ClassVar[float] = DEFAULT_HEADER_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_bytes = 0
        """Bytes of the current head's request line and headers, as the parser's callbacks see them."""
        self._head_read = 0
        """Bytes read while the current head is incomplete (headers still buffered inside httptools)."""
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_too_large = False

    @classmethod
    def configure(cls, limits: HTTPLimits) -> None:
        """Apply the config's limits (class-wide: uvicorn instantiates the protocol per connection)."""
        cls.max_header_bytes = limits.max_header_bytes
        cls.header_timeout_s = limits.header_timeout_s

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a byte is bounded too: uvicorn arms nothing until a response.
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and cycle.disconnected:
            on_disconnect = getattr(cycle, "on_disconnect", None)
            if on_disconnect is not None:
                on_disconnect()  # the app's response in flight (`gateway.edge.asgi.respond`)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head:
            # The head spans reads: bound what httptools buffers before its callbacks see it (one
            # endless header value), and how long it may take.
            self._head_read += len(data)
            if self._head_read > self.max_header_bytes:
                self._reject_head()
            elif self._head_timer is None:
                self._arm_head_timer()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers every parser error with a plain-text 400; a head over the limit is a 431.
        if self._head_too_large:
            self._reject_head()
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # A malformed body of a request the app is reading: the app only sees the disconnect
            # that follows, so tell its log line and metrics what the client was answered.
            cycle.scope["state"][SERVER_STATUS_STATE] = 400
            if cycle.response_started:  # the app had answered already: nothing more can be said
                self.transport.close()
                return
        if not self.transport.is_closing():
            self.transport.write(_RESPONSE_400)
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = self._head_read = 0

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_header_bytes:
            # httptools turns this into an HttpParserError, which uvicorn answers with send_400_response.
            self._head_too_large = True
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.scope is self.scope:  # not for an upgrade request
            # The app checks `disconnected` while it streams, and is called back on a disconnect
            # through `on_disconnect` rather than watching the receive channel with a task
            # (`gateway.edge.asgi.respond`).
            self.cycle.on_disconnect = None  # type: ignore[attr-defined]
            self.cycle.scope["state"][CONNECTION_STATE] = self.cycle

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # The body is whole: read on, as a task waiting on `receive` would, so that the client's
        # leaving is seen while the response is produced (uvicorn pauses reading past 64 KiB of
        # body; a pipelined request's head pauses it until its turn, and its body leaves it paused).
        if self.cycle is not None and not self.cycle.response_complete and not self.pipeline:
            self.flow.resume_reading()

    def _reject_head(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        if not self.transport.is_closing():
            self.transport.write(_response_431(self.max_header_bytes))
            self.transport.close()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is None or self.cycle.response_complete:
            # Nothing in flight on this connection: nobody to answer, as the head never completed.
            self.transport.close()
        else:
            # A pipelined head behind a response still being sent: look again one period later.
            self._arm_head_timer()


__all__ = ("BoundedHeadProtocol", "RequestHeaderFieldsTooLargeError")
