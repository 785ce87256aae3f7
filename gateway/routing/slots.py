"""`max_concurrency` per backend: a counter of calls in flight, and a FIFO of requests waiting for one.

A freed slot is handed straight to the longest waiter, so waiting requests are served in order and a
new request cannot overtake them. A request may wait on several backends at once (`acquire_any`):
whichever frees a slot first serves it.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    __slots__ = ("in_use", "limit", "waiters")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        """None: unbounded, and nothing is counted."""
        self.in_use = 0
        self.waiters: deque[asyncio.Future[Slots]] = deque()

    def try_acquire(self) -> bool:
        if self.limit is None:
            return True
        # While anyone waits, every slot is handed over on release, so in_use stays at the limit.
        if self.in_use < self.limit:
            self.in_use += 1
            return True
        return False

    def release(self) -> None:
        if self.limit is None:
            return
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # done: cancelled, or already served by another backend
                waiter.set_result(self)
                return
        self.in_use -= 1


async def acquire_any(pools: list[Slots], wait_s: float) -> Slots | None:
    """Wait up to `wait_s` seconds for a slot on any of `pools`; the pool that gave one, or None."""
    if wait_s <= 0:
        return None
    waiter: asyncio.Future[Slots] = asyncio.get_running_loop().create_future()
    for pool in pools:
        pool.waiters.append(waiter)
    granted: Slots | None = None
    try:
        async with asyncio.timeout(wait_s):
            granted = await waiter
    except TimeoutError:
        return None
    finally:
        for pool in pools:
            while waiter in pool.waiters:
                pool.waiters.remove(waiter)
        if granted is None and waiter.done() and not waiter.cancelled():
            # A slot arrived just as the wait was cut short: pass it on rather than leak it.
            waiter.result().release()
    return granted


__all__ = ("Slots", "acquire_any")
