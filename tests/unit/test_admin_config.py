"""The `admin:` section: exactly one of key and key_sha256, its own port, and its key masked."""

from __future__ import annotations

import hashlib

import pytest

from gateway.admin.auth import AdminAuth
from gateway.config import ConfigError, parse_config, secrets_of
from gateway.errors import AuthenticationError

BASE = """
listen: {host: 127.0.0.1, port: 8080}
backends: {demo: {kind: mock}}
models: {m: {targets: [{backend: demo, model: x}]}}
"""
KEY = "an-admin-key-of-some-length"


def problems(admin: str, environ: dict[str, str] | None = None) -> list[str]:
    try:
        parse_config(BASE + admin, environ=environ or {})
    except ConfigError as exc:
        return exc.problems
    return []


def test_an_admin_key_from_the_environment_is_a_masked_secret() -> None:
    settings = parse_config(BASE + "admin: {key: '${ADMIN}'}", environ={"ADMIN": KEY}).settings
    assert settings.admin is not None
    assert str(settings.admin.key) == "***"
    assert KEY in secrets_of(settings)


@pytest.mark.parametrize(
    ("admin", "problem"),
    [
        ("admin: {}", "admin: missing key or key_sha256 (the admin API is never open)"),
        (f"admin: {{key: {KEY}, key_sha256: '{'0' * 64}'}}", "admin: set either key or key_sha256, not both"),
        ("admin: {key: '${UNSET}'}", "admin.key: must not be empty (UNSET is not set)"),
        ("admin: {key_sha256: abc}", "admin.key_sha256: must be 64 hex digits"),
        (f"admin: {{key: {KEY}, listen: {{port: 8080}}}}", "admin.listen.port: 8080 is the public"),
    ],
)
def test_admin_problems_are_named(admin: str, problem: str) -> None:
    found = problems(admin)
    assert any(p.startswith(problem) for p in found), found


def test_the_guard_takes_the_key_or_its_digest_and_nothing_else() -> None:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    settings = parse_config(BASE + f"admin: {{key_sha256: {digest}}}", environ={}).settings
    assert settings.admin is not None
    guard = AdminAuth(settings.admin)
    guard.check(f"Bearer {KEY}")
    for wrong in (None, "", KEY, f"Basic {KEY}", f"Bearer {KEY}x"):
        with pytest.raises(AuthenticationError) as refused:
            guard.check(wrong)
        assert KEY not in refused.value.message


def test_keys_hash_prints_what_key_sha256_takes() -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "gateway", "keys", "hash"]
    from_stdin = subprocess.run(command, input=f"{KEY}\n", capture_output=True, text=True, check=True)
    from_argument = subprocess.run([*command, KEY], capture_output=True, text=True, check=True)
    expected = hashlib.sha256(KEY.encode()).hexdigest() + "\n"
    assert from_stdin.stdout == from_argument.stdout == expected
    empty = subprocess.run(command, input="\n", capture_output=True, text=True)
    assert empty.returncode == 1
    assert "no key given" in empty.stderr
    assert "Traceback" not in empty.stderr
