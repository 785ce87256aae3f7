"""What every backend's config block shares. Each adapter module subclasses it with its `kind` tag."""

from __future__ import annotations

import msgspec


class BackendConfig(msgspec.Struct, tag_field="kind", forbid_unknown_fields=True, frozen=True, kw_only=True):
    timeout_s: float = 60.0
    """Per-read timeout of one upstream call: connect, first byte, and every gap between chunks."""
    max_concurrency: int | None = None
    """Upper bound on requests in flight to this backend from one gateway process (None: unbounded)."""
    when_unconfigured: str | None = None
    """Another backend to serve this one's targets when a required value (e.g. a credential) is empty.

    Without it, an empty required value stops start-up. The default config uses it so `make run` works
    before any credentials exist; production configs should leave it out.
    """

    def required_values(self) -> dict[str, str]:
        """Values that must not be empty, by field name."""
        return {}

    def secrets(self) -> list[str]:
        """Values that must never appear in logs, errors or responses."""
        return []


__all__ = ("BackendConfig",)
