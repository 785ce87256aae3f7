"""The suite-wide secrets check finds what it must and ignores placeholders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import secret_scan


@pytest.fixture
def own_leaks() -> Iterator[list[str]]:
    """This test's findings, kept out of the suite-wide list (they are planted on purpose)."""
    saved = list(secret_scan.leaks)
    secret_scan.leaks.clear()
    yield secret_scan.leaks
    secret_scan.leaks[:] = saved


def test_every_credential_field_of_a_config_is_watched(own_leaks: list[str]) -> None:
    secret_scan.register_config(
        {
            "backends": {
                "cf": {"kind": "workers-ai", "api_token": "cf-token-planted-1"},
                "gpu": {"kind": "vllm", "api_key": "vllm-key-planted-2"},
            },
            "keys": [{"id": "team-a", "key": "sk-team-planted-3"}],
            "redis_url": "redis://user:redis-pass-planted-4@127.0.0.1:6379/0",
        }
    )
    for secret in ("cf-token-planted-1", "vllm-key-planted-2", "sk-team-planted-3", "redis-pass-planted-4"):
        secret_scan.scan(f"log line with {secret} inside", "probe")
    # Other tests' configs may hold a secret that is part of these (`vllm-key`): compare as a set.
    assert set(own_leaks) >= {
        "probe: the secret from backends.cf.api_token appears in its output",
        "probe: the secret from backends.gpu.api_key appears in its output",
        "probe: the secret from keys[0].key appears in its output",
        "probe: the secret from redis_url password appears in its output",
    }
    own_leaks.clear()
    secret_scan.scan("a log line that names no credential", "probe")
    assert own_leaks == []


def test_placeholders_and_clean_text_are_not_leaks(own_leaks: list[str]) -> None:
    secret_scan.register_config({"keys": [{"id": "k", "key": "k"}, {"id": "env", "key": "${TEAM_KEY}"}]})
    secret_scan.scan("k ${TEAM_KEY} and a key id, nothing secret", "probe")
    secret_scan.scan("", "probe")
    assert own_leaks == []
