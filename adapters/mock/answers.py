"""The mock's answers: deterministic, following the request, no network.

Text streams one word at a time at a realistic cadence; with tools offered it calls one (the named one
when `tool_choice` names it), and after a tool result it answers with that result. With
`response_format` it answers with JSON that fits the schema (`adapters.mock.examples`), also after a
tool result. Text completions continue the prompt the same way.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any, Final

import msgspec

from adapters.canonical import (
    ChatRequest,
    Event,
    Finish,
    Message,
    PromptRequest,
    TextDelta,
    TextPart,
    ToolCallDelta,
    Usage,
)
from adapters.mock.examples import example

GREETING: Final = (
    "Hello! This answer comes from the gateway's built-in mock backend, so no model was called. "
    "Set CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN to reach Workers AI."
)
ECHO_WORDS: Final = 12

_encoder: Final = msgspec.json.Encoder()


class MockAnswer:
    __slots__ = ("_delay", "_request")

    def __init__(self, request: ChatRequest | PromptRequest, *, delay: float) -> None:
        self._request = request
        self._delay = delay

    async def aclose(self) -> None:
        return None

    async def events(self) -> AsyncIterator[Event]:
        request = self._request
        lead = ""  # a continuation starts with a space; a chat answer does not
        if isinstance(request, PromptRequest):
            lead = " "
            prompt = request.prompt if isinstance(request.prompt, str) else " ".join(request.prompt)
            prompt_tokens = max(1, math.ceil(len(prompt) / 4))
            words = _continuation(prompt).split(" ")
        else:
            prompt_tokens = max(1, math.ceil(sum(len(_text(m)) for m in request.messages) / 4))
            call = _tool_call(request) if request.prefill is msgspec.UNSET else None
            if call is not None:
                name, arguments = call
                yield ToolCallDelta(0, name, arguments)
                yield Usage(prompt_tokens, max(1, math.ceil(len(arguments) / 4)))
                yield Finish("tool_calls")
                return
            words = _answer(request).split(" ")
        finish: Any = "stop"
        if len(words) > request.max_tokens:
            words, finish = words[: request.max_tokens], "length"
        pieces = [lead + word if position == 0 else " " + word for position, word in enumerate(words)]
        if request.prefill is not msgspec.UNSET:
            pieces, prompt_tokens = _after_prefill(pieces, request.prefill, prompt_tokens)
        for position, piece in enumerate(pieces):
            if self._delay and position:
                await asyncio.sleep(self._delay)
            yield TextDelta(piece)
        yield Usage(prompt_tokens, len(pieces))
        yield Finish(finish)


def _after_prefill(pieces: list[str], prefill: str, prompt_tokens: int) -> tuple[list[str], int]:
    """The pieces that continue `prefill` (the answer's own start: the mock is deterministic), and
    the prompt tokens with the prefill's pieces counted in, as an upstream reading it would."""
    consumed = 0
    for position, piece in enumerate(pieces):
        if consumed >= len(prefill):
            return pieces[position:], prompt_tokens + position
        consumed += len(piece)
    return [], prompt_tokens + len(pieces)


def _text(message: Message) -> str:
    if isinstance(message.content, str):
        return message.content
    return " ".join(part.text for part in message.content if isinstance(part, TextPart))


def _tool_call(request: ChatRequest) -> tuple[str, str] | None:
    if not request.tools or request.tool_choice == "none" or request.messages[-1].role != "user":
        return None
    tool = request.tools[0]
    choice = request.tool_choice
    if not isinstance(choice, str) and not isinstance(choice, msgspec.UnsetType):
        tool = next((t for t in request.tools if t.function.name == choice.function.name), tool)
    return tool.function.name, _encoder.encode(example(tool.function.parameters)).decode()


def _answer(request: ChatRequest) -> str:
    last = request.messages[-1]
    # JSON mode first: an agent with tools and an output type ends with a tool result and a schema.
    if request.response_format is not msgspec.UNSET:
        schema = request.response_format.json_schema
        value = example(schema) if isinstance(schema, dict) else {"answer": "mock"}
        return _encoder.encode(value).decode()
    if last.role == "tool":
        return f"The tool returned: {_text(last)}"
    said = " ".join(_text(last).split()[:ECHO_WORDS])
    return f"{GREETING} You said: {said}" if said else GREETING


def _continuation(prompt: str) -> str:
    said = " ".join(prompt.split()[:ECHO_WORDS])
    return f"and so the mock backend continues your prompt ({said}) without calling any model."


__all__ = ("ECHO_WORDS", "GREETING", "MockAnswer")
