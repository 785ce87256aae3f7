"""Config loading: interpolation, every problem reported with its YAML path, the mock stand-in, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from adapters import MockConfig, VLLMConfig, WorkersAIConfig
from gateway.config import ConfigError, load_config, parse_config, secrets_of

ROOT = Path(__file__).resolve().parents[2]

VALID = """
listen: {host: 0.0.0.0, port: "${PORT:-9000}"}
backends:
  cloudflare:
    kind: workers-ai
    account_id: ${CF_ACCOUNT}
    api_token: ${CF_TOKEN}
    timeout_s: 30
  demo: {kind: mock, token_delay_s: 0}
models:
  llama:
    aliases: [gpt-4o-mini]
    targets:
      - {backend: cloudflare, model: "@cf/meta/llama-3.3-70b-instruct-fp8-fast"}
"""


def problems_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, environ=environ or {})
    return info.value.problems


def test_interpolation_and_defaults() -> None:
    loaded = parse_config(VALID, environ={"CF_ACCOUNT": "acct", "CF_TOKEN": "tok"})
    settings = loaded.settings
    assert settings.listen.port == 9000
    backend = settings.backends["cloudflare"]
    assert isinstance(backend, WorkersAIConfig)
    assert (backend.account_id, backend.api_token, backend.timeout_s) == ("acct", "tok", 30)
    assert backend.base_url == "https://api.cloudflare.com/client/v4"
    assert isinstance(settings.backends["demo"], MockConfig)
    assert loaded.notices == []


def test_default_expansion_uses_the_environment_when_set() -> None:
    loaded = parse_config(VALID, environ={"CF_ACCOUNT": "a", "CF_TOKEN": "t", "PORT": "7001"})
    assert loaded.settings.listen.port == 7001


def test_empty_credentials_are_an_error_naming_the_variable() -> None:
    problems = problems_of(VALID, {"CF_TOKEN": "tok"})
    assert problems == ["backends.cloudflare.account_id: must not be empty (CF_ACCOUNT is not set)"]


def test_every_structural_problem_is_reported_with_its_path() -> None:
    text = """
listen: {port: abc}
extra: 1
backends:
  cf: {kind: workers-ai, account_id: a, api_token: t, timeot_s: 3}
  other: {kind: nope}
models:
  m: {targets: [{backend: cf, model: x, wieght: 2}]}
"""
    problems = problems_of(text)
    (extra,) = [p for p in problems if p.startswith("extra:")]
    prefix = "extra: unknown key (known keys: "
    assert extra.startswith(prefix)
    known = extra[len(prefix) : -1].split(", ")
    assert known == sorted(known)
    assert {"backends", "keys", "listen", "models", "redis_url", "rate_limit_failure_mode"} <= set(known)
    assert "listen.port: Expected `int`, got `str`" in problems
    assert "backends.cf.timeot_s: unknown key" in problems
    assert any(p.startswith("backends.other.kind: Invalid value 'nope'") for p in problems)
    assert "models.m.targets[0].wieght: unknown key" in problems
    assert len(problems) == 5


def test_reference_problems_are_reported_together() -> None:
    text = """
backends:
  cf: {kind: mock}
models:
  a: {targets: [{backend: zz, model: x}], aliases: [b]}
  b: {targets: []}
"""
    problems = problems_of(text)
    assert "models.a.targets[0].backend: 'zz' is not defined under backends (defined: cf)" in problems
    assert "models.b.targets: must list at least one target" in problems
    assert "models.b: 'b' is already the name or an alias of models.a" in problems


VLLM = """
backends:
  gpu:
    kind: vllm
    base_url: http://gpu-1:8000/v1
    api_key: ${VLLM_API_KEY:-}
    timeout_s: 60
    max_concurrency: 32
models:
  llama:
    timeout_s: 90
    targets:
      - {backend: gpu, model: meta-llama/Llama-3.3-70B-Instruct, weight: 2}
"""


def test_vllm_backend_with_optional_api_key() -> None:
    settings = parse_config(VLLM, environ={}).settings
    backend = settings.backends["gpu"]
    assert isinstance(backend, VLLMConfig)
    assert (backend.base_url, backend.api_key, backend.timeout_s, backend.max_concurrency) == (
        "http://gpu-1:8000/v1",
        "",
        60,
        32,
    )
    assert (backend.breaker.failure_threshold, backend.breaker.cooldown_s) == (5, 30)
    assert settings.models["llama"].timeout_s == 90
    assert settings.models["llama"].targets[0].weight == 2
    keyed = parse_config(VLLM, environ={"VLLM_API_KEY": "sekrit"}).settings.backends["gpu"]
    assert isinstance(keyed, VLLMConfig)
    assert keyed.secrets() == ["sekrit"]


def test_model_deadline_defaults_to_two_minutes() -> None:
    settings = parse_config(VALID, environ={"CF_ACCOUNT": "a", "CF_TOKEN": "t"}).settings
    assert settings.models["llama"].timeout_s == 120


def test_routing_settings_are_validated_with_their_paths() -> None:
    text = """
