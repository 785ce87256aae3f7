"""The Responses writer's event grammar, checked by the official openai SDK's own stream machinery.

Every stream is decoded by the SDK's SSE decoder from bytes split at arbitrary points, each event
built as the SDK builds it, and fed to `ResponseStreamState` (the accumulator `responses.stream()`
uses, which raises on any ordering or identity violation). On top, `check_grammar` asserts the
invariants of contract §1.4 the accumulator does not: sequence numbers, the lifecycle pair first, one
terminal event last, every item added once and done before the terminal event, deltas that add up
to the done texts, and a terminal `output` in `output_index` order with the streamed ids.
The property test runs generated canonical event sequences (text, reasoning, several tool calls in
any order, usage, finish reasons, a failure mid-stream) through both the stream and the whole-body
paths and requires them to agree.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import omit
from openai._models import construct_type
from openai._streaming import SSEDecoder
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent

from adapters.canonical import Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from adapters.errors import UpstreamProtocolError
from gateway.api.responses import response_shell
from gateway.config import ModelConfig, Target
from gateway.openai.responses_api import decode_items, responses_request_decoder
from gateway.translation.responses import translate_responses
from gateway.translation.responses_writer import ResponsesWriter

MODEL = ModelConfig(targets=[Target(backend="b", model="m")])
TOOLS = [
    {"type": "function", "name": n, "parameters": {"type": "object", "properties": {}}, "strict": True}
    for n in ("alpha", "beta", "gamma")
]
PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def make_writer(**body: Any) -> ResponsesWriter:
    request = {"model": "m", "input": "hi", "tools": TOOLS, **body}
    payload = responses_request_decoder.decode(json.dumps(request))
    raw = [{"role": "user", "content": payload.input}] if isinstance(payload.input, str) else payload.input
    items = decode_items(raw or [])
    _, translated = translate_responses(
        payload, items, [f"input[{i}]" for i in range(len(items))], public_model="m", model=MODEL
    )
    return ResponsesWriter(translated, response_shell(payload, "m", translated.request.max_tokens))


async def _events(events: list[Event], fail: bool) -> AsyncIterator[Event]:
    for event in events:
        yield event
    if fail:
        raise UpstreamProtocolError("b", "The upstream stream broke off.", code="upstream_malformed")


def stream_bytes(writer: ResponsesWriter, events: list[Event], *, fail: bool = False) -> bytes:
    async def run() -> bytes:
        return b"".join([chunk async for chunk in writer.stream(_events(events, fail))])

    return asyncio.run(run())


def decode_stream(body: bytes, cuts: list[int]) -> list[dict[str, Any]]:
    """The stream's events as the SDK decodes them, the bytes arriving split at `cuts`."""
    points = sorted({min(max(c, 0), len(body)) for c in cuts} | {0, len(body)})
    pieces = [body[a:b] for a, b in itertools.pairwise(points)]
    events = []
    for sse in SSEDecoder().iter_bytes(iter(pieces)):
        data = json.loads(sse.data)
        assert sse.event == data["type"], (sse.event, data["type"])
        events.append(data)
    return events


