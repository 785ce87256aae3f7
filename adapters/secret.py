"""`Secret`: a credential held in the config, which prints, formats and serialises as `***`.

A secret is a `str` subclass, so config fields stay `str` (decoders, schemas and comparisons are
unchanged), but everything that renders a value for a person or a log shows the mask instead:
`repr` (tracebacks with frame locals, `repr(settings)`), `str`, f-strings and `%s`, and msgspec
(which refuses a `str` subclass, so a log encoder with `enc_hook=repr` writes the mask and a bare
encoder raises instead of leaking). The one way to the value is `reveal()`, used where a
credential goes on the wire (an `Authorization` header, a URL path). Concatenation, `.encode()` and
slicing still see the value: they are how it is used, not how it is shown.

Config structs wrap their secret fields in `__post_init__` (see `hide_secrets`), so a settings
object decoded by any path (the loader, `msgspec.convert` in tests) holds `Secret`s.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

MASK: Final = "***"


class Secret(str):
    """A string that never shows itself: `str`, `repr` and `format` give `***`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(MASK)

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def reveal(self) -> str:
        """The value itself, as a plain `str` (for the wire, never for a log)."""
        return str.__str__(self)


def reveal(value: str) -> str:
    """The plain value of a config string, whether or not it is a `Secret`."""
    return str.__str__(value)


def hide_secrets(struct: msgspec.Struct, *fields: str) -> None:
    """Wrap the named `str` fields of a (frozen) config struct in `Secret`; for `__post_init__`."""
    for name in fields:
        value: Any = getattr(struct, name)
        if isinstance(value, str) and not isinstance(value, Secret):
            msgspec.structs.force_setattr(struct, name, Secret(value))


__all__ = ("MASK", "Secret", "hide_secrets", "reveal")
