"""Legacy text completions: `text_completion` bodies and chunks exactly as OpenAI sends them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from openai.types import Completion

from adapters.canonical import Event, Finish, Indexed, PromptRequest, TextDelta, Usage
from adapters.errors import UpstreamProtocolError
from gateway.config import ModelConfig, Target
from gateway.openai.requests import completion_request_decoder
from gateway.translation.text_writer import TextWriter
from gateway.translation.translate import Translated, translate_completion

pytestmark = pytest.mark.anyio

MODEL = ModelConfig(targets=[Target(backend="b", model="m")])


def translated(**body: Any) -> Translated[PromptRequest]:
    payload = {"model": "public", "prompt": "Once upon", **body}
    request = completion_request_decoder.decode(json.dumps(payload))
    return translate_completion(request, public_model="public", model=MODEL)


async def aiter(events: Iterable[Event], error: Exception | None = None) -> AsyncIterator[Event]:
    for event in events:
        yield event
    if error is not None:
        raise error


async def sse(events: Iterable[Event], error: Exception | None = None, **body: Any) -> list[str]:
    writer = TextWriter(translated(stream=True, **body))
    raw = b"".join([chunk async for chunk in writer.stream(aiter(events, error))]).decode()
    return [block.removeprefix("data: ") for block in raw[:-2].split("\n\n")]


def chunks(data: list[str]) -> list[dict[str, Any]]:
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


async def test_stream_chunks_are_text_completion_objects() -> None:
    parsed = chunks(await sse([TextDelta(" a"), TextDelta(" time"), Usage(2, 2), Finish("length")]))
    Completion.model_validate(parsed[-1])  # the SDK's own type (it types `finish_reason` as never null)
    for chunk in parsed:
        assert chunk["object"] == "text_completion"
        assert chunk["id"].startswith("cmpl-")
        assert chunk["model"] == "public"
    assert len({c["id"] for c in parsed}) == 1
    assert [c["choices"][0] for c in parsed] == [
        {"text": " a", "index": 0, "logprobs": None, "finish_reason": None},
        {"text": " time", "index": 0, "logprobs": None, "finish_reason": None},
        {"text": "", "index": 0, "logprobs": None, "finish_reason": "length"},
    ]


async def test_usage_chunk_is_last_with_no_choices() -> None:
    parsed = chunks(await sse([TextDelta("x"), Usage(4, 1)], stream_options={"include_usage": True}))
    assert parsed[-1]["choices"] == []
    assert parsed[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}
    assert all("usage" not in c for c in parsed[:-1])


async def test_echo_sends_the_prompt_first() -> None:
    parsed = chunks(await sse([TextDelta(" a time")], echo=True))
    assert [c["choices"][0]["text"] for c in parsed] == ["Once upon", " a time", ""]


async def test_several_prompts_and_samples_number_their_choices() -> None:
    events: list[Event] = [
        Indexed(3, TextDelta("d")),
        Indexed(0, TextDelta("a")),
        Indexed(2, TextDelta("c")),
        Indexed(1, TextDelta("b")),
    ]
    parsed = chunks(await sse(events, prompt=["P", "Q"], n=2, echo=True))
    texts: dict[int, str] = {}
    for chunk in parsed:
        choice = chunk["choices"][0]
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert texts == {0: "Pa", 1: "Pb", 2: "Qc", 3: "Qd"}


async def test_stop_sequence_across_chunks() -> None:
    parsed = chunks(await sse([TextDelta("one tw"), TextDelta("o three")], stop="two"))
    assert "".join(c["choices"][0]["text"] for c in parsed) == "one "
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"


async def test_failure_after_first_byte_is_in_band_without_done() -> None:
    error = UpstreamProtocolError("cf", "backend 'cf' broke off", code="upstream_cut")
    data = await sse([TextDelta("partial")], error=error)
    assert data[-1] != "[DONE]"
    assert json.loads(data[-1])["error"]["code"] == "upstream_cut"


def test_whole_answer_shape() -> None:
    writer = TextWriter(translated(echo=True))
    body = json.loads(writer.complete([TextDelta(" a time"), Usage(3, 2), Finish("stop")]))
    Completion.model_validate(body)
    assert body["object"] == "text_completion"
    assert body["choices"] == [
        {"text": "Once upon a time", "index": 0, "logprobs": None, "finish_reason": "stop"}
    ]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert body["system_fingerprint"] is None


def test_whole_answer_infers_length_and_estimates_missing_usage() -> None:
    writer = TextWriter(translated(max_tokens=2))
    body = json.loads(writer.complete([TextDelta("x" * 40), Usage(3, 2)]))
    assert body["choices"][0]["finish_reason"] == "length"
    estimated = json.loads(TextWriter(translated()).complete([TextDelta("x" * 40)]))
    assert estimated["usage"]["completion_tokens"] == 10
