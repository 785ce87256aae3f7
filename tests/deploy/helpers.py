"""What the deploy tests share: paths, Compose-style interpolation, the pod environment Kubernetes would
build, the `${VAR}`s a gateway config reads, and `gateway check-config` run as a real process."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

REPO: Final = Path(__file__).resolve().parents[2]
DEPLOY: Final = REPO / "deploy"
K8S: Final = DEPLOY / "k8s"
OVERLAYS: Final = ("cloudflare-only", "gpu")

_CONFIG_VAR: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
"""The gateway config's interpolation syntax (gateway/config.py): `${VAR}` and `${VAR:-default}`."""
_COMPOSE_VAR: Final = re.compile(
    r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


def config_variables(text: str) -> dict[str, bool]:
    """Every `${VAR}` a gateway config reads → whether it always has a default (`${VAR:-...}`).

    Like the gateway, this looks at string values after YAML parsing: `${VAR}` in a comment is no use."""
    found: dict[str, bool] = {}
    for value in strings(yaml.safe_load(text)):
        for match in _CONFIG_VAR.finditer(value):
            found[match.group(1)] = found.get(match.group(1), True) and match.group(2) is not None
    return found


def read_dotenv(path: Path) -> dict[str, str]:
    """`KEY=VALUE` lines, as Compose reads a .env file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def strings(value: Any) -> list[str]:
    """Every string scalar in a parsed YAML document (mapping keys excluded)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return []


def compose_variables(document: Any) -> dict[str, str]:
    """Every variable a parsed compose file interpolates → its operator (`""`, `:-`, `-`, `:?`, `?`, `:+`)."""
    return {
        (m.group(2) or m.group(5)): (m.group(3) or "")
        for text in strings(document)
        for m in _COMPOSE_VAR.finditer(text)
        if m.group(1) is None
    }


def interpolate_compose(document: Any, environ: Mapping[str, str]) -> Any:
    """Compose's variable substitution on a parsed compose file: in string values, `$VAR`, `${VAR}`,
    `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+replacement}`, and
    `$$` for a literal `$`. A missing required variable raises KeyError with Compose's message."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        name = match.group(2) or match.group(5)
        operator, argument = match.group(3) or "", match.group(4) or ""
        value = environ.get(name)
        if operator in (":?", "?") and (value is None or (operator == ":?" and not value)):
            raise KeyError(f"{name}: {argument}")
        if operator == ":-":
            return value or argument
        if operator == "-":
            return argument if value is None else value
        if operator == ":+":
            return argument if value else ""
        return value or ""

    if isinstance(document, str):
        return _COMPOSE_VAR.sub(replace, document)
    if isinstance(document, dict):
        return {key: interpolate_compose(value, environ) for key, value in document.items()}
    if isinstance(document, list):
        return [interpolate_compose(value, environ) for value in document]
    return document


def find(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def config_map_named(resources: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return find(resources, "ConfigMap", name)


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    values.update(secret.get("stringData") or {})
    return values


def container_environment(container: dict[str, Any], resources: list[dict[str, Any]]) -> dict[str, str]:
    """The environment Kubernetes gives `container`: envFrom first, then env in order, with values
    looked up in the rendered Secrets and ConfigMaps (a missing optional key is left out)."""
    environ: dict[str, str] = {}

    def source(kind: str, name: str) -> dict[str, str]:
        found = find(resources, kind, name)
        return secret_values(found) if kind == "Secret" else dict(found.get("data") or {})

    for env_from in container.get("envFrom", []):
        if "secretRef" in env_from:
            environ.update(source("Secret", env_from["secretRef"]["name"]))
        else:
            environ.update(source("ConfigMap", env_from["configMapRef"]["name"]))
    for env in container.get("env", []):
        if "value" in env:
            environ[env["name"]] = env["value"]
            continue
        ref_kind, ref = next(
            ("Secret" if key == "secretKeyRef" else "ConfigMap", value)
            for key, value in env["valueFrom"].items()
            if key in ("secretKeyRef", "configMapKeyRef")
        )
        values = source(ref_kind, ref["name"])
        if ref["key"] in values:
            environ[env["name"]] = values[ref["key"]]
        else:
            assert ref.get("optional"), f"{ref_kind} {ref['name']} has no key {ref['key']}"
    return environ


def check_config(path: Path, environ: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`gateway check-config PATH` as a process, with exactly `environ` (plus PATH) as its environment."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **environ},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


__all__ = (
    "DEPLOY",
    "K8S",
    "OVERLAYS",
    "REPO",
    "check_config",
    "compose_variables",
    "config_map_named",
    "config_variables",
    "container_environment",
    "find",
    "interpolate_compose",
    "read_dotenv",
    "secret_values",
    "strings",
)
