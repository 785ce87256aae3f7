"""The canonical log line and the metrics, read from a real `gateway serve` after real SDK requests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import CF_ACCOUNT, CF_TOKEN, cloudflare_backend
from tests.emulators.server import ServerThread, free_port
from tests.emulators.workers_ai import WorkersAIEmulator
from tests.gateway_process import GatewayProcess

KEY_TEAM = "sk-observe-team-a-6b1f0e2d9c"
KEY_LIMITED = "sk-observe-limited-0a7e33c1f8"
USER: Any = [{"role": "user", "content": "Say hello [[emu:words=7]]"}]
MODEL = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
LOG_FIELDS = {
    "request_id", "method", "path", "status", "key", "model", "backend", "upstream_model", "attempts",
    "failovers", "stream", "error", "finish_reason", "duration_ms", "ttft_ms", "upstream_ms",
    "prompt_tokens", "completion_tokens", "rate_limit", "user", "metadata", "event", "level", "timestamp",
    "error_type", "error_code", "param", "hedged", "resumes",
}  # fmt: skip


def config(emulator_url: str) -> dict[str, Any]:
    refused = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    return {
        "keys": [
            {"id": "team-a", "key": KEY_TEAM},
            {"id": "team-limited", "key": KEY_LIMITED, "rpm": 2},
        ],
        "backends": {
            "cloudflare": cloudflare_backend(emulator_url),
            "broken": cloudflare_backend(refused, timeout_s=2),
            # Used by one test only, so its breaker's state is known exactly.
            "tripwire": cloudflare_backend(refused, timeout_s=2, breaker={"failure_threshold": 2}),
        },
        "models": {
            "llama": {"targets": [{"backend": "cloudflare", "model": MODEL}]},
            "resilient": {
                "targets": [{"backend": "broken", "model": MODEL}, {"backend": "cloudflare", "model": MODEL}]
            },
            "doomed": {"targets": [{"backend": "broken", "model": MODEL}]},
            "tripped": {"targets": [{"backend": "tripwire", "model": MODEL}]},
        },
    }


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    server = ServerThread(WorkersAIEmulator(account_id=CF_ACCOUNT, api_token=CF_TOKEN).app).start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def gateway(emulator: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(config(emulator), tmp_path_factory.mktemp("observe")) as process:
        yield process


def client(gateway: GatewayProcess, key: str = KEY_TEAM) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def request_id() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def logged(gateway: GatewayProcess, rid: str) -> dict[str, Any]:
    (line,) = gateway.requests_logged(request_id=rid)
    return line


def samples(gateway: GatewayProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_a_successful_request_logs_one_complete_line(gateway: GatewayProcess) -> None:
    rid = request_id()
    with client(gateway) as sdk:
        response = sdk.chat.completions.with_raw_response.create(
            model="llama", messages=USER, user="alice", extra_headers={"x-request-id": rid}
        )
    assert response.headers["x-request-id"] == rid
    line = logged(gateway, rid)
    assert set(line) == LOG_FIELDS
    assert line["level"] == "info"
    assert line["event"] == "request"
    assert (line["status"], line["key"], line["model"], line["backend"]) == (
        200,
        "team-a",
        "llama",
        "cloudflare",
    )
    assert (line["upstream_model"], line["attempts"], line["failovers"], line["stream"]) == (
        MODEL,
        1,
        0,
        False,
    )
    assert (line["completion_tokens"], line["finish_reason"], line["user"]) == (7, "stop", "alice")
    assert line["prompt_tokens"] > 0
    assert line["duration_ms"] >= line["upstream_ms"] > 0
    assert line["ttft_ms"] is None
    assert line["error"] is None


def test_a_stream_logs_time_to_first_token(gateway: GatewayProcess) -> None:
    rid = request_id()
    with client(gateway) as sdk:
        chunks = list(
            sdk.chat.completions.create(
                model="llama", messages=USER, stream=True, extra_headers={"x-request-id": rid}
            )
        )
    assert chunks[-1].choices[0].finish_reason == "stop"
    line = logged(gateway, rid)
    assert line["stream"] is True
    assert 0 < line["ttft_ms"] <= line["duration_ms"]
    assert line["completion_tokens"] == 7


def test_a_failover_logs_the_attempts(gateway: GatewayProcess) -> None:
    rid = request_id()
    with client(gateway) as sdk:
        sdk.chat.completions.create(model="resilient", messages=USER, extra_headers={"x-request-id": rid})
    line = logged(gateway, rid)
    assert (line["backend"], line["attempts"], line["failovers"], line["status"]) == ("cloudflare", 2, 1, 200)
    found = samples(gateway)
    assert value(found, "gateway_failovers_total", model="resilient", backend="broken", reason="failed") >= 1


def test_a_rate_limited_request_logs_the_decision(gateway: GatewayProcess) -> None:
    rids = [request_id() for _ in range(3)]
    with client(gateway, KEY_LIMITED) as sdk:
        for rid in rids[:2]:
            sdk.chat.completions.create(model="llama", messages=USER, extra_headers={"x-request-id": rid})
        with pytest.raises(openai.RateLimitError):
            sdk.chat.completions.create(model="llama", messages=USER, extra_headers={"x-request-id": rids[2]})
    assert logged(gateway, rids[0])["rate_limit"] == "admitted"
    refused = logged(gateway, rids[2])
    assert (refused["status"], refused["error"], refused["rate_limit"]) == (
        429,
        "rate_limit_exceeded",
        "refused_requests",
    )
    assert refused["backend"] is None
    found = samples(gateway)
    assert (
        value(found, "gateway_rate_limit_refusals_total", key="team-limited", model="llama", limit="requests")
        == 1
    )


def test_an_upstream_failure_logs_its_code(gateway: GatewayProcess) -> None:
    rid = request_id()
    with client(gateway) as sdk, pytest.raises(openai.APIStatusError) as info:
        sdk.chat.completions.create(model="doomed", messages=USER, extra_headers={"x-request-id": rid})
    line = logged(gateway, rid)
    assert line["status"] == info.value.status_code == 502
    assert line["error"] == "upstream_unreachable"
    assert line["backend"] is None
    assert line["attempts"] == 1


def test_request_metrics_after_real_requests(gateway: GatewayProcess) -> None:
    before = samples(gateway)
    with client(gateway) as sdk:
        sdk.chat.completions.create(model="llama", messages=USER)
        list(sdk.chat.completions.create(model="llama", messages=USER, stream=True))
    after = samples(gateway)
    labels = {"route": "chat", "key": "team-a", "model": "llama", "backend": "cloudflare", "status": "2xx"}
    assert (
        value(after, "gateway_requests_total", **labels) - value(before, "gateway_requests_total", **labels)
        == 2
    )
    completion = {"key": "team-a", "model": "llama", "kind": "completion"}
    assert (
        value(after, "gateway_tokens_total", **completion)
        - value(before, "gateway_tokens_total", **completion)
        == 14
    )
    ttft = {"model": "llama", "backend": "cloudflare"}
    first_tokens = value(after, "gateway_time_to_first_token_seconds_count", **ttft)
    assert first_tokens - value(before, "gateway_time_to_first_token_seconds_count", **ttft) == 1
    durations = {"route": "chat", "model": "llama", "backend": "cloudflare", "stream": "true"}
    assert value(after, "gateway_request_duration_seconds_count", **durations) >= 1
    assert value(after, "gateway_in_flight_requests", route="chat") == 0


def test_the_breaker_state_metric_follows_the_breaker(gateway: GatewayProcess) -> None:
    """0 closed, 2 open: closed until the second consecutive failure (`failure_threshold: 2`)."""
    state = ("gateway_breaker_state", frozenset({"backend": "tripwire", "upstream_model": MODEL}.items()))
    assert state not in samples(gateway)  # reported from its first change; closed until then
    with client(gateway) as sdk:
        with pytest.raises(openai.APIStatusError) as first:
            sdk.chat.completions.create(model="tripped", messages=USER)
        assert first.value.status_code == 502
        assert state not in samples(gateway)  # one failure: still closed
        with pytest.raises(openai.APIStatusError):
            sdk.chat.completions.create(model="tripped", messages=USER)
        assert samples(gateway)[state] == 2  # open
        with pytest.raises(openai.APIStatusError) as skipped:
            sdk.chat.completions.create(model="tripped", messages=USER)
    assert (skipped.value.status_code, skipped.value.code) == (503, "upstream_unavailable")
    assert samples(gateway)[state] == 2  # skipped, not probed: still open for its 30 s cooldown


def test_random_model_names_do_not_grow_the_label_sets(gateway: GatewayProcess) -> None:
    with client(gateway) as sdk:
        for _ in range(30):
            with pytest.raises(openai.NotFoundError):
                sdk.chat.completions.create(model=f"random-{uuid.uuid4().hex}", messages=USER)
        for path in ("/v1/a", "/v1/b/c", "/nothing"):
            httpx.get(f"{gateway.url}{path}", headers={"authorization": f"Bearer {KEY_TEAM}"})
    found = samples(gateway)
    models = {dict(labels).get("model") for _, labels in found} - {None}
    assert models <= {"llama", "resilient", "doomed", "tripped", "-"}
    routes = {dict(labels).get("route") for _, labels in found} - {None}
    assert routes <= {
        "chat",
        "completions",
        "responses",
        "stored_responses",
        "messages",
        "messages_count_tokens",
        "models",
        "other",
    }
    assert len([name for name, _ in found if name == "gateway_requests_total"]) < 20


def test_logs_hold_no_secrets_and_no_prompt_text(gateway: GatewayProcess) -> None:
    """After every request above (and a wrong key), the whole output is scanned."""
    with pytest.raises(openai.AuthenticationError):
        client(gateway, "sk-wrong-key-should-not-be-logged-1234").chat.completions.create(
            model="llama", messages=USER
        )
    assert gateway.requests_logged(status=401)  # the wrong key's line is written: scan after it
    output = gateway.output()
    for secret in (KEY_TEAM, KEY_LIMITED, CF_TOKEN, CF_ACCOUNT, "sk-wrong-key-should-not-be-logged-1234"):
        assert secret not in output
    assert "Say hello" not in output  # prompt text
    assert "Bearer" not in output


def test_metrics_add_up_across_worker_processes(emulator: str, tmp_path: Path) -> None:
    """With two workers, any worker answers /metrics with the totals of both."""
    with GatewayProcess(config(emulator), tmp_path, workers=2) as gateway, client(gateway) as sdk:
        # Concurrent requests, so that both workers take some of them.
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: sdk.chat.completions.create(model="llama", messages=USER), range(40)))
        labels = {
            "route": "chat",
            "key": "team-a",
            "model": "llama",
            "backend": "cloudflare",
            "status": "2xx",
        }
        for _ in range(6):  # whichever worker each scrape reaches, it reports both workers' total
            assert value(samples(gateway), "gateway_requests_total", **labels) == 40


class Collector:
    """An OTLP/HTTP trace collector: keeps every exported span."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/v1/traces":
            export = ExportTraceServiceRequest()
            export.ParseFromString(body)
            self.spans += [span for rs in export.resource_spans for ss in rs.scope_spans for span in ss.spans]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/x-protobuf")],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def test_upstream_attempts_are_traced_when_an_exporter_is_configured(emulator: str, tmp_path: Path) -> None:
    collector = Collector()
    server = ServerThread(collector).start()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": server.url,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_SERVICE_NAME": "gw-test",
    }
    try:
        with GatewayProcess(config(emulator), tmp_path, env=env) as gateway, client(gateway) as sdk:
            sdk.chat.completions.create(model="resilient", messages=USER)
            assert gateway.requests_logged(model="resilient")  # written after the start-up lines
            enabled = [line for line in gateway.log_lines(settle_s=0) if line["event"] == "tracing_enabled"]
            assert [line["service"] for line in enabled] == ["gw-test"]  # what the test below looks for
        # Shutting down exported whatever the batch processor still held.
        spans = [span for span in collector.spans if span.name == "upstream.chat"]
        assert len(spans) == 2
        first, second = sorted(spans, key=lambda span: span.start_time_unix_nano)
        attributes = [{a.key: a.value for a in span.attributes} for span in (first, second)]
        assert attributes[0]["gateway.backend"].string_value == "broken"
        assert attributes[0]["gateway.failure"].string_value == "failed"
        assert first.status.code == first.status.STATUS_CODE_ERROR
        assert attributes[1]["gateway.backend"].string_value == "cloudflare"
        assert attributes[1]["gateway.attempt"].int_value == 2
        assert attributes[1]["gen_ai.request.model"].string_value == MODEL
        assert "gateway.failure" not in attributes[1]
    finally:
        server.stop()


def test_no_tracing_without_an_exporter(gateway: GatewayProcess) -> None:
    """The module-scoped gateway has no OTEL_* settings: nothing about tracing was even logged."""
    rid = request_id()
    with client(gateway) as sdk:
        sdk.chat.completions.create(model="llama", messages=USER, extra_headers={"x-request-id": rid})
    logged(gateway, rid)  # everything logged before this request has been written out
    events = [str(line.get("event")) for line in gateway.log_lines(settle_s=0)]
    assert "rate_limits" in events  # the start-up lines, where `tracing_enabled` would be
    assert [event for event in events if event.startswith("tracing")] == []
