"""The config's JSON Schema and its reference page, both generated from the types in `gateway/config.py`.

The types say what each value may be (`Meta` bounds, `Literal` choices, defaults); their docstrings say
what it means. `config_schema()` is msgspec's JSON Schema of `Settings` with those docstrings as
descriptions (editors complete and check YAML with it: `gateway config-schema`); `reference_page()`
renders the same schema as Markdown (docs/configuration.md).

    python -m gateway.config_reference           # rewrite docs/configuration.md, config/gateway.schema.json
    python -m gateway.config_reference --check   # exit 1 if either is stale (CI)
"""

from __future__ import annotations

import argparse
import ast
import inspect
import itertools
import json
import sys
import textwrap
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from gateway.config import Settings

ROOT: Final = Path(__file__).resolve().parents[1]
SCHEMA_PATH: Final = ROOT / "config" / "gateway.schema.json"
PAGE_PATH: Final = ROOT / "docs" / "configuration.md"
_INTERPOLATED: Final = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"}
"""A `${VAR}` string where the type wants a number or a boolean: interpolation makes it one at load time."""


def struct_types(root: type[msgspec.Struct] = Settings) -> dict[str, type[msgspec.Struct]]:
    """Every Struct reachable from `root` through its fields, by class name (the schema's `$defs` keys)."""
    found: dict[str, type[msgspec.Struct]] = {}

    def visit(type_: Any) -> None:
        if isinstance(type_, type) and issubclass(type_, msgspec.Struct):
            if type_.__name__ in found:
                return
            found[type_.__name__] = type_
            for hint in typing.get_type_hints(type_, include_extras=True).values():
                visit(hint)
        for arg in typing.get_args(type_):
            visit(arg)

    visit(root)
    return found


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of `cls` and of the classes it inherits from (nearest wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not issubclass(klass, msgspec.Struct) or klass is msgspec.Struct:
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
        for field, following in itertools.pairwise(body):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[field.target.id] = inspect.cleandoc(following.value.value)
    return docs


def _one_line(text: str) -> str:
    return " ".join(text.split())


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the config file, with every field's docstring as its description."""
    schema: dict[str, Any] = msgspec.json.schema(Settings)
    classes = struct_types()
    for name, definition in schema["$defs"].items():
        cls = classes[name]
        if cls.__doc__:
            definition["description"] = _one_line(inspect.cleandoc(cls.__doc__))
        docs = field_docs(cls)
        factories = {
            f.encode_name: f.default_factory
            for f in msgspec.structs.fields(cls)
            if f.default_factory is not msgspec.NODEFAULT
        }
        for key, prop in definition["properties"].items():
            if key in docs:
                prop["description"] = _one_line(docs[key])
            if key in factories and "default" not in prop:
                prop["default"] = msgspec.to_builtins(factories[key]())
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "llm-gateway configuration",
        "description": "gateway.yaml: see docs/configuration.md. Strings may use ${VAR} and ${VAR:-default}.",
        **schema,
    }


def editor_schema() -> dict[str, Any]:
    """`config_schema()` for editors: numbers and booleans may also be written as `${VAR}` strings."""
    schema = config_schema()
    for definition in schema["$defs"].values():
        for key, prop in definition["properties"].items():
            definition["properties"][key] = _allow_interpolation(prop)
    return schema


def _allow_interpolation(prop: dict[str, Any]) -> dict[str, Any]:
    outer: dict[str, Any] = {k: prop[k] for k in ("description", "default") if k in prop}
    inner = {k: v for k, v in prop.items() if k not in outer}
    if inner.get("type") in ("integer", "number", "boolean"):
        return {**outer, "anyOf": [inner, _INTERPOLATED]}
    if "anyOf" in inner and any(m.get("type") in ("integer", "number") for m in inner["anyOf"]):
        return {**outer, "anyOf": [*inner["anyOf"], _INTERPOLATED]}
    return prop


def schema_text() -> str:
    return json.dumps(editor_schema(), indent=2, ensure_ascii=False) + "\n"


# The reference page.

