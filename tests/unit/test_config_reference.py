"""The config's JSON Schema and reference page: generated from the types, committed, current, and true."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
import yaml

from gateway.config import ConfigError, parse_config
from gateway.config_reference import (
    PAGE_PATH,
    SCHEMA_PATH,
    editor_schema,
    field_docs,
    reference_page,
    schema_text,
    struct_types,
    sync,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [ROOT / "config" / "gateway.yaml", *sorted((ROOT / "config" / "examples").glob("*.yaml"))]
REGENERATE = "stale: run `python -m gateway.config_reference` (or `make docs`) and commit the result"


def test_the_committed_reference_page_is_current() -> None:
    assert PAGE_PATH.read_text(encoding="utf-8") == reference_page(), REGENERATE


def test_the_committed_schema_is_current() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), REGENERATE


def test_every_config_field_is_documented_and_listed() -> None:
    page = reference_page()
    for name, cls in struct_types().items():
        assert cls.__doc__, f"{name} has no docstring"
        docs = field_docs(cls)
        for field in msgspec.structs.fields(cls):
            assert docs.get(field.name), f"{name}.{field.name} has no docstring"
            assert f"| `{field.encode_name}` |" in page, f"{name}.{field.name} is not on the page"


def test_field_docstrings_are_the_schema_descriptions() -> None:
    schema = editor_schema()
    listen = schema["$defs"]["Listen"]["properties"]
    assert listen["host"]["description"].startswith("Address to bind")
    timeout = schema["$defs"]["VLLMConfig"]["properties"]["timeout_s"]  # inherited from BackendConfig
    assert timeout["description"].startswith("Per-read timeout of one upstream call")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_point_editors_at_the_schema_and_satisfy_it(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert first.startswith(prefix)
    assert (path.parent / first[len(prefix) :]).resolve() == SCHEMA_PATH
    jsonschema.validate(yaml.safe_load(path.read_text(encoding="utf-8")), editor_schema())


def _schema_errors(text: str) -> list[str]:
    validator = jsonschema.Draft202012Validator(editor_schema())
    return [error.message for error in validator.iter_errors(yaml.safe_load(text))]


MINIMAL = "backends: {d: {kind: mock}}\nmodels: {m: {targets: [{backend: d, model: x}]}}\n"


@pytest.mark.parametrize(
    "extra",
    [
        "listen: {port: 70000}",
        "log_format: xml",
        "rate_limit_failure_mode: sometimes",
        "http: {max_body_bytes: 10}",
        "bogus: 1",
    ],
)
def test_the_schema_refuses_what_the_loader_refuses(extra: str) -> None:
    text = MINIMAL + extra + "\n"
    assert _schema_errors(text)
    with pytest.raises(ConfigError):
        parse_config(text, environ={})


def test_the_schema_accepts_interpolated_numbers() -> None:
    text = MINIMAL + 'listen: {port: "${PORT:-9000}"}\n'
    assert _schema_errors(text) == []
    assert parse_config(text, environ={}).settings.listen.port == 9000


def test_a_backend_kind_is_checked_by_its_own_block() -> None:
    assert _schema_errors("backends: {g: {kind: vllm}}\nmodels: {}\n")  # base_url is required
    assert _schema_errors("backends: {g: {kind: mock, base_url: x}}\nmodels: {}\n")  # not a mock key


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )


def test_the_cli_writes_the_committed_schema(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    result = run_module("gateway", "config-schema", "--output", str(out))
    assert (result.returncode, result.stderr) == (0, "")
    assert out.read_text(encoding="utf-8") == SCHEMA_PATH.read_text(encoding="utf-8")
    printed = run_module("gateway", "config-schema")
    assert printed.returncode == 0
    schema: dict[str, Any] = json.loads(printed.stdout)
    assert schema["$ref"] == "#/$defs/Settings"


def test_the_generator_check_mode_reports_a_stale_page(tmp_path: Path) -> None:
    page = tmp_path / "configuration.md"
    page.write_text("old\n", encoding="utf-8")
    schema = tmp_path / "gateway.schema.json"
    schema.write_text(schema_text(), encoding="utf-8")
    assert sync(check=True, page=page, schema=schema) == [page]
    assert page.read_text(encoding="utf-8") == "old\n"
    assert sync(check=False, page=page, schema=schema) == [page]
    assert page.read_text(encoding="utf-8") == reference_page()
    assert sync(check=True, page=page, schema=schema) == []


def test_the_generator_check_mode_passes_on_the_repository() -> None:
    result = run_module("gateway.config_reference", "--check")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
