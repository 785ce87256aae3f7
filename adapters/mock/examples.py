"""A value that satisfies a JSON Schema, for the mock's tool arguments and JSON mode.

It follows what clients really send: openai-python's `.parse()` and the Agents SDK send pydantic
models as strict schemas with `$defs` and `$ref`, `anyOf` with `null` for optional fields, `enum` and
`const` for enums and literals, `format` for dates, and bounds from `Field(ge=..., max_length=...)`.
Deterministic: the same schema always gives the same value. Recursive schemas end at `MAX_DEPTH`,
where a `null` branch, an empty array or an object of only its required properties is chosen.
"""

from __future__ import annotations

import math
from typing import Any, Final

MAX_DEPTH: Final = 6
FORMATS: Final = {
    "date-time": "2026-01-01T12:00:00Z",
    "date": "2026-01-01",
    "time": "12:00:00",
    "duration": "PT1M",
    "email": "someone@example.com",
    "idn-email": "someone@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/",
    "iri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
"""Examples for the string formats of JSON Schema (and pydantic's `datetime`, `EmailStr`, `UUID`...)."""


def example(schema: Any) -> Any:
    """A value valid against `schema`; `$ref`s are resolved against `schema` itself (its `$defs`)."""
    return _Examples(schema if isinstance(schema, dict) else {}).of(schema, 0)


class _Examples:
    __slots__ = ("_root",)

    def __init__(self, root: dict[str, Any]) -> None:
        self._root = root

    def of(self, schema: Any, depth: int) -> Any:
        if schema is True or not isinstance(schema, dict):
            return "example"
        schema = self._flatten(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                return self.of(self._branch(branches, depth), depth)
        kind = self._type(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "integer":
            return _integer(schema)
        if kind == "number":
            return _number(schema)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return _string(schema)

    def _flatten(self, schema: dict[str, Any]) -> dict[str, Any]:
        """The schema with `$ref` resolved and `allOf` merged in (sibling keys kept)."""
        seen: set[str] = set()
        while isinstance(schema.get("$ref"), str) and schema["$ref"] not in seen:
            ref = schema["$ref"]
            seen.add(ref)
            target = self._resolve(ref)
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        parts = schema.get("allOf")
        if isinstance(parts, list) and parts:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in parts:
                if not isinstance(part, dict):
                    continue
                flat = self._flatten(part)
                properties = {**(flat.get("properties") or {}), **(merged.get("properties") or {})}
                required = [*(merged.get("required") or []), *(flat.get("required") or [])]
                merged = {**flat, **merged}
                if properties:
                    merged["properties"] = properties
                if required:
                    merged["required"] = list(dict.fromkeys(required))
            schema = merged
        return schema

    def _resolve(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#"):
            return {}  # a remote reference: nothing to follow without the network
        node: Any = self._root
        for token in ref[1:].lstrip("/").split("/") if ref != "#" else ():
            token = token.replace("~1", "/").replace("~0", "~")
            node = node.get(token) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else {}

    def _branch(self, branches: list[Any], depth: int) -> Any:
        """The first branch that is not `null`; past `MAX_DEPTH`, `null` when one is offered."""
        flat = [self._flatten(b) if isinstance(b, dict) else b for b in branches]
        nulls = [b for b in flat if isinstance(b, dict) and b.get("type") == "null"]
        if depth >= MAX_DEPTH and nulls:
            return nulls[0]
        others = [b for b in flat if b not in nulls]
        return others[0] if others else flat[0]

    def _type(self, schema: dict[str, Any]) -> str | None:
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if isinstance(k, str)]
            non_null = [k for k in kinds if k != "null"]
            kind = non_null[0] if non_null else (kinds[0] if kinds else None)
        if isinstance(kind, str):
            return kind
        if "properties" in schema or "additionalProperties" in schema or "required" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        return None

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties") or {}
        required = schema.get("required")
        names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
        if required is None and depth < MAX_DEPTH:
            names = list(properties)  # no `required`: show every property, as far as the depth allows
        value = {name: self.of(properties.get(name, {"type": "string"}), depth + 1) for name in names}
        extra = schema.get("additionalProperties")
        for i in range(len(value), int(schema.get("minProperties") or 0)):
            value[f"key{i}"] = self.of(extra if isinstance(extra, dict) else {}, depth + 1)
        return value

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        items = schema.get("items")
        lowest = int(schema.get("minItems") or 0)
        count = lowest if depth >= MAX_DEPTH else max(lowest, 1)
        if isinstance(prefix, list):
            count = max(count, len(prefix))  # a tuple: every position
        if isinstance(schema.get("maxItems"), int):
            count = min(count, schema["maxItems"])
        if isinstance(prefix, list):
            head = [self.of(p, depth + 1) for p in prefix[:count]]
            rest = items if isinstance(items, dict) else {}
            return head + [self.of(rest, depth + 1) for _ in range(count - len(head))]
        if isinstance(items, list):  # draft-04 tuples
            return [self.of(p, depth + 1) for p in items[:count]]
        one = items if isinstance(items, dict) else {}
        values = [self.of(one, depth + 1) for _ in range(count)]
        if schema.get("uniqueItems") and count > 1:
            values = _distinct(one, values)
        return values


def _distinct(items: dict[str, Any], values: list[Any]) -> list[Any]:
    enum = items.get("enum")
    if isinstance(enum, list) and len(enum) >= len(values):
        return enum[: len(values)]
    if all(isinstance(v, str) for v in values):
        return [f"{v}-{i}" if i else v for i, v in enumerate(values)]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return [v + i for i, v in enumerate(values)]
    return values


def _bounds(schema: dict[str, Any]) -> tuple[float | None, float | None, float | None, float | None]:
    def number(key: str) -> float | None:
        value = schema.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)

    return number("minimum"), number("exclusiveMinimum"), number("maximum"), number("exclusiveMaximum")


def _integer(schema: dict[str, Any]) -> int:
    minimum, above, maximum, below = _bounds(schema)
    low = -math.inf
    if minimum is not None:
        low = math.ceil(minimum)
    if above is not None:
        low = max(low, math.floor(above) + 1)
    high = math.inf
    if maximum is not None:
        high = math.floor(maximum)
    if below is not None:
        high = min(high, math.ceil(below) - 1)
    value = 1 if low <= 1 <= high else (low if low != -math.inf else high)
    step = schema.get("multipleOf")
    if isinstance(step, int) and not isinstance(step, bool) and step > 0 and value % step:
        value = math.ceil(value / step) * step
        if value > high:
            value -= step
    return int(value)


def _number(schema: dict[str, Any]) -> float | int:
    minimum, above, maximum, below = _bounds(schema)
    low = minimum if minimum is not None else -math.inf
    if above is not None:
        low = max(low, above)
    high = maximum if maximum is not None else math.inf
    if below is not None:
        high = min(high, below)
    if low <= 1 <= high and above != 1 and below != 1:
        value: float = 1
    elif low != -math.inf and high != math.inf:
        value = (low + high) / 2
    elif low != -math.inf:
        value = low + 1
    else:
        value = high - 1
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
        value = math.ceil(value / step) * step
    return int(value) if float(value).is_integer() else value


def _string(schema: dict[str, Any]) -> str:
    text = FORMATS.get(str(schema.get("format")), "example")
    shortest = schema.get("minLength")
    if isinstance(shortest, int) and len(text) < shortest:
        text += "x" * (shortest - len(text))
    longest = schema.get("maxLength")
    if isinstance(longest, int) and len(text) > longest:
        text = text[:longest]
    return text


__all__ = ("FORMATS", "MAX_DEPTH", "example")
