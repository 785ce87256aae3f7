"""Defence in depth for credentials: they never print, and no log line renders a frame's locals.

Issue 13: an uncaught exception was logged with a traceback that recorded every frame's locals, the
settings (every credential) and the request's Authorization header among them. Two independent
guards are checked here: the log configuration renders no locals (JSON and console alike), and the
settings hold credentials as `Secret`s, masked in `repr`, `str`, formatting and the log encoder.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

from adapters.secret import MASK, Secret, reveal
from adapters.vllm.config import VLLMConfig
from adapters.workers_ai.config import WorkersAIConfig
from gateway.config import parse_config
from gateway.observability.logs import _json

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "cf-unit-secret-token-5a1e9d"
ACCOUNT = "acct-unit-secret-77c2"
VLLM_KEY = "vllm-unit-secret-key-31be"
CLIENT_KEY = "sk-gw-unit-secret-key-8f0c2a"
REDIS_PASSWORD = "redis-unit-secret-pw-4d"
AI_GATEWAY_TOKEN = "aig-unit-secret-token-6b"
PROXY_PASSWORD = "proxy-unit-secret-pw-0e"
SECRETS = (TOKEN, ACCOUNT, VLLM_KEY, CLIENT_KEY, REDIS_PASSWORD, AI_GATEWAY_TOKEN, PROXY_PASSWORD)
CONFIG = f"""
redis_url: redis://:{REDIS_PASSWORD}@127.0.0.1:6390/0
backends:
  cloudflare:
    kind: workers-ai
    account_id: {ACCOUNT}
    api_token: {TOKEN}
    ai_gateway: {{gateway_id: gw, token: {AI_GATEWAY_TOKEN}}}
    proxy: http://user:{PROXY_PASSWORD}@proxy.internal:3128
  gpu: {{kind: vllm, base_url: "http://127.0.0.1:1/v1", api_key: {VLLM_KEY}}}
models:
  m: {{targets: [{{backend: cloudflare, model: "@cf/x"}}, {{backend: gpu, model: y}}]}}
keys:
  - {{id: team-a, key: {CLIENT_KEY}}}
"""


def settings_text() -> list[str]:
    settings = parse_config(CONFIG, environ={}).settings
    cloudflare, gpu = settings.backends["cloudflare"], settings.backends["gpu"]
    assert isinstance(cloudflare, WorkersAIConfig)
    assert isinstance(gpu, VLLMConfig)
    assert settings.keys is not None
    values = [
        cloudflare.api_token,
        cloudflare.account_id,
        gpu.api_key,
        settings.keys[0].key,
        settings.redis_url,
    ]
    assert all(isinstance(value, Secret) for value in values)
    return [
        repr(settings),
        str(settings),
        f"{settings}",
        "%s %r" % (settings, settings),  # noqa: UP031 - the old formatting path too
        *(f"{value} {value!r} {value!s:>40}" for value in values),
        _json.encode({"settings": settings, "values": values}).decode(),
    ]


@pytest.mark.parametrize("index", range(len(settings_text())))
def test_settings_never_show_a_credential(index: int) -> None:
    text = settings_text()[index]
    assert MASK in text
    for secret in SECRETS:
        assert secret not in text


def test_a_secret_is_still_its_value_where_it_is_used() -> None:
    settings = parse_config(CONFIG, environ={}).settings
    cloudflare = settings.backends["cloudflare"]
    assert isinstance(cloudflare, WorkersAIConfig)
    assert cloudflare.api_token == TOKEN
    assert reveal(cloudflare.api_token) == TOKEN
    assert type(reveal(cloudflare.api_token)) is str
    assert cloudflare.api_token.encode() == TOKEN.encode()
    assert settings.keys is not None
    assert settings.keys[0].key is not None
    assert settings.keys[0].key.strip() == CLIENT_KEY
    with pytest.raises(TypeError):  # a bare encoder refuses it rather than writing the value
        msgspec.json.encode(settings)


def test_settings_decoded_by_any_path_hold_secrets() -> None:
    config = msgspec.convert(
        {"account_id": ACCOUNT, "api_token": TOKEN, "kind": "workers-ai"}, WorkersAIConfig
    )
    assert isinstance(config.api_token, Secret)
    assert TOKEN not in repr(msgspec.structs.replace(config, timeout_s=3))


LOG_SCRIPT = """
import sys
from gateway.config import parse_config
from gateway.observability.logs import configure_logging, flush_logs, get_logger

configure_logging("info", sys.argv[1])
settings = parse_config(sys.argv[2], environ={}).settings

def handler(settings, authorization):
    headers = [(b"authorization", authorization.encode())]
    raise RuntimeError("boom")

try:
    handler(settings, "Bearer " + sys.argv[3])
except RuntimeError as exc:
    get_logger("test").error("unhandled_exception", exc_info=exc)
flush_logs()
"""


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_logged_traceback_renders_no_frame_locals(fmt: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LOG_SCRIPT), fmt, CONFIG, CLIENT_KEY],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    output = done.stdout + done.stderr
    assert "RuntimeError" in output  # the traceback itself is there
    assert "handler" in output
    for secret in SECRETS:
        assert secret not in output, fmt
    assert "locals" not in output
