"""The deployment guide is reachable from the README, and its links and kubectl targets exist."""

from __future__ import annotations

import re

from tests.deploy.helpers import DEPLOY, REPO


def test_readme_links_the_deployment_guide() -> None:
    assert "](deploy/README.md)" in (REPO / "README.md").read_text()


def test_guide_links_and_apply_targets_exist() -> None:
    guide = (DEPLOY / "README.md").read_text()
    links = re.findall(r"\]\(([^)#:]+)\)", guide)
    targets = re.findall(r"kubectl apply -k (\S+?)`", guide)
    assert links
    assert targets
    for path in links:
        assert (DEPLOY / path).exists(), path
    for target in targets:
        assert (REPO / target / "kustomization.yaml").exists(), target
