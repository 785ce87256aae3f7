"""The HTTP plumbing shared by the network adapters: client construction and transport-error mapping.

This is the one place where httpx exceptions become `UpstreamError`s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

import aiohttp
import httpx

from adapters.errors import UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamTimeout

CONNECT_TIMEOUT_S: Final = 5.0
WRITE_TIMEOUT_S: Final = 10.0
POOL_TIMEOUT_S: Final = 5.0
MAX_CONNECTIONS: Final = 1000
MAX_KEEPALIVE: Final = 200
KEEPALIVE_EXPIRY_S: Final = 30.0
MAX_ERROR_BODY: Final = 64 * 1024
"""Error bodies are read up to this size: enough for any real message, bounded against a hostile upstream."""
MAX_RESPONSE_BODY: Final = 32 * 1024 * 1024
"""A non-streamed answer larger than this is refused as a protocol error instead of filling memory."""


class UpstreamClient(httpx.AsyncClient):
    """An `httpx.AsyncClient` whose `send` goes straight to its transport.

    The gateway's upstream calls use no auth flows, redirects, cookies or event hooks, and httpx's
    generic handling of them costs more per request than the network round trip on loopback
    (measured in the README's Performance section). Everything else is httpx's API, unchanged.
    """

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = None,
        follow_redirects: Any = None,
    ) -> httpx.Response:
        response = await self._transport.handle_async_request(request)
        response.request = request
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response


class Endpoint:
    """One upstream URL with its fixed headers, parsed once and reused for every request to it."""

    __slots__ = ("_headers", "_url")

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        self._url = httpx.URL(url)
        self._headers = dict(headers)

    def post(self, body: bytes, headers: Mapping[str, str] | None = None) -> httpx.Request:
        all_headers = self._headers if headers is None else {**self._headers, **headers}
        return httpx.Request("POST", self._url, headers=all_headers, content=body)

    def get(self) -> httpx.Request:
        return httpx.Request("GET", self._url, headers=self._headers)


def build_client(*, timeout_s: float, max_connections: int | None = None) -> UpstreamClient:
    """One client per backend, built in the app's lifespan and reused for every request.

    aiohttp sits under httpx's API: httpx 0.28's own connection pool scans every pooled connection
    on each request and was the bottleneck under concurrency (587 vs 1,924 requests/s measured).
    """
    connections = max_connections or MAX_CONNECTIONS
    timeout = httpx.Timeout(
        connect=min(CONNECT_TIMEOUT_S, timeout_s), read=timeout_s, write=WRITE_TIMEOUT_S, pool=POOL_TIMEOUT_S
    )
    return UpstreamClient(
        timeout=timeout,
        transport=AiohttpTransport(max_connections=connections, timeout=timeout),
        follow_redirects=False,
        trust_env=False,
    )


_CLIENT_HEADERS: Final = ("User-Agent", "Accept")


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx's transport interface over an aiohttp connection pool.

    aiohttp exceptions are re-raised as the httpx exceptions they correspond to, so the rest of the
    code (and `transport_errors`) deals with httpx only.
    """

    def __init__(self, *, max_connections: int, timeout: httpx.Timeout) -> None:
        self._max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=(timeout.pool or 0) + (timeout.connect or 0) or None,
            sock_connect=timeout.connect,
            sock_read=timeout.read,
        )
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Created on first use: aiohttp sessions belong to the running event loop.
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=KEEPALIVE_EXPIRY_S,
            ttl_dns_cache=300,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,  # httpx's decoders handle Content-Encoding in aiter_bytes()
            skip_auto_headers=_CLIENT_HEADERS,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        with _aiohttp_errors():
            response = await session.request(
                request.method,
                str(request.url),
                headers=request.headers,
                data=request.content or None,
                allow_redirects=False,
            )
        return httpx.Response(response.status, headers=response.raw_headers, stream=_AiohttpBody(response))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _AiohttpBody(httpx.AsyncByteStream):
    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        with _aiohttp_errors():
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk

    async def aclose(self) -> None:
        # An answer not read to the end (client gone, stop sequence) closes the connection, which is
        # how the upstream learns to stop generating; a finished one goes back to the pool.
        if self._response.content.is_eof():
            self._response.release()
        else:
            self._response.close()


