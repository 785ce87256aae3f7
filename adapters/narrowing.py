"""Request narrowing every backend shares: OpenAI values an upstream does not take, and refusals.

Each backend's `request.py` narrows the canonical request to what its upstream accepts; what more
than one backend needs lives here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from msgspec import UNSET, UnsetType

from adapters.errors import UpstreamStatusError

if TYPE_CHECKING:
    from adapters.canonical import Extensions

REASONING_EFFORT: Final = {"none": "low", "minimal": "low", "xhigh": "high"}
"""OpenAI's effort levels outside the `low | medium | high` that Workers AI's models and vLLM accept,
mapped onto the nearest one they do."""


def reasoning_effort(effort: str | UnsetType) -> str | UnsetType:
    """`effort` as an upstream with `low | medium | high` takes it."""
    if effort is UNSET:
        return effort
    return REASONING_EFFORT.get(effort, effort)


def refused(backend: str, message: str, *, code: str, param: str) -> UpstreamStatusError:
    """A request the backend cannot take as it is: a client fault (another target would refuse it too)."""
    return UpstreamStatusError(
        backend,
        message,
        status_code=400,
        error_type="invalid_request_error",
        code=code,
        param=param,
        client_fault=True,
    )


EXTENSION_OWNERS: Final = {"lora": "Workers AI", "raw": "Workers AI"}
"""The backend kind each canonical extension comes from, for the refusal's message."""


def refuse_extensions(extensions: Extensions, *, backend: str, kind: str, understood: frozenset[str]) -> None:
    """Refuse every extension set on the request that this backend kind does not understand."""
    for name in extensions.names():
        if name not in understood:
            raise refused(
                backend,
                f"'{name}' is a {EXTENSION_OWNERS.get(name, 'backend')} extension that backend "
                f"'{backend}' ({kind}) does not support.",
                code="unsupported_parameter",
                param=name,
            )


__all__ = ("EXTENSION_OWNERS", "REASONING_EFFORT", "reasoning_effort", "refuse_extensions", "refused")
