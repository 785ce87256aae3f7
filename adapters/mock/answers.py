"""The mock's answers: deterministic, following the request, no network.

Text streams one word at a time at a realistic cadence; with tools offered it calls one, and after a
tool result it answers with that result. Text completions continue the prompt the same way.
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
            call = _tool_call(request)
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
        for position, word in enumerate(words):
            if self._delay and position:
                await asyncio.sleep(self._delay)
            yield TextDelta(lead + word if position == 0 else " " + word)
        yield Usage(prompt_tokens, len(words))
        yield Finish(finish)


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
    return tool.function.name, _encoder.encode(_example(tool.function.parameters)).decode()


def _answer(request: ChatRequest) -> str:
    last = request.messages[-1]
    # JSON mode first: an agent with an output type asks for JSON after its tools have answered too.
    if request.response_format is not msgspec.UNSET:
        schema = request.response_format.json_schema
        value = _example(schema) if isinstance(schema, dict) else {"answer": "mock"}
        return _encoder.encode(value).decode()
    if last.role == "tool":
        return f"The tool returned: {_text(last)}"
    said = " ".join(_text(last).split()[:ECHO_WORDS])
    return f"{GREETING} You said: {said}" if said else GREETING


def _continuation(prompt: str) -> str:
    said = " ".join(prompt.split()[:ECHO_WORDS])
    return f"and so the mock backend continues your prompt ({said}) without calling any model."


def _example(schema: dict[str, Any]) -> Any:
    """A value that satisfies a simple JSON Schema: enough for tool arguments and JSON mode."""
    kind = schema.get("type")
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        properties: dict[str, Any] = schema.get("properties") or {}
        required = schema.get("required") or list(properties)
        return {
            name: _example(properties.get(name) or {"type": "string"})
            for name in required
            if isinstance(name, str)
        }
    if kind == "array":
        return []
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "example"


__all__ = ("ECHO_WORDS", "GREETING", "MockAnswer")
