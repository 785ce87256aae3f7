"""`/v1/embeddings` through the official SDK, against the Workers AI and vLLM emulators and the mock.

Vectors are compared bit for bit with what the emulator sent (its values are float32, so both the
SDK's default base64 and explicit floats carry them exactly); large Workers AI requests are split
into calls of at most 100 texts (32 for qwen3-embedding) and come back in order; errors are OpenAI's
envelope; failover, keys and token limits behave as for chat.
"""

from __future__ import annotations

import base64
import struct
import time
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
import yaml
from langchain_openai import OpenAIEmbeddings
from pydantic import SecretStr

from gateway.translation.embeddings import estimate_tokens
from tests.e2e.conftest import (
    VLLM_EMBEDDING_MODEL,
    VLLM_MATRYOSHKA_MODEL,
    GatewayFactory,
    cloudflare_backend,
    sdk_client,
    vllm_backend,
)
from tests.emulators.workers_ai import BGE_BASE, BGE_SMALL, QWEN3_EMBEDDING
from tests.gateway_process import ROOT, GatewayProcess

if TYPE_CHECKING:
    from pathlib import Path

    from tests.emulators.server import ServerThread
    from tests.emulators.vllm import VLLMEmulator
    from tests.emulators.workers_ai import WorkersAIEmulator

TEAM_KEY = "sk-team-embeddings-2b7e61c04d9f"
CHAT_ONLY_KEY = "sk-team-chat-only-7a1f3e9c55d2"
TEXTS = ["The quick brown fox", "jumps over the lazy dog", "naïve café 日本語 🙂"]


def embeddings_model(*targets: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {"kind": "embeddings", "targets": [{"backend": b, "model": m} for b, m in targets], **extra}


def gateway_config(workers_ai_url: str, vllm_url: str, **settings: Any) -> dict[str, Any]:
    return {
        "backends": {
            "cloudflare": cloudflare_backend(workers_ai_url),
            "gpu": vllm_backend(vllm_url),
            "demo": {"kind": "mock", "token_delay_s": 0},
        },
        "models": {
            "bge-base": embeddings_model(("cloudflare", BGE_BASE), aliases=["text-embedding-3-small"]),
            "bge-small": embeddings_model(("cloudflare", BGE_SMALL)),
            "qwen3-embedding": embeddings_model(("cloudflare", QWEN3_EMBEDDING)),
            "gpu-bge": embeddings_model(("gpu", VLLM_EMBEDDING_MODEL)),
            "gpu-qwen3": embeddings_model(("gpu", VLLM_MATRYOSHKA_MODEL)),
            "bge-anywhere": embeddings_model(("cloudflare", BGE_BASE), ("gpu", VLLM_EMBEDDING_MODEL)),
            "mock-embed": embeddings_model(("demo", BGE_BASE)),
            "chat": {
                "targets": [{"backend": "cloudflare", "model": "@cf/meta/llama-3.3-70b-instruct-fp8-fast"}]
            },
        },
        **settings,
    }


@pytest.fixture
def upstreams(
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread],
    vllm_server: tuple[VLLMEmulator, ServerThread],
    workers_ai: WorkersAIEmulator,
    vllm: VLLMEmulator,
) -> tuple[str, str]:
    """The URLs of the two emulators, reset for this test."""
    return workers_ai_server[1].url, vllm_server[1].url


@pytest.fixture
def url(start_gateway: GatewayFactory, upstreams: tuple[str, str]) -> str:
    return start_gateway(gateway_config(*upstreams))


def runs(emulator: WorkersAIEmulator) -> list[Any]:
    """The bodies of the embedding calls the Workers AI emulator received."""
    return [r.body for r in emulator.requests if "/ai/run/" in r.path]


def vllm_calls(emulator: VLLMEmulator) -> list[Any]:
    """The bodies of the embedding calls the vLLM emulator received (not its health probes)."""
    return [r.body for r in emulator.requests if r.path == "/v1/embeddings"]


def test_the_sdk_default_base64_and_explicit_floats_carry_the_emulators_vectors_exactly(
    url: str, workers_ai: WorkersAIEmulator
) -> None:
    expected = [workers_ai.embedding_for(BGE_BASE, text) for text in TEXTS]
    with sdk_client(url) as client:
        default = client.embeddings.with_raw_response.create(model="bge-base", input=TEXTS)
        floats = client.embeddings.create(model="bge-base", input=TEXTS, encoding_format="float")
    assert workers_ai.requests[0].body == {"text": TEXTS}
    assert default.headers["x-gateway-backend"] == "cloudflare"
    parsed = default.parse()
    assert [item.index for item in parsed.data] == [0, 1, 2]
    assert [item.embedding for item in parsed.data] == expected
    assert [item.embedding for item in floats.data] == expected
    assert parsed.model == "bge-base"
    # Workers AI counts no tokens: the gateway's estimate is the usage.
    estimate = sum(estimate_tokens(text) for text in TEXTS)
    assert parsed.usage.prompt_tokens == parsed.usage.total_tokens == estimate


