"""A consecutive-failure circuit breaker for one target (one backend + upstream model).

    closed ──(failure_threshold consecutive failures)──▶ open ──(cooldown_s)──▶ half-open
      ▲                                                   ▲                        │ one probe request
      └──────────────────── probe succeeded ──────────────┼──── probe failed ──────┘

Only failures that say something about the target count: connection failures, timeouts, 5xx, 429,
malformed answers, rejected credentials, an unknown upstream model. Client faults (a 400 the next
target would give too) and requests the gateway itself cut short (deadline, client gone) neither
count nor reset the count. Any success closes the breaker.

State lives in the gateway process: each worker process and each replica learns on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.observability.logs import get_logger

if TYPE_CHECKING:
    from adapters.config import BreakerConfig

log = get_logger("gateway.breaker")


class Breaker:
    __slots__ = ("cooldown_s", "failures", "name", "on_change", "open_until", "probing", "threshold")

    def __init__(
        self, name: str, config: BreakerConfig, on_change: Callable[[str], None] | None = None
    ) -> None:
        self.name = name
        self.on_change = on_change
        """Told `closed`, `half_open` or `open` on each change of state (for the metrics)."""
        self.threshold = config.failure_threshold
        self.cooldown_s = config.cooldown_s
        self.failures = 0
        self.open_until = 0.0
        """0 while closed; otherwise the monotonic time at which one probe may go through."""
        self.probing = False

    def available(self, now: float) -> bool:
        """Closed, or cooled down with no probe in flight."""
        return not self.open_until or (now >= self.open_until and not self.probing)

    def is_open(self, now: float) -> bool:
        """Tripped and still cooling down (a half-open breaker counts as usable)."""
        return bool(self.open_until) and now < self.open_until

    def retry_after(self, now: float) -> float:
        return max(0.0, self.open_until - now)

    def begin(self) -> bool:
        """Note an attempt the caller found `available`; True if it is the half-open probe."""
        if not self.open_until:
            return False
        self.probing = True
        if self.on_change is not None:
            self.on_change("half_open")
        return True

    def succeeded(self, probe: bool) -> None:
        if self.open_until:
            log.info("circuit_closed", target=self.name, probe=probe)
            if self.on_change is not None:
                self.on_change("closed")
        self.failures = 0
        self.open_until = 0.0
        self.probing = False

    def failed(self, now: float, probe: bool) -> None:
        self.failures += 1
        if probe:
            self.probing = False
        if self.open_until or self.failures >= self.threshold:
            if not self.open_until or probe:
                log.warning(
                    "circuit_opened",
                    target=self.name,
                    consecutive_failures=self.failures,
                    cooldown_s=self.cooldown_s,
                    probe_failed=probe,
                )
                if self.on_change is not None:
                    self.on_change("open")
            # Every new failure re-arms the full cool-down, never a shorter earlier one.
            self.open_until = now + self.cooldown_s

    def released(self, probe: bool) -> None:
        """The attempt ended without saying anything about the target's health."""
        if probe:
            self.probing = False


__all__ = ("Breaker",)
