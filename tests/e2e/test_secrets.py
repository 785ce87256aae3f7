"""Secrets never leave the gateway: everything a run produces is captured and scanned.

A real `gateway serve` process at log level debug, in front of the Workers AI and vLLM emulators and a
password-protected redis-server, is driven down every path that handles a credential: successes and
streams, wrong, near-miss and missing client keys, upstreams refusing the gateway's credentials,
upstream 5xx/429/malformed faults, failover with every target failing, /metrics, /v1/models, /readyz,
and `gateway check-config` on broken configs that hold secrets. Every response (status, headers,
body), the process's stdout and stderr, and check-config's output are scanned for each secret, its
base64 and URL-encoded forms.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pytest

from tests.e2e.conftest import (
    CF_ACCOUNT,
    CF_TOKEN,
    VLLM_KEY,
    VLLM_MODEL,
    cloudflare_backend,
    vllm_backend,
)
from tests.gateway_process import GatewayProcess
from tests.redis_server import RedisServer

if TYPE_CHECKING:
    from tests.emulators.server import ServerThread
    from tests.emulators.vllm import VLLMEmulator
    from tests.emulators.workers_ai import WorkersAIEmulator

CLIENT_KEY = "sk-gw-plain-3f9a1c7e5d2b"
HASHED_CLIENT_KEY = "sk-gw-hashed-8e2b6d4f1a7c"
WRONG_CF_TOKEN = "cf-wrong-token-51d0e8a2"
WRONG_VLLM_KEY = "vllm-wrong-key-0c7f3b96"
REDIS_PASSWORD = "r3d!s p@ss/w0rd+9a4e"  # characters that must be URL-encoded in redis_url
NEAR_MISS_KEY = CLIENT_KEY[:-1] + ("X" if CLIENT_KEY[-1] != "X" else "Y")
SECRETS = {
    "Cloudflare token": CF_TOKEN,
    "Cloudflare account id": CF_ACCOUNT,
    "vLLM api_key": VLLM_KEY,
    "wrong Cloudflare token": WRONG_CF_TOKEN,
    "wrong vLLM api_key": WRONG_VLLM_KEY,
    "client key": CLIENT_KEY,
    "hashed client key": HASHED_CLIENT_KEY,
    "near-miss client key": NEAR_MISS_KEY,
    "distinctive part of the client key": CLIENT_KEY[-10:],
    "Redis password": REDIS_PASSWORD,
}
USER = [{"role": "user", "content": "Say hello"}]


def forms(secret: str) -> dict[str, bytes]:
    """The secret as it could leak: raw, base64 (alone, as a Bearer or Basic value), URL-encoded."""
    raw = secret.encode()
    return {
        "raw": raw,
        "base64": base64.b64encode(raw).rstrip(b"="),
        "base64url": base64.urlsafe_b64encode(raw).rstrip(b"="),
        "base64 of 'Bearer <secret>'": base64.b64encode(b"Bearer " + raw).rstrip(b"="),
        "base64 of ':<secret>'": base64.b64encode(b":" + raw)[4:].rstrip(b"="),
        "url-encoded": quote(secret, safe="").encode(),
        "url-encoded (path)": quote(secret).encode(),
        "json-escaped": json.dumps(secret)[1:-1].encode(),
    }


class Capture:
    """Everything the test saw, labelled, for the final scan."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []
        self.requests = 0

    def response(self, label: str, answer: httpx.Response) -> httpx.Response:
        self.requests += 1
        head = f"{answer.status_code}\n" + "".join(f"{k}: {v}\n" for k, v in answer.headers.multi_items())
        self.items.append((label, head.encode() + answer.content))
        return answer

    def text(self, label: str, text: str | bytes) -> None:
        self.items.append((label, text.encode() if isinstance(text, str) else text))

    @property
    def size(self) -> int:
        return sum(len(blob) for _, blob in self.items)