@contextmanager
def _aiohttp_errors() -> Iterator[None]:
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc)) from exc
    except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
        raise httpx.ReadTimeout(str(exc) or "timed out") from exc
    except aiohttp.ClientConnectorError as exc:
        refused = isinstance(exc.os_error, ConnectionRefusedError)
        raise httpx.ConnectError("connection refused" if refused else str(exc.os_error or exc)) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
        raise httpx.RemoteProtocolError(f"server disconnected or sent an incomplete answer: {exc}") from exc
    except aiohttp.ClientOSError as exc:
        raise httpx.ReadError(f"connection reset: {exc}") from exc
    except aiohttp.ClientError as exc:
        raise httpx.TransportError(f"{type(exc).__name__}: {exc}") from exc


@contextmanager
def transport_errors(backend: str, *, timeout_s: float, responded: bool = False) -> Iterator[None]:
    """Translate httpx's exceptions into `UpstreamError`s that name the backend and hide the URL.

    `responded` tells whether a response had begun, which turns a dropped connection from a
    connection failure into a broken answer.
    """
    try:
        yield
    except UpstreamError:
        raise
    except httpx.ConnectTimeout as exc:
        raise UpstreamTimeout(
            backend,
            f"backend '{backend}' did not accept a connection within {CONNECT_TIMEOUT_S:g} s",
            status_code=504,
            error_type="timeout",
            code="upstream_timeout",
        ) from exc
    except httpx.PoolTimeout as exc:
        raise UpstreamTimeout(
            backend,
            f"backend '{backend}' has no free connection (pool exhausted)",
            status_code=503,
            error_type="overloaded",
            code="upstream_busy",
        ) from exc
    except httpx.TimeoutException as exc:
        what = "sent nothing" if not responded else "stalled"
        raise UpstreamTimeout(
            backend,
            f"backend '{backend}' {what} for {timeout_s:g} s",
            status_code=504,
            error_type="timeout",
            code="upstream_timeout",
        ) from exc
    except httpx.ConnectError as exc:
        raise UpstreamConnectError(
            backend,
            f"could not connect to backend '{backend}': {_reason(exc)}",
            code="upstream_unreachable",
        ) from exc
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        if responded:
            raise UpstreamProtocolError(
                backend, f"backend '{backend}' broke off its answer: {_reason(exc)}", code="upstream_cut"
            ) from exc
        raise UpstreamConnectError(
            backend,
            f"backend '{backend}' closed the connection without answering: {_reason(exc)}",
            code="upstream_unreachable",
        ) from exc
    except httpx.HTTPError as exc:
        raise UpstreamProtocolError(
            backend, f"backend '{backend}' failed: {type(exc).__name__}", code="upstream_error"
        ) from exc


def _reason(exc: Exception) -> str:
    """A short, URL-free reason: httpx messages can carry the request URL, which we never echo."""
    text = str(exc).strip()
    for marker in (
        "refused",
        "reset",
        "timed out",
        "disconnected",
        "incomplete",
        "Name or service not known",
    ):
        if marker.lower() in text.lower():
            return {"Name or service not known": "unknown host"}.get(marker, marker)
    return type(exc).__name__


async def send(
    client: httpx.AsyncClient, request: httpx.Request, *, backend: str, timeout_s: float
) -> httpx.Response:
    """Send with streaming on, so the caller can check the status before reading the body."""
    with transport_errors(backend, timeout_s=timeout_s):
        return await client.send(request, stream=True)


async def read_body(response: httpx.Response, *, backend: str, timeout_s: float, limit: int) -> bytes:
    """Read a whole body, refusing (as a protocol error) one larger than `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    with transport_errors(backend, timeout_s=timeout_s, responded=True):
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise UpstreamProtocolError(
                    backend,
                    f"backend '{backend}' sent an answer larger than {limit} bytes",
                    code="upstream_too_large",
                )
            chunks.append(chunk)
    return b"".join(chunks)


async def iter_body(response: httpx.Response, *, backend: str, timeout_s: float) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive, with transport failures translated."""
    iterator = response.aiter_bytes()
    while True:
        with transport_errors(backend, timeout_s=timeout_s, responded=True):
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                return
        yield chunk


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds only; HTTP dates are rare upstream)."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            return None
    return None


__all__ = (
    "MAX_ERROR_BODY",
    "MAX_RESPONSE_BODY",
    "AiohttpTransport",
    "Endpoint",
    "UpstreamClient",
    "build_client",
    "iter_body",
    "parse_retry_after",
    "read_body",
    "send",
    "transport_errors",
)