def test_base64_is_packed_little_endian_float32(url: str, workers_ai: WorkersAIEmulator) -> None:
    response = httpx.post(
        f"{url}/v1/embeddings",
        json={"model": "bge-small", "input": "hello", "encoding_format": "base64"},
        timeout=20,
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"object", "data", "model", "usage"}
    assert body["object"] == "list"
    item = body["data"][0]
    assert set(item) == {"object", "index", "embedding"}
    assert item["object"] == "embedding"
    packed = base64.b64decode(item["embedding"])
    assert list(struct.unpack("<384f", packed)) == workers_ai.embedding_for(BGE_SMALL, "hello")


def test_250_inputs_are_three_workers_ai_calls_reassembled_in_order(
    url: str, workers_ai: WorkersAIEmulator
) -> None:
    texts = [f"document number {i}" for i in range(250)]
    with sdk_client(url) as client:
        answer = client.embeddings.create(model="bge-base", input=texts)
    assert sorted(len(body["text"]) for body in runs(workers_ai)) == [50, 100, 100]
    sent = sorted(text for body in runs(workers_ai) for text in body["text"])
    assert sent == sorted(texts)
    assert [item.index for item in answer.data] == list(range(250))
    for item, text in zip(answer.data, texts, strict=True):
        assert item.embedding == workers_ai.embedding_for(BGE_BASE, text)


def test_qwen3_embedding_takes_32_texts_per_call(url: str, workers_ai: WorkersAIEmulator) -> None:
    texts = [f"query {i}" for i in range(70)]
    with sdk_client(url) as client:
        answer = client.embeddings.create(model="qwen3-embedding", input=texts, encoding_format="float")
    assert sorted(len(body["text"]) for body in runs(workers_ai)) == [6, 32, 32]
    assert [len(item.embedding) for item in answer.data] == [1024] * 70
    assert answer.data[69].embedding == workers_ai.embedding_for(QWEN3_EMBEDDING, "query 69")


def test_pooling_is_forwarded_and_user_is_not(url: str, workers_ai: WorkersAIEmulator) -> None:
    with sdk_client(url) as client:
        answer = client.embeddings.create(
            model="bge-base", input="hello", user="alice", extra_body={"pooling": "cls"}
        )
    assert workers_ai.requests[0].body == {"text": ["hello"], "pooling": "cls"}
    assert answer.data[0].embedding == workers_ai.embedding_for(BGE_BASE, "hello", pooling="cls")
    assert answer.data[0].embedding != workers_ai.embedding_for(BGE_BASE, "hello")


def test_vllm_answers_texts_and_token_arrays_with_its_own_usage(url: str, vllm: VLLMEmulator) -> None:
    with sdk_client(url) as client:
        texts = client.embeddings.create(model="gpu-bge", input=TEXTS)
        tokens = client.embeddings.create(model="gpu-bge", input=[[1, 2, 3], [4, 5]])
    assert [item.embedding for item in texts.data] == [
        vllm.embedding_for(VLLM_EMBEDDING_MODEL, text) for text in TEXTS
    ]
    body = vllm_calls(vllm)[0]
    assert body == {"model": VLLM_EMBEDDING_MODEL, "input": TEXTS, "encoding_format": "float"}
    assert tokens.data[1].embedding == vllm.embedding_for(VLLM_EMBEDDING_MODEL, [4, 5])
    assert tokens.usage.prompt_tokens == 5  # vLLM's count, not the gateway's estimate


def test_dimensions_where_the_model_supports_them(url: str, vllm: VLLMEmulator) -> None:
    with sdk_client(url) as client:
        short = client.embeddings.create(model="gpu-qwen3", input="hello", dimensions=256)
        native = client.embeddings.create(model="bge-base", input="hello", dimensions=768)
        with pytest.raises(openai.BadRequestError) as cloudflare:
            client.embeddings.create(model="bge-base", input="hello", dimensions=256)
        with pytest.raises(openai.BadRequestError) as gpu:
            client.embeddings.create(model="gpu-bge", input="hello", dimensions=256)
    assert len(short.data[0].embedding) == 256
    assert vllm_calls(vllm)[0]["dimensions"] == 256
    assert len(native.data[0].embedding) == 768
    assert cloudflare.value.body["param"] == "dimensions"  # type: ignore[index]
    assert BGE_BASE in cloudflare.value.message
    assert "768" in cloudflare.value.message
    assert VLLM_EMBEDDING_MODEL in gpu.value.message
    assert "matryoshka" in gpu.value.message


