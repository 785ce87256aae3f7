"""Key lookup: both headers, hashed keys, aliases in allow-lists, masked hints in errors."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from gateway.config import KeyConfig, ModelConfig
from gateway.edge.auth import KeyRing, check_model, mask
from gateway.errors import AuthenticationError, ModelNotFoundError

MODELS = {
    "llama": msgspec.convert(
        {"targets": [{"backend": "b", "model": "x"}], "aliases": ["gpt-4o-mini"]}, ModelConfig
    ),
    "qwen": msgspec.convert({"targets": [{"backend": "b", "model": "y"}]}, ModelConfig),
}
SEARCH = "sk-search-2f7d1e9c0b8a4d6e"
BATCH = "sk-batch-9a8b7c6d5e4f3a2b"


def ring() -> KeyRing:
    return KeyRing(
        [
            KeyConfig(id="team-search", key=SEARCH, rpm=10, models=["gpt-4o-mini"]),
            KeyConfig(id="team-batch", key_sha256=hashlib.sha256(BATCH.encode()).hexdigest().upper()),
        ],
        MODELS,
    )


@pytest.mark.parametrize(
    ("authorization", "api_key"),
    [
        pytest.param(f"Bearer {SEARCH}", None, id="bearer"),
        pytest.param(f"bearer   {SEARCH} ", None, id="scheme-any-case"),
        pytest.param(None, SEARCH, id="api-key-header"),
    ],
)
def test_a_configured_key_is_found(authorization: str | None, api_key: str | None) -> None:
    policy = ring().authenticate(authorization, api_key)
    assert policy.id == "team-search"
    assert policy.scope is not None
    assert policy.scope.rpm == 10


def test_a_hashed_key_is_found_and_unlimited_keys_have_no_scope() -> None:
    policy = ring().authenticate(f"Bearer {BATCH}", None)
    assert (policy.id, policy.scope, policy.models) == ("team-batch", None, None)


@pytest.mark.parametrize(
    ("authorization", "api_key", "fragment"),
    [
        pytest.param(None, None, "Missing API key", id="none"),
        pytest.param("Bearer ", None, "Missing API key", id="empty-bearer"),
        pytest.param(f"Basic {SEARCH}", None, "Bearer scheme", id="basic"),
        pytest.param(f"Bearer {SEARCH}x", None, "Incorrect API key provided: sk-se***ex.", id="wrong"),
        pytest.param("Bearer short-key", None, "Incorrect API key provided: ***.", id="short"),
    ],
)
def test_bad_credentials_are_401s(authorization: str | None, api_key: str | None, fragment: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        ring().authenticate(authorization, api_key)
    assert fragment in info.value.message
    assert info.value.code == "invalid_api_key"
    assert info.value.status_code == 401
    assert SEARCH not in info.value.message


def test_allow_lists_name_models_by_any_of_their_names() -> None:
    policy = ring().authenticate(f"Bearer {SEARCH}", None)
    check_model(policy, "llama", "llama")
    check_model(policy, "gpt-4o-mini", "llama")
    with pytest.raises(ModelNotFoundError) as info:
        check_model(policy, "qwen", "qwen")
    assert info.value.message == "The model `qwen` does not exist or you do not have access to it."
    check_model(None, "qwen", "qwen")


def test_masks_show_at_most_seven_characters() -> None:
    assert mask("sk-abcdefghijklmnopqrstuvwxyz") == "sk-ab***yz"
    assert mask("sk-abcdefghijklmnop") == "***"
