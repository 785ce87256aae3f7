"""Canonical events → OpenAI's legacy `text_completion` JSON or SSE chunks.

The shapes OpenAI sends: each chunk `{"id": "cmpl-…", "object": "text_completion", "created", "model",
"choices": [{"text", "index", "logprobs": null, "finish_reason": null}]}`; each choice ends with a chunk
of empty text carrying its `finish_reason`; with `stream_options.include_usage` a last chunk with
`"choices": []` and the usage; then `data: [DONE]`. With `echo`, a choice's text begins with its
prompt (in a stream, the prompt is the choice's first chunk). Choice i answers prompt i // n.

Stop sequences, several choices and in-band errors work as for chat (`gateway.translation.framing`).
Reasoning and tool calls have no place in a text completion and are left out.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Final

from adapters.canonical import ChoiceEvent, Event, Finish, TextDelta, Usage
from gateway.openai.responses import TextChoice, TextCompletion, TextUsage, encoder
from gateway.translation.framing import ChoiceState, ChoiceWriter, finish_reason

if TYPE_CHECKING:
    from adapters.canonical import CanonicalRequest
    from gateway.translation.translate import Translated

_TAIL: Final = b',"logprobs":null,"finish_reason":null}]}\n\n'


def text_completion_id() -> str:
    return "cmpl-" + os.urandom(15).hex()[:29]


class _TextChoice(ChoiceState):
    __slots__ = ("_echo", "_index_json", "_max_tokens", "_prefix", "_suffix", "texts")

    def __init__(
        self, index: int, translated: Translated[CanonicalRequest], prefix: bytes, echo: str
    ) -> None:
        super().__init__(index, translated)
        self._prefix = prefix
        self._index_json = str(index).encode()
        self._suffix = b',"index":' + self._index_json + _TAIL
        self._echo = echo
        self._max_tokens = translated.request.max_tokens
        self.texts: list[str] = []

    def begin(self) -> list[bytes]:
        return [self._chunk(self._echo)] if self._echo else []

    def feed(self, event: ChoiceEvent) -> list[bytes]:
        if type(event) is TextDelta:
            text = event.text
            if self.shaper is not None:
                text = self.shaper.text(text)
            if text:
                self.chars += len(text)
                return [self._chunk(text)]
        elif type(event) is Finish:
            self.finish = event.reason
        return []

    def end(self, usage: Usage | None) -> list[bytes]:
        out: list[bytes] = []
        if self.shaper is not None:
            for event in self.shaper.finish():
                if type(event) is TextDelta:
                    self.chars += len(event.text)
                    out.append(self._chunk(event.text))
        reason = self._reason(usage).encode()
        out.append(
            self._prefix
            + b'"","index":'
            + self._index_json
            + b',"logprobs":null,"finish_reason":"'
            + reason
            + b'"}]}\n\n'
        )
        return out

    def collect(self, event: ChoiceEvent) -> None:
        if type(event) is Usage:
            self.usage = event
        elif type(event) is Finish:
            self.finish = event.reason
        elif type(event) is TextDelta and not self.done:
            self.texts.append(self.shaper.text(event.text) if self.shaper is not None else event.text)

    def result(self, usage: Usage | None) -> TextChoice:
        if self.shaper is not None:
            self.texts.extend(e.text for e in self.shaper.finish() if type(e) is TextDelta)
        text = "".join(self.texts)
        self.chars = len(text)
        return TextChoice(text=self._echo + text, index=self.index, finish_reason=self._reason(usage))

    def _chunk(self, text: str) -> bytes:
        return self._prefix + encoder.encode(text) + self._suffix

    def _reason(self, usage: Usage | None) -> str:
        reason = finish_reason(
            self.finish, stopped=self.done, called_tools=False, usage=usage, max_tokens=self._max_tokens
        )
        self.finish = reason = "stop" if reason == "tool_calls" else reason
        return reason


class TextWriter(ChoiceWriter):
    """Legacy completions: `text_completion` bodies and streams."""

    __slots__ = ()

    object_json = b'","object":"text_completion","created":'

    def __init__(self, translated: Translated[CanonicalRequest]) -> None:
        super().__init__(translated, text_completion_id())

    def stream(self, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
        return self._stream_choices(events)

    def complete(self, events: Iterable[Event]) -> bytes:
        results, usage = self._results(events, self._choices())
        body = TextCompletion(
            id=self._id,
            created=self._created,
            model=self.translated.public_model,
            choices=results,
            usage=_usage_out(usage),
        )
        return encoder.encode(body)

    def _choices(self) -> list[_TextChoice]:
        translated = self.translated
        prefix = self._shell + b'"choices":[{"text":'
        prompts = translated.prompts
        samples = translated.samples
        return [
            _TextChoice(i, translated, prefix, prompts[i // samples] if translated.echo else "")
            for i in range(translated.n)
        ]

    def _usage_json(self, usage: Usage) -> bytes:
        return encoder.encode(_usage_out(usage))


def _usage_out(usage: Usage) -> TextUsage:
    return TextUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
    )


__all__ = ("TextWriter", "text_completion_id")
