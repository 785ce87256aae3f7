"""A suite-wide secrets check: whatever the whole test run captured must not hold a gateway secret.

Every gateway a test starts (in process through `settings_for`, or as a `gateway serve` process)
registers the credentials in its config: Cloudflare tokens, vLLM keys, client API keys, Redis
passwords. `tests/conftest.py` scans each test's captured stdout, stderr and log records, and
`GatewayProcess` scans its own output files when it stops; a hit fails the run at the end, naming
the test and the secret's owner, never the secret itself. `tests/e2e/test_secrets.py` is the focused
version (every credential path of one debug-level gateway, raw and encoded forms).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

_SECRET_FIELDS = frozenset({"api_token", "api_key", "key", "token"})
_URL_FIELDS = frozenset({"proxy"})
"""Fields holding a URL whose password is a secret."""
MIN_SECRET_LENGTH = 8
"""Shorter values (test placeholders such as "k") would match ordinary text."""

_secrets: dict[str, str] = {}
"""secret -> where it came from (config path), for the report."""
leaks: list[str] = []


def register_config(config: Mapping[str, Any]) -> None:
    """Remember every credential in a gateway config dict (as tests write them)."""
    _walk(config, "")
    redis_url = config.get("redis_url")
    if isinstance(redis_url, str) and redis_url:
        password = urlsplit(redis_url).password
        if password:
            _add(password, "redis_url password")


def _walk(node: Any, path: str) -> None:
    if isinstance(node, Mapping):
        for name, value in node.items():
            where = f"{path}.{name}" if path else str(name)
            if name in _SECRET_FIELDS and isinstance(value, str):
                _add(value, where)
            elif name in _URL_FIELDS and isinstance(value, str):
                password = urlsplit(value if "://" in value else "http://" + value).password
                if password:
                    _add(password, f"{where} password")
            else:
                _walk(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _walk(value, f"{path}[{i}]")


def register(secret: str, where: str) -> None:
    """Remember a secret that is not in a config (e.g. a proxy password given in the environment)."""
    _add(secret, where)


def _add(secret: str, where: str) -> None:
    if len(secret) >= MIN_SECRET_LENGTH and "${" not in secret:
        _secrets.setdefault(secret, where)


def scan(text: str, source: str) -> None:
    """Record a leak for every registered secret found in `text` (captured by `source`)."""
    if not text:
        return
    for secret, where in _secrets.items():
        if secret in text:
            leaks.append(f"{source}: the secret from {where} appears in its output")


__all__ = ("leaks", "register", "register_config", "scan")
