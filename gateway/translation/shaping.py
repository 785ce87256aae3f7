"""Rules the gateway applies to an answer's text itself, because not every backend can.

`StopFilter` cuts text at the first stop sequence (Workers AI has no `stop`), holding back a tail that
might be the start of one, so a sequence split across chunks is still found. `ForcedCall` recovers a
forced tool call that the model wrote as JSON text instead of a tool call (llama and gpt-oss do this on
Workers AI): only when the JSON names a requested tool. `Shaper` applies both to one choice.

They run only for requests that ask for them: a plain request's chunks never pass through here.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from adapters.canonical import ChoiceEvent, TextDelta, ToolCallDelta

_OPENERS: Final = ("{", "[", "```", "<tool_call>", "<|python_tag|>")
"""How a tool call written as text begins: JSON, a Markdown fence, or a model's tool-call tag."""
_CLOSERS: Final = ("</tool_call>", "<|eom_id|>", "<|eot_id|>", "```")
MAX_HELD_CHARS: Final = 262_144
"""Text held back as a possible tool call beyond this is released as text: no call is that large."""
_ENVELOPE_KEYS: Final = frozenset({"name", "arguments", "parameters", "type", "id"})
_encoder: Final = msgspec.json.Encoder()


class StopFilter:
    """Cuts text at the first stop sequence, holding back a tail that might begin one."""

    __slots__ = ("_firsts", "_held", "_longest", "_stops", "matched")

    def __init__(self, stops: list[str]) -> None:
        self._stops = stops
        self._longest = max(len(s) for s in stops)
        self._firsts = frozenset(s[0] for s in stops)
        self._held = ""
        self.matched: str | None = None
        """The stop sequence that ended the text (Anthropic's answers name it)."""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text that may be sent now, whether a stop sequence matched: nothing after it is sent)."""
        if self._held:
            text = self._held + text
            self._held = ""
        cut = -1
        for stop in self._stops:
            found = text.find(stop)
            if found >= 0 and (cut < 0 or found < cut):
                cut = found
                self.matched = stop
        if cut >= 0:
            return text[:cut], True
        # Only the last (longest - 1) characters can begin a sequence that is not complete yet; hold
        # back the longest such tail. Most chunks have no candidate first character there at all.
        firsts = self._firsts
        length = len(text)
        for start in range(max(0, length - self._longest + 1), length):
            if text[start] in firsts:
                tail = text[start:]
                if any(stop.startswith(tail) for stop in self._stops):
                    self._held = tail
                    return text[:start], False
        return text, False

    def flush(self) -> str:
        """The held tail, once the answer has ended without completing a sequence."""
        held, self._held = self._held, ""
        return held


class ForcedCall:
    """Holds text back while it could be a forced tool call written as JSON, and recovers the call.

    Accepted at the end of the answer: `{"name": <tool>, "arguments"|"parameters": {...}}`, OpenAI's
    `{"type": "function", "function": {...}}`, a list of those, the same inside a Markdown fence or a
    `<tool_call>` tag, and, when exactly one tool could be meant, a bare arguments object. Only names
    among the requested tools count; anything else is released unchanged as text.
    """

    __slots__ = ("_committed", "_names", "_parts", "_size", "holding")

    def __init__(self, names: tuple[str, ...]) -> None:
        self._names = names
        self._parts: list[str] = []
        self._size = 0
        self._committed = False  # the text began like a call: hold it all until the answer ends
        self.holding = True

    def feed(self, text: str) -> str:
        """The text that may be sent now ("" while it could still be a call)."""
        if not self.holding:
            return text
        self._parts.append(text)
        self._size += len(text)
        if self._size > MAX_HELD_CHARS:
            return self.release()
        if self._committed:
            return ""
        head = "".join(self._parts).lstrip()
        if not head:
            return ""
        if any(head.startswith(opener) for opener in _OPENERS):
            self._committed = True
            return ""
        if any(opener.startswith(head) for opener in _OPENERS):
            return ""  # too short to tell yet, e.g. "<tool"
        return self.release()

    def release(self) -> str:
        """Stop holding (a real tool call arrived, or the text cannot be a call): the held text."""
        self.holding = False
        held = "".join(self._parts)
        self._parts = []
        return held

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        """At the end of the answer: (text to send, recovered calls); one of them is empty."""
        if not self.holding:
            return "", []
        text = self.release()
        calls = recover_calls(text, self._names)
        if calls is None:
            return text, []
        return "", [ToolCallDelta(i, name, arguments) for i, (name, arguments) in enumerate(calls)]


def recover_calls(text: str, names: tuple[str, ...]) -> list[tuple[str, str]] | None:
    """[(tool name, arguments JSON)] if `text` is a call to the requested tools, else None."""
    body = text.strip()
    for opener in ("<|python_tag|>", "<tool_call>"):
        body = body.removeprefix(opener)
    if body.startswith("```"):
        body = body[3:].removeprefix("json").removeprefix("JSON")
    for closer in _CLOSERS:
        body = body.strip().removesuffix(closer)
    try:
        value = msgspec.json.decode(body.strip())
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    calls: list[tuple[str, str]] = []
    for item in items:
        call = _envelope(item, names)
        if call is None:
            if _looks_like_call(item) or len(names) != 1 or len(items) != 1:
                return None  # a call to another tool, or arguments that could be for any of several
            call = names[0], _encoder.encode(item).decode()  # the bare arguments of the one tool
        calls.append(call)
    return calls


def _looks_like_call(item: dict[str, Any]) -> bool:
    if isinstance(item.get("function"), dict):
        return True
    return isinstance(item.get("name"), str) and ("arguments" in item or "parameters" in item)


def _envelope(item: dict[str, Any], names: tuple[str, ...]) -> tuple[str, str] | None:
    function = item.get("function")
    if isinstance(function, dict) and set(item) <= _ENVELOPE_KEYS | {"function"}:
        item = function
    if item.get("name") not in names or not set(item) <= _ENVELOPE_KEYS:
        return None
    arguments = item.get("arguments", item.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = msgspec.json.decode(arguments)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return None
    return str(item["name"]), _encoder.encode(arguments).decode()


class Shaper:
    """One choice's text through the gateway's rules: a forced call written as text, then stop sequences."""

    __slots__ = ("_forced", "_stop", "stopped")

    def __init__(self, stops: list[str], recover_tools: tuple[str, ...]) -> None:
        self._stop = StopFilter(stops) if stops else None
        self._forced = ForcedCall(recover_tools) if recover_tools else None
        self.stopped = False
        """A stop sequence matched: the choice is over, whatever the upstream still sends."""

    def text(self, text: str) -> str:
        """The part of `text` that may be sent now."""
        if self._forced is not None and self._forced.holding:
            text = self._forced.feed(text)
            if not text:
                return ""
        return self._cut(text)

    def tool_call(self) -> str:
        """A real tool call arrived: text held back as a possible call may be sent now."""
        if self._forced is not None and self._forced.holding:
            return self._cut(self._forced.release())
        return ""

    def finish(self) -> list[ChoiceEvent]:
        """At the end of the answer: what was held back, as text or as recovered tool calls."""
        events: list[ChoiceEvent] = []
        if self.stopped:
            return events
        if self._forced is not None:
            text, calls = self._forced.finish()
            if calls:
                events.extend(calls)
            elif text:
                text = self._cut(text)
                if text:
                    events.append(TextDelta(text))
                if self.stopped:
                    return events
        if self._stop is not None:
            tail = self._stop.flush()
            if tail:
                events.append(TextDelta(tail))
        return events

    @property
    def stop_sequence(self) -> str | None:
        """The stop sequence that matched, once `stopped`."""
        return self._stop.matched if self._stop is not None else None

    def _cut(self, text: str) -> str:
        if self._stop is None or not text:
            return text
        text, self.stopped = self._stop.feed(text)
        return text


__all__ = ("MAX_HELD_CHARS", "ForcedCall", "Shaper", "StopFilter", "recover_calls")