def check_grammar(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The contract's invariants; returns the terminal event."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    response_id = events[0]["response"]["id"]
    assert response_id.startswith("resp_")
    terminal_types = {"response.completed", "response.incomplete", "response.failed"}
    terminals = [i for i, e in enumerate(events) if e["type"] in terminal_types]
    assert len(terminals) == 1, [e["type"] for e in events]
    terminal = events[terminals[0]]
    after = events[terminals[0] + 1 :]
    if terminal["type"] == "response.failed":
        assert [e["type"] for e in after] == ["error"]
        assert after[0]["error"]["message"] == after[0]["message"]
    else:
        assert after == []
    assert terminal["response"]["id"] == response_id
    added: dict[int, dict[str, Any]] = {}
    done: dict[int, dict[str, Any]] = {}
    texts: dict[int, str] = {}
    for event in events[2 : terminals[0]]:
        kind = event["type"]
        index = event.get("output_index")
        if kind == "response.output_item.added":
            assert index not in added
            assert index == len(added)
            added[index] = event["item"]
            assert event["item"]["status"] == "in_progress" or event["item"]["type"] == "reasoning"
            texts[index] = ""
            continue
        assert index in added, f"{kind} names output_index {index} before it was added"
        assert index not in done, f"{kind} after output_item.done"
        if kind != "response.output_item.done":
            assert event["item_id"] == added[index]["id"]
        if kind.endswith(".delta"):
            texts[index] += event["delta"]
        elif kind == "response.output_text.done" or kind == "response.reasoning_summary_text.done":
            assert event["text"] == texts[index]
        elif kind == "response.function_call_arguments.done":
            assert event["arguments"] == texts[index]
            assert event["name"] == added[index]["name"]
        elif kind == "response.output_item.done":
            item = event["item"]
            assert (item["type"], item["id"]) == (added[index]["type"], added[index]["id"])
            assert item.get("call_id") == added[index].get("call_id")
            done[index] = item
    output = terminal["response"]["output"]
    if terminal["type"] != "response.failed":
        assert sorted(done) == sorted(added), "an item was never done"
        assert output == [done[i] for i in sorted(done)]
        assert terminal["response"]["usage"]["total_tokens"] >= 0
    else:
        assert [item["id"] for item in output] == [added[i]["id"] for i in sorted(added)]
    return terminal


def sdk_accumulate(events: list[dict[str, Any]]) -> ResponseStreamState[Any]:
    """Feed the events through `responses.stream()`'s accumulator (raises on violations)."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for data in events:
        if data["type"] == "error":
            continue
        event = construct_type(type_=ResponseStreamEvent, value=data)
        state.handle_event(event)  # type: ignore[arg-type]
    return state


def test_text_answer_is_the_documented_sequence() -> None:
    events = decode_stream(
        stream_bytes(make_writer(), [TextDelta("Hel"), TextDelta("lo"), Usage(3, 2), Finish("stop")]), []
    )
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    terminal = check_grammar(events)
    assert terminal["response"]["status"] == "completed"
    assert terminal["response"]["output"][0]["content"][0] == {
        "type": "output_text",
        "text": "Hello",
        "annotations": [],
        "logprobs": [],
    }
    assert terminal["response"]["usage"]["input_tokens"] == 3
    assert terminal["response"]["usage"]["output_tokens"] == 2
    final = sdk_accumulate(events)._completed_response
    assert final is not None
    assert final.output_text == "Hello"


def test_text_then_two_tool_calls_keeps_all_three_items() -> None:
    canonical: list[Event] = [
        ReasoningDelta("think"),
        TextDelta("Checking."),
        ToolCallDelta(0, "alpha", '{"a":'),
        ToolCallDelta(1, "beta", "{}"),
        ToolCallDelta(0, None, "1}"),  # a late fragment of call 0: keyed by its tool index
        Usage(10, 7),
        Finish("tool_calls"),
    ]
    events = decode_stream(stream_bytes(make_writer(), canonical), [])
    terminal = check_grammar(events)
    output = terminal["response"]["output"]
    assert [item["type"] for item in output] == ["reasoning", "message", "function_call", "function_call"]
    assert output[0]["summary"] == [{"type": "summary_text", "text": "think"}]
    assert [(o["name"], o["arguments"]) for o in output[2:]] == [("alpha", '{"a":1}'), ("beta", "{}")]
    assert output[2]["call_id"] != output[3]["call_id"]
    assert terminal["type"] == "response.completed"
    final = sdk_accumulate(events)._completed_response
    assert final is not None
    assert [o.type for o in final.output] == ["reasoning", "message", "function_call", "function_call"]


def test_max_tokens_ends_incomplete_with_the_open_item_incomplete() -> None:
    events = decode_stream(stream_bytes(make_writer(), [TextDelta("cut"), Finish("length")]), [])
    terminal = check_grammar(events)
    assert terminal["type"] == "response.incomplete"
    assert terminal["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert terminal["response"]["output"][0]["status"] == "incomplete"


def test_failure_mid_stream_is_response_failed_then_error() -> None:
    events = decode_stream(stream_bytes(make_writer(), [TextDelta("part")], fail=True), [])
    terminal = check_grammar(events)
    assert terminal["response"]["status"] == "failed"
    assert terminal["response"]["error"]["code"] == "server_error"
    error = events[-1]
    assert error["code"] == "upstream_malformed"
    assert error["error"]["code"] == "upstream_malformed"
    assert "broke off" in error["message"]


def test_whole_body_matches_the_stream() -> None:
    canonical: list[Event] = [TextDelta("a"), ToolCallDelta(0, "gamma", "{}"), Usage(1, 1), Finish("stop")]
    body = json.loads(make_writer().complete(canonical))
    assert (body["object"], body["status"]) == ("response", "completed")
    assert [o["type"] for o in body["output"]] == ["message", "function_call"]
    for key in ("error", "incomplete_details", "instructions", "tools", "tool_choice", "metadata", "usage"):
        assert key in body
    assert body["tools"][0]["name"] == "alpha"


# Property: any canonical sequence, any split


piece = st.text(max_size=6)
canonical_event = st.one_of(
    st.builds(TextDelta, piece),
    st.builds(ReasoningDelta, piece),
    st.builds(
        ToolCallDelta,
        st.integers(0, 3),
        st.one_of(st.none(), st.sampled_from(["alpha", "beta", "gamma"])),
        piece,
    ),
)
finish = st.one_of(st.none(), st.sampled_from(["stop", "length", "tool_calls", "content_filter"]))


def _strip_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k not in ("id", "call_id")} for item in items]


@PROPERTY_SETTINGS
@given(
    events=st.lists(canonical_event, max_size=25),
    usage=st.one_of(st.none(), st.builds(Usage, st.integers(0, 99), st.integers(0, 99))),
    reason=finish,
    fail=st.booleans(),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    single=st.booleans(),
    forced=st.booleans(),
)
def test_any_sequence_is_well_formed(
    events: list[Event],
    usage: Usage | None,
    reason: Any,
    fail: bool,
    cuts: list[int],
    single: bool,
    forced: bool,
) -> None:
    canonical = list(events)
    if usage is not None:
        canonical.append(usage)
    if reason is not None:
        canonical.append(Finish(reason))
    options: dict[str, Any] = {"parallel_tool_calls": False} if single else {}
    if forced:  # the gateway's shaping path: a forced call the model may write as text
        options["tool_choice"] = "required"
    decoded = decode_stream(stream_bytes(make_writer(**options), canonical, fail=fail), cuts)
    terminal = check_grammar(decoded)
    state = sdk_accumulate(decoded)
    if fail:
        assert terminal["type"] == "response.failed"
        return
    expected = "response.incomplete" if reason in ("length", "content_filter") else "response.completed"
    assert terminal["type"] == expected
    if expected == "response.completed":
        assert state._completed_response is not None
    whole = json.loads(make_writer(**options).complete(canonical))
    assert _strip_ids(whole["output"]) == _strip_ids(terminal["response"]["output"])
    assert whole["status"] == terminal["response"]["status"]
    calls = [o for o in whole["output"] if o["type"] == "function_call"]
    if single:
        assert len(calls) <= 1


def test_a_forced_call_written_as_text_becomes_a_function_call_item() -> None:
    canonical: list[Event] = [
        TextDelta('{"name": "beta", '),
        TextDelta('"arguments": {"x": 1}}'),
        Finish("stop"),
    ]
    events = decode_stream(stream_bytes(make_writer(tool_choice="required"), canonical), [])
    terminal = check_grammar(events)
    (item,) = terminal["response"]["output"]
    assert (item["type"], item["name"], json.loads(item["arguments"])) == ("function_call", "beta", {"x": 1})
    whole = json.loads(make_writer(tool_choice="required").complete(canonical))
    assert [o["type"] for o in whole["output"]] == ["function_call"]
