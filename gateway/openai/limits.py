"""Size limits on a decoded request (`http.max_messages`, `http.max_schema_depth`), as OpenAI's 400s.

The body's byte size is already bounded (`http.max_body_bytes`); these bound what a small body can
still make the gateway (and every upstream) do: thousands of messages, or a tool schema nested deep
enough to hurt any validator that recurses over it. Both checks run on the decoded Structs: counting
messages is a `len`, and the depth walk runs only over the schemas present and stops at the limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.errors import InvalidRequestError
from gateway.openai.requests import JSONSchemaFormat

if TYPE_CHECKING:
    from gateway.config import HTTPLimits
    from gateway.openai.requests import ChatCompletionRequest, CompletionRequest


def check_chat_request(payload: ChatCompletionRequest, limits: HTTPLimits) -> None:
    check_length(len(payload.messages), limits.max_messages, "messages")
    check_max_tokens(payload.max_tokens, limits.max_output_tokens, "max_tokens")
    check_max_tokens(payload.max_completion_tokens, limits.max_output_tokens, "max_completion_tokens")
    depth = limits.max_schema_depth
    if payload.tools is not None:
        for i, tool in enumerate(payload.tools):
            check_depth(tool.function.parameters, depth, f"tools[{i}].function.parameters")
    if payload.functions is not None:
        for i, function in enumerate(payload.functions):
            check_depth(function.parameters, depth, f"functions[{i}].parameters")
    if type(payload.response_format) is JSONSchemaFormat:
        check_depth(payload.response_format.json_schema.schema, depth, "response_format.json_schema.schema")


def check_completion_request(payload: CompletionRequest, limits: HTTPLimits) -> None:
    check_max_tokens(payload.max_tokens, limits.max_output_tokens, "max_tokens")
    if type(payload.prompt) is list:
        check_length(len(payload.prompt), limits.max_messages, "prompt")


def check_length(length: int, limit: int, param: str) -> None:
    if length > limit:
        raise InvalidRequestError(
            f"Invalid '{param}': array too long. Expected an array with maximum length {limit}, "
            f"but got an array with length {length} instead.",
            param=param,
            code="array_above_max_length",
        )


def check_max_tokens(value: int | None, limit: int, param: str) -> None:
    # JSON integers have no size limit (2**64, or thousands of digits, decode fine): bounded here,
    # before the value reaches a token reservation or an upstream.
    if value is not None and value > limit:
        # Python refuses to print integers of more than 4,300 digits; echo huge ones by their size.
        got = (
            str(value)
            if value < 10**20
            else f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
        )
        raise InvalidRequestError(
            f"Invalid '{param}': integer above maximum value. Expected a value <= {limit}, "
            f"but got {got} instead.",
            param=param,
            code="integer_above_max_value",
        )


def check_depth(schema: dict[str, Any] | None, limit: int, param: str) -> None:
    if schema is not None and nesting_exceeds(schema, limit):
        raise InvalidRequestError(
            f"Invalid schema for '{param}': nested deeper than this gateway's limit of {limit} levels.",
            param=param,
            code="schema_too_deep",
        )


def nesting_exceeds(value: object, limit: int) -> bool:
    """Whether JSON containers nest more than `limit` levels deep (`value` itself is level 1).

    Iterative, so a deep value cannot exhaust the interpreter's stack, and stops at the first path
    past the limit.
    """
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if type(node) is dict else node if type(node) is list else ()
        for child in children:
            if type(child) is dict or type(child) is list:
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


__all__ = (
    "check_chat_request",
    "check_completion_request",
    "check_depth",
    "check_length",
    "check_max_tokens",
    "nesting_exceeds",
)
