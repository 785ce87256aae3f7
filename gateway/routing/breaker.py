"""A consecutive-failure circuit breaker for one target (one backend + upstream model).

    closed ──(failure_threshold consecutive failures)──▶ open ──(cooldown_s)──▶ half-open
      ▲                                                   ▲                        │ one probe request
      └──────────────────── probe succeeded ──────────────┼──── probe failed ──────┘

Only failures that say something about the target count: connection failures, timeouts, 5xx, 429,
malformed answers, rejected credentials, an unknown upstream model. Client faults (a 400 the next
target would give too) and requests the gateway itself cut short (deadline, client gone) neither
count nor reset the count. Any success closes the breaker.

State lives in the gateway process. With `redis_url` set, `gateway.routing.shared_state` tells every
other process when this one opens or closes a breaker (`shared`), and applies theirs here
(`apply_remote`), off the request path; without it each worker process and each replica learns on
its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.observability.logs import get_logger

if TYPE_CHECKING:
    from adapters.config import BreakerConfig

log = get_logger("gateway.breaker")


class Breaker:
    __slots__ = (
        "cooldown_s",
        "failures",
        "name",
        "on_change",
        "open_until",
        "probing",
        "remote_open",
        "shared",
        "threshold",
    )

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
        self.remote_open = False
        """The open in force came from another process (`apply_remote`): this one does not republish it."""
        self.shared: Callable[[Breaker], None] | None = None
        """Told when this process opened the breaker, or closed it with a passing probe (set by
        `gateway.routing.shared_state`, which publishes it off the request path); never told of
        changes applied by `apply_remote`."""

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
            log.info("circuit_closed", target=self.name, probe=probe, source="local")
            if self.on_change is not None:
                self.on_change("closed")
            self.failures = 0
            self.open_until = 0.0
            self.probing = False
            # Only a passing probe closes the breaker everywhere: an answer that was already in flight
            # when it opened says less, and must not undo every other process's open.
            if probe and self.shared is not None:
                self.shared(self)
            return
        self.failures = 0
        self.probing = False

    def failed(self, now: float, probe: bool) -> None:
        self.failures += 1
        if probe:
            self.probing = False
        if self.open_until or self.failures >= self.threshold:
            opened = not self.open_until or probe
            if opened:
                log.warning(
                    "circuit_opened",
                    target=self.name,
                    consecutive_failures=self.failures,
                    cooldown_s=self.cooldown_s,
                    probe_failed=probe,
                    source="local",
                )
                if self.on_change is not None:
                    self.on_change("open")
            # Every new failure re-arms the full cool-down, never a shorter earlier one.
            self.open_until = now + self.cooldown_s
            if opened:
                self.remote_open = False
                if self.shared is not None:
                    self.shared(self)

    def released(self, probe: bool) -> None:
        """The attempt ended without saying anything about the target's health."""
        if probe:
            self.probing = False

    def apply_remote(self, now: float, open_until: float, failures: int, replica: str) -> bool:
        """Another process opened (`open_until` > 0, on this process's clock) or closed (0) this
        breaker; True if that changed anything here. A remote open never shortens a local one."""
        if open_until:
            if open_until <= max(now, self.open_until):
                return False
            was_open = self.is_open(now)
            self.open_until = open_until
            self.remote_open = True
            self.failures = max(self.failures, failures)
            if not was_open:
                log.warning(
                    "circuit_opened",
                    target=self.name,
                    consecutive_failures=failures,
                    cooldown_s=round(open_until - now, 3),
                    probe_failed=False,
                    source="remote",
                    replica=replica,
                )
                if self.on_change is not None:
                    self.on_change("open")
            return True
        if not self.open_until:
            return False
        log.info("circuit_closed", target=self.name, probe=False, source="remote", replica=replica)
        if self.on_change is not None:
            self.on_change("closed")
        # A probe of this process still in flight settles on its own (`succeeded`, `failed`).
        self.failures = 0
        self.open_until = 0.0
        return True


__all__ = ("Breaker",)
