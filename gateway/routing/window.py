"""Recent attempts per target (requests, errors, latency) over the last few minutes, for `/status`.

A ring of `SLOTS` buckets of `SLOT_S` seconds each; a bucket counts attempts, errors and a latency
histogram on fixed log-spaced bounds, so recording is a few integer updates (no list grows) and the
p50/p95 are read from the summed histogram at the bound the percentile falls in (an upper estimate
within one bucket's width, about 26 %). In process: each worker process and replica counts its own.
"""

from __future__ import annotations

import bisect
import time
from typing import Final

import msgspec

SLOT_S: Final = 10.0
SLOTS: Final = 30
WINDOW_S: Final = SLOT_S * SLOTS
"""The window the figures cover: the last five minutes."""
LATENCY_BOUNDS_S: Final = tuple(0.001 * 10 ** (i / 10) for i in range(51))
"""Histogram upper bounds from 1 ms to 100 s, ten per decade (above: counted at 100 s)."""


class WindowFigures(msgspec.Struct, frozen=True, kw_only=True):
    window_s: float
    requests: int
    """Attempts sent to the target in the window (skipped attempts do not count)."""
    errors: int
    """Attempts that failed for the target's sake (what the breaker counts, and timeouts)."""
    p50_ms: float | None
    p95_ms: float | None
    """Latency until the answer began (a stream's first event, else the whole answer); None: no attempt."""


class RollingWindow:
    __slots__ = ("_errors", "_histograms", "_requests", "_stamps")

    def __init__(self) -> None:
        self._stamps = [-1] * SLOTS
        """The slot number (monotonic seconds // SLOT_S) each bucket holds; -1: empty."""
        self._requests = [0] * SLOTS
        self._errors = [0] * SLOTS
        self._histograms = [[0] * len(LATENCY_BOUNDS_S) for _ in range(SLOTS)]

    def record(self, latency_s: float, *, error: bool, now: float | None = None) -> None:
        slot = int((time.monotonic() if now is None else now) // SLOT_S)
        index = slot % SLOTS
        if self._stamps[index] != slot:
            self._stamps[index] = slot
            self._requests[index] = self._errors[index] = 0
            self._histograms[index] = [0] * len(LATENCY_BOUNDS_S)
        self._requests[index] += 1
        if error:
            self._errors[index] += 1
        bound = min(bisect.bisect_left(LATENCY_BOUNDS_S, latency_s), len(LATENCY_BOUNDS_S) - 1)
        self._histograms[index][bound] += 1

    def figures(self, now: float | None = None) -> WindowFigures:
        oldest = int((time.monotonic() if now is None else now) // SLOT_S) - SLOTS + 1
        live = [i for i, stamp in enumerate(self._stamps) if stamp >= oldest]
        histogram = [sum(self._histograms[i][b] for i in live) for b in range(len(LATENCY_BOUNDS_S))]
        return WindowFigures(
            window_s=WINDOW_S,
            requests=sum(self._requests[i] for i in live),
            errors=sum(self._errors[i] for i in live),
            p50_ms=_percentile(histogram, 0.50),
            p95_ms=_percentile(histogram, 0.95),
        )


def _percentile(histogram: list[int], fraction: float) -> float | None:
    total = sum(histogram)
    if not total:
        return None
    rank, seen = fraction * total, 0
    for bound, count in zip(LATENCY_BOUNDS_S, histogram, strict=True):
        seen += count
        if seen >= rank:
            return round(bound * 1e3, 1)
    return round(LATENCY_BOUNDS_S[-1] * 1e3, 1)


__all__ = ("WINDOW_S", "RollingWindow", "WindowFigures")
