"""The HTTP/1.1 transport against real sockets: split and chunked bodies, stale keep-alive connections,
a request that went out and is never sent twice, the pool timeout, answers that are not HTTP, and TLS.

Each test runs a small asyncio server in the test's own loop that answers with exactly the bytes the
case needs, and counts the requests it read.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trustme

from adapters.http import build_client
from adapters.transport import H1Transport, MalformedAnswer

pytestmark = pytest.mark.anyio

HANG_GUARD_S = 30.0
"""Generous: only a hang would take this long."""

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests = 0
        self.url = ""

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        """One request (head and content-length body); b"" when the client closed instead."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return b""
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length) if length else b""
        self.requests += 1
        return head + body

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self)
        except ConnectionError:
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server(handler)
    listener = await asyncio.start_server(server._on_connect, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"{'https' if tls else 'http'}://localhost:{port}"
    try:
        yield server
    finally:
        listener.close()
        await listener.wait_closed()


def transport(
    *, connections: int = 4, pool_timeout: float = HANG_GUARD_S, ca_file: str | None = None
) -> H1Transport:
    return H1Transport(
        max_connections=connections,
        connect_timeout=HANG_GUARD_S,
        read_timeout=HANG_GUARD_S,
        pool_timeout=pool_timeout,
        ca_file=ca_file,
    )


async def post(client: httpx.AsyncClient, url: str, body: bytes = b"{}") -> tuple[int, bytes]:
    response = await client.send(client.build_request("POST", url, content=body), stream=True)
    try:
        return response.status_code, await response.aread()
    finally:
        await response.aclose()


def answer(body: bytes, *, close: bool = False) -> bytes:
    connection = b"connection: close\r\n" if close else b""
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), connection, body)


async def test_an_answer_split_into_single_bytes_is_read_whole() -> None:
    body = b'{"answer": "' + b"x" * 300 + b'"}'

    async def byte_by_byte(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        for i in range(len(reply := answer(body))):
            writer.write(reply[i : i + 1])
            await writer.drain()
            if i % 50 == 0:
                await asyncio.sleep(0)  # let the client read the pieces apart

    async with serving(byte_by_byte) as server, httpx.AsyncClient(transport=transport()) as client:
        assert await asyncio.wait_for(post(client, server.url), HANG_GUARD_S) == (200, body)


async def test_a_chunked_answer_whose_chunks_straddle_reads_is_read_whole() -> None:
    pieces = [b"data: one\n\n", b"data: two\n\n", b"x" * 5000]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n"

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        wire = head + encoded
        for start in range(0, len(wire), 7):  # 7-byte writes cut sizes, data and CRLFs alike
            writer.write(wire[start : start + 7])
            await writer.drain()
            await asyncio.sleep(0)
        await server.read_request(reader)  # keep-alive: the connection is reused for a second request
        writer.write(answer(b"again"))
        await writer.drain()

    async with serving(chunked) as server, httpx.AsyncClient(transport=transport()) as client:
        assert await post(client, server.url) == (200, b"".join(pieces))
        assert await post(client, server.url) == (200, b"again")
    assert (server.connections, server.requests) == (1, 2)


async def test_a_keep_alive_connection_the_server_closed_is_replaced_without_losing_the_request() -> None:
    async def one_per_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(answer(b"ok"))  # keep-alive answer, then the server closes the idle connection
        await writer.drain()

    async with serving(one_per_connection) as server, httpx.AsyncClient(transport=transport()) as client:
        assert await post(client, server.url) == (200, b"ok")
        for _ in range(100):  # until the client's loop has seen the close (bounded by count)
            if server.connections == 1 and not client._transport.idle_connections:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.01)
        assert await post(client, server.url) == (200, b"ok")
    assert (server.connections, server.requests) == (2, 2)


async def test_a_request_that_went_out_is_never_sent_twice() -> None:
    """The server reads the request and drops the connection without answering: on a reused
    keep-alive connection too, the transport reports it instead of replaying the POST."""

    async def answer_then_drop(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(answer(b"first"))
        await writer.drain()
        await server.read_request(reader)  # the second request arrives on the reused connection...
        # ...and the server goes away without a word

    async with serving(answer_then_drop) as server, httpx.AsyncClient(transport=transport()) as client:
        assert await post(client, server.url) == (200, b"first")
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await asyncio.wait_for(post(client, server.url, b'{"costs": "tokens"}'), HANG_GUARD_S)
    assert (server.connections, server.requests) == (1, 2)


async def test_no_free_connection_within_the_pool_timeout_is_a_pool_timeout() -> None:
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")  # the head, the body only later
        await writer.drain()
        await release.wait()
        writer.write(b"ok")
        await writer.drain()

    async with (
        serving(slow) as server,
        httpx.AsyncClient(transport=transport(connections=1, pool_timeout=0.2)) as client,
    ):
        held = await client.send(client.build_request("POST", server.url, content=b"{}"), stream=True)
        with pytest.raises(httpx.PoolTimeout):
            await post(client, server.url)
        release.set()
        assert await held.aread() == b"ok"
        await held.aclose()
    assert server.requests == 1


async def test_an_answer_that_is_not_http_is_a_malformed_answer() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()

    async with serving(garbage) as server, httpx.AsyncClient(transport=transport()) as client:
        with pytest.raises(MalformedAnswer):
            await post(client, server.url)


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


async def test_tls_to_a_server_of_a_trusted_ca_and_refusal_of_an_unknown_one(
    authority: trustme.CA, tmp_path: Path
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))

    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(answer(b"secure"))
        await writer.drain()

    async with serving(ok, tls=context) as server:
        async with httpx.AsyncClient(transport=transport(ca_file=str(ca_file))) as client:
            assert await post(client, server.url) == (200, b"secure")
        async with httpx.AsyncClient(transport=transport()) as client:  # certifi's CAs only
            with pytest.raises(httpx.ConnectError, match="TLS certificate verification failed"):
                await post(client, server.url)
    assert server.requests == 1


async def test_the_upstream_client_refuses_options_it_would_ignore() -> None:
    async with build_client(timeout_s=5) as client:
        request = client.build_request("POST", "http://127.0.0.1:9/", content=b"{}")
        with pytest.raises(TypeError, match="no auth"):
            await client.send(request, auth=("user", "password"))
        with pytest.raises(TypeError, match="redirects"):
            await client.send(request, follow_redirects=True)
