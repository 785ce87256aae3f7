"""The HTTP plumbing shared by the network adapters: client construction and transport-error mapping.

This is the one place where httpx exceptions become `UpstreamError`s.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

import httpx

from adapters.errors import UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from adapters.proxy import resolve as resolve_proxy
from adapters.transport import H1Transport, MalformedAnswer

CONNECT_TIMEOUT_S: Final = 5.0
WRITE_TIMEOUT_S: Final = 10.0
POOL_TIMEOUT_S: Final = 5.0
MAX_CONNECTIONS: Final = 10_000
"""Per backend and process unless `max_concurrency` says less: every open stream holds a connection."""
KEEPALIVE_EXPIRY_S: Final = 30.0
MAX_ERROR_BODY: Final = 64 * 1024
"""Error bodies are read up to this size: enough for any real message, bounded against a hostile upstream."""
MAX_RESPONSE_BODY: Final = 32 * 1024 * 1024
"""A non-streamed answer larger than this is refused as a protocol error instead of filling memory."""


class UpstreamClient(httpx.AsyncClient):
    """An `httpx.AsyncClient` whose `send` goes straight to its transport.

    The gateway's upstream calls use no auth flows, redirects, cookies or event hooks, and httpx's
    generic handling of them costs more per request than the network round trip on loopback
    (measured in docs/performance.md). Everything else is httpx's API, unchanged.
    """

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = None,
        follow_redirects: Any = None,
    ) -> httpx.Response:
        """As httpx's `send`, without auth flows or redirects: asking for either is a programming error,
        refused rather than silently ignored."""
        default = httpx.USE_CLIENT_DEFAULT  # what httpx's own get()/post() pass on
        if auth not in (None, default) or follow_redirects not in (None, False, default):
            raise TypeError("UpstreamClient.send takes no auth and follows no redirects")
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
    """One upstream URL with its fixed headers, parsed once and reused for every request to it.

    A POST is built from a header template (Host and the fixed headers, normalised once) and a
    prepared body stream: httpx's general `Request(content=...)` path re-normalises every header,
    probes for a content type and merges default headers per request, which measured ~16 us of the
    gateway's ~450 us per request (`make profile`); this path is ~4 us and sends the same bytes.
    """

    __slots__ = ("_headers", "_template", "_url")

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        self._url = httpx.URL(url)
        self._headers = dict(headers)
        self._template = httpx.Headers([("Host", self._url.netloc.decode("ascii")), *self._headers.items()])

    def post(self, body: bytes, headers: Mapping[str, str] | None = None) -> httpx.Request:
        all_headers = self._template.copy()
        if headers is not None:
            all_headers.update(headers)
        all_headers["Content-Length"] = str(len(body))
        request = httpx.Request("POST", self._url, headers=all_headers, stream=httpx.ByteStream(body))
        request.read()  # one chunk: sets `request.content`, which the transport sends
        return request

    def get(self) -> httpx.Request:
        return httpx.Request("GET", self._url, headers=self._headers)


def build_client(
    *,
    timeout_s: float,
    max_connections: int | None = None,
    ca_file: str | None = None,
    proxy: str | None = None,
) -> UpstreamClient:
    """One client per backend, built in the app's lifespan and reused for every request.

    httpx's API over our own HTTP/1.1 transport (adapters/transport.py): httpx 0.28's connection
    pool scans every pooled connection on each request and dominated the profile under concurrency.
    Measured, one worker, 32 connections: 587 req/s with httpx's pool, 1,924 over aiohttp (stock
    httpx-aiohttp), 2,964 over a lean aiohttp transport, ~3,950 over this one.

    `proxy` is the backend's `proxy:` setting (a URL, `none`, or None for HTTPS_PROXY/HTTP_PROXY/
    NO_PROXY from the environment, read here, once per client); see adapters/proxy.py.
    """
    connections = max_connections or MAX_CONNECTIONS
    timeout = httpx.Timeout(
        connect=min(CONNECT_TIMEOUT_S, timeout_s), read=timeout_s, write=WRITE_TIMEOUT_S, pool=POOL_TIMEOUT_S
    )
    return UpstreamClient(
        timeout=timeout,
        transport=H1Transport(
            max_connections=connections,
            connect_timeout=timeout.connect,
            read_timeout=timeout.read,
            pool_timeout=timeout.pool,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
            ca_file=ca_file,
            proxy=resolve_proxy(proxy, os.environ),
        ),
        follow_redirects=False,
        trust_env=False,
    )


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
        reason = str(exc)
        raise UpstreamTimeout(
            backend,
            f"backend '{backend}' not reached: {reason}"  # our transport's wording, without credentials
            if reason.startswith("proxy ")
            else f"backend '{backend}' did not accept a connection within {CONNECT_TIMEOUT_S:g} s",
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
        if isinstance(exc, MalformedAnswer):
            # It did answer, with bytes that are not HTTP: a wrong port or a broken proxy, not an outage.
            raise UpstreamProtocolError(
                backend,
                f"backend '{backend}' answered with something that is not HTTP",
                code="upstream_malformed",
            ) from exc
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
    if text.startswith(("TLS ", "proxy ")):
        return text[:200]  # our transport's own wording, which never includes a URL or credentials
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


def _chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's chunks: straight from the transport unless the body is content-encoded.

    Upstream requests ask for no encoding (Endpoint sends no Accept-Encoding), so the body is
    identity-coded and httpx's `aiter_bytes` (a decoder, two re-chunkers, a request context per
    body) only copies it: ~40 us per answer of a few hundred bytes, measured, of the gateway's ~450.
    Callers close the response afterwards as before, which releases the connection once.
    """
    stream = response.stream
    if "content-encoding" in response.headers or not isinstance(stream, httpx.AsyncByteStream):
        return response.aiter_bytes()
    return aiter(stream)


async def read_body(response: httpx.Response, *, backend: str, timeout_s: float, limit: int) -> bytes:
    """Read a whole body, refusing (as a protocol error) one larger than `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    with transport_errors(backend, timeout_s=timeout_s, responded=True):
        async for chunk in _chunks(response):
            size += len(chunk)
            if size > limit:
                raise UpstreamProtocolError(
                    backend,
                    f"backend '{backend}' sent an answer larger than {limit} bytes",
                    code="upstream_too_large",
                )
            chunks.append(chunk)
    return b"".join(chunks)


async def fetch_whole(
    client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    backend: str,
    timeout_s: float,
    status_error: Callable[[int, bytes, httpx.Headers], UpstreamError],
) -> bytes:
    """Send, and return the whole body of a successful answer (at most `MAX_RESPONSE_BODY` bytes).

    An error status raises `status_error(status, error body, headers)`; the connection is released
    either way.
    """
    response = await send(client, request, backend=backend, timeout_s=timeout_s)
    try:
        if response.status_code >= 400:
            raw = await read_body(response, backend=backend, timeout_s=timeout_s, limit=MAX_ERROR_BODY)
            raise status_error(response.status_code, raw, response.headers)
        return await read_body(response, backend=backend, timeout_s=timeout_s, limit=MAX_RESPONSE_BODY)
    finally:
        await response.aclose()


async def iter_body(response: httpx.Response, *, backend: str, timeout_s: float) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive, with transport failures translated."""
    iterator = _chunks(response)
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
    "Endpoint",
    "UpstreamClient",
    "build_client",
    "fetch_whole",
    "iter_body",
    "parse_retry_after",
    "read_body",
    "send",
    "transport_errors",
)
