"""The incremental SSE decoder, fed streams split at every possible byte."""

from __future__ import annotations

import pytest

from adapters.sse import SSEDecoder

STREAM = (
    'data: {"response":"héllo 🌍","p":"abc"}\n\n'
    'data:{"response":"no space"}\r\n\r\n'
    ": a comment line\n"
    "event: ignored\n"
    'data: {"response":"cr only"}\r\r'
    "data: [DONE]\n\n"
).encode()

EXPECTED = [
    '{"response":"héllo 🌍","p":"abc"}'.encode(),
    b'{"response":"no space"}',
    b'{"response":"cr only"}',
    b"[DONE]",
]


def decode_in_pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    decoder = SSEDecoder()
    payloads: list[bytes] = []
    start = 0
    for cut in [*cuts, len(data)]:
        payloads += decoder.feed(data[start:cut])
        start = cut
    return payloads + decoder.close()


def test_whole_stream_yields_every_data_payload() -> None:
    """Both `data:` spellings, CRLF and lone CR line ends; comments and other fields are skipped."""
    assert decode_in_pieces(STREAM, []) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_at_any_byte_gives_the_same_payloads(cut: int) -> None:
    """A read boundary anywhere, including inside a multi-byte UTF-8 character, changes nothing."""
    payloads = decode_in_pieces(STREAM, [cut])
    assert [p.decode() for p in payloads] == [p.decode() for p in EXPECTED]


def test_one_byte_at_a_time() -> None:
    assert decode_in_pieces(STREAM, list(range(1, len(STREAM)))) == EXPECTED


def test_final_line_without_newline_is_flushed_on_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a":1}\n\ndata: {"b"') == [b'{"a":1}']
    assert decoder.feed(b":2}") == []
    assert decoder.close() == [b'{"b":2}']


def test_events_without_blank_lines_are_still_separate() -> None:
    """Upstreams that write one `data:` line per event with no blank line in between."""
    assert SSEDecoder().feed(b"data: 1\ndata: 2\ndata: 3\n") == [b"1", b"2", b"3"]
