"""Socket-level fault servers that an ASGI app cannot express.

* `ResetServer`: accepts, reads the request head, optionally writes some bytes, then closes with a TCP
  RST (SO_LINGER 0), so the client sees "connection reset by peer".
* `GarbageServer`: accepts, reads the request head, answers with bytes that are not HTTP, closes.

Each runs an asyncio server on 127.0.0.1 in a daemon thread: ``start()`` → base URL, ``stop()``,
or use it as a context manager. ``connections`` counts accepted connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from types import TracebackType
from typing import Final, Self

_HEAD_END: Final = b"\r\n\r\n"
_ONE_EVENT: Final = b'data: {"response":"Hi"}\n\n'


class _RawServer:
    def __init__(self) -> None:
        self.connections = 0
        self.url = ""
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes:
        try:
            return await asyncio.wait_for(reader.readuntil(_HEAD_END), timeout=5.0)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            return b""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handle(reader, writer)
        except ConnectionError:
            pass
        finally:
            if not writer.transport.is_closing():
                writer.transport.abort()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(asyncio.start_server(self._on_connect, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            self.url = f"http://127.0.0.1:{self.port}"
        except BaseException as exc:  # surface bind errors to start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self, timeout: float = 5.0) -> str:
        """Start serving; returns the base URL (``http://127.0.0.1:<port>``)."""
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"{type(self).__name__} did not start")
        if self._error is not None:
            raise RuntimeError(f"{type(self).__name__} failed to start") from self._error
        return self.url

    def stop(self, timeout: float = 5.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._loop = None
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ResetServer(_RawServer):
    """Reads the request head, writes `send_before_reset` (default nothing), then resets the connection.

    `PARTIAL_SSE` is a handy `send_before_reset`: a 200 SSE response head and one event, so the reset
    happens mid-stream.
    """

    PARTIAL_SSE: Final = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(_ONE_EVENT)
        + _ONE_EVENT
        + b"\r\n"
    )

    def __init__(self, send_before_reset: bytes = b"", read_head: bool = True) -> None:
        super().__init__()
        self.send_before_reset = send_before_reset
        self.read_head = read_head

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.read_head:
            await self._read_head(reader)
        if self.send_before_reset:
            writer.write(self.send_before_reset)
            await writer.drain()
            await asyncio.sleep(0.05)  # let the bytes reach the client before the RST
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


class GarbageServer(_RawServer):
    """Reads the request head, answers with `payload` (not HTTP), then closes normally."""

    DEFAULT_PAYLOAD: Final = b"\x00\x01\x02 this is not HTTP \xff\xfe\r\n\r\n"

    def __init__(self, payload: bytes = DEFAULT_PAYLOAD) -> None:
        super().__init__()
        self.payload = payload

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._read_head(reader)
        writer.write(self.payload)
        await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
