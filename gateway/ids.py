"""Ids for requests, completions and tool calls: unique, not secret.

They come from Python's seeded PRNG rather than `os.urandom`: a system call per id showed up in the
request path's profile, and nothing about these ids needs to be unpredictable.
"""

from __future__ import annotations

from random import getrandbits


def hex_id(nbytes: int) -> str:
    return f"{getrandbits(nbytes * 8):0{nbytes * 2}x}"


__all__ = ("hex_id",)
