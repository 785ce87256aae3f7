"""Raw ASGI plumbing for the inference endpoints.

Litestar's request and response objects cost about twice the rest of the framework path on every
request (measured: 11k vs 28k requests/s for an empty handler), so the inference endpoints read and
write ASGI messages directly. Errors raised before the response starts still go through Litestar's
exception handlers, so they are rendered by `gateway.errors` like everywhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final, Protocol

from gateway.errors import GatewayError, RequestTooLargeError
from gateway.timers import Deadline

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON: Final = b"application/json"
EVENT_STREAM: Final = b"text/event-stream"
_SSE_HEADERS: Final = ((b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"))


class RequestTimeoutError(GatewayError):
    status_code = 408
    error_type = "invalid_request_error"
    default_code = "request_timeout"


class ClientDisconnectedError(Exception):
    """The client went away before its request was read; there is nobody to answer."""


CONNECTION_STATE: Final = "http_connection"
"""`scope["state"]` key of the server's per-request connection state (`gateway.edge.server` puts
uvicorn's request cycle there): its `disconnected` flag is set the moment the server knows the
client has gone, before the ASGI `http.disconnect` message reaches a waiting task, and its
`on_disconnect` callback, when the app has set one, is called then."""

SERVER_STATUS_STATE: Final = "server_status"
"""`scope["state"]` key of a status the HTTP server sent on the app's behalf (400 for a malformed
chunked body, which the app only sees as a disconnect)."""


class Connection(Protocol):
    disconnected: bool
    on_disconnect: Callable[[], object] | None


class Result(Protocol):
    """What an endpoint produces: a whole JSON body, or an SSE body still to be generated, and work
    to finish once the response is sent (or abandoned), such as settling a rate-limit grant."""

    headers: dict[str, str]
    body: bytes | None
    stream: AsyncGenerator[bytes, None] | None
    finish: Callable[[], Awaitable[None]] | None


def header(scope: Scope, name: bytes) -> str | None:
    """One request header by lower-case name, without building a headers object."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def read_body(scope: Scope, receive: Receive, *, limit: int, timeout_s: float) -> bytes:
    """The whole request body, refused with 413 past `limit` bytes and 408 if it trickles in too slowly.

    The timeout bounds the whole body, so a client sending a byte at a time cannot hold a worker.
    """
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    deadline = Deadline(timeout_s)
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnectedError
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        if deadline.disarm():
            raise RequestTimeoutError(f"The request body was not received within {timeout_s:g} s.") from None
        raise
    deadline.disarm()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> RequestTooLargeError:
    return RequestTooLargeError(f"The request body is larger than the gateway's limit of {limit} bytes.")


def encode_headers(
    headers: dict[str, str], content_type: bytes, extra: Iterable[tuple[bytes, bytes]] = ()
) -> list[tuple[bytes, bytes]]:
    encoded = [(b"content-type", content_type), *extra]
    encoded += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    return encoded


async def respond(
    receive: Receive,
    send: Send,
    produce: Callable[[], Awaitable[Result]],
    connection: Connection | None = None,
) -> bool:
    """Produce and send a result; a client disconnect at any point cancels the work at once.
    Returns True when the client left before the response was complete.

    A disconnect (servers may silently drop writes to a closed connection) cancels the task, once,
    so the upstream call is closed, and the clean-up (settling tokens, releasing slots) still runs;
    that cancellation alone is withdrawn here, any other (the server's shutdown) goes on.
    Under the gateway's server the `connection` calls back the moment it is lost; under another
    server a task watches the receive channel for `http.disconnect`. (Neither anyio scopes nor a
    task per request: together they cost about 20 us.) A stream also checks the `connection` flag
    after every chunk: when the upstream has already finished, the relay may never wait for
    anything, so a watcher's task would not run until the whole answer had been written into the
    closed connection (and charged and logged as delivered).
    """
    task = asyncio.current_task()
    assert task is not None
    result: Result | None = None
    left = cancelled = cleaning_up = False
    watcher: asyncio.Future[Message] | None = None

    def cancel() -> None:
        nonlocal cancelled
        if not (cancelled or cleaning_up):
            cancelled = True
            task.cancel()

    def on_message(future: asyncio.Future[Message]) -> None:
        if (
            not future.cancelled()
            and future.exception() is None
            and future.result()["type"] == "http.disconnect"
        ):
            cancel()

    if connection is not None and hasattr(connection, "on_disconnect"):
        if connection.disconnected:
            return True  # gone already, since its body was read: nothing to produce
        connection.on_disconnect = cancel
    else:
        watcher = asyncio.ensure_future(receive())
        watcher.add_done_callback(on_message)
    try:
        try:
            result = await produce()
            if result.stream is None:
                assert result.body is not None
                length = (b"content-length", str(len(result.body)).encode())
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": encode_headers(result.headers, JSON, (length,)),
                    }
                )
                await send({"type": "http.response.body", "body": result.body})
            else:
                headers = encode_headers(result.headers, EVENT_STREAM, _SSE_HEADERS)
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                async for chunk in result.stream:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    if connection is not None and connection.disconnected:
                        left = True  # stop producing: nothing more reaches the client
                        break
                else:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            # From here on a disconnect cancels nothing: the clean-up must run (a watcher's callback
            # may already be scheduled).
            cleaning_up = True
            if watcher is None:
                connection.on_disconnect = None  # type: ignore[union-attr]
            else:
                watcher.remove_done_callback(on_message)
                watcher.cancel()
            if result is not None:
                # A disconnect's cancellation has been delivered by now (the callback is only ever
                # called while the work waits), so these run to their end, as if shielded.
                if result.stream is not None:
                    await result.stream.aclose()
                if result.finish is not None:
                    await result.finish()
    except asyncio.CancelledError:
        if cancelled and task.uncancel() == 0:
            return True  # the disconnect's own cancellation
        raise
    if cancelled:
        task.uncancel()  # requested, but the work had caught it (or had just finished)
    return left or cancelled


__all__ = (
    "CONNECTION_STATE",
    "SERVER_STATUS_STATE",
    "ClientDisconnectedError",
    "Connection",
    "RequestTimeoutError",
    "Result",
    "encode_headers",
    "header",
    "read_body",
    "respond",
)
