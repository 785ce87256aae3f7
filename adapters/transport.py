"""A lean HTTP/1.1 transport for httpx: asyncio protocols, httptools parsing, a keep-alive pool.

The gateway's upstream calls are all alike: one POST with a bytes body to a handful of hosts, the
answer read as it arrives. General-purpose clients spend most of their per-request time on what
these calls never use (cookies, redirects, proxies, tracing hooks, header normalisation). This
transport does only what they need, behind httpx's `AsyncBaseTransport` interface, so the rest of
the code still speaks httpx and `adapters/http.py` remains the one place errors are translated.

What it does: a pool of idle keep-alive connections per origin (bounded by `max_connections` in
all), TLS through `ssl`, content-length and chunked bodies (httptools), a read timeout per wait
(headers and each body chunk), a connect timeout, a pool timeout, back-pressure (reading pauses
while an unread backlog builds up), and one retry on a fresh connection when a reused keep-alive
connection turns out to have been closed before any byte of the request was written to it. A request
whose bytes went out is never sent again (a POST may have started a generation that costs tokens):
a connection lost after that is an error for the caller to judge. An answer not read to the end
closes its connection, which is how the upstream learns to stop generating. Through an egress
proxy (adapters/proxy.py) when one applies to the origin: a CONNECT tunnel for https, absolute-form
requests for http.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections import deque
from collections.abc import AsyncIterator
from typing import Final

import certifi
import httptools
import httpx

from adapters.proxy import Proxy, ProxyPolicy, open_tunnel, refusal

Origin = tuple[bytes, bytes, int]
"""(scheme, host, port)"""

KEEPALIVE_EXPIRY_S: Final = 30.0
HIGH_WATER: Final = 64 * 1024
"""Unread body bytes at which reading from the socket pauses."""
LOW_WATER: Final = 16 * 1024


class MalformedAnswer(httpx.RemoteProtocolError):
    """The upstream answered with bytes that are not HTTP (a wrong port, a broken proxy): it is there,
    so this is not an outage, and `adapters/http.py` tells it from a dropped connection by its type."""


class _NotSent(ConnectionResetError):
    """The connection was closed before any byte of the request was written: safe to send elsewhere."""


_live_transports: weakref.WeakSet[H1Transport] = weakref.WeakSet()
"""Every transport not yet garbage-collected, so a metrics scrape can count connections (not per request)."""


def open_connections() -> tuple[int, int]:
    """(open, idle) upstream connections over every live transport of this process; read at scrape time."""
    open_total = idle_total = 0
    for transport in list(_live_transports):
        open_total += transport.open_connections
        idle_total += transport.idle_connections
    return open_total, idle_total


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: sends one request at a time and parses its answer."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._headers_done: asyncio.Future[None] | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self.complete = False
        self.broken: BaseException | None = None
        self.reusable = False
        self.idle_since = 0.0
        self.used = False

    # Lifecycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.reusable = False
        if not self.complete and self.broken is None:
            headers_done = self._headers_done is not None and self._headers_done.done()
            if headers_done and _reads_to_close(self._headers):
                self.complete = True  # an answer delimited by the connection's end
            else:
                self.broken = exc or ConnectionResetError("the server closed the connection")
        self._wake()

    @property
    def closed(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()
            self._transport = None
        self.reusable = False

    def dispose(self) -> None:
        """Close for good, and break the reference cycles a connection is part of (its parser calls back
        into it; a raised `broken` holds frames that hold it). Long-lived pooled connections end up in
        the collector's oldest generation, which the gateway collects rarely (see `gateway.app`):
        without this, every dropped connection would wait there for a full collection."""
        self.close()
        self._parser = None
        self.broken = None
        self._headers_done = self._waiter = None
        self._chunks.clear()

    # Sending

    def send(self, head: bytes, body: bytes) -> None:
        """Write one request; raises `_NotSent` (and writes nothing) if the connection is already closed."""
        if self._transport is None or self._transport.is_closing():
            raise _NotSent("the server closed the connection")
        self._parser = httptools.HttpResponseParser(self)
        self._status = 0
        self._headers = []
        self._chunks.clear()
        self._buffered = 0
        self.complete = False
        self.broken = None
        self.used = True
        self._headers_done = self._loop.create_future()
        self._transport.write(head + body if len(body) < 16384 else head)
        if len(body) >= 16384:
            self._transport.write(body)

    # Receiving (httptools callbacks)

    def data_received(self, data: bytes) -> None:
        if self._parser is None:  # disposed of: nothing more is read
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pragma: no cover - never asked for
            self._fail(httpx.RemoteProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(MalformedAnswer(f"malformed HTTP answer: {exc}"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self._status = self._parser.get_status_code()
        if self._headers_done is not None and not self._headers_done.done():
            self._headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.reusable = self._parser is not None and self._parser.should_keep_alive()
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        self.broken = exc
        self.close()
        self._wake()

    def _wake(self) -> None:
        headers_done = self._headers_done
        if headers_done is not None and not headers_done.done() and (self.broken or self.complete):
            headers_done.set_result(None)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # Reading

    async def wait_headers(self, limit_s: float | None) -> tuple[int, list[tuple[bytes, bytes]]]:
        assert self._headers_done is not None
        await _wait(self._headers_done, limit_s, self._loop)
        if self.broken is not None and not self._headers:
            raise self.broken
        status = self._status
        if not status and self._parser is not None:  # cut inside the head: what the status line said
            status = self._parser.get_status_code()
        return status, self._headers

    async def read_chunk(self, limit_s: float | None) -> bytes:
        """The next piece of the body; b"" at its end."""
        while not self._chunks:
            if self.broken is not None:
                raise _as_read_error(self.broken)
            if self.complete:
                return b""
            self._waiter = self._loop.create_future()
            try:
                await _wait(self._waiter, limit_s, self._loop)
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < LOW_WATER and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return chunk


async def _wait(future: asyncio.Future[None], limit_s: float | None, loop: asyncio.AbstractEventLoop) -> None:
    if limit_s is None:
        await future
        return
    # A timer handle is cheaper than asyncio.timeout() on the per-chunk path.
    handle = loop.call_later(limit_s, _expire, future)
    try:
        await future
    finally:
        handle.cancel()


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _reads_to_close(headers: list[tuple[bytes, bytes]]) -> bool:
    names = {name.lower() for name, _ in headers}
    return b"content-length" not in names and b"transfer-encoding" not in names


def _as_read_error(exc: BaseException) -> BaseException:
    if isinstance(exc, httpx.HTTPError):
        return exc
    return httpx.RemoteProtocolError(f"the server closed the connection before the answer ended ({exc})")


class _Body(httpx.AsyncByteStream):
    __slots__ = ("_connection", "_pool", "_read_timeout", "_released")

    def __init__(self, pool: H1Transport, connection: _Connection, read_timeout: float | None) -> None:
        self._pool = pool
        self._connection = connection
        self._read_timeout = read_timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            try:
                chunk = await connection.read_chunk(self._read_timeout)
            except TimeoutError:
                raise httpx.ReadTimeout("timed out waiting for the answer") from None
            if not chunk:
                self._release()
                return
            yield chunk

    async def aclose(self) -> None:
        self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self._connection)


class H1Transport(httpx.AsyncBaseTransport):
    """httpx's transport interface over a minimal HTTP/1.1 keep-alive pool (see the module docstring)."""

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout: float | None,
        read_timeout: float | None,
        pool_timeout: float | None,
        keepalive_expiry: float = KEEPALIVE_EXPIRY_S,
        ca_file: str | None = None,
        proxy: ProxyPolicy | None = None,
    ) -> None:
        self._limit = max_connections
        self._open = 0
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._pool_timeout = pool_timeout
        self._keepalive_expiry = keepalive_expiry
        self._ca_file = ca_file
        """Certificates to trust for TLS; None: certifi's bundle, as httpx uses."""
        self._ssl_context: ssl.SSLContext | None = None
        self._proxy = proxy
        self._routes: dict[Origin, Proxy | None] = {}
        """The proxy (None: direct) for each origin seen, decided once."""
        self._idle: dict[Origin, list[_Connection]] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        _live_transports.add(self)

    @property
    def open_connections(self) -> int:
        """Connections to upstreams, busy or idle, still open (for scrapes only: it walks the pool)."""
        if self._closed:
            return 0
        closed_idle = sum(c.closed for connections in self._idle.values() for c in connections)
        # Idle connections the server has closed still count in `_open` until the next request takes them
        # out of the pool; they hold no socket any more.
        return self._open - closed_idle

    @property
    def idle_connections(self) -> int:
        """Pooled connections still open."""
        return sum(not c.closed for connections in self._idle.values() for c in connections)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.raw_scheme, url.raw_host, url.port or (443 if url.raw_scheme == b"https" else 80))
        proxy = self._route(origin)
        forwarded = proxy is not None and origin[0] == b"http"
        head = _request_head(request, proxy if forwarded else None)
        body = request.content
        timeouts = request.extensions.get("timeout") or {}
        read_timeout = timeouts.get("read", self._read_timeout)
        for attempt in (1, 2):
            connection = await self._acquire(origin, timeouts)
            try:
                connection.send(head, body)
            except _NotSent:
                self.release(connection)
                if attempt == 1:
                    continue  # a keep-alive connection the server had closed, nothing written: a fresh one
                raise httpx.ConnectError("the server closed the connection") from None
            try:
                status, headers = await connection.wait_headers(read_timeout)
            except TimeoutError:
                connection.close()
                self.release(connection)
                raise httpx.ReadTimeout("timed out waiting for the answer") from None
            except BaseException as exc:
                # The request went out: it is never sent again, whatever happened to the connection.
                connection.close()
                self.release(connection)
                if isinstance(exc, httpx.HTTPError | asyncio.CancelledError):
                    raise
                raise httpx.ReadError(f"connection reset: {exc}") from exc
            if forwarded and status == 407:  # the proxy's own answer: it wants (other) credentials
                assert proxy is not None
                connection.close()
                self.release(connection)
                raise refusal(proxy, status)
            return httpx.Response(status, headers=headers, stream=_Body(self, connection, read_timeout))
        raise AssertionError("unreachable")  # pragma: no cover

    def _route(self, origin: Origin) -> Proxy | None:
        if self._proxy is None:
            return None
        try:
            return self._routes[origin]
        except KeyError:
            scheme, host, port = origin
            proxy = self._routes[origin] = self._proxy.for_origin(scheme.decode(), host.decode("ascii"), port)
            return proxy

    async def _acquire(self, origin: Origin, timeouts: dict[str, float | None]) -> _Connection:
        loop = asyncio.get_running_loop()
        idle = self._idle.get(origin)
        now = loop.time()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self._keepalive_expiry:
                return connection
            connection.dispose()
            self._open -= 1
        if self._open >= self._limit:
            await self._wait_for_room(timeouts.get("pool", self._pool_timeout), loop)
            return await self._acquire(origin, timeouts)
        self._open += 1
        try:
            return await self._connect(origin, timeouts.get("connect", self._connect_timeout), loop)
        except BaseException:
            self._open -= 1
            self._notify()
            raise

    async def _wait_for_room(self, limit_s: float | None, loop: asyncio.AbstractEventLoop) -> None:
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            await _wait(waiter, limit_s, loop)
        except TimeoutError:
            raise httpx.PoolTimeout("no free connection to the backend") from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def _connect(
        self, origin: Origin, limit_s: float | None, loop: asyncio.AbstractEventLoop
    ) -> _Connection:
        scheme, host, port = origin
        tls = scheme == b"https"
        if tls and self._ssl_context is None:
            self._ssl_context = ssl.create_default_context(cafile=self._ca_file or certifi.where())
        name = host.decode("ascii")
        proxy = self._route(origin)
        try:
            async with asyncio.timeout(limit_s):
                if proxy is not None and tls:
                    return await self._connect_tunnelled(origin, proxy, loop)
                _, connection = await loop.create_connection(
                    lambda: _Connection(origin, loop),
                    proxy.host if proxy else name,
                    proxy.port if proxy else port,
                    ssl=self._ssl_context if tls else None,
                    server_hostname=name if tls else None,
                )
        except TimeoutError:
            if proxy is not None:
                raise httpx.ConnectTimeout(
                    f"proxy {proxy.where} opened no tunnel within {limit_s:g} s"
                ) from None
            raise httpx.ConnectTimeout(f"no connection within {limit_s} s") from None
        except httpx.ConnectError:
            raise
        except ConnectionRefusedError as exc:
            if proxy is not None:
                raise httpx.ConnectError(f"proxy {proxy.where} refused the connection") from exc
            raise httpx.ConnectError("connection refused") from exc
        except ssl.SSLCertVerificationError as exc:
            raise httpx.ConnectError(f"TLS certificate verification failed ({exc.verify_message})") from exc
        except ssl.SSLError as exc:
            raise httpx.ConnectError(f"TLS handshake failed ({exc.reason})") from exc
        except OSError as exc:
            if proxy is not None and not tls:
                reason = type(exc).__name__
                raise httpx.ConnectError(f"proxy {proxy.where} is unreachable ({reason})") from exc
            raise httpx.ConnectError(str(exc)) from exc
        return connection

    async def _connect_tunnelled(
        self, origin: Origin, proxy: Proxy, loop: asyncio.AbstractEventLoop
    ) -> _Connection:
        """CONNECT through the proxy, then TLS to the upstream inside the tunnel."""
        name = origin[1].decode("ascii")
        raw = await open_tunnel(loop, proxy, name, origin[2])
        connection = _Connection(origin, loop)
        assert self._ssl_context is not None
        # start_tls closes `raw` itself if the handshake fails; it does not announce the connection.
        tls = await loop.start_tls(raw, connection, self._ssl_context, server_hostname=name)  # type: ignore[arg-type]
        if tls is None:  # pragma: no cover - only for a transport closed in the meantime
            raise httpx.ConnectError(f"proxy {proxy.where} closed the tunnel")
        connection.connection_made(tls)
        return connection

    def release(self, connection: _Connection) -> None:
        """Return a finished connection to the pool, or close it if its answer was not read to the end."""
        if self._closed or not (connection.complete and connection.reusable) or connection.closed:
            connection.dispose()
            self._open -= 1
        else:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(connection.origin, []).append(connection)
        self._notify()

    def _notify(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.dispose()
        self._idle.clear()


def _request_head(request: httpx.Request, forwarding_proxy: Proxy | None = None) -> bytes:
    """The request line and headers; through a forwarding proxy the target is absolute (RFC 9112 3.2.2)."""
    url = request.url
    target = url.raw_path
    if forwarding_proxy is not None:
        target = url.raw_scheme + b"://" + url.netloc + target
    lines = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        lines += (name, b": ", value, b"\r\n")
    if forwarding_proxy is not None and forwarding_proxy.authorization is not None:
        lines += (b"Proxy-Authorization: ", forwarding_proxy.authorization, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


__all__ = ("H1Transport", "MalformedAnswer", "open_connections")
