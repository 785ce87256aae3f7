"""Live configuration: what a reload of the config file changes, and the answer that says so.

`SIGHUP` and `POST /admin/v1/reload` (`gateway.admin.reload`) call `Gateway.reload`, which reads the
file the gateway was started with and hands the running and the new `Settings` to `plan`. Models,
backends, limits, prices, hedging and `keys:` take effect at once; sections that only a restart can
apply (`RESTART_REQUIRED`: sockets, the Redis client, the HTTP server's bounds, logging, the admin
routes) keep their running values and are reported as `restart_required` notices. An invalid file
changes nothing: `ReloadAnswer.invalid` lists each problem with its YAML path, as `check-config` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, Literal

import msgspec

from gateway.config import Settings
from gateway.openai.responses import ErrorDetail

RESTART_REQUIRED: Final = (
    "listen",
    "http",
    "redis_url",
    "rate_limit_failure_mode",
    "responses",
    "usage",
    "admin",
    "log_level",
    "log_format",
)
"""`Settings` fields a reload does not apply: the listeners' sockets, the HTTP server's bounds (and
the request bounds checked beside them), the shared store's client and its failure mode, stored
Responses, the usage ledger, the admin routes and their key, and logging are all set up once, at
start-up."""
LIVE: Final = ("backends", "models", "keys")
"""`Settings` fields a reload applies; every other one is in `RESTART_REQUIRED`."""

_PATH: Final = re.compile(r"^([^\s:]+): (.*)$", re.DOTALL)
"""`models.x.targets[0].backend: must be ...` → path and message (`check-config`'s wording)."""


class Problem(msgspec.Struct, frozen=True):
    """One reason a config file was refused: where in the YAML (None: the file as a whole) and why."""

    path: str | None
    message: str


class Notice(msgspec.Struct, frozen=True, omit_defaults=True):
    kind: Literal["restart_required", "config_notice"]
    """`restart_required`: a changed setting that keeps its running value until the next restart;
    `config_notice`: what start-up would log too (a backend replaced by its stand-in)."""
    message: str
    path: str | None = None


class Reloaded(msgspec.Struct, frozen=True, tag_field="status", tag="reloaded"):
    """`POST /admin/v1/reload` (and its log line) when the file was applied: `{"status": "reloaded", ...}`."""

    changed: list[str] = msgspec.field(default_factory=list)
    """What took effect: `models.<name>`, `backends.<name>`, `keys.<id>` (added, removed or changed);
    empty when the file says what is already running."""
    notices: list[Notice] = msgspec.field(default_factory=list)
    duration_ms: float = 0.0
    """How long the reload took, from reading the file to the new configuration being in effect."""


class Invalid(msgspec.Struct, frozen=True, tag_field="status", tag="invalid"):
    """When the file was refused (nothing changed): `{"status": "invalid", "problems": [...], ...}`."""

    problems: list[Problem]
    error: ErrorDetail
    """The same refusal in OpenAI's error envelope, for clients that read only that."""
    duration_ms: float = 0.0

    @classmethod
    def of(cls, source: str, problems: list[str]) -> Invalid:
        listed = [problem_of(text) for text in problems]
        message = f"{source}: {len(problems)} problem(s), nothing was changed: " + "; ".join(problems)
        error = ErrorDetail(message=message, type="invalid_request_error", param=None, code="invalid_config")
        return cls(problems=listed, error=error)


ReloadAnswer = Reloaded | Invalid


class Plan(msgspec.Struct, frozen=True):
    """What a reload applies: `settings` (the new file with the restart-only sections as running)."""

    settings: Settings
    changed: list[str]
    notices: list[Notice]


def problem_of(text: str) -> Problem:
    """A problem line of `ConfigError` as path and message."""
    match = _PATH.match(text)
    if match is None:
        return Problem(None, text)
    return Problem(match.group(1), match.group(2))


def plan(running: Settings, new: Settings) -> Plan:
    """The settings to apply, what changed, and which changes wait for a restart."""
    notices = [
        Notice(
            "restart_required",
            f"`{field}` changed; it keeps its running value until the gateway is restarted",
            path=field,
        )
        for field in RESTART_REQUIRED
        if getattr(new, field) != getattr(running, field)
    ]
    applied = msgspec.structs.replace(new, **{field: getattr(running, field) for field in RESTART_REQUIRED})
    changed = _changed("backends", running.backends, applied.backends)
    changed += _changed("models", running.models, applied.models)
    running_keys = {entry.id: entry for entry in running.keys or []}
    changed += _changed("keys", running_keys, {entry.id: entry for entry in applied.keys or []})
    return Plan(applied, changed, notices)


def _changed(section: str, running: Mapping[str, object], new: Mapping[str, object]) -> list[str]:
    """`section.<name>` for every entry added, removed or changed, in the new file's order."""
    names = [name for name in new if running.get(name) != new[name]]
    names += [name for name in running if name not in new]
    return [f"{section}.{name}" for name in names]


__all__ = (
    "LIVE",
    "RESTART_REQUIRED",
    "Invalid",
    "Notice",
    "Plan",
    "Problem",
    "ReloadAnswer",
    "Reloaded",
    "plan",
    "problem_of",
)