def _config(
    workers_ai_url: str, vllm_url: str, redis_url: str, *, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    fast: dict[str, Any] = {"timeout_s": 5}
    return {
        "log_level": "debug",
        "redis_url": redis_url,
        "backends": {
            "cloudflare": cloudflare_backend(workers_ai_url, **fast),
            "cloudflare-badcreds": cloudflare_backend(workers_ai_url, token=WRONG_CF_TOKEN, **fast),
            "vllm": vllm_backend(vllm_url, **fast),
            "vllm-badcreds": vllm_backend(vllm_url, api_key=WRONG_VLLM_KEY, **fast),
        },
        "models": {
            "llama": {
                "targets": [{"backend": "cloudflare", "model": "@cf/meta/llama-3.3-70b-instruct-fp8-fast"}]
            },
            "vllm-llama": {"targets": [{"backend": "vllm", "model": VLLM_MODEL}]},
            "cf-badcreds": {
                "targets": [
                    {"backend": "cloudflare-badcreds", "model": "@cf/meta/llama-3.3-70b-instruct-fp8-fast"}
                ]
            },
            "vllm-badcreds": {"targets": [{"backend": "vllm-badcreds", "model": VLLM_MODEL}]},
            "doomed": {
                "targets": [
                    {"backend": "cloudflare-badcreds", "model": "@cf/meta/llama-3.3-70b-instruct-fp8-fast"},
                    {"backend": "vllm-badcreds", "model": VLLM_MODEL},
                    {"backend": "cloudflare", "model": "@cf/meta/llama-3.3-70b-instruct-fp8-fast"},
                    {"backend": "vllm", "model": VLLM_MODEL},
                ]
            },
        },
        "keys": [
            {"id": "team-plain", "key": CLIENT_KEY, "rpm": 10_000},
            {"id": "team-hashed", "key_sha256": hashlib.sha256(HASHED_CLIENT_KEY.encode()).hexdigest()},
        ],
        **(extra or {}),
    }


@pytest.fixture
def redis_with_password() -> Iterator[RedisServer]:
    with RedisServer(password=REDIS_PASSWORD) as server:
        yield server


def _redis_url(server: RedisServer, password: str) -> str:
    return f"redis://:{quote(password, safe='')}@127.0.0.1:{server.port}/0"


def _drive(
    gateway: GatewayProcess, capture: Capture, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator
) -> None:
    good = {"authorization": f"Bearer {CLIENT_KEY}"}
    hashed = {"authorization": f"Bearer {HASHED_CLIENT_KEY}"}
    with httpx.Client(base_url=gateway.url, timeout=30) as client:

        def chat(label: str, model: str, headers: dict[str, str], **body: Any) -> httpx.Response:
            payload = {"model": model, "messages": USER, **body}
            return capture.response(label, client.post("/v1/chat/completions", json=payload, headers=headers))

        # Successes, whole and streamed, both backends, both key forms, chat and completions.
        for model in ("llama", "vllm-llama"):
            for headers in (good, hashed, {"api-key": CLIENT_KEY}):
                assert chat(f"ok {model}", model, headers).status_code == 200
                assert chat(f"stream {model}", model, headers, stream=True).status_code == 200
            answer = client.post(
                "/v1/completions", json={"model": model, "prompt": "Say hello", "max_tokens": 4}, headers=good
            )
            assert capture.response(f"completion {model}", answer).status_code == 200
        # Client keys: wrong, near miss (as Bearer, as api-key, without the scheme), missing, malformed.
        for headers in (
            {"authorization": f"Bearer {NEAR_MISS_KEY}"},
            {"authorization": NEAR_MISS_KEY},
            {"authorization": f"Basic {base64.b64encode(f'x:{NEAR_MISS_KEY}'.encode()).decode()}"},
            {"api-key": NEAR_MISS_KEY},
            {"authorization": f"Bearer {CLIENT_KEY} {CLIENT_KEY}"},
            {"authorization": f"Bearer {CLIENT_KEY}x"},
            {"authorization": "Bearer"},
            {},
        ):
            assert chat("bad key", "llama", headers).status_code == 401
            answer = client.get("/v1/models", headers=headers)
            assert capture.response("bad key models", answer).status_code == 401
        # Upstreams refusing the gateway's credentials (Cloudflare 403, vLLM 401), whole and streamed.
        for model in ("cf-badcreds", "vllm-badcreds"):
            for stream in (False, True):
                answer = chat(f"upstream auth {model}", model, good, stream=stream)
                assert answer.status_code >= 400, answer.text
        # Upstream faults on the good credentials.
        for fault in (
            "status:500",
            "status:503",
            "status:429",
            "malformed",
            "invalid-utf8",
            "cut:2",
            "abort:2",
        ):
            for emulator, model in ((workers_ai, "llama"), (vllm, "vllm-llama")):
                for stream in (False, True):
                    emulator.faults.push(fault)
                    chat(f"fault {fault} {model}", model, good, stream=stream)
                    emulator.faults.clear()
        # Failover with every target failing: two credential failures, then two 500s.
        workers_ai.faults.push("status:500", times=-1)
        vllm.faults.push("status:500", times=-1)
        for stream in (False, True):
            answer = chat("all targets fail", "doomed", good, stream=stream)
            assert answer.status_code >= 500, answer.text
        workers_ai.faults.clear()
        vllm.faults.clear()
        # Bad requests echo input, never configuration.
        chat("bad body", "llama", good, temperature="hot")
        chat("unknown model", "no-such-model", good)
        capture.response("bad json", client.post("/v1/chat/completions", content=b"{", headers=good))
        # Clients that misbehave with a valid key, where an exception could escape with the request
        # (and the settings) in scope: a dropped upload and a malformed chunked body, both routes.
        for path in ("/v1/chat/completions", "/v1/completions"):
            for misbehaviour in ("dropped upload", "malformed chunked body"):
                capture.text(f"{misbehaviour} {path}", _misbehave(gateway, path, misbehaviour))
        # Read-only endpoints.
        for path in (
            "/v1/models",
            "/v1/models/llama",
            "/v1/models/nope",
            "/metrics",
            "/readyz",
            "/healthz",
            "/x",
        ):
            capture.response(f"GET {path}", client.get(path, headers=good))


def _misbehave(gateway: GatewayProcess, path: str, misbehaviour: str) -> bytes:
    """Send a request with the good key over a raw socket, misbehave, and return what came back."""
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {CLIENT_KEY}\r\n"
        "content-type: application/json\r\n"
    )
    if misbehaviour == "dropped upload":
        data = (head + "content-length: 1000\r\n\r\n").encode() + b'{"model":'
    else:
        data = (head + "transfer-encoding: chunked\r\n\r\n").encode() + b'5\r\n{"mod\r\nZZ\r\n'
    received = b""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        if misbehaviour == "dropped upload":
            return received  # closed at once: nobody is left to answer
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    assert received.startswith(b"HTTP/1.1 400 "), received
    return received


