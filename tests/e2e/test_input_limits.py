"""The `http:` limits against a real `gateway serve` subprocess: message count, tool schema depth,
deeply nested JSON, header size, and slow clients (a trickled head or body) over raw sockets.

Every refusal is an OpenAI error envelope with the right status; a client too slow to finish asking
has its connection closed; nothing hangs and the gateway keeps serving afterwards.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway_process import GatewayProcess

MAX_MESSAGES = 8
MAX_SCHEMA_DEPTH = 5
MAX_HEADER_BYTES = 4096
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
HANG_DEADLINE_S = 10.0
"""Generous bound on "does not hang": every slow client must be dealt with well within this."""

CONFIG: dict[str, Any] = {
    "http": {
        "max_body_bytes": 1024 * 1024,
        "body_timeout_s": BODY_TIMEOUT_S,
        "max_messages": MAX_MESSAGES,
        "max_schema_depth": MAX_SCHEMA_DEPTH,
        "max_header_bytes": MAX_HEADER_BYTES,
        "header_timeout_s": HEADER_TIMEOUT_S,
    },
    "backends": {"demo": {"kind": "mock", "token_delay_s": 0}},
    "models": {"mock-model": {"targets": [{"backend": "demo", "model": "mock"}]}},
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(CONFIG, tmp_path_factory.mktemp("limits")) as process:
        yield process


def chat(gateway: GatewayProcess, body: dict[str, Any] | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=content,
        headers={"content-type": "application/json"},
        timeout=HANG_DEADLINE_S,
    )


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    return error


def user_messages(count: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"message {i}"} for i in range(count)]


def nested_schema(depth: int) -> dict[str, Any]:
    """A valid schema whose containers nest exactly `depth` levels (the schema itself is level 1)."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth - 1):
        schema = {"type": "array", "items": schema}
    return schema


def depth_of(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def tool(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


# Message count


def test_messages_at_the_limit_are_served(gateway: GatewayProcess) -> None:
    response = chat(gateway, {"model": "mock-model", "messages": user_messages(MAX_MESSAGES)})
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "chat.completion"


def test_one_message_too_many_is_a_400_naming_messages(gateway: GatewayProcess) -> None:
    response = chat(gateway, {"model": "mock-model", "messages": user_messages(MAX_MESSAGES + 1)})
    error = error_of(response, 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages"
    assert error["code"] == "array_above_max_length"
    assert f"maximum length {MAX_MESSAGES}" in error["message"]


def test_too_many_prompts_is_a_400_naming_prompt(gateway: GatewayProcess) -> None:
    prompts = [f"prompt {i}" for i in range(MAX_MESSAGES + 1)]
    response = httpx.post(
        f"{gateway.url}/v1/completions",
        json={"model": "mock-model", "prompt": prompts, "max_tokens": 4},
        timeout=HANG_DEADLINE_S,
    )
    error = error_of(response, 400)
    assert error["param"] == "prompt"
    assert error["code"] == "array_above_max_length"


# Schema depth


def test_schema_nesting_helper_is_exact() -> None:
    for depth in range(1, 12):
        assert depth_of(nested_schema(depth)) == depth


def test_tool_schema_at_the_depth_limit_is_served(gateway: GatewayProcess) -> None:
    body = {
        "model": "mock-model",
        "messages": user_messages(1),
        "tools": [tool("deep", nested_schema(MAX_SCHEMA_DEPTH))],
    }
    response = chat(gateway, body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("field", "param"),
    [
        ("tools", "tools[1].function.parameters"),
        ("functions", "functions[1].parameters"),
        ("response_format", "response_format.json_schema.schema"),
    ],
)
def test_schema_one_level_too_deep_is_a_400_naming_it(
    gateway: GatewayProcess, field: str, param: str
) -> None:
    deep = nested_schema(MAX_SCHEMA_DEPTH + 1)
    body: dict[str, Any] = {"model": "mock-model", "messages": user_messages(1)}
    if field == "tools":
        body["tools"] = [tool("flat", {"type": "object"}), tool("deep", deep)]
    elif field == "functions":
        body["functions"] = [{"name": "flat"}, {"name": "deep", "parameters": deep}]
    else:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "deep", "schema": deep}}
    error = error_of(chat(gateway, body), 400)
    assert error["param"] == param
    assert error["code"] == "schema_too_deep"


# Deeply nested JSON


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'{"model": "mock-model", "messages": [{"role": "user", "content": "hi"}], '
        b'"web_search_options": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
        b'{"model": "mock-model", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": '
        b'"function", "function": {"name": "f", "parameters": {"a": ' + b"[" * 100_000 + b"}}}]}",
    ],
    ids=["top-level", "inside-an-any-field", "inside-a-tool-schema-unterminated"],
)
def test_deeply_nested_json_is_a_400(gateway: GatewayProcess, body: bytes) -> None:
    error = error_of(chat(gateway, body), 400)
    assert error["type"] == "invalid_request_error"


# Raw sockets: header size and slow clients