def test_token_arrays_are_refused_by_workers_ai(url: str, workers_ai: WorkersAIEmulator) -> None:
    with sdk_client(url) as client, pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="bge-base", input=[[1, 2, 3]])
    assert caught.value.body["param"] == "input"  # type: ignore[index]
    assert "text only" in caught.value.message
    assert runs(workers_ai) == []


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": ["fine", ""]}, "input[1]", "empty_string"),
        ({"input": []}, "input", "empty_array"),
        ({"input": ["x"] * 2049}, "input", "array_above_max_length"),
        ({"input": ["short", "word " * 9000]}, "input[1]", "context_length_exceeded"),
        ({"input": ["text", [1, 2]]}, "input", "invalid_type"),
        ({"input": "x", "encoding_format": "bytes"}, "encoding_format", None),
        ({"input": "x", "dimensions": 0}, "dimensions", None),
        ({"input": "x", "truncate": True}, "truncate", None),
    ],
    ids=["empty-string", "empty-list", "2049-inputs", "too-long", "mixed", "format", "dimensions", "unknown"],
)
def test_bad_input_is_a_400_naming_the_parameter(
    url: str, workers_ai: WorkersAIEmulator, body: dict[str, Any], param: str, code: str | None
) -> None:
    response = httpx.post(f"{url}/v1/embeddings", json={"model": "bge-base", **body}, timeout=20)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert runs(workers_ai) == []


def test_each_kind_of_model_is_a_400_naming_the_right_endpoint(url: str) -> None:
    with sdk_client(url) as client:
        with pytest.raises(openai.BadRequestError) as chat_model:
            client.embeddings.create(model="chat", input="hello")
        with pytest.raises(openai.BadRequestError) as embeddings_model:
            client.chat.completions.create(model="bge-base", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.BadRequestError) as legacy:
            client.completions.create(model="bge-base", prompt="hi")
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="no-such-model", input="hello")
        listed = {model.id for model in client.models.list()}
    assert "/v1/chat/completions" in chat_model.value.message
    assert "/v1/embeddings" in embeddings_model.value.message
    assert "/v1/embeddings" in legacy.value.message
    assert {"bge-base", "text-embedding-3-small", "gpu-bge", "chat"} <= listed


def test_upstream_errors_come_in_openais_envelope(
    url: str, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator
) -> None:
    vllm.max_model_len = 16
    workers_ai.faults.push("status:429:3040")
    with sdk_client(url) as client:
        with pytest.raises(openai.RateLimitError) as limited:
            client.embeddings.create(model="bge-base", input="hello")
        workers_ai.faults.push("malformed")
        with pytest.raises(openai.InternalServerError) as malformed:
            client.embeddings.create(model="bge-base", input="hello")
        with pytest.raises(openai.BadRequestError) as overflow:
            client.embeddings.create(model="gpu-bge", input=["short", "a much longer input " * 10])
        with pytest.raises(openai.BadRequestError) as too_long:
            client.embeddings.create(model="bge-small", input="word " * 700)
    assert limited.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    assert malformed.value.status_code == 502
    assert malformed.value.body["code"] == "upstream_malformed"  # type: ignore[index]
    assert overflow.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    assert overflow.value.body["param"] == "input"  # type: ignore[index]
    assert "5006" in too_long.value.message


def test_a_failing_workers_ai_call_fails_over_to_vllm_with_every_input_in_order(
    url: str, workers_ai: WorkersAIEmulator, vllm: VLLMEmulator
) -> None:
    texts = [f"passage {i}" for i in range(250)]
    workers_ai.faults.push("status:503")  # one of the three calls fails: the whole attempt does
    with sdk_client(url) as client:
        raw = client.embeddings.with_raw_response.create(model="bge-anywhere", input=texts)
    answer = raw.parse()
    assert raw.headers["x-gateway-backend"] == "gpu"
    assert raw.headers["x-gateway-attempts"] == "2"
    assert len(vllm_calls(vllm)) == 1
    for item, text in zip(answer.data, texts, strict=True):
        assert item.embedding == vllm.embedding_for(VLLM_EMBEDDING_MODEL, text)


def test_the_mock_gives_the_same_unit_vector_for_the_same_input(url: str) -> None:
    with sdk_client(url) as client:
        first = client.embeddings.create(model="mock-embed", input=["alpha", "beta", "alpha"])
        again = client.embeddings.create(model="mock-embed", input="alpha", encoding_format="float")
        short = client.embeddings.create(model="mock-embed", input="alpha", dimensions=64)
    vectors = [item.embedding for item in first.data]
    assert len(vectors[0]) == 768
    assert vectors[0] == vectors[2] == again.data[0].embedding
    assert vectors[0] != vectors[1]
    for vector in (vectors[0], short.data[0].embedding):
        assert abs(sum(v * v for v in vector) - 1) < 1e-5
    assert len(short.data[0].embedding) == 64


