"""The deploy/ artefacts, read once per session: rendered overlays, the Dockerfile's image config, Compose."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy import dockerfile
from tests.deploy.helpers import DEPLOY, K8S, OVERLAYS, interpolate_compose, read_dotenv
from tests.deploy.kustomize import build


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each overlay, rendered as `kubectl kustomize deploy/k8s/overlays/<name>` would (do not mutate)."""
    return {overlay: build(K8S / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="session")
def image() -> dockerfile.ImageConfig:
    """The final stage's image config from deploy/Dockerfile."""
    return dockerfile.image_config(dockerfile.stages((DEPLOY / "Dockerfile").read_text())[-1])


@pytest.fixture(scope="session")
def compose_env() -> dict[str, str]:
    """The values deploy/.env.example documents (what a first `docker compose up` would read)."""
    return read_dotenv(DEPLOY / ".env.example")


@pytest.fixture(scope="session")
def compose(compose_env: dict[str, str]) -> dict[str, Any]:
    """deploy/compose.yaml after Compose's variable substitution with the .env.example values."""
    loaded = interpolate_compose(yaml.safe_load((DEPLOY / "compose.yaml").read_text()), compose_env)
    assert isinstance(loaded, dict)
    return loaded
