"""mkdocs hooks (mkdocs.yml `hooks:`): keep the nav complete while other pages are still being written.

- An entry in `PLANNED` whose file does not exist yet is dropped from the nav (instead of failing the
  strict build); it appears where the nav puts it as soon as the page lands.
- A page under docs/ that the nav does not list is added under "More", so a new page is never orphaned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLANNED = frozenset(
    {
        "architecture.md",
        "parameters.md",
        "responses.md",
        "embeddings.md",
        "messages.md",
        "hardening.md",
    }
)
"""Pages issue 14 and the issues after it add; every other nav entry must exist."""


def on_config(config: Any) -> Any:
    docs = Path(config["docs_dir"])
    nav = _prune(config["nav"] or [], docs)
    listed = set(_files(nav))
    pages = (path.relative_to(docs).as_posix() for path in docs.rglob("*.md"))
    unlisted = sorted(page for page in pages if page not in listed)
    if unlisted:
        nav.append({"More": unlisted})
    config["nav"] = nav
    return config


def _prune(entries: list[Any], docs: Path) -> list[Any]:
    kept: list[Any] = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            children = _prune(value, docs)
            if children:
                kept.append({next(iter(entry)): children})
        elif not (value in PLANNED and not (docs / value).exists()):
            kept.append(entry)
    return kept


def _files(entries: list[Any]) -> list[str]:
    found: list[str] = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        found.extend(_files(value) if isinstance(value, list) else [value])
    return found
