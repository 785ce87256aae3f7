"""mkdocs hooks (mkdocs.yml `hooks:`): keep the nav complete while other pages are still being written.

- An entry in `PLANNED` whose file does not exist yet is dropped from the nav (instead of failing the
  strict build); it appears where the nav puts it as soon as the page lands.
- A page under docs/ that the nav does not list is added under "More", so a new page is never orphaned.
- A relative link from a page to a repository file outside docs/ (`[guide](../deploy/README.md)`, which
  works on a code host) is shown on the site as the file's path, since the site has no copy of it; one
  to a file that does not exist is left alone, so the strict build still fails on it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s#:]+)(#[^)\s]*)?\)")

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


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs = Path(config["docs_dir"]).resolve()
    here = (docs / page.file.src_uri).parent
    repo = docs.parent

    def outside(match: re.Match[str]) -> str:
        text, target = match.group(1), match.group(2)
        path = (here / target).resolve()
        if path.is_relative_to(docs) or not path.is_relative_to(repo) or not path.exists():
            return match.group(0)
        name = path.relative_to(repo).as_posix()
        return text if name in text else f"{text} (`{name}`)"

    return _LINK.sub(outside, markdown)
