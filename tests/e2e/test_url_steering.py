"""Nothing in a request steers the gateway to another host or path: upstream URLs come from config only.

Public model names are looked up in the config; an unknown one is a 404 `model_not_found` before any
upstream is contacted, whatever it looks like (`../`, `@`, encoded slashes, absolute URLs, control
characters). A sentinel TCP server's address is written into every hostile name: it must never see a
connection, and the emulators must see no request at all, or only on the configured model's path.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import msgspec
import pytest

from tests.e2e.conftest import CF_ACCOUNT, VLLM_MODEL, GatewayFactory, both_backends_config
from tests.waiting import wait_for

if TYPE_CHECKING:
    from tests.emulators.server import ServerThread
    from tests.emulators.vllm import VLLMEmulator
    from tests.emulators.workers_ai import WorkersAIEmulator

CONFIGURED_LLAMA_PATH = f"/client/v4/accounts/{CF_ACCOUNT}/ai/run/@cf/meta/llama-3.3-70b-instruct-fp8-fast"


class Sentinel:
    """A TCP listener that only counts the connections it accepts: any is a steering failure."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


@pytest.fixture
def sentinel() -> Iterator[Sentinel]:
    server = Sentinel()
    socket.create_connection(("127.0.0.1", server.port), timeout=2).close()  # it does count:
    wait_for(lambda: server.connections)
    assert server.connections == 1
    server.connections = 0
    yield server
    server.close()


@pytest.fixture
def gateway(
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread],
    vllm_server: tuple[VLLMEmulator, ServerThread],
    workers_ai: WorkersAIEmulator,
    vllm: VLLMEmulator,
    start_gateway: GatewayFactory,
) -> str:
    return start_gateway(both_backends_config(workers_ai_server[1].url, vllm_server[1].url))


def hostile_model_names(sentinel: str) -> list[str]:
    return [
        "../x",
        "../../../../etc/passwd",
        "@cf/../../evil",
        "@cf/meta/../../../accounts/other/ai/run/@cf/meta/llama-3.3-70b-instruct-fp8-fast",
        "llama-3.3-70b/../hermes-2-pro",
        "a%2Fb",
        "..%2F..%2Fevil",
        "%2e%2e%2fevil",
        f"http://{sentinel}/x",
        f"https://{sentinel}/x",
        f"//{sentinel}",
        f"//{sentinel}/v1/chat/completions",
        f"@{sentinel}",
        f"llama-3.3-70b@{sentinel}",
        f"user:pass@{sentinel}/x",
        f"llama-3.3-70b?host={sentinel}",
        "llama-3.3-70b?x=1",
        "llama-3.3-70b#frag",
        f"llama-3.3-70b\r\nHost: {sentinel}\r\n\r\n",
        "llama-3.3-70b\nX-Evil: 1",
        "llama-3.3-70b\x00",
        "\x00",
        "llama-3.3-70b ",
        " llama-3.3-70b",
        "LLAMA-3.3-70B",
        "x" * 10_000,
        "/" * 300,
        "\\..\\..\\evil",
        f"{VLLM_MODEL}/../../{sentinel}",
        "meta-llama/Llama-3.3-70B-Instruct",  # the upstream's own name is not a public name
        "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
        "file:///etc/passwd",
        "unix:///var/run/docker.sock",
        "é/../évil",
        "\u202e70b-3.3-amall",
    ]


def _upstream_paths(workers_ai: WorkersAIEmulator, vllm: VLLMEmulator) -> list[str]:
    """Every path either emulator was asked for, except vLLM health probes."""
    paths = [f"workers-ai {r.method} {r.path}?{r.query}" for r in workers_ai.requests]
    paths += [f"vllm {r.method} {r.path}?{r.query}" for r in vllm.requests if r.path != "/health"]
    return paths


def _assert_openai_error(answer: httpx.Response, model: str) -> None:
    assert answer.status_code in (400, 404), (model[:80], answer.status_code, answer.text[:300])
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if answer.status_code == 404:
        assert error["code"] == "model_not_found", error


def test_hostile_model_names_are_refused_before_any_upstream_call(
    gateway: str, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator, sentinel: Sentinel
) -> None:
    names = hostile_model_names(sentinel.address)
    requests = 0
    with httpx.Client(base_url=gateway, timeout=20) as client:
        for model in names:
            for path, body in (
                ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stream": True}),
                ("/v1/completions", {"prompt": "hi"}),
            ):
                _assert_openai_error(client.post(path, json={"model": model, **body}), model)
                requests += 1
    assert _upstream_paths(workers_ai, vllm) == []
    assert sentinel.connections == 0
    print(f"\nurl steering: {len(names)} model names, {requests} requests, 0 upstream calls")


