"""Incremental decoder for the `data:` payloads of an upstream SSE stream.

Works on bytes, so a read that ends inside a line or inside a multi-byte UTF-8 character is simply
kept until the rest arrives; payloads are handed on as bytes for msgspec to decode directly.

Every `data:` line is one payload. The SSE spec would join consecutive `data:` lines of one event
with newlines, but the JSON payloads of Workers AI and vLLM never span lines, and treating each line
on its own also copes with upstreams that omit the blank line between events (as Cloudflare's own
decoder does). `event:`, `id:`, `retry:` and comment lines are ignored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Final

from adapters.errors import UpstreamProtocolError
from adapters.http import iter_body

if TYPE_CHECKING:
    import httpx

    from adapters.canonical import Event

MAX_LINE_BYTES: Final = 16 * 1024 * 1024
"""A line longer than this without a newline is treated as a broken stream, not buffered forever."""


class SSELineTooLong(ValueError):
    pass


class SSEDecoder:
    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Return the payloads of the `data:` lines that `chunk` completes."""
        if self._buffer:
            chunk = self._buffer + chunk
        if b"\r" in chunk:
            # CRLF and lone CR are line ends too; the blank lines this may create are skipped below.
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > MAX_LINE_BYTES:
            raise SSELineTooLong(f"an SSE line exceeded {MAX_LINE_BYTES} bytes")
        return [_payload(line) for line in lines if line.startswith(b"data:")]

    def close(self) -> list[bytes]:
        """Return the payload of a final `data:` line that had no newline, if any."""
        line, self._buffer = self._buffer, b""
        return [_payload(line)] if line.startswith(b"data:") else []


def _payload(line: bytes) -> bytes:
    payload = line[5:]
    return payload[1:] if payload[:1] == b" " else payload


class SSEAnswer:
    """An upstream SSE answer as canonical events: `parse` turns one `data:` payload into events.

    The stream must end with `data: [DONE]`; one that stops without it is an incomplete answer and
    is reported as such, never as a normal end.
    """

    __slots__ = ("_backend", "_parse", "_response", "_timeout_s")

    def __init__(
        self,
        response: httpx.Response,
        *,
        backend: str,
        timeout_s: float,
        parse: Callable[[bytes], Iterable[Event]],
    ) -> None:
        self._response = response
        self._backend = backend
        self._timeout_s = timeout_s
        self._parse = parse

    async def aclose(self) -> None:
        await self._response.aclose()

    async def events(self) -> AsyncIterator[Event]:
        backend = self._backend
        decoder = SSEDecoder()
        parse = self._parse
        try:
            async for chunk in iter_body(self._response, backend=backend, timeout_s=self._timeout_s):
                for payload in decoder.feed(chunk):
                    if payload == b"[DONE]":
                        return
                    for event in parse(payload):
                        yield event
            for payload in decoder.close():
                if payload == b"[DONE]":
                    return
                for event in parse(payload):
                    yield event
        except SSELineTooLong as exc:
            raise UpstreamProtocolError(
                backend, f"backend '{backend}' sent an oversized stream event", code="upstream_malformed"
            ) from exc
        finally:
            await self._response.aclose()
        raise UpstreamProtocolError(
            backend,
            f"backend '{backend}' ended its stream without [DONE]: the answer is incomplete",
            code="upstream_stream_truncated",
        )


__all__ = ("MAX_LINE_BYTES", "SSEAnswer", "SSEDecoder", "SSELineTooLong")
