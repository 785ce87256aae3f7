"""Embeddings: the token estimate and its bound, translation's checks, the writer's encodings, the mock."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.canonical import Embedding, EmbeddingRequest, Usage
from adapters.errors import UpstreamStatusError
from adapters.mock import MockAdapter, MockConfig
from gateway.api.chat import decode_request
from gateway.config import parse_config
from gateway.errors import InvalidRequestError
from gateway.openai.requests import embedding_request_decoder
from gateway.translation.embeddings import (
    EmbeddingWriter,
    estimate_tokens,
    packed_base64,
    translate_embeddings,
)


def translated(**body: Any) -> Any:
    payload = decode_request(embedding_request_decoder, json.dumps({"model": "m", **body}).encode())
    return translate_embeddings(payload, public_model="pub")


def refused(**body: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        translated(**body)
    return info.value


@given(st.text())
def test_the_estimate_is_never_below_a_quarter_of_the_bytes(text: str) -> None:
    # No tokenizer makes more than one token per byte (plus the special tokens): the documented bound.
    assert 4 * estimate_tokens(text) >= len(text.encode("utf-8", "surrogatepass")) + 2


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("hello world", 2 + 2 + 2),  # two words of 5 letters: 2 each, plus 2 special tokens
        ("a b c d e f g h", 8 + 2),  # one-letter words: one token each
        ("2026-12-02", 10 + 2),  # digits and punctuation: one each
        ("日本語", 3 + 2),  # non-ASCII characters: one each (9 bytes / 4 rounds up to 3 too)
        ("x" * 400, 100 + 2),
    ],
)
def test_the_estimate_counts_letters_by_four_and_everything_else_by_one(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_a_string_list_and_token_arrays_become_the_canonical_input() -> None:
    assert translated(input="one").request.input == ["one"]
    assert translated(input=["a", "b"]).request.input == ["a", "b"]
    assert translated(input=[1, 2, 3]).request.input == [[1, 2, 3]]
    tokens = translated(input=[[1, 2], [3]])
    assert tokens.request.input == [[1, 2], [3]]
    assert tokens.prompt_estimate == 3  # token arrays are counted exactly
    assert translated(input=["hello world"]).prompt_estimate == estimate_tokens("hello world")


def test_dimensions_and_pooling_are_carried_and_user_is_not() -> None:
    request = translated(input="x", dimensions=256, pooling="cls", user="alice").request
    assert msgspec.to_builtins(request) == {"input": ["x"], "dimensions": 256, "pooling": "cls"}


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": ""}, "input", "empty_string"),
        ({"input": ["a", "b", ""]}, "input[2]", "empty_string"),
        ({"input": [[1], []]}, "input[1]", "empty_array"),
        ({"input": []}, "input", "empty_array"),
        ({"input": ["a"] * 2049}, "input", "array_above_max_length"),
        ({"input": ["word " * 8193]}, "input[0]", "context_length_exceeded"),
        ({"input": [[0] * 8193]}, "input[0]", "context_length_exceeded"),
        ({"input": ["word " * 8000] * 38}, "input", "max_tokens_per_request"),
        ({"input": ["a", 1]}, "input", "invalid_type"),
    ],
)
def test_what_openai_refuses_is_a_400_naming_the_input(body: dict[str, Any], param: str, code: str) -> None:
    error = refused(**body)
    assert (error.param, error.code) == (param, code)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [-1]}, "input[0]"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"inputs": "x"}, "inputs"),
    ],
)
def test_malformed_fields_are_refused_by_the_decoder(body: dict[str, Any], param: str) -> None:
    error = refused(**body) if "input" in body else refused(input="x", **body)
    assert error.param == param


def test_2048_inputs_are_accepted() -> None:
    assert len(translated(input=["a"] * 2048).request.input) == 2048


def writer_body(base64_out: bool, events: list[Any]) -> dict[str, Any]:
    writer = EmbeddingWriter(translated(input=["x", "y"]), base64=base64_out)
    body: dict[str, Any] = json.loads(writer.complete(events))
    return body


def test_the_writer_orders_by_index_and_uses_the_backends_usage_when_there_is_one() -> None:
    events = [Embedding(1, [0.5, -0.25]), Embedding(0, [1.0, 0.0]), Usage(7, 0)]
    body = writer_body(False, events)
    assert body == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]},
            {"object": "embedding", "index": 1, "embedding": [0.5, -0.25]},
        ],
        "model": "pub",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    estimated = writer_body(False, events[:2])["usage"]
    assert estimated["prompt_tokens"] == 2 * estimate_tokens("x")


def test_base64_is_little_endian_float32() -> None:
    vector = [0.5, -0.25, 1.0, 3.0517578125e-05]
    assert struct.unpack("<4f", base64.b64decode(packed_base64(vector))) == tuple(vector)
    body = writer_body(True, [Embedding(0, vector), Embedding(1, vector)])
    assert base64.b64decode(body["data"][1]["embedding"]) == struct.pack("<4f", *vector)


def embed(request: EmbeddingRequest, model: str = "@cf/baai/bge-base-en-v1.5") -> list[list[float]]:
    async def run() -> list[list[float]]:
        adapter = MockAdapter("demo", MockConfig())
        answer = await adapter.embed(request, model, request_id="r")
        return [event.vector async for event in answer.events() if isinstance(event, Embedding)]

    return asyncio.run(run())


def test_the_mock_follows_the_request_deterministically() -> None:
    first = embed(EmbeddingRequest(input=["alpha", "beta", "alpha"]))
    assert [len(v) for v in first] == [768] * 3
    assert first[0] == first[2] != first[1]
    assert first[0] == embed(EmbeddingRequest(input=["alpha"]))[0]
    assert embed(EmbeddingRequest(input=["alpha"], pooling="cls"))[0] != first[0]
    assert len(embed(EmbeddingRequest(input=["a"]), "@cf/baai/bge-small-en-v1.5")[0]) == 384
    assert len(embed(EmbeddingRequest(input=[[1, 2]]), "BAAI/bge-large-en-v1.5")[0]) == 1024
    short = embed(EmbeddingRequest(input=["alpha"], dimensions=32))[0]
    for vector in (first[0], short):
        assert abs(sum(v * v for v in vector) - 1) < 1e-5
    with pytest.raises(UpstreamStatusError) as too_many:
        embed(EmbeddingRequest(input=["alpha"], dimensions=769))
    assert too_many.value.client_fault
    assert too_many.value.param == "dimensions"


def test_the_default_config_serves_an_embeddings_model_from_the_mock_without_credentials() -> None:
    with open("config/gateway.yaml", encoding="utf-8") as file:
        loaded = parse_config(file.read(), environ={})
    model = loaded.settings.models["bge-base"]
    assert model.kind == "embeddings"
    assert loaded.settings.backends[model.targets[0].backend].__class__ is MockConfig
    assert loaded.settings.models["llama-3.3-70b"].kind == "chat"


def test_an_unknown_model_kind_is_a_config_error() -> None:
    text = (
        "backends: {demo: {kind: mock}}\nmodels: {m: {kind: embed, targets: [{backend: demo, model: x}]}}\n"
    )
    with pytest.raises(Exception, match=r"models\.m\.kind"):
        parse_config(text, environ={})
