"""Incremental decoder for the `data:` payloads of an upstream SSE stream.

Works on bytes, so a read that ends inside a line or inside a multi-byte UTF-8 character is simply
kept until the rest arrives; payloads are handed on as bytes for msgspec to decode directly.

Every `data:` line is one payload. The SSE spec would join consecutive `data:` lines of one event
with newlines, but the JSON payloads of Workers AI and vLLM never span lines, and treating each line
on its own also copes with upstreams that omit the blank line between events (as Cloudflare's own
decoder does). `event:`, `id:`, `retry:` and comment lines are ignored.
"""

from __future__ import annotations

from typing import Final

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


__all__ = ("MAX_LINE_BYTES", "SSEDecoder", "SSELineTooLong")
