"""The gateway's own text rules: stop sequences across chunk boundaries, forced tool calls written as text."""

from __future__ import annotations

import pytest

from adapters.canonical import TextDelta, ToolCallDelta
from gateway.translation.shaping import MAX_HELD_CHARS, ForcedCall, Shaper, StopFilter, recover_calls


def cut(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    stop = StopFilter(stops)
    sent: list[str] = []
    for piece in pieces:
        text, matched = stop.feed(piece)
        sent.append(text)
        if matched:
            return "".join(sent), True
    return "".join(sent) + stop.flush(), False


@pytest.mark.parametrize("stop", ["END", "\n\nHuman:", "é🙂"])
def test_stop_sequence_is_found_at_every_split_of_the_text(stop: str) -> None:
    """Whatever the chunking, the text before the first stop sequence is sent, nothing after it."""
    text = f"some words {stop} more words {stop} tail"
    for first in range(len(text) + 1):
        for second in range(first, len(text) + 1):
            pieces = [text[:first], text[first:second], text[second:]]
            assert cut([stop], pieces) == ("some words ", True), pieces


def test_held_prefix_is_released_when_the_sequence_does_not_complete() -> None:
    assert cut(["ENDX"], ["ab E", "ND? no, EN", "!"]) == ("ab END? no, EN!", False)
    assert cut(["ENDX"], ["ab EN"]) == ("ab EN", False)


def test_earliest_of_several_stop_sequences_wins() -> None:
    assert cut(["world", "lo w"], ["hel", "lo wor", "ld"]) == ("hel", True)
    assert cut(["zzz", "o"], ["hello"]) == ("hell", True)


def test_only_a_possible_beginning_is_held_back() -> None:
    stop = StopFilter(["STOP"])
    assert stop.feed("a plain chunk S") == ("a plain chunk ", False)
    assert stop.feed("ay") == ("Say", False)


@pytest.mark.parametrize(
    ("text", "calls"),
    [
        pytest.param(
            '{"name": "wx", "arguments": {"city": "Paris"}}', [("wx", '{"city":"Paris"}')], id="arguments"
        ),
        pytest.param(
            '{"name": "wx", "parameters": {"city": "Paris"}}', [("wx", '{"city":"Paris"}')], id="parameters"
        ),
        pytest.param(
            '{"type": "function", "function": {"name": "wx", "arguments": "{\\"city\\": \\"Paris\\"}"}}',
            [("wx", '{"city":"Paris"}')],
            id="openai-form-string-arguments",
        ),
        pytest.param('```json\n{"name": "wx", "arguments": {}}\n```', [("wx", "{}")], id="fenced"),
        pytest.param('<tool_call>{"name": "wx", "arguments": {}}</tool_call>', [("wx", "{}")], id="tag"),
        pytest.param(
            '<|python_tag|>{"name": "wx", "parameters": {}}<|eom_id|>', [("wx", "{}")], id="python-tag"
        ),
        pytest.param('  {"city": "Paris"}  ', [("wx", '{"city":"Paris"}')], id="bare-arguments"),
        pytest.param(
            '[{"name": "wx", "arguments": {"city": "A"}}, {"name": "wx", "arguments": {"city": "B"}}]',
            [("wx", '{"city":"A"}'), ("wx", '{"city":"B"}')],
            id="list",
        ),
        pytest.param('{"name": "other", "arguments": {}}', None, id="another-tool"),
        pytest.param("The weather is fine.", None, id="prose"),
        pytest.param('{"name": "wx", "arguments": [1]}', None, id="arguments-not-an-object"),
        pytest.param('{"name": "wx", "arguments": {', None, id="cut-json"),
    ],
)
def test_recover_calls_for_one_forced_tool(text: str, calls: list[tuple[str, str]] | None) -> None:
    assert recover_calls(text, ("wx",)) == calls


def test_with_several_candidate_tools_only_a_named_call_counts() -> None:
    names = ("wx", "time")
    assert recover_calls('{"name": "time", "arguments": {"tz": "UTC"}}', names) == [("time", '{"tz":"UTC"}')]
    assert recover_calls('{"city": "Paris"}', names) is None
    assert recover_calls('{"name": "nope", "arguments": {}}', names) is None


def feed_all(forced: ForcedCall, pieces: list[str]) -> str:
    return "".join(forced.feed(piece) for piece in pieces)


def test_forced_call_holds_json_until_the_end_and_recovers_it() -> None:
    forced = ForcedCall(("wx",))
    pieces = ["  ", '{"na', 'me": "wx", ', '"arguments": {"city": ', '"Paris"}}']
    assert feed_all(forced, pieces) == ""
    text, calls = forced.finish()
    assert text == ""
    assert calls == [ToolCallDelta(0, "wx", '{"city":"Paris"}')]


def test_forced_call_releases_prose_at_once() -> None:
    forced = ForcedCall(("wx",))
    assert forced.feed("It is") == "It is"
    assert forced.feed(" sunny") == " sunny"
    assert forced.finish() == ("", [])


def test_forced_call_waits_while_a_tag_could_still_begin() -> None:
    forced = ForcedCall(("wx",))
    assert forced.feed("<tool") == ""
    assert forced.feed("ing> is a word") == "<tooling> is a word"


def test_json_that_is_not_a_call_comes_back_as_text() -> None:
    forced = ForcedCall(("wx", "time"))
    assert feed_all(forced, ['{"answer":', " 42}"]) == ""
    assert forced.finish() == ('{"answer": 42}', [])


def test_held_text_is_released_past_the_size_cap() -> None:
    forced = ForcedCall(("wx",))
    assert forced.feed("{") == ""
    big = "x" * MAX_HELD_CHARS
    assert forced.feed(big) == "{" + big
    assert not forced.holding


def test_shaper_recovers_a_call_then_stop_sequences_do_not_apply_to_it() -> None:
    shaper = Shaper(["}"], ("wx",))
    assert shaper.text('{"name": "wx", "arguments": {}}') == ""
    assert shaper.finish() == [ToolCallDelta(0, "wx", "{}")]


def test_shaper_applies_stop_to_released_text() -> None:
    shaper = Shaper(["STOP"], ("wx",))
    assert shaper.text("Hello ST") == "Hello "
    assert shaper.text("OP and more") == ""
    assert shaper.stopped
    assert shaper.finish() == []


def test_shaper_releases_held_text_when_a_real_call_arrives() -> None:
    shaper = Shaper([], ("wx",))
    assert shaper.text("\n\n") == ""
    assert shaper.tool_call() == "\n\n"
    assert shaper.finish() == []


def test_shaper_flushes_a_held_stop_prefix_at_the_end() -> None:
    shaper = Shaper(["STOP"], ())
    assert shaper.text("almost ST") == "almost "
    assert shaper.finish() == [TextDelta("ST")]
