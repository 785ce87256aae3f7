"""No client header reaches an upstream: the gateway sends its own fixed set, seen on the emulators.

Upstream requests carry exactly: `host` (the upstream's), `authorization` (the gateway's credential for
that upstream, never the client's key), `content-type`, `content-length`, and for vLLM `x-request-id`
(the gateway's request id, which is the client's `X-Request-Id` only when that is 1-128 printable
ASCII characters, plus the attempt number and a random suffix). Hop-by-hop headers, cookies,
forwarding and proxy headers, OpenAI account headers and arbitrary `X-` headers are all dropped.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.e2e.conftest import CF_TOKEN, VLLM_KEY, GatewayFactory, both_backends_config

if TYPE_CHECKING:
    from tests.emulators.server import ServerThread
    from tests.emulators.vllm import VLLMEmulator
    from tests.emulators.workers_ai import WorkersAIEmulator

CLIENT_KEY = "sk-client-header-test-5e1d0a9b"
WORKERS_AI_HEADERS = {"host", "authorization", "content-type", "content-length"}
VLLM_HEADERS = WORKERS_AI_HEADERS | {"x-request-id"}

CLIENT_HEADERS: dict[str, str] = {
    "Authorization": f"Bearer {CLIENT_KEY}",
    "Cookie": "session=client-cookie-0xc00c1e",
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Proto": "https",
    "X-Real-IP": "203.0.113.7",
    "Forwarded": "for=203.0.113.7;host=evil.example",
    "Connection": "keep-alive, X-Custom",
    "Keep-Alive": "timeout=5, max=100",
    "TE": "trailers",
    "Trailer": "X-Checksum",
    "Upgrade": "h2c",
    "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
    "Proxy-Connection": "keep-alive",
    "OpenAI-Organization": "org-client-0rg",
    "OpenAI-Project": "proj_client_pr0j",
    "OpenAI-Beta": "assistants=v2",
    "X-Custom": "client-custom-value",
    "X-Stainless-Lang": "python",
    "Accept-Encoding": "gzip, br",
    "Accept-Language": "fr",
    "User-Agent": "client-agent/9.9",
    "Referer": "https://client.example/page",
    "Origin": "https://client.example",
    "Api-Key": "client-api-key-header",
    "Cf-Connecting-Ip": "203.0.113.7",
    "Cf-Aig-Authorization": "Bearer client-aig",
    "X-Http-Method-Override": "DELETE",
    "Expect": "100-continue",
}
CLIENT_VALUES = [value for name, value in CLIENT_HEADERS.items() if name not in ("Connection", "Keep-Alive")]


@pytest.fixture
def gateway(
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread],
    vllm_server: tuple[VLLMEmulator, ServerThread],
    workers_ai: WorkersAIEmulator,
    vllm: VLLMEmulator,
    start_gateway: GatewayFactory,
) -> str:
    config = both_backends_config(workers_ai_server[1].url, vllm_server[1].url)
    config["keys"] = [{"id": "team-headers", "key": CLIENT_KEY}]
    return start_gateway(config)


def _inference(recorded: list[Any]) -> list[Any]:
    return [r for r in recorded if r.method == "POST"]


def _body(model: str, stream: bool, completions: bool) -> dict[str, Any]:
    if completions:
        return {"model": model, "prompt": "Say hello", "stream": stream, "max_tokens": 5}
    return {"model": model, "messages": [{"role": "user", "content": "Say hello"}], "stream": stream}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("completions", [False, True], ids=["chat", "completions"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_only_the_gateways_own_headers_reach_the_upstreams(
    gateway: str,
    workers_ai: WorkersAIEmulator,
    vllm: VLLMEmulator,
    stream: bool,
    completions: bool,
    chunked: bool,
) -> None:
    path = "/v1/completions" if completions else "/v1/chat/completions"
    upstream_hosts = {"workers-ai": workers_ai, "vllm": vllm}
    for backend, model in (("workers-ai", "llama-3.3-70b"), ("vllm", "vllm-llama")):
        payload = httpx.Request("POST", "http://x", json=_body(model, stream, completions)).read()
        # A generator body makes httpx send `Transfer-Encoding: chunked`: a real hop-by-hop header.
        content: Any = iter([payload[:7], payload[7:]]) if chunked else payload
        headers = {**CLIENT_HEADERS, "Content-Type": "application/json", "X-Request-Id": "client-rid-77"}
        headers.pop("Expect")  # httpx does not implement 100-continue: sent below on its own
        with httpx.Client(timeout=20) as client:
            answer = client.post(f"{gateway}{path}", content=content, headers=headers)
        assert answer.status_code == 200, answer.text
        if stream:
            assert answer.text.rstrip().endswith("data: [DONE]")
        [sent] = _inference(upstream_hosts[backend].requests)
        upstream_hosts[backend].reset()
        expected = VLLM_HEADERS if backend == "vllm" else WORKERS_AI_HEADERS
        assert set(sent.headers) == expected, (backend, sorted(sent.headers))
        token = VLLM_KEY if backend == "vllm" else CF_TOKEN
        assert sent.headers["authorization"] == f"Bearer {token}"
        assert sent.headers["content-type"] == "application/json"
        assert int(sent.headers["content-length"]) == len(sent.raw_body)
        assert sent.headers["host"].startswith("127.0.0.1:")
        if backend == "vllm":
            assert re.fullmatch(r"client-rid-77-[0-9]+-[0-9a-f]{8}", sent.headers["x-request-id"])
        everything = repr(sent.headers) + sent.raw_body.decode()
        for value in CLIENT_VALUES:
            assert value not in everything, (backend, value)


def test_an_unusable_client_request_id_is_replaced_not_forwarded(gateway: str, vllm: VLLMEmulator) -> None:
    for client_id in ("has spaces in it", "x" * 129, "ünïcode"):
        headers = {"Authorization": f"Bearer {CLIENT_KEY}", "X-Request-Id": client_id}
        answer = httpx.post(
            f"{gateway}/v1/chat/completions",
            json=_body("vllm-llama", False, False),
            headers=[(k.encode(), v.encode()) for k, v in headers.items()],
            timeout=20,
        )
        assert answer.status_code == 200, answer.text
        [sent] = _inference(vllm.requests)
        vllm.reset()
        assert re.fullmatch(r"req_[0-9a-f]{24}-[0-9]+-[0-9a-f]{8}", sent.headers["x-request-id"]), client_id
        assert answer.headers["x-request-id"] == sent.headers["x-request-id"].rsplit("-", 2)[0]


def test_expect_100_continue_is_not_forwarded(gateway: str, workers_ai: WorkersAIEmulator) -> None:
    """`Expect` is answered by the gateway's server (uvicorn sends 100 Continue), never passed on."""
    import socket

    body = httpx.Request("POST", "http://x", json=_body("llama-3.3-70b", False, False)).read()
    host, port = gateway.removeprefix("http://").split(":")
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    [sent] = _inference(workers_ai.requests)
    assert set(sent.headers) == WORKERS_AI_HEADERS