backends:
  gpu: {kind: vllm, base_url: "http://g/v1", breaker: {failure_threshold: 0, cooldown_s: 5}}
  typo: {kind: vllm, base_url: "http://g/v1", breaker: {probe: 1}}
  other: {kind: vllm}
models:
  m:
    timeout_s: 0
    targets: [{backend: gpu, model: x}]
  n:
    targets: [{backend: gpu, model: x, weight: 0}]
"""
    problems = problems_of(text)
    assert "backends.gpu.breaker.failure_threshold: Expected `int` >= 1" in problems
    assert "backends.typo.breaker.probe: unknown key" in problems
    assert "backends.other: missing required key 'base_url'" in problems
    assert "models.m.timeout_s: Expected `float` > 0.0" in problems
    assert "models.n.targets[0].weight: Expected `float` > 0.0" in problems
    assert len(problems) == 5


def test_empty_vllm_base_url_is_reported() -> None:
    text = (
        "backends: {gpu: {kind: vllm, base_url: '${GPU_URL}'}}\n"
        "models: {m: {targets: [{backend: gpu, model: x}]}}"
    )
    assert problems_of(text) == ["backends.gpu.base_url: must not be empty (GPU_URL is not set)"]


def test_yaml_syntax_error_has_a_line_number() -> None:
    (problem,) = problems_of("backends: {a: [1, 2}\n")
    assert problem.startswith("line 1, column")


def test_unconfigured_backend_is_replaced_by_its_stand_in_with_one_notice() -> None:
    text = VALID.replace("timeout_s: 30", "timeout_s: 30\n    when_unconfigured: demo")
    loaded = parse_config(text, environ={})
    assert "cloudflare" not in loaded.settings.backends
    assert loaded.settings.models["llama"].targets[0].backend == "demo"
    (notice,) = loaded.notices
    assert "CF_ACCOUNT, CF_TOKEN" in notice
    assert "mock" in notice


def test_shipped_configs_are_valid() -> None:
    for path in [ROOT / "config" / "gateway.yaml", *sorted((ROOT / "config" / "examples").glob("*.yaml"))]:
        load_config(path, environ={"CLOUDFLARE_ACCOUNT_ID": "a", "CLOUDFLARE_API_TOKEN": "t"})
    default = load_config(ROOT / "config" / "gateway.yaml", environ={})
    assert len(default.notices) == 1


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_check_config_cli_ok_and_problems(tmp_path: Path) -> None:
    ok = run_cli("check-config", "config/gateway.yaml")
    assert (ok.returncode, ok.stdout.strip()) == (0, "ok")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "backends: {x: {kind: mock}}\nmodels: {m: {targets: [{backend: y, model: z}]}}\nbogus: 1\n"
    )
    result = run_cli("check-config", str(bad))
    assert result.returncode == 1
    assert "bogus: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_bad_config_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("backends: {}\nmodels: {}\n")
    result = run_cli("serve", "--config", str(bad))
    assert result.returncode == 1
    assert "backends: must be a non-empty mapping" in result.stderr
    assert "Traceback" not in result.stderr


KEYED = """
backends:
  demo: {kind: mock}
models:
  llama: {aliases: [gpt-4o-mini], targets: [{backend: demo, model: x}], rpm: 100, tpm: 50000}
redis_url: ${REDIS_URL:-}
keys:
  - id: team-search
    key: ${TEAM_SEARCH_KEY}
    rpm: 600
    tpm: 200000
    max_concurrency: 32
    models: [gpt-4o-mini]
  - id: team-batch
    key_sha256: E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855
"""


def test_keys_and_limits_are_read() -> None:
    settings = parse_config(KEYED, environ={"TEAM_SEARCH_KEY": "sk-search"}).settings
    assert settings.keys is not None
    search, batch = settings.keys
    assert (search.id, search.key, search.rpm, search.tpm, search.max_concurrency) == (
        "team-search",
        "sk-search",
        600,
        200000,
        32,
    )
    assert search.models == ["gpt-4o-mini"]
    assert batch.models == ["*"]
    assert (settings.models["llama"].rpm, settings.models["llama"].tpm) == (100, 50000)
    assert settings.redis_url == ""
    assert settings.rate_limit_failure_mode == "open"
    assert secrets_of(settings) == ["sk-search"]


def test_key_problems_are_reported_with_their_paths() -> None:
    text = (
        KEYED
        + """
  - {id: team-search, key: other, rpm: 0}
  - {id: "bad id!", key: a, key_sha256: aa}
  - {id: nokey, models: [nope, "*"]}
  - {id: short-hash, key_sha256: abc}
  - {id: same-as-batch, key: ""}
