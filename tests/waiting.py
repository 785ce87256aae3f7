"""Waiting for something another process or thread does, without sleeping a guessed time.

The deadline is a hang guard, not a speed requirement: generous enough for a busy 2-core machine
running two copies of the suite, and never reached when things work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, TypeVar

HANG_GUARD_S: Final = 30.0
POLL_S: Final = 0.02
_T = TypeVar("_T")


def wait_for(condition: Callable[[], _T], timeout: float = HANG_GUARD_S) -> _T:
    """The first truthy value of `condition()`, polled; fails the test past `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"still not true after {timeout:g} s: {getattr(condition, '__name__', condition)}"
            )
        time.sleep(POLL_S)


__all__ = ("HANG_GUARD_S", "wait_for")
