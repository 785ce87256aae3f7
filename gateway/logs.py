"""structlog, configured once by the gateway: JSON lines in production, a console renderer on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any, Final

import msgspec
import structlog

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_json: Final = msgspec.json.Encoder(enc_hook=repr)


def _dumps(event: Any, **_: Any) -> bytes:
    return _json.encode(event)


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog for the whole process (idempotent)."""
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if console:
        processors = [*shared, structlog.dev.ConsoleRenderer()]
        factory: Any = structlog.PrintLoggerFactory(sys.stderr)
    else:
        processors = [
            *shared,
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(_dumps),
        ]
        factory = structlog.BytesLoggerFactory(sys.stdout.buffer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level.lower(), logging.INFO)),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


__all__ = ("configure_logging", "get_logger")