_PAGE_HEAD: Final = """\
<!-- Generated by `python -m gateway.config_reference` (run by `make docs`) from the types and
docstrings in gateway/config.py and adapters/. Edit those, not this page. -->
# Configuration reference

`gateway serve` reads `--config PATH`, else `$GATEWAY_CONFIG`, else `config/gateway.yaml`.
`gateway check-config PATH` prints `ok`, or every problem with its YAML path (for example
`backends.cloudflare.api_token: must not be empty (CLOUDFLARE_API_TOKEN is not set)`) and exits 1;
start-up refuses the same problems, never with a traceback.

- **Interpolation.** String values may use `${VAR}` and `${VAR:-default}` (the default when `VAR` is
  unset or empty). It happens after YAML parsing, so a secret containing `#` or `:` cannot change the
  document's structure. Inside a flow mapping `{...}`, quote such values. A number may be written as
  `"${PORT:-8080}"`: it is converted after interpolation.
- **Unknown keys** are errors (a typo never silently means a default), and so are targets naming an
  undefined backend, duplicate model names or aliases, and empty required values.
- **`when_unconfigured: <backend>`** relaxes the last rule for one backend: when one of its required
  values is empty, its targets are served by the named backend instead and the gateway logs one
  warning. The default config uses it so that `make run` works before you have credentials; leave it
  out in production.
- **Editors.** `config/gateway.schema.json` is the JSON Schema of this file (`gateway config-schema`
  writes it). The configs in `config/` start with
  `# yaml-language-server: $schema=...` pointing at it, which gives completion, these descriptions on
  hover and checks in editors with the YAML language server (VS Code's YAML extension, Neovim, Helix,
  JetBrains IDEs).

Complete files: `config/gateway.yaml` (the default: Workers AI, or the mock without credentials),
`config/examples/cloudflare-vllm-failover.yaml` (Cloudflare first, two vLLM servers as the fallback,
and a GPU-first model) and `config/examples/multi-team.yaml` (team keys and limits shared through
Redis). What the settings do at run time (failover, limits, observability) is in
[Operations](operations.md).

Every section below lists its keys: the type and its bounds, the default (or *required*), and what
it means.
"""


class _Section(msgspec.Struct, frozen=True):
    anchor: str
    title: str
    definition: str
    only: tuple[str, ...] | None = None
    """Show only these properties (the others are in the common section)."""
    lead: str = ""


def _sections(schema: dict[str, Any]) -> list[_Section]:
    """Each Struct of the schema once, titled by its YAML path, in the order a reader meets them."""
    defs = schema["$defs"]
    sections: list[_Section] = []
    seen: set[str] = set()

    def walk(definition: str, path: str, anchor: str, title: str) -> None:
        if definition in seen:
            return
        seen.add(definition)
        sections.append(_Section(anchor, title, definition))
        for key, prop in defs[definition]["properties"].items():
            child_path = f"{path}.{key}" if path else key
            for ref, suffix in _refs(prop):
                walk(ref, child_path + suffix, _slug(child_path + suffix), child_path + suffix)
            union = _tagged_union(prop)
            if union:
                walk_union(union, child_path + ".<name>")

    def walk_union(union: dict[str, str], path: str) -> None:
        members = list(union.items())
        common = _common_properties([defs[ref] for _, ref in members])
        first_ref = members[0][1]
        sections.append(
            _Section(
                _slug(path),
                path,
                first_ref,
                only=tuple(common),
                lead="Keys every backend has, whatever its `kind`. "
                + "Kinds: "
                + ", ".join(f"[`{tag}`](#{_slug(path + '-' + tag)})" for tag, _ in members)
                + ".",
            )
        )
        for tag, ref in members:
            own = tuple(k for k in defs[ref]["properties"] if k not in common and k != "kind")
            seen.add(ref)
            sections.append(
                _Section(
                    _slug(path + "-" + tag),
                    f"`{path}` with `kind: {tag}`",
                    ref,
                    only=own,
                    lead=f"Also the keys [every backend has](#{_slug(path)}).",
                )
            )
        for key in common:
            for child_ref, suffix in _refs(defs[first_ref]["properties"][key]):
                child = f"{path}.{key}{suffix}"
                walk(child_ref, child, _slug(child), child)
        for _, ref in members:
            for key, prop in defs[ref]["properties"].items():
                if key not in common:
                    for child_ref, suffix in _refs(prop):
                        child = f"{path}.{key}{suffix}"
                        walk(child_ref, child, _slug(child), child)

    walk(schema["$ref"].rsplit("/", 1)[1], "", "top-level", "Top level")
    return sections