def test_token_limits_charge_embeddings_like_chat(
    start_gateway: GatewayFactory, upstreams: tuple[str, str], workers_ai: WorkersAIEmulator
) -> None:
    texts = ["retrieval augmented generation"] * 10
    estimate = sum(estimate_tokens(text) for text in texts)
    config = gateway_config(
        *upstreams,
        keys=[
            {"id": "team-embeddings", "key": TEAM_KEY, "tpm": estimate * 2 + estimate // 2},
            {"id": "team-chat-only", "key": CHAT_ONLY_KEY, "models": ["chat"]},
        ],
    )
    url = start_gateway(config)
    with openai.OpenAI(base_url=f"{url}/v1", api_key=TEAM_KEY, max_retries=0, timeout=20) as client:
        first = client.embeddings.with_raw_response.create(model="bge-base", input=texts)
        second = client.embeddings.with_raw_response.create(model="bge-base", input=texts)
        with pytest.raises(openai.RateLimitError) as refused:
            client.embeddings.create(model="bge-base", input=texts)
        metrics = httpx.get(f"{url}/metrics", timeout=20).text
    with openai.OpenAI(base_url=f"{url}/v1", api_key=CHAT_ONLY_KEY, max_retries=0, timeout=20) as other:
        with pytest.raises(openai.NotFoundError):  # the key's model allow-list applies as for chat
            other.embeddings.create(model="bge-base", input="hello")
        with pytest.raises(openai.NotFoundError):  # before the kind check: nothing is told of the model
            other.chat.completions.create(model="bge-base", messages=[{"role": "user", "content": "hi"}])
    remaining = [int(r.headers["x-ratelimit-remaining-tokens"]) for r in (first, second)]
    assert remaining[0] - remaining[1] == estimate  # the first request was charged its estimate
    assert refused.value.body["type"] == "tokens"  # type: ignore[index]
    assert len(runs(workers_ai)) == 2
    prompt_line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("gateway_tokens_total") and 'model="bge-base"' in line and 'kind="prompt"' in line
    )
    assert float(prompt_line.rsplit(" ", 1)[1]) == 2 * estimate


def test_a_hung_batch_call_times_out_and_the_request_fails_over_whole(
    start_gateway: GatewayFactory, upstreams: tuple[str, str], workers_ai: WorkersAIEmulator
) -> None:
    config = gateway_config(*upstreams)
    config["backends"]["cloudflare"]["timeout_s"] = 0.5
    url = start_gateway(config)
    texts = [f"chunk {i}" for i in range(250)]
    workers_ai.faults.push("hang")  # one of the three calls never answers
    with sdk_client(url) as client:
        raw = client.embeddings.with_raw_response.create(model="bge-anywhere", input=texts)
    assert raw.headers["x-gateway-backend"] == "gpu"
    assert [item.index for item in raw.parse().data] == list(range(250))
    hung = [r for r in workers_ai.requests if r.fault == "hang"]
    assert len(hung) == 1
    deadline = time.monotonic() + 10  # a hang guard: the emulator notices the disconnect on its own thread
    while not hung[0].disconnected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hung[0].disconnected  # the gateway let go of the hung call


def test_langchain_embeds_documents_and_queries_against_the_default_config(tmp_path: Path) -> None:
    """`make run` without credentials: the default config's `bge-base` is answered by the mock."""
    config = yaml.safe_load((ROOT / "config" / "gateway.yaml").read_text())
    no_credentials = {"CLOUDFLARE_ACCOUNT_ID": "", "CLOUDFLARE_API_TOKEN": ""}
    with GatewayProcess(config, tmp_path, env=no_credentials) as gateway:
        # check_embedding_ctx_length=False sends the texts themselves (the default tokenizes them with
        # tiktoken, whose encodings are downloaded at run time, and sends token ids).
        embeddings = OpenAIEmbeddings(
            model="bge-base",
            base_url=f"{gateway.url}/v1",
            api_key=SecretStr("sk-unused"),
            check_embedding_ctx_length=False,
            max_retries=0,
        )
        documents = embeddings.embed_documents(["first passage", "second passage", "first passage"])
        query = embeddings.embed_query("first passage")
        with sdk_client(gateway.url) as client:
            client.embeddings.create(model="bge-base", input="who asked", user="alice")
        logged = gateway.requests_logged(path="/v1/embeddings", user="alice")
    assert len(logged) == 1  # `user` is recorded in the log line (and never sent upstream)
    assert logged[0]["prompt_tokens"] == estimate_tokens("who asked")
    assert logged[0]["completion_tokens"] == 0
    assert [len(vector) for vector in documents] == [768, 768, 768]
    assert documents[0] == documents[2] == query
    assert documents[0] != documents[1]
