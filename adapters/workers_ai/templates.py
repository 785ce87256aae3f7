"""Chat templates of the Workers AI models whose template is known, for prefilled continuations.

Workers AI's Messages schema cannot end on a partial assistant turn to be continued, but its Prompt
schema with `raw: true` sends a prompt as it is, without the model's chat template. A continuation
(`prefill`, mid-stream failover) is therefore the conversation written out in the model's own chat
template, ending inside the assistant's turn with the text produced so far. Only plain-text
conversations are written out (no images, tools, tool results or JSON mode: those need the
template's own extensions), and only for the Llama 3 family, whose template is public and stable.

Written out as the template writes it: each message's content trimmed (`message['content'] | trim`),
the partial answer too, so the continuation reads the prompt the original call read.

A raw prompt is tokenized with its special tokens live: text such as `<|eot_id|>` or
`<|start_header_id|>` in a message (or in the partial answer) would end a turn or start one there,
where the template (which sends message text as text) never would. No escape exists in a raw
prompt that leaves the text as it is, so such a conversation is not continued (`chat_can_continue`
and `prompt_can_continue` say no): the answer ends as it would without `resume`, or continues on
another target that can take it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from msgspec import UNSET

if TYPE_CHECKING:
    from adapters.canonical import ChatRequest, Message, PromptRequest

LLAMA_3_MARK: Final = "/llama-3"
"""Workers AI's Llama 3.x instruct models (`@cf/meta/llama-3.3-70b-instruct-fp8-fast`, ...)."""
_BEGIN: Final = "<|begin_of_text|>"
_END_OF_TURN: Final = "<|eot_id|>"
_SPECIAL_TOKEN: Final = re.compile(r"<\|[A-Za-z0-9_]+\|>")
"""Llama 3's special tokens (`<|eot_id|>`, `<|start_header_id|>`, `<|reserved_special_token_7|>`, ...)."""


def _header(role: str) -> str:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n"


def has_template(model: str) -> bool:
    """The model's chat template is known here (the Llama 3 family, vision models aside)."""
    return LLAMA_3_MARK in model and "vision" not in model


def chat_can_continue(request: ChatRequest, model: str) -> bool:
    """The conversation can be written out in the model's template: plain text turns only."""
    if not has_template(model) or request.n is not UNSET or request.response_format is not UNSET:
        return False
    if request.tools is not UNSET and request.tool_choice != "none":
        return False
    if request.extensions.raw is not UNSET:
        return False  # a client's own raw prompt has no template to continue in
    return all(_plain(message) for message in request.messages) and not _special(request.prefill)


def prompt_can_continue(request: PromptRequest, model: str) -> bool:
    """A raw prompt continues as it is; a templated one (the default) needs a known template, and
    text without special tokens."""
    if request.n is not UNSET or not isinstance(request.prompt, str):
        return False
    if request.extensions.raw is True:
        return True  # the client's own raw prompt: its special tokens are meant
    return has_template(model) and not _special(request.prompt) and not _special(request.prefill)


def _plain(message: Message) -> bool:
    return (
        isinstance(message.content, str)
        and message.role in ("system", "user", "assistant")
        and message.tool_calls is UNSET
        and not _special(message.content)
    )


def _special(text: object) -> bool:
    """`text` holds what a raw prompt would read as a special token (see the module's docstring)."""
    return isinstance(text, str) and _SPECIAL_TOKEN.search(text) is not None


def continued_chat(messages: list[Message], prefill: str) -> str:
    """The conversation in the Llama 3 template, ending inside the assistant turn after `prefill`;
    contents trimmed as the template trims them."""
    parts = [_BEGIN]
    for message in messages:
        parts.extend((_header(message.role), str(message.content).strip(), _END_OF_TURN))
    parts.extend((_header("assistant"), prefill.strip()))
    return "".join(parts)


def continued_prompt(request: PromptRequest, prefill: str) -> str:
    """A text completion's prompt followed by `prefill`, templated as Workers AI would have done."""
    assert isinstance(request.prompt, str)
    if request.extensions.raw is True:
        return request.prompt + prefill
    return "".join(
        (_BEGIN, _header("user"), request.prompt.strip(), _END_OF_TURN, _header("assistant"), prefill.strip())
    )


__all__ = ("chat_can_continue", "continued_chat", "continued_prompt", "has_template", "prompt_can_continue")