rate_limit_failure_mode: sometimes
"""
    )
    problems = problems_of(text.replace("rpm: 100", "rpm: 0"), {"TEAM_SEARCH_KEY": "sk-search"})
    assert problems == [
        "rate_limit_failure_mode: Invalid enum value 'sometimes'",
    ]
    text = text.replace("rate_limit_failure_mode: sometimes", "redis_url: http://redis:6379")
    problems = problems_of(text.replace("rpm: 100", "rpm: 0"), {})
    assert problems == [
        "models.llama.rpm: must be at least 1",
        "keys[0].key: must not be empty (TEAM_SEARCH_KEY is not set)",
        "keys[2].id: 'team-search' is already the id of keys[0]",
        "keys[2].rpm: must be at least 1 (leave it out for no limit)",
        "keys[3].id: 'bad id!' must be 1-64 characters: letters, digits and . _ : @ / - "
        "(it names the key in logs, metrics and Redis)",
        "keys[3]: set either key or key_sha256, not both",
        "keys[4]: missing key or key_sha256",
        "keys[4].models[0]: 'nope' is not a model name or alias under models (defined: gpt-4o-mini, llama)",
        "keys[5].key_sha256: must be 64 hex digits (the SHA-256 of the key, e.g. "
        '`printf %s "$KEY" | sha256sum`)',
        "keys[6].key: must not be empty",
        "redis_url: the scheme must be one of redis://, rediss://, unix://, redis+cluster://, "
        "rediss+cluster:// (or leave it empty for in-process limits)",
    ]


def test_the_same_key_twice_is_refused() -> None:
    text = KEYED + "  - {id: again, key: sk-search}\n"
    problems = problems_of(text, {"TEAM_SEARCH_KEY": "sk-search"})
    assert problems == ["keys[2]: the same key as keys[0]; every key must be distinct"]


@pytest.mark.parametrize("section", ["keys: []", "keys:"])
def test_an_empty_keys_section_is_refused_rather_than_running_open(section: str) -> None:
    text = "backends: {d: {kind: mock}}\nmodels: {m: {targets: [{backend: d, model: x}]}}\n" + section
    assert problems_of(text) == ["keys: must be a non-empty list of keys (remove the section to run open)"]


def test_the_redis_password_is_a_secret() -> None:
    text = KEYED.replace("${REDIS_URL:-}", "redis://gw:s3cret@redis:6379/2")
    settings = parse_config(text, environ={"TEAM_SEARCH_KEY": "sk-search"}).settings
    assert secrets_of(settings) == ["sk-search", "s3cret"]


def test_model_capability_flags_default_and_parse() -> None:
    """`json_mode` is on and `drop_unsupported` off unless a model says otherwise; typos are refused."""
    env = {"CF_ACCOUNT": "acct", "CF_TOKEN": "tok"}
    model = parse_config(VALID, environ=env).settings.models["llama"]
    assert (model.json_mode, model.drop_unsupported) == (True, False)
    custom = VALID.replace("    aliases: [gpt-4o-mini]", "    json_mode: false\n    drop_unsupported: true")
    model = parse_config(custom, environ=env).settings.models["llama"]
    assert (model.json_mode, model.drop_unsupported) == (False, True)
    typo = VALID.replace("    aliases: [gpt-4o-mini]", "    drop_unsuported: true")
    assert any("drop_unsuported" in problem for problem in problems_of(typo, env))


def test_bounds_declared_in_the_types_keep_their_own_words() -> None:
    """`Meta` bounds and `Literal` choices are checked by msgspec, worded as the config's own problems."""
    text = """
listen: {port: 70000}
log_level: loud
log_format: xml
backends:
  gpu: {kind: vllm, base_url: "http://g/v1", timeout_s: 0}
  full: {kind: mock, max_concurrency: 0}
models:
  m: {default_max_tokens: 0, targets: [{backend: gpu, model: x}]}
"""
    assert problems_of(text) == [
        "listen.port: must be between 1 and 65535",
        "backends.gpu.timeout_s: must be greater than 0",
        "backends.full.max_concurrency: must be at least 1",
        "models.m.default_max_tokens: must be at least 1",
        "log_level: must be one of debug, info, warning, error",
        "log_format: must be one of auto, json, console",
    ]


def test_log_level_is_read_in_any_case() -> None:
    text = "log_level: WARNING\nbackends: {d: {kind: mock}}\nmodels: {m: {targets: [{backend: d, model: x}]}}"
    assert parse_config(text, environ={}).settings.log_level == "warning"


def test_worded_bounds_are_reported_together_with_the_checks_across_values() -> None:
    """A bound moved into the types still leaves the other problems of the file (and entry) in view."""
    text = """
backends:
  gpu: {kind: vllm, base_url: "http://g/v1", timeout_s: -1, max_concurrency: 0}
models:
  m: {default_max_tokens: 0, targets: [{backend: nope, model: x}]}
keys:
  - {id: a, key: k, rpm: 0}
"""
    assert problems_of(text) == [
        "backends.gpu.timeout_s: must be greater than 0",
        "backends.gpu.max_concurrency: must be at least 1",
        "models.m.default_max_tokens: must be at least 1",
        "models.m.targets[0].backend: 'nope' is not defined under backends (defined: gpu)",
        "keys[0].rpm: must be at least 1 (leave it out for no limit)",
    ]
