"""uvicorn's httptools protocol with a bounded request head: size (`http.max_header_bytes`) and time
(`http.header_timeout_s`).

uvicorn bounds neither when it parses with httptools (its h11-only `h11_max_incomplete_event_size`
does not apply), and arms its keep-alive timer only after a response: a connection that opens and
then sends nothing, or trickles its headers a byte at a time (slowloris), would hold a socket and a
parser forever, and one endless header would grow in memory without limit.

The cost on the request path is a length sum per header (inlined into uvicorn's own callback) and an
attribute check per read; the head timer is armed once per connection and again only when a head
arrives in more than one read.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Final

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.config import DEFAULT_HEADER_TIMEOUT_S, DEFAULT_MAX_HEADER_BYTES, HTTPLimits
from gateway.errors import GatewayError, error_response


class RequestHeaderFieldsTooLargeError(GatewayError):
    status_code = 431
    error_type = "invalid_request_error"
    default_code = "request_header_fields_too_large"


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing; httptools wraps it in HttpParserCallbackError."""


_STATUS_431: Final = b"HTTP/1.1 431 Request Header Fields Too Large\r\n"


def _response_431(limit: int) -> bytes:
    error = RequestHeaderFieldsTooLargeError(
        f"The request's headers are larger than the gateway's limit of {limit} bytes."
    )
    _, body, _ = error_response(error)
    head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    return _STATUS_431 + head + body


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
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own `data_received`, plus the head's bounds.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._reject_head()
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        if self._in_head:
            # The head spans reads: bound what httptools buffers before its callbacks see it (one
            # endless header value), and how long it may take.
            self._head_read += len(data)
            if self._head_read > self.max_header_bytes:
                self._reject_head()
            elif self._head_timer is None:
                self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = self._head_read = 0

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self.max_header_bytes:
            raise _HeadTooLarge
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's own `on_header`, inlined with the count: it runs for every header of every request.
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.max_header_bytes:
            raise _HeadTooLarge
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        super().on_headers_complete()

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