def test_duplicate_model_keys_and_extra_fields_do_not_steer(
    gateway: str, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator, sentinel: Sentinel
) -> None:
    evil = f"http://{sentinel.address}/x"
    messages = [{"role": "user", "content": "hi"}]
    with httpx.Client(base_url=gateway, timeout=20) as client:
        # A JSON object with `model` twice: whichever wins, it is looked up in the config.
        for raw in (
            b'{"model": "llama-3.3-70b", "model": "' + evil.encode() + b'", "messages": [{"role": "user", '
            b'"content": "hi"}]}',
            b'{"model": "' + evil.encode() + b'", "model": "llama-3.3-70b", "messages": [{"role": "user", '
            b'"content": "hi"}]}',
        ):
            answer = client.post(
                "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
            )
            assert answer.status_code in (200, 400, 404), answer.text
            if answer.status_code != 200:
                _assert_openai_error(answer, "duplicate")
        # Fields that name a place are not part of the API: refused, never followed.
        for extra in (
            {"base_url": evil},
            {"url": evil},
            {"api_base": evil},
            {"extra_headers": {"host": sentinel.address}},
            {"extra_body": {"model": evil}},
            {"headers": {"host": sentinel.address}},
        ):
            answer = client.post(
                "/v1/chat/completions", json={"model": "llama-3.3-70b", "messages": messages, **extra}
            )
            assert answer.status_code == 400, (extra, answer.text)
            _assert_openai_error(answer, str(extra))
    for recorded in workers_ai.requests:
        assert recorded.path == CONFIGURED_LLAMA_PATH
    assert sentinel.connections == 0


LORA_VALUES = [
    "../../evil",
    "@cf/../../accounts/other/ai/run/x",
    "a%2Fb/../c",
    "http://{sentinel}/x",
    "//{sentinel}",
    "x?y=1#z",
    "line\r\nHost: {sentinel}",
]


def test_lora_values_go_only_into_the_body_of_the_configured_url(
    gateway: str, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator, sentinel: Sentinel
) -> None:
    with httpx.Client(base_url=gateway, timeout=20) as client:
        for template in LORA_VALUES:
            lora = template.format(sentinel=sentinel.address)
            answer = client.post(
                "/v1/chat/completions",
                json={
                    "model": "llama-3.3-70b",
                    "messages": [{"role": "user", "content": "hi"}],
                    "lora": lora,
                },
            )
            assert answer.status_code == 200, answer.text
            recorded = workers_ai.requests[-1]
            assert recorded.path == CONFIGURED_LLAMA_PATH
            assert recorded.query == ""
            assert recorded.body["lora"] == lora
            # vLLM has no `lora` field: a clear 400, and nothing sent.
            refused = client.post(
                "/v1/chat/completions",
                json={"model": "vllm-llama", "messages": [{"role": "user", "content": "hi"}], "lora": lora},
            )
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["param"] == "lora"
    assert len(workers_ai.requests) == len(LORA_VALUES)
    assert [r for r in vllm.requests if r.method == "POST"] == []
    assert sentinel.connections == 0


MODEL_PATHS = [
    "/v1/models/..",
    "/v1/models/../metrics",
    "/v1/models/../../metrics",
    "/v1/models/..%2Fmetrics",
    "/v1/models/..%2F..%2Fmetrics",
    "/v1/models/%2e%2e/%2e%2e/metrics",
    "/v1/models/%2E%2E%2F%2E%2E%2Fmetrics",
    "/v1/models/a%2Fb",
    "/v1/models/llama-3.3-70b%2F..%2F..%2Fmetrics",
    "/v1/models/llama-3.3-70b/..",
    "/v1/models/%252e%252e%252fmetrics",
    "/v1/models/http://{sentinel}/x",
    "/v1/models/http:%2F%2F{sentinel}%2Fx",
    "/v1/models//{sentinel}",
    "/v1/models/@cf/meta/llama-3.3-70b-instruct-fp8-fast",
    "/v1/models/llama-3.3-70b%00",
    "/v1/models/llama-3.3-70b%0d%0aX-Evil:%201",
    "/v1/models/llama-3.3-70b?x=../../metrics",
    "/v1/models/llama-3.3-70b#x",
    "/v1/models/" + "a" * 8000,
    "/v1/models/%ff%fe",
]


def _raw_get(base: str, target: str) -> tuple[int, bytes]:
    """GET with the request target sent exactly as written (httpx would normalise dot segments)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"GET " + target.encode("utf-8") + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
            b"Connection: close\r\n\r\n"
        )
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_model_paths_with_dots_and_encoded_slashes_never_reach_another_route(
    gateway: str, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator, sentinel: Sentinel
) -> None:
    for template in MODEL_PATHS:
        target = template.format(sentinel=sentinel.address)
        status, body = _raw_get(gateway, target)
        assert b"gateway_requests_total" not in body  # not /metrics by another way
        if status == 200:  # only a query string or fragment after the real name, which are not the path
            assert target.startswith(("/v1/models/llama-3.3-70b?", "/v1/models/llama-3.3-70b#")), target
            assert msgspec.json.decode(body)["id"] == "llama-3.3-70b"
            continue
        assert status in (400, 404), (target[:100], status, body[:300])
        error = msgspec.json.decode(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert status != 404 or error["code"] in ("model_not_found", "not_found"), (target[:100], error)
    # A raw non-ASCII byte is not valid HTTP: uvicorn's parser answers 400 (plain text) before the app.
    status, body = _raw_get(gateway, "/v1/models/\u00e9")
    assert status == 400
    # The real model is still found, so the refusals above are about the names, not the route.
    status, body = _raw_get(gateway, "/v1/models/llama-3.3-70b")
    assert status == 200
    assert msgspec.json.decode(body)["id"] == "llama-3.3-70b"
    assert _upstream_paths(workers_ai, vllm) == []
    assert sentinel.connections == 0
