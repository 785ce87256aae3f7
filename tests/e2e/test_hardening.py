"""Issue 13 against a real `gateway serve` process, with clients that misbehave over raw sockets.

- A client with a valid key that drops its upload, or sends a malformed chunked body, on both
  inference routes: no error line, no traceback, no secret in the output, no answer (a 400 envelope
  for the malformed body), and a 4xx in the log line and the metrics, never a 5xx.
- A slow reader that leaves after the upstream has finished: the log line and the charge agree on
  what was written before the gateway learned it had left, and that is not the whole answer.
- `gateway_open_streams` counts real open streams.
- An absurd `max_tokens` is a 400; a streamed request over HTTP/1.0 is a clear 400.
"""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import CF_TOKEN, cloudflare_backend
from tests.e2e.test_disconnects import wait_for as wait_until
from tests.e2e.test_input_limits import read_until_closed
from tests.gateway_process import GatewayProcess

if TYPE_CHECKING:
    from tests.emulators.server import ServerThread
    from tests.emulators.workers_ai import WorkersAIEmulator

KEY = "sk-gw-hardening-7c1d9e3a5b"
OTHER_KEY = "sk-gw-hardening-other-2f8e6a"
TPM = 50_000_000
ROUTES = ("/v1/chat/completions", "/v1/completions")
DROPPED = 20
MALFORMED = 4
HANG_S = 20.0
"""A generous bound on "does not hang" for every raw-socket exchange."""


