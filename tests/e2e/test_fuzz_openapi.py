"""schemathesis against the gateway's own OpenAPI document (`/schema/openapi.json`), served by a real
`gateway serve` subprocess in front of the built-in mock backend (so an upstream always answers).

Every operation is driven with requests that fit the document (positive) and requests that break it
(negative: wrong types, missing fields, out-of-range values, odd content types). For each: no 5xx, and
every error is OpenAI's envelope with a string `message` and `type`. Deterministic (derandomized) and
bounded by count: every generated example is sent, however long a busy machine takes to generate it
(each request has a generous timeout as its hang guard); the counts and times are printed.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import negative_data_rejection, response_schema_conformance

from gateway.edge.openapi import OPENAPI_PATH
from tests.gateway_process import GatewayProcess

if TYPE_CHECKING:
    from schemathesis.core.transport import Response

CONFIG: dict[str, Any] = {
    "backends": {"demo": {"kind": "mock", "token_delay_s": 0}},
    "models": {
        "mock-model": {"targets": [{"backend": "demo", "model": "mock"}], "aliases": ["gpt-4o-mini"]},
        "mock-lenient": {"targets": [{"backend": "demo", "model": "mock"}], "drop_unsupported": True},
        "mock-embeddings": {"kind": "embeddings", "targets": [{"backend": "demo", "model": "bge-small"}]},
    },
}
EXAMPLES: dict[str, int] = {
    # Per operation and generation mode: about 2,000 requests in all (count-bounded, no time floor).
    "POST /v1/chat/completions": 300,
    "POST /v1/completions": 200,
    "POST /v1/embeddings": 100,
    "POST /v1/responses": 250,
    "GET /v1/responses/{response_id}": 20,
    "DELETE /v1/responses/{response_id}": 20,
    "GET /v1/responses/{response_id}/input_items": 30,
    "POST /v1/responses/{response_id}/cancel": 20,
    "GET /v1/models/{model_id}": 60,
    "GET /v1/models": 20,
    "GET /healthz": 10,
    "GET /readyz": 10,
}
CONFORMANCE_CHECKS = [response_schema_conformance, negative_data_rejection]
REQUEST_TIMEOUT_S = 60.0
"""A hang guard per request: the mock answers at once, so only a hung gateway comes near it."""
MIN_SENT = 1000
"""Hypothesis may generate fewer examples than asked when an operation has few distinct inputs, but
never this few in all (the body-taking operations alone ask for 1,400)."""


MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
BODY_PATHS = ("/v1/chat/completions", "/v1/completions")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(CONFIG, tmp_path_factory.mktemp("fuzz")) as process:
        yield process


def check_response(response: Response, where: str) -> None:
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:500]}"
    if response.status_code < 300:
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        pytest.fail(f"{where}: a {response.status_code} whose body is not JSON: {response.text[:300]!r}")
    assert isinstance(body, dict), where
    assert set(body) == {"error"}, f"{where}: {body}"
    error = body["error"]
    assert isinstance(error["message"], str), f"{where}: {body}"
    assert error["message"], f"{where}: {body}"
    assert isinstance(error["type"], str), f"{where}: {body}"
    assert "param" in error, f"{where}: {body}"
    assert "code" in error, f"{where}: {body}"


def test_the_document_describes_the_inference_bodies(gateway: GatewayProcess) -> None:
    document = requests.get(gateway.url + OPENAPI_PATH, timeout=10).json()
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ChatCompletionRequest"
    )
    request = document["components"]["schemas"]["ChatCompletionRequest"]
    assert {"model", "messages", "tools", "stream"} <= set(request["properties"])
    assert set(request["required"]) == {"model", "messages"}
    assert request["properties"]["model"]["enum"] == ["mock-model", "gpt-4o-mini", "mock-lenient"]
    assert chat["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "/v1/completions" in document["paths"]
    assert "/v1/responses" in document["paths"]
    assert "/v1/responses/{response_id}/input_items" in document["paths"]
    embeddings = document["components"]["schemas"]["EmbeddingCreateRequest"]
    assert embeddings["properties"]["model"]["enum"] == ["mock-embeddings"]
    assert set(embeddings["required"]) == {"model", "input"}
    assert "/v1/models" in document["paths"]


class Fuzzer:
    """Drives one operation at a time; counts what was sent and what came back."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.sent: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.began = time.monotonic()
        self.took: dict[str, float] = {}

    def run(self, operation: Any, mode: GenerationMode) -> None:
        label = f"{operation.method.upper()} {operation.path}"
        where = f"{label} ({mode.value})"

        @settings(
            max_examples=EXAMPLES[label],
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def drive(case: Any) -> None:
            response = case.call(base_url=self.base_url, session=self.session, timeout=REQUEST_TIMEOUT_S)
            self.sent[where] += 1
            self.statuses[response.status_code] += 1
            check_response(response, f"{where}: {case.path_parameters!r} {case.body!r:.300}")
            # schemathesis's own: answers match the document; data that breaks it is refused. (It reads
            # an SSE body's schema as each event's: the document gives the whole body's, a string.)
            if "text/event-stream" not in str(response.headers.get("content-type")):
                case.validate_response(response, checks=CONFORMANCE_CHECKS)

        started = time.monotonic()
        try:
            drive()
        except Unsatisfiable:
            # No negative case exists for an operation without parameters or body (`GET /healthz`).
            assert mode is GenerationMode.NEGATIVE, where
        self.took[where] = time.monotonic() - started


def test_fuzzed_requests_get_no_5xx_and_only_openai_errors(gateway: GatewayProcess) -> None:
    schema = schemathesis.openapi.from_url(gateway.url + OPENAPI_PATH)
    fuzzer = Fuzzer(gateway.url)
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the document has an invalid operation: {result.err()}"
        for mode in MODES:
            fuzzer.run(result.ok(), mode)
    elapsed = time.monotonic() - fuzzer.began
    total = sum(fuzzer.sent.values())
    statuses = fuzzer.statuses
    print(f"\nschemathesis: {total} requests in {elapsed:.1f} s")
    for label, count in sorted(fuzzer.sent.items()):
        print(f"  {label}: {count} in {fuzzer.took[label]:.1f} s")
    print("  statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
    assert total >= MIN_SENT, f"only {total} requests were generated and sent"
    assert set(fuzzer.sent) >= {f"POST {path} ({mode.value})" for path in BODY_PATHS for mode in MODES}
    assert statuses[200] > 0
    assert sum(n for s, n in statuses.items() if 400 <= s < 500) > 0
    output = gateway.output()
    assert "unhandled_exception" not in output
    assert "Traceback" not in output