def connect(gateway: GatewayProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=HANG_DEADLINE_S)
    sock.settimeout(HANG_DEADLINE_S)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails the test)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def status_and_body(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def send_ignoring_reset(sock: socket.socket, data: bytes) -> None:
    """The server may close as soon as it has seen enough: a send after that may be refused."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def request_head(path: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    "headers",
    [
        [("x-big", "a" * (MAX_HEADER_BYTES + 1))],
        [(f"x-many-{i}", "b" * 60) for i in range(MAX_HEADER_BYTES // 60 + 1)],
    ],
    ids=["one-large-header", "many-headers"],
)
def test_oversized_headers_get_a_431_envelope(
    gateway: GatewayProcess, headers: list[tuple[str, str]]
) -> None:
    with connect(gateway) as sock:
        send_ignoring_reset(sock, request_head("/v1/models", headers))
        status, body = status_and_body(read_until_closed(sock))
    assert status == 431
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == "request_header_fields_too_large"
    assert str(MAX_HEADER_BYTES) in body["error"]["message"]


def test_an_endless_header_is_cut_off_with_a_431(gateway: GatewayProcess) -> None:
    """A header that never ends is refused once the head passes the limit, not buffered forever."""
    with connect(gateway) as sock:
        send_ignoring_reset(sock, b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-endless: ")
        for _ in range(64):
            send_ignoring_reset(sock, b"c" * 1024)
        status, body = status_and_body(read_until_closed(sock))
    assert status == 431
    assert body["error"]["code"] == "request_header_fields_too_large"


def test_headers_under_the_limit_are_served(gateway: GatewayProcess) -> None:
    with connect(gateway) as sock:
        sock.sendall(request_head("/healthz", [("x-fine", "d" * (MAX_HEADER_BYTES // 2))]))
        raw = sock.recv(65536)
    assert raw.startswith(b"HTTP/1.1 200 ")


def test_a_connection_that_never_sends_is_closed(gateway: GatewayProcess) -> None:
    began = time.monotonic()
    with connect(gateway) as sock:
        assert read_until_closed(sock) == b""
    print(f"idle connection closed after {time.monotonic() - began:.2f} s")


def test_a_trickled_head_is_closed_without_an_answer(gateway: GatewayProcess) -> None:
    """Slowloris: one header byte every 0.1 s; the head never completes within `header_timeout_s`."""
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n" + b"x-slow: " + b"s" * 1000
    began = time.monotonic()
    closed = False
    with connect(gateway) as sock:
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
            if time.monotonic() - began > HANG_DEADLINE_S:
                break
        if not closed:
            sock.settimeout(0.5)
            try:
                closed = sock.recv(1) == b""
            except ConnectionResetError:
                closed = True
            except TimeoutError:
                closed = False
    elapsed = time.monotonic() - began
    assert closed, "the gateway kept a trickled request head open"
    assert elapsed < HANG_DEADLINE_S
    print(f"trickled head closed after {elapsed:.2f} s (header_timeout_s={HEADER_TIMEOUT_S})")


def test_a_slow_next_head_on_a_kept_alive_connection_is_closed(gateway: GatewayProcess) -> None:
    """After one answered request, the next head trickling in is bounded too."""
    with connect(gateway) as sock:
        sock.sendall(request_head("/healthz", []))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        send_ignoring_reset(sock, b"GET /healthz HTTP/1.1\r\n")
        began = time.monotonic()
        for _ in range(int(HANG_DEADLINE_S / 0.2)):
            send_ignoring_reset(sock, b"x")
            time.sleep(0.2)
            sock.settimeout(0.01)
            try:
                if sock.recv(1) == b"":
                    break
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
        elapsed = time.monotonic() - began
    print(f"trickled second head closed after {elapsed:.2f} s")
    assert elapsed < HANG_DEADLINE_S - 0.5, "the gateway kept a trickled second head open"


def test_a_trickled_body_gets_a_408(gateway: GatewayProcess) -> None:
    body = json.dumps({"model": "mock-model", "messages": user_messages(1)}).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )
    began = time.monotonic()
    with connect(gateway) as sock:
        sock.sendall(head)
        sock.settimeout(0.2)
        raw = b""
        for byte in body:
            send_ignoring_reset(sock, bytes([byte]))
            try:
                raw = sock.recv(65536)
            except TimeoutError:
                continue
            if raw or time.monotonic() - began > HANG_DEADLINE_S:
                break
    status, envelope = status_and_body(raw)
    assert status == 408
    assert envelope["error"]["code"] == "request_timeout"
    assert time.monotonic() - began < HANG_DEADLINE_S


def test_the_gateway_still_serves_after_all_that(gateway: GatewayProcess) -> None:
    response = chat(gateway, {"model": "mock-model", "messages": user_messages(1)})
    assert response.status_code == 200
    output = gateway.output()
    assert "unhandled_exception" not in output
    assert "Traceback" not in output


def test_default_limits_are_documented_in_the_configuration_reference() -> None:
    reference = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for key in ("max_messages", "max_schema_depth", "max_header_bytes", "header_timeout_s"):
        assert f"| `{key}` |" in reference, key
