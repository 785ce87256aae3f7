"""OpenAI Responses API wire shapes (`/v1/responses`): the request, its input items, the Response
object, its output items and usage, decoded and encoded with msgspec.

The request body is decoded strictly: every documented top-level field is declared so its type is
checked, and an undeclared one is refused as OpenAI refuses it. `input` items are decoded one by one
(`decode_items`), by their `type` (a message may omit it), so an error names the item (`input[3]`);
inside items unknown keys are ignored, because the Agents SDK and Codex-style clients replay earlier
output items verbatim (`id`, `status`, `phase`, `annotations`, `logprobs`...).

Response objects carry every key the official SDKs and the Vercel AI SDK's schemas require, as `null`,
`[]` or `{}` when there is nothing to say.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

FunctionName = Annotated[str, Meta(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]

# Request: content parts (tagged by `type`)


class InputText(msgspec.Struct, tag="input_text", tag_field="type", frozen=True):
    text: str


class InputImage(msgspec.Struct, tag="input_image", tag_field="type", frozen=True, kw_only=True):
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["low", "high", "auto", "original"] | None = None


class InputFile(msgspec.Struct, tag="input_file", tag_field="type", frozen=True, kw_only=True):
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None


class OutputText(msgspec.Struct, tag="output_text", tag_field="type", frozen=True):
    text: str


class Refusal(msgspec.Struct, tag="refusal", tag_field="type", frozen=True):
    refusal: str


ContentPart = InputText | InputImage | InputFile | OutputText | Refusal
ToolOutputPart = InputText | InputImage | InputFile


# Request: input items. Decoded by `decode_items`, which picks the Struct from `type`.


class MessageItem(msgspec.Struct, frozen=True, kw_only=True):
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class FunctionCallItem(msgspec.Struct, frozen=True, kw_only=True):
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(msgspec.Struct, frozen=True, kw_only=True):
    call_id: str
    output: str | list[ToolOutputPart]
    id: str | None = None
    status: str | None = None


class SummaryText(msgspec.Struct, tag="summary_text", tag_field="type", frozen=True):
    text: str


class ReasoningText(msgspec.Struct, tag="reasoning_text", tag_field="type", frozen=True):
    text: str


class ReasoningItem(msgspec.Struct, frozen=True, kw_only=True):
    id: str | None = None
    summary: list[SummaryText] = msgspec.field(default_factory=list)
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None
    status: str | None = None


class ItemReference(msgspec.Struct, frozen=True):
    id: str


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem | ItemReference
ITEM_TYPES: Final[dict[str, type[InputItem]]] = {
    "message": MessageItem,
    "function_call": FunctionCallItem,
    "function_call_output": FunctionCallOutputItem,
    "reasoning": ReasoningItem,
    "item_reference": ItemReference,
}


# Request: tools, tool choice, text format, reasoning


class FunctionToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A function tool in the Responses (flat) shape."""

    type: Literal["function"]
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormatText(msgspec.Struct, tag="text", tag_field="type", frozen=True):
    pass


class TextFormatJSONObject(msgspec.Struct, tag="json_object", tag_field="type", frozen=True):
    pass


class TextFormatJSONSchema(msgspec.Struct, tag="json_schema", tag_field="type", frozen=True, kw_only=True):
    name: FunctionName
    schema: dict[str, Any]
    description: str | None = None
    strict: bool | None = None


TextFormatSpec = TextFormatText | TextFormatJSONObject | TextFormatJSONSchema


class TextConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: TextFormatSpec | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


class ReasoningConfig(msgspec.Struct, frozen=True, kw_only=True):
    effort: Effort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class StreamOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    include_obfuscation: bool | None = None


Temperature = Annotated[float, Meta(ge=0, le=2)]
TopP = Annotated[float, Meta(ge=0, le=1)]
Metadata = Annotated[
    dict[Annotated[str, Meta(max_length=64)], Annotated[str, Meta(max_length=512)]], Meta(max_length=16)
]


class ResponsesRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /v1/responses`. `input` items stay raw here and go through `decode_items`."""

    model: str
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    """Raw: a function tool becomes a `FunctionToolSpec`; hosted tools are refused by name."""
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_tool_calls: Annotated[int, Meta(ge=1)] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    reasoning: ReasoningConfig | None = None
    truncation: Literal["auto", "disabled"] | None = None
    metadata: Metadata | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    service_tier: str | None = None
    include: list[str] | None = None
    background: bool | None = None
    prompt: dict[str, Any] | None = None
    context_management: list[dict[str, Any]] | None = None
    # Extensions (the SDK's `extra_body`), understood by Workers AI and vLLM.
    top_k: int | None = None
    seed: int | None = None
    repetition_penalty: Annotated[float, Meta(ge=0, le=2)] | None = None


responses_request_decoder: Final = msgspec.json.Decoder(ResponsesRequest)


def decode_items(raw: list[dict[str, Any]], where: str = "input") -> list[InputItem]:
    """Each raw item as its Struct; a `msgspec.ValidationError` names the item (`$.input[3]...`)."""
    items: list[InputItem] = []
    for i, item in enumerate(raw):
        kind = item.get("type")
        if kind is None:  # an easy message has no `type`, nor has a bare `{"id": …}` reference
            kind = "message" if "role" in item else "item_reference"
        cls = ITEM_TYPES.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise UnsupportedItemError(f"{where}[{i}]", str(kind))
        fields = {k: v for k, v in item.items() if k != "type"}
        try:
            items.append(msgspec.convert(fields, cls))
        except msgspec.ValidationError as exc:
            text = str(exc)
            if "- at `$" in text:
                text = text.replace("- at `$", f"- at `$.{where}[{i}]", 1)
            else:
                text = f"{text} - at `$.{where}[{i}]`"
            raise msgspec.ValidationError(text) from None
    return items


