"""Session affinity: requests of one session go to the same target of a weighted group.

A session is named by the request's `prompt_cache_key` or, without one, by the client's
`x-session-affinity` header (both as `session_token` makes them: header-safe, at most 128 bytes).
Within each weighted group the targets are ordered by weighted rendezvous (highest random weight)
hashing: each target scores `ln(u) / weight`, `u` a uniform value in (0, 1) drawn from the session
and the target's name, and the highest score comes first. So a session lands on each target with
probability weight / total weight; when a target is skipped (breaker open, failing its health check,
full) the router takes the session's next-ranked target, so only that target's sessions move, each
to its own second choice, and they all come back when it returns. Every replica computes the same
order: the hash is keyed by config names only (never Python's per-process `hash`).

Cost: nothing for a request without a session or a model without a weighted group; otherwise one
8-byte BLAKE2b of the session and a few integer operations and a sort per target of the group
(docs/reliability.md has the figure).
"""

from __future__ import annotations

import hashlib
from math import log
from typing import TYPE_CHECKING, Final

import msgspec
from msgspec import UNSET

from adapters.canonical import SESSION_HEADER as UPSTREAM_SESSION_HEADER
from adapters.canonical import ChatRequest

if TYPE_CHECKING:
    from adapters.canonical import CanonicalRequest
    from gateway.context import RequestInfo
    from gateway.routing.router import Route
    from gateway.translation.translate import Translated

SESSION_HEADER: Final = UPSTREAM_SESSION_HEADER.encode()
"""The client's session header: the one the gateway sends upstream, the name Workers AI reads, so
clients can use one for both."""
_MASK: Final = (1 << 64) - 1
_TO_UNIT: Final = 1.0 / (1 << 64)


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class Rendezvous:
    """One weighted group, ordered per session."""

    __slots__ = ("_members", "_routes")

    def __init__(self, routes: list[Route]) -> None:
        self._routes = routes
        self._members = [
            (_digest(f"{route.backend}/{route.model}"), 1.0 / (route.weight or 1.0), index)
            for index, route in enumerate(routes)
        ]
        """Per target: the seed its draws are made from, 1 / its weight, its place in `_routes`."""

    def order(self, key: int) -> list[Route]:
        """The group's targets, the session's first choice first."""
        scored = []
        for seed, inverse_weight, index in self._members:
            # A uniform draw in (0, 1) from the session and the target: splitmix64's finaliser.
            x = key ^ seed
            x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
            x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
            x ^= x >> 31
            scored.append((log((x + 0.5) * _TO_UNIT) * inverse_weight, index))
        scored.sort(reverse=True)
        routes = self._routes
        return [routes[index] for _, index in scored]


def session_key(session: str) -> int:
    """The session's hash, computed once per request and combined with each target's."""
    return _digest(session)


def session_of(
    translated: Translated[CanonicalRequest], info: RequestInfo
) -> tuple[Translated[CanonicalRequest], str | None]:
    """The request's session (`prompt_cache_key`, else the header), and the request to send: a chat
    request named by the header carries it upstream too (`ChatRequest.session_affinity`), so Workers
    AI gets its prefix-cache hint whichever way the client named the session."""
    request = translated.request
    if not isinstance(request, ChatRequest):
        return translated, info.session
    if request.session_affinity is not UNSET:
        return translated, request.session_affinity
    if info.session is None:
        return translated, None
    request = msgspec.structs.replace(request, session_affinity=info.session)
    return msgspec.structs.replace(translated, request=request), info.session


__all__ = ("SESSION_HEADER", "Rendezvous", "session_key", "session_of")