def _check_config_outputs(tmp_path: Path, workers_ai_url: str, vllm_url: str, redis_url: str) -> list[str]:
    """check-config on configs where a bad value sits next to each secret."""
    base = _config(workers_ai_url, vllm_url, redis_url)
    broken: list[dict[str, Any] | str] = []
    config = json.loads(json.dumps(base))  # type errors next to the upstream secrets
    config["backends"]["cloudflare"]["timeout_s"] = "soon"
    config["backends"]["cloudflare-badcreds"]["api_token"] = {"token": CF_TOKEN}
    config["backends"]["vllm"]["api_key"] = [VLLM_KEY]
    broken.append(config)
    config = json.loads(json.dumps(base))  # value errors next to the client keys and the Redis password
    config["redis_url"] = f"http://:{quote(REDIS_PASSWORD, safe='')}@127.0.0.1:1/0"
    config["backends"]["vllm"]["max_concurrency"] = -1
    config["keys"][0]["rpm"] = 0
    config["keys"][1]["key_sha256"] = "not-hex"
    config["keys"].append({"id": "team-again", "key": CLIENT_KEY})  # the same key twice
    config["keys"].append({"id": "bad id!", "key": f" {HASHED_CLIENT_KEY}"})
    config["keys"].append({"id": "team-both", "key": CLIENT_KEY, "key_sha256": "0" * 64, "models": ["nope"]})
    broken.append(config)
    # YAML errors on the very line of a secret.
    broken.append(f'backends:\n  c:\n    kind: workers-ai\n    api_token: "{CF_TOKEN}\n    account_id: x\n')
    broken.append(f"backends:\n  c: {{kind: vllm, api_key: {VLLM_KEY}: x}}\n")
    broken.append(f"keys:\n  - key: {CLIENT_KEY}\n   id: [\n")
    outputs = []
    for i, item in enumerate(broken):
        path = tmp_path / f"broken-{i}.yaml"
        path.write_text(item if isinstance(item, str) else json.dumps(item))
        checked = subprocess.run(
            [sys.executable, "-m", "gateway", "check-config", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert checked.returncode == 1, checked.stdout + checked.stderr
        outputs.append(checked.stdout + checked.stderr)
    return outputs


def test_no_secret_appears_in_anything_a_run_produces(
    tmp_path: Path,
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread],
    vllm_server: tuple[VLLMEmulator, ServerThread],
    workers_ai: WorkersAIEmulator,
    vllm: VLLMEmulator,
    redis_with_password: RedisServer,
) -> None:
    workers_ai_url, vllm_url = workers_ai_server[1].url, vllm_server[1].url
    capture = Capture()
    config = _config(workers_ai_url, vllm_url, _redis_url(redis_with_password, REDIS_PASSWORD))
    with GatewayProcess(config, tmp_path) as gateway:
        _drive(gateway, capture, workers_ai, vllm)
        # Positive control: the secrets really were in use, so their absence below means something.
        sent = {r.headers.get("authorization") for r in [*workers_ai.requests, *vllm.requests]}
        for token in (CF_TOKEN, WRONG_CF_TOKEN, VLLM_KEY, WRONG_VLLM_KEY):
            assert f"Bearer {token}" in sent, token
        lines = gateway.log_lines()
        assert any(line.get("event") == "request" and line.get("key") == "team-plain" for line in lines)
        # The misbehaving clients were logged as client faults, with no error line.
        assert sum(1 for line in lines if line.get("event") == "request" and line.get("status") == 499) >= 2
        assert not any(line.get("event") == "unhandled_exception" for line in lines)
    capture.text("gateway output", gateway.output())
    # The limiter did use the password-protected Redis (the password was right and in use).
    assert "rate_limit_store_unavailable" not in gateway.output()
    # The same Redis with a wrong password: the store's error is logged, and must not carry it either.
    wrong = _config(workers_ai_url, vllm_url, _redis_url(redis_with_password, REDIS_PASSWORD[::-1]))
    with GatewayProcess(wrong, tmp_path) as gateway:
        answer = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "llama", "messages": USER},
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
            timeout=30,
        )
        capture.response("wrong redis password", answer)
        assert answer.status_code == 200  # failure mode open
        gateway.log_lines()
    capture.text("gateway output (wrong redis password)", gateway.output())
    assert "rate_limit_store_unavailable" in gateway.output()
    extra_secrets = {"wrong Redis password": REDIS_PASSWORD[::-1]}
    problems = 0
    for i, output in enumerate(
        _check_config_outputs(tmp_path, workers_ai_url, vllm_url, "redis://:x@127.0.0.1:1")
    ):
        capture.text(f"check-config {i}", output)
        assert "problem(s)" in output, output
        problems += sum(1 for line in output.splitlines() if line.startswith("  "))
    assert problems == 15  # every broken value above was reported

    leaks = [
        f"{name} ({form}) in {label}"
        for name, secret in {**SECRETS, **extra_secrets}.items()
        for form, needle in forms(secret).items()
        for label, blob in capture.items
        if needle in blob
    ]
    assert leaks == [], leaks
    print(
        f"\nsecrets scan: {capture.requests} HTTP exchanges, {len(capture.items)} captures, "
        f"{capture.size:,} bytes, {len(SECRETS) + len(extra_secrets)} secrets x {len(forms('x'))} forms: "
        "no leak"
    )