@pytest.fixture(scope="module")
def gateway(
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config: dict[str, Any] = {
        "backends": {
            "cloudflare": cloudflare_backend(workers_ai_server[1].url),
            "demo": {"kind": "mock", "token_delay_s": 0},
        },
        "models": {
            "llama": {
                "targets": [{"backend": "cloudflare", "model": "@cf/meta/llama-3.3-70b-instruct-fp8-fast"}]
            },
            "mock-model": {"targets": [{"backend": "demo", "model": "mock"}]},
        },
        "keys": [{"id": "team-a", "key": KEY, "tpm": TPM}, {"id": "team-b", "key": OTHER_KEY}],
        "http": {"max_output_tokens": 100_000},
    }
    with GatewayProcess(config, tmp_path_factory.mktemp("hardening")) as process:
        yield process


def connect(gateway: GatewayProcess, *, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:  # before connecting, so the TCP window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(HANG_S)
    sock.connect(("127.0.0.1", gateway.port))
    return sock


def head(path: str, rid: str, extra: str, version: str = "1.1") -> bytes:
    return (
        f"POST {path} HTTP/{version}\r\nhost: 127.0.0.1\r\nauthorization: Bearer {KEY}\r\n"
        f"content-type: application/json\r\nx-request-id: {rid}\r\n{extra}\r\n"
    ).encode()


def wait_for(condition: Callable[[], bool]) -> bool:
    return wait_until(condition, timeout=HANG_S)


def logged(gateway: GatewayProcess, rids: list[str]) -> list[dict[str, Any]]:
    """The request lines of `rids`, once all of them have been written."""
    wanted = set(rids)
    lines: list[dict[str, Any]] = []

    def all_there() -> bool:
        nonlocal lines
        lines = [
            line
            for line in gateway.log_lines(settle_s=0.05)
            if line.get("event") == "request" and line["request_id"] in wanted
        ]
        return len(lines) == len(wanted)

    assert wait_for(all_there), f"{len(lines)} of {len(wanted)} request lines written"
    return lines


def metric(gateway: GatewayProcess, name: str, **labels: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def new_id() -> str:
    return "hard-" + uuid.uuid4().hex[:12]


def assert_clean_output(gateway: GatewayProcess) -> None:
    output = gateway.output()
    assert "unhandled_exception" not in output
    assert "Traceback" not in output
    for secret in (CF_TOKEN, KEY, OTHER_KEY):
        assert secret not in output


@pytest.mark.parametrize("path", ROUTES)
def test_a_dropped_upload_with_a_valid_key_is_a_499_without_an_error_line(
    gateway: GatewayProcess, path: str
) -> None:
    route = "chat" if path == ROUTES[0] else "completions"
    errors_before = metric(gateway, "gateway_requests_total", route=route, status="5xx")
    rids = [new_id() for _ in range(DROPPED)]
    for rid in rids:
        with connect(gateway) as sock:
            sock.sendall(head(path, rid, "content-length: 1000\r\n") + b'{"model":')
    lines = logged(gateway, rids)
    assert sorted({(line["status"], line["error"], line["key"]) for line in lines}) == [
        (499, "client_closed_request", "team-a")
    ]
    assert metric(gateway, "gateway_requests_total", route=route, status="5xx") == errors_before
    assert metric(gateway, "gateway_requests_total", route=route, status="4xx") >= DROPPED
    assert_clean_output(gateway)


@pytest.mark.parametrize("path", ROUTES)
def test_a_malformed_chunked_body_is_a_400_envelope_and_logged_as_one(
    gateway: GatewayProcess, path: str
) -> None:
    rids = [new_id() for _ in range(MALFORMED)]
    for rid in rids:
        with connect(gateway) as sock:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(head(path, rid, "transfer-encoding: chunked\r\n") + b'5\r\n{"mod\r\nZZ\r\n')
            raw = read_until_closed(sock)
        status_line, _, rest = raw.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 400 Bad Request", raw
        error = json.loads(rest.partition(b"\r\n\r\n")[2])["error"]
        assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_http_request")
    lines = logged(gateway, rids)
    assert sorted({(line["status"], line["error"]) for line in lines}) == [(400, "invalid_http_request")]
    assert_clean_output(gateway)


WORDS = 40_000


def test_a_slow_reader_gone_after_the_upstream_finished_is_charged_and_logged_alike(
    gateway: GatewayProcess, workers_ai: WorkersAIEmulator
) -> None:
    """Issue 13's reproduction: a 40,000-word answer, the client reads nothing and leaves once the
    upstream has sent everything. Before the fix: logged 200, finish_reason stop, all 40,000 tokens
    charged, and the gateway went on writing into the closed socket."""
    rid = new_id()
    body = {
        "model": "llama",
        "messages": [{"role": "user", "content": f"Talk [[emu:words={WORDS}]]"}],
        "max_tokens": 60_000,
        "stream": True,
    }
    encoded = json.dumps(body).encode()
    with connect(gateway, receive_buffer=4096) as sock:
        sock.sendall(head(ROUTES[0], rid, f"content-length: {len(encoded)}\r\n") + encoded)
        first = sock.recv(1024)  # the response head, and no more: a reader that stopped reading
        assert first.startswith(b"HTTP/1.1 200 "), first
        assert wait_for(lambda: any(r.finished for r in workers_ai.requests if r.method == "POST"))
        remaining = int(first.split(b"x-ratelimit-remaining-tokens: ", 1)[1].split(b"\r\n", 1)[0])
    (line,) = logged(gateway, [rid])
    # The follow-up's reservation is the first one's (same prompt, same max_tokens): the difference
    # in what is left is what the dropped stream was charged.
    follow_up = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={**body, "stream": False, "messages": body["messages"]},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=HANG_S,
    )
    assert follow_up.status_code == 200, follow_up.text
    charged = remaining - int(follow_up.headers["x-ratelimit-remaining-tokens"])
    print(
        f"\nslow reader: logged status {line['status']}, finish_reason {line['finish_reason']}, "
        f"completion_tokens {line['completion_tokens']} of {WORDS}; charged {charged}"
    )
    assert line["status"] == 499
    assert line["error"] == "client_closed_request"
    assert line["completion_tokens"] < WORDS // 2
    assert charged == line["prompt_tokens"] + line["completion_tokens"]


def test_open_streams_are_counted_while_they_are_open(
    gateway: GatewayProcess, workers_ai: WorkersAIEmulator
) -> None:
    streams = 5
    body = {
        "model": "llama",
        "messages": [{"role": "user", "content": "Count [[emu:words=400]] [[emu:fault=slow:0.05]]"}],
        "stream": True,
    }
    assert metric(gateway, "gateway_open_streams") == 0
    readers: list[Iterator[str]] = []  # kept: a dropped line iterator closes its response
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(httpx.Client(timeout=HANG_S, headers={"authorization": f"Bearer {KEY}"}))
        for _ in range(streams):
            answer = stack.enter_context(
                client.stream("POST", f"{gateway.url}/v1/chat/completions", json=body)
            )
            assert answer.status_code == 200
            readers.append(answer.iter_lines())
            next(readers[-1])  # the stream has begun
        open_now = metric(gateway, "gateway_open_streams")
    assert open_now == streams
    assert wait_for(lambda: metric(gateway, "gateway_open_streams") == 0)
    # A finished stream is counted while open and not after.
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={**body, "messages": [{"role": "user", "content": "Hi [[emu:words=3]]"}]},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=HANG_S,
    ) as answer:
        assert [line for line in answer.iter_lines() if line][-1] == "data: [DONE]"
    assert wait_for(lambda: metric(gateway, "gateway_open_streams") == 0)


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("value", [2**64, int("9" * 4000)], ids=["2^64", "4000-digits"])
def test_an_absurd_max_tokens_is_a_400(gateway: GatewayProcess, path: str, value: int) -> None:
    body: dict[str, Any] = {"model": "mock-model", "max_tokens": value}
    body |= {"messages": [{"role": "user", "content": "hi"}]} if path == ROUTES[0] else {"prompt": "hi"}
    answer = httpx.post(
        f"{gateway.url}{path}",
        content=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
        timeout=HANG_S,
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == ("max_tokens", "integer_above_max_value")
    assert "100000" in error["message"]
    assert len(error["message"]) < 300


def test_max_tokens_at_the_configured_maximum_is_served(gateway: GatewayProcess) -> None:
    body = {
        "model": "mock-model",
        "max_completion_tokens": 100_000,
        "messages": [{"role": "user", "content": "hi"}],
    }
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {KEY}"},
        timeout=HANG_S,
    )
    assert answer.status_code == 200, answer.text


def http_10(gateway: GatewayProcess, stream: bool) -> bytes:
    encoded = json.dumps(
        {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    ).encode()
    with connect(gateway) as sock:
        sock.sendall(
            head(ROUTES[0], new_id(), f"content-length: {len(encoded)}\r\n", version="1.0") + encoded
        )
        return read_until_closed(sock)


def test_a_streamed_request_over_http_10_is_refused_clearly(gateway: GatewayProcess) -> None:
    raw = http_10(gateway, stream=True)
    head_bytes, _, body = raw.partition(b"\r\n\r\n")
    assert head_bytes.startswith(b"HTTP/1.1 400 "), raw[:200]
    assert b"transfer-encoding: chunked" not in head_bytes.lower()
    error = json.loads(body)["error"]
    assert (error["param"], error["code"]) == ("stream", "streaming_requires_http_1_1")


def test_a_whole_answer_over_http_10_is_served(gateway: GatewayProcess) -> None:
    raw = http_10(gateway, stream=False)
    head_bytes, _, body = raw.partition(b"\r\n\r\n")
    assert head_bytes.startswith(b"HTTP/1.1 200 "), raw[:200]
    assert json.loads(body)["object"] == "chat.completion"


def test_hardening_is_documented() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "hardening.md").read_text()
    for term in ("499", "max_output_tokens", "HTTP/1.0", "appendonly", "Secret", "gateway_open_streams"):
        assert term in page, term
