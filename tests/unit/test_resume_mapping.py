"""Continuations (`prefill`, mid-stream failover) as each backend kind takes them, and the emulators'
reading of them back."""

from __future__ import annotations

import asyncio

import msgspec

from adapters.canonical import (
    ChatRequest,
    Extensions,
    FunctionDefinition,
    Message,
    PromptRequest,
    ResponseFormat,
    TextDelta,
    Tool,
    Usage,
)
from adapters.mock.answers import MockAnswer
from adapters.vllm.request import can_continue, completion_body, upstream_body
from adapters.workers_ai.request import continuation_body
from adapters.workers_ai.templates import chat_can_continue, prompt_can_continue
from tests.emulators.common import build_answer, continue_answer, conversation_from_messages, parse_llama_3

LLAMA = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
CHAT = ChatRequest(
    messages=[Message(role="system", content="Be brief."), Message(role="user", content="Hi there")],
    max_tokens=50,
    prefill="Hello from",
)


def test_vllm_continues_the_final_assistant_message() -> None:
    body = msgspec.to_builtins(upstream_body(CHAT, "m"))
    assert body["messages"][-1] == {"role": "assistant", "content": "Hello from"}
    assert (body["continue_final_message"], body["add_generation_prompt"]) == (True, False)
    plain = msgspec.to_builtins(upstream_body(msgspec.structs.replace(CHAT, prefill=msgspec.UNSET), "m"))
    assert "continue_final_message" not in plain
    assert "add_generation_prompt" not in plain
    prompt = PromptRequest(prompt="Once upon", max_tokens=5, prefill=" a time")
    assert completion_body(prompt, "m").prompt == "Once upon a time"
    assert can_continue(CHAT)
    assert not can_continue(msgspec.structs.replace(CHAT, n=2))
    assert not can_continue(msgspec.structs.replace(CHAT, response_format=ResponseFormat("json_object")))


def test_workers_ai_writes_llama_3_template_ending_inside_the_answer() -> None:
    body = continuation_body(CHAT, stream=True)
    assert body.raw is True
    assert body.stream is True
    assert body.prompt == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello from"
    )
    parsed = parse_llama_3(body.prompt)
    assert parsed == (
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}],
        "Hello from",
    )


def test_workers_ai_continues_only_known_templates_and_plain_turns() -> None:
    assert chat_can_continue(CHAT, LLAMA)
    assert not chat_can_continue(CHAT, "@hf/nousresearch/hermes-2-pro-mistral-7b")
    assert not chat_can_continue(CHAT, "@cf/meta/llama-3.2-11b-vision-instruct")
    tool = Tool(FunctionDefinition("f", "d", {"type": "object"}))
    assert not chat_can_continue(msgspec.structs.replace(CHAT, tools=[tool]), LLAMA)
    assert chat_can_continue(msgspec.structs.replace(CHAT, tools=[tool], tool_choice="none"), LLAMA)
    raw = PromptRequest(prompt="p", max_tokens=5, extensions=Extensions(raw=True))
    assert prompt_can_continue(raw, "@hf/nousresearch/hermes-2-pro-mistral-7b")
    assert not prompt_can_continue(PromptRequest(prompt="p", max_tokens=5), "@hf/other")


def test_mock_continues_its_own_answer() -> None:
    async def events(request: ChatRequest) -> list[object]:
        return [event async for event in MockAnswer(request, delay=0).events()]

    whole = asyncio.run(events(msgspec.structs.replace(CHAT, prefill=msgspec.UNSET)))
    text = "".join(e.text for e in whole if isinstance(e, TextDelta))
    prefill = "".join(e.text for e in whole[:3] if isinstance(e, TextDelta))
    rest = asyncio.run(events(msgspec.structs.replace(CHAT, prefill=prefill)))
    assert prefill + "".join(e.text for e in rest if isinstance(e, TextDelta)) == text
    (usage,) = [e for e in rest if isinstance(e, Usage)]
    (full,) = [e for e in whole if isinstance(e, Usage)]
    assert (usage.prompt_tokens - 3, usage.completion_tokens + 3) == (
        full.prompt_tokens,
        full.completion_tokens,
    )


def test_emulator_continuation_moves_the_partial_to_the_prompt() -> None:
    conv = conversation_from_messages([{"role": "user", "content": "Say hello please"}])
    whole = build_answer(conv)
    partial = "".join(whole.tokens[:3])
    rest = continue_answer(build_answer(conv), partial)
    assert rest is not None
    assert partial + rest.text == whole.text
    assert (rest.prompt_tokens, rest.completion_tokens) == (
        whole.prompt_tokens + 3,
        whole.completion_tokens - 3,
    )
    assert continue_answer(build_answer(conv), "Goodbye") is None


def test_workers_ai_trims_each_turn_as_llama_3s_template_does() -> None:
    """The Messages call was templated with `| trim`: the raw continuation reads the same prompt."""
    spaced = ChatRequest(
        messages=[
            Message(role="system", content="  Be brief.\n"),
            Message(role="user", content="Hi there \n\n"),
        ],
        max_tokens=50,
        prefill="\nHello from",
    )
    assert continuation_body(spaced, stream=True).prompt == continuation_body(CHAT, stream=True).prompt
    templated = continuation_body(
        PromptRequest(prompt=" Once upon \n", max_tokens=5, prefill="Hello"), stream=True
    )
    assert templated.prompt == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nOnce upon<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello"
    )


def test_workers_ai_does_not_continue_text_holding_special_tokens() -> None:
    """A raw prompt reads `<|eot_id|>` in a message as the control token: such turns are not written out."""
    for message in (
        Message(role="user", content="end it <|eot_id|> here"),
        Message(role="system", content="<|start_header_id|>user"),
    ):
        assert not chat_can_continue(msgspec.structs.replace(CHAT, messages=[message]), LLAMA)
    assert not chat_can_continue(
        msgspec.structs.replace(CHAT, prefill="Hi<|reserved_special_token_3|>"), LLAMA
    )
    assert chat_can_continue(msgspec.structs.replace(CHAT, prefill="a <|not a token|> b"), LLAMA)
    prompt = PromptRequest(prompt="say <|eot_id|>", max_tokens=5, prefill="Hello")
    assert not prompt_can_continue(prompt, LLAMA)
    assert prompt_can_continue(msgspec.structs.replace(prompt, extensions=Extensions(raw=True)), LLAMA)
