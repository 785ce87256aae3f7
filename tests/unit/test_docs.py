"""The README and the pages under docs/ stay true: short front page, links and file paths that exist,
and a config example the gateway accepts. (`make docs` builds the site strictly for the links between
pages; this covers the README, which is not part of the site, and paths outside docs/.)"""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from gateway.config import parse_config
from gateway.config_reference import editor_schema

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").rglob("*.md"))
REPO_PATH = re.compile(r"`((?:gateway|adapters|tests|config|deploy|docs|\.ci)/[^`\s]*)`")


def test_the_readme_is_a_short_front_page() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 200


def test_readme_links_point_at_files_that_exist() -> None:
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8"))
    assert "docs/configuration.md" in links
    for link in links:
        assert (ROOT / link).exists(), link


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_repository_paths_named_in_the_docs_exist(page: Path) -> None:
    """A page names files as `gateway/api/chat.py`; after a move, a stale name fails here.
    A placeholder such as `adapters/<kind>/config.py` stands for each backend package."""
    for named in REPO_PATH.findall(page.read_text(encoding="utf-8")):
        path = re.sub(r"<[a-z_]+>", "*", named.rstrip(".,:;)"))
        found = list(ROOT.glob(path)) if "*" in path else [ROOT / path] if (ROOT / path).exists() else []
        assert found, f"{page.relative_to(ROOT)} names {path}, which does not exist"


def test_the_readme_config_example_is_a_valid_config() -> None:
    (example,) = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    env = {"CLOUDFLARE_ACCOUNT_ID": "a", "CLOUDFLARE_API_TOKEN": "t", "TEAM_SEARCH_KEY": "sk-search"}
    settings = parse_config(example, environ=env).settings
    assert [t.backend for t in settings.models["llama-3.3-70b"].targets] == ["cloudflare", "gpu-1", "gpu-2"]
    jsonschema.validate(yaml.safe_load(example), editor_schema())