def _refs(prop: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Structs a property holds directly, with the YAML path suffix that leads to one of them."""
    if "$ref" in prop:
        yield prop["$ref"].rsplit("/", 1)[1], ""
    for member in prop.get("anyOf", []):
        yield from _refs(member)
    if isinstance(prop.get("items"), dict):
        for ref, suffix in _refs(prop["items"]):
            yield ref, "[]" + suffix
    extra = prop.get("additionalProperties")
    if isinstance(extra, dict) and "discriminator" not in extra:
        for ref, suffix in _refs(extra):
            yield ref, ".<name>" + suffix


def _tagged_union(prop: dict[str, Any]) -> dict[str, str]:
    extra = prop.get("additionalProperties")
    if not isinstance(extra, dict) or "discriminator" not in extra:
        return {}
    mapping: dict[str, str] = extra["discriminator"]["mapping"]
    return {tag: ref.rsplit("/", 1)[1] for tag, ref in mapping.items()}


def _common_properties(definitions: Sequence[dict[str, Any]]) -> list[str]:
    first = definitions[0]["properties"]
    return [
        key
        for key, prop in first.items()
        if key != "kind" and all(d["properties"].get(key) == prop for d in definitions[1:])
    ]


def _slug(path: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in path.lower())
    return "-".join(part for part in cleaned.split("-") if part)


def _type_text(prop: dict[str, Any], defs: dict[str, Any], anchors: dict[str, tuple[str, str]]) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[1]
        return f"[`{anchors[name][1]}`](#{anchors[name][0]})" if name in anchors else "mapping"
    if "enum" in prop:
        return "one of " + ", ".join(f"`{value}`" for value in prop["enum"])
    if "anyOf" in prop:
        members = [m for m in prop["anyOf"] if m.get("type") != "null"]
        return " or ".join(_type_text(m, defs, anchors) for m in members)
    kind = prop.get("type")
    bounds = _bounds(prop)
    if kind == "array":
        return f"list of {_type_text(prop['items'], defs, anchors)}" + bounds
    if kind == "object":
        extra = prop.get("additionalProperties")
        if isinstance(extra, dict):
            union = _tagged_union(prop)
            if union:
                return "mapping of names to [backends](#backends-name) (each with a `kind`)"
            return f"mapping of names to {_type_text(extra, defs, anchors)}"
        return "mapping"
    return f"{kind}{bounds}"


_BOUND_WORDS: Final = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "at least {} characters"),
    ("minItems", "at least {} items"),
    ("pattern", "matching `{}`"),
)


def _bounds(prop: dict[str, Any]) -> str:
    parts = [words.format(prop[keyword]) for keyword, words in _BOUND_WORDS if keyword in prop]
    return (", " + ", ".join(parts)) if parts else ""


def _default_text(key: str, prop: dict[str, Any], required: set[str]) -> str:
    if key in required:
        return "*required*"
    if "default" not in prop:
        return ""
    value = prop["default"]
    if value is None:
        return "unset"
    if isinstance(value, dict):
        return "see below" if value else "`{}`"
    if value == "":
        return '`""`'
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def _cell(text: str) -> str:
    # Renderers disagree on a `|` inside a code span in a table (GitHub wants it escaped, Python-Markdown
    # shows the backslash): docstrings avoid them, and a bare one is escaped.
    return _one_line(text).replace("|", "\\|")


def reference_page() -> str:
    schema = config_schema()
    defs: dict[str, Any] = schema["$defs"]
    sections = _sections(schema)
    anchors = {s.definition: (s.anchor, s.title) for s in sections if s.only is None}
    out = [_PAGE_HEAD]
    for section in sections:
        definition = defs[section.definition]
        heading = (
            section.title if section.title == "Top level" or "`" in section.title else f"`{section.title}`"
        )
        out.append(f"\n## {heading} {{#{section.anchor}}}\n")
        description = definition.get("description", "") if section.only is None else ""
        lead = " ".join(part for part in (description, section.lead) if part)
        if lead:
            out.append(f"\n{lead}\n")
        required = set(definition.get("required", []))
        rows = [
            (key, prop)
            for key, prop in definition["properties"].items()
            if section.only is None or key in section.only
        ]
        if not rows:
            out.append("\nNo keys of its own.\n")
            continue
        out.append("\n| key | type | default | meaning |\n|---|---|---|---|\n")
        for key, prop in rows:
            out.append(
                f"| `{key}` | {_cell(_type_text(prop, defs, anchors))} | "
                f"{_cell(_default_text(key, prop, required))} | {_cell(prop.get('description', ''))} |\n"
            )
    return "".join(out)


def sync(*, check: bool, page: Path = PAGE_PATH, schema: Path = SCHEMA_PATH) -> list[Path]:
    """Rewrite the page and the schema where they differ from the types (or, with `check`, only say so).

    Returns the files that were stale.
    """
    stale = []
    for path, text in ((page, reference_page()), (schema, schema_text())):
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            stale.append(path)
            if not check:
                path.write_text(text, encoding="utf-8")
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.config_reference",
        description=f"write {PAGE_PATH.relative_to(ROOT)} and {SCHEMA_PATH.relative_to(ROOT)} from the types",
    )
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if either file is stale")
    args = parser.parse_args(argv)
    stale = sync(check=args.check)
    names = ", ".join(str(path.relative_to(ROOT)) for path in stale)
    if stale and args.check:
        print(
            f"stale: {names}; run `python -m gateway.config_reference` (or `make docs`), commit",
            file=sys.stderr,
        )
        return 1
    if stale:
        print(f"wrote {names}")
    return 0


__all__ = ("config_schema", "editor_schema", "field_docs", "main", "reference_page", "schema_text", "sync")

if __name__ == "__main__":
    raise SystemExit(main())