class UnsupportedItemError(Exception):
    """An input item of a type the gateway cannot serve (hosted tools' calls, computer use...)."""

    def __init__(self, where: str, kind: str) -> None:
        super().__init__(where, kind)
        self.where = where
        self.kind = kind


# Response: output items


class OutputTextPart(msgspec.Struct, tag="output_text", tag_field="type", kw_only=True):
    text: str
    annotations: list[dict[str, Any]] = msgspec.field(default_factory=list)
    logprobs: list[Any] = msgspec.field(default_factory=list)


class ReasoningTextPart(msgspec.Struct, tag="reasoning_text", tag_field="type"):
    text: str


class SummaryTextPart(msgspec.Struct, tag="summary_text", tag_field="type"):
    text: str


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputMessage(msgspec.Struct, tag="message", tag_field="type", kw_only=True):
    id: str
    status: ItemStatus
    role: Literal["assistant"] = "assistant"
    content: list[OutputTextPart] = msgspec.field(default_factory=list)


class OutputFunctionCall(msgspec.Struct, tag="function_call", tag_field="type", kw_only=True):
    id: str
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


class OutputReasoning(msgspec.Struct, tag="reasoning", tag_field="type", kw_only=True):
    id: str
    summary: list[SummaryTextPart] = msgspec.field(default_factory=list)
    content: list[ReasoningTextPart] | UnsetType = UNSET
    encrypted_content: None = None
    status: ItemStatus | UnsetType = UNSET


OutputItem = OutputMessage | OutputFunctionCall | OutputReasoning


# Response: the object


class InputTokensDetails(msgspec.Struct):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(msgspec.Struct):
    reasoning_tokens: int = 0


class ResponseUsage(msgspec.Struct, kw_only=True):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ResponseError(msgspec.Struct):
    code: str
    message: str


class IncompleteDetails(msgspec.Struct):
    reason: str


class ResponseTextFormat(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: str
    name: str | UnsetType = UNSET
    schema: dict[str, Any] | UnsetType = UNSET
    description: str | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class ResponseText(msgspec.Struct, kw_only=True):
    format: ResponseTextFormat
    verbosity: str = "medium"


class ResponseReasoning(msgspec.Struct, kw_only=True):
    effort: str | None = None
    summary: str | None = None


Status = Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]


class ResponseObject(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Status
    background: bool = False
    completed_at: int | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    model: str
    output: list[OutputItem] = msgspec.field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    prompt_cache_key: str | None = None
    reasoning: ResponseReasoning = msgspec.field(default_factory=ResponseReasoning)
    safety_identifier: str | None = None
    service_tier: str = "default"
    store: bool = True
    temperature: float = 1.0
    text: ResponseText
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = msgspec.field(default_factory=list)
    top_logprobs: int = 0
    top_p: float = 1.0
    truncation: str = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


class DeletedResponse(msgspec.Struct):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True


class InputItemList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


encoder: Final = msgspec.json.Encoder()
response_decoder: Final = msgspec.json.Decoder(ResponseObject)

__all__ = (
    "ITEM_TYPES",
    "ContentPart",
    "DeletedResponse",
    "FunctionCallItem",
    "FunctionCallOutputItem",
    "FunctionToolSpec",
    "IncompleteDetails",
    "InputFile",
    "InputImage",
    "InputItem",
    "InputItemList",
    "InputText",
    "InputTokensDetails",
    "ItemReference",
    "MessageItem",
    "OutputFunctionCall",
    "OutputItem",
    "OutputMessage",
    "OutputReasoning",
    "OutputText",
    "OutputTextPart",
    "OutputTokensDetails",
    "ReasoningItem",
    "ReasoningText",
    "ReasoningTextPart",
    "Refusal",
    "ResponseError",
    "ResponseObject",
    "ResponseReasoning",
    "ResponseText",
    "ResponseTextFormat",
    "ResponseUsage",
    "ResponsesRequest",
    "SummaryText",
    "SummaryTextPart",
    "TextFormatJSONObject",
    "TextFormatJSONSchema",
    "TextFormatText",
    "UnsupportedItemError",
    "decode_items",
    "encoder",
    "response_decoder",
)
