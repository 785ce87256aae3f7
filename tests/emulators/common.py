"""Shared machinery for the upstream emulators (Workers AI, vLLM).

Pieces: request recording, the fault queue and fault syntax, ``[[emu:...]]`` message directives,
deterministic answer generation and token counting, SSE encoding, and a tiny raw-ASGI layer
(`EmulatorBase`) that both emulators build on. See README.md in this directory for the contract.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import random
import re
import threading
import time
import uuid
from array import array
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import msgspec

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

_ENCODER: Final = msgspec.json.Encoder()


def dumps(obj: Any) -> bytes:
    """Compact JSON, keys in insertion order, non-ASCII kept as raw UTF-8 (like the real servers)."""
    return _ENCODER.encode(obj)


def loads(data: bytes) -> Any:
    """Parse a JSON request body (stdlib parser: same acceptance as Python servers)."""
    return json.loads(data)


def new_hex(n: int = 32) -> str:
    return uuid.uuid4().hex[:n]


# --------------------------------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request as the emulator saw it. Mutated while the response is being sent."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw_body: bytes
    body: Any
    started_at: float
    finished: bool = False
    """The response was fully sent (last ASGI body message, even for a `cut` fault)."""
    disconnected: bool = False
    """The client went away before the response was complete."""
    status: int | None = None
    """HTTP status sent, or None if headers were never sent."""
    fault: str | None = None
    """The fault applied to this request (queued or from a directive), if any."""
    continued: str | None = None
    """A continuation (vLLM `continue_final_message`, Workers AI raw Llama 3 prompt, a completion
    prompt ending with the start of its own answer): the partial answer it carried."""

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
            "raw_body": self.raw_body.decode("utf-8", "replace"),
            "raw_body_b64": base64.b64encode(self.raw_body).decode("ascii"),
            "started_at": self.started_at,
            "finished": self.finished,
            "disconnected": self.disconnected,
            "status": self.status,
            "fault": self.fault,
            "continued": self.continued,
        }


# --------------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------------

COMMON_FAULT_KINDS: Final = frozenset(
    {
        "status",
        "hang",
        "delay",
        "slow",
        "cut",
        "abort",
        "stall",
        "malformed",
        "invalid-utf8",
        "huge",
        "first-delay",
    }
)
_NO_ARG_KINDS: Final = frozenset({"hang", "malformed", "invalid-utf8", "json-body", "unhealthy"})
_SECONDS_KINDS: Final = frozenset({"delay", "slow", "first-delay"})
_COUNT_KINDS: Final = frozenset({"cut", "abort", "stall", "stream-error", "huge"})


@dataclass(frozen=True)
class Fault:
    spec: str
    kind: str
    status: int = 0
    code: int | None = None
    retry_after: str | None = None
    seconds: float = 0.0
    count: int = 0


def parse_fault(spec: str, allowed: frozenset[str] | None = None) -> Fault:
    """Parse a fault string (see README). Raises ValueError on bad syntax or a kind not in `allowed`."""
    spec = spec.strip()
    parts = spec.split(":")
    kind = parts[0]
    if allowed is not None and kind not in allowed:
        raise ValueError(f"unknown fault {kind!r} (this emulator supports: {', '.join(sorted(allowed))})")
    args = parts[1:]
    if kind == "status":
        if not args:
            raise ValueError("status fault needs an HTTP status: status:<http>[:<code>][:retry-after=<s>]")
        try:
            status = int(args[0])
        except ValueError:
            raise ValueError(f"bad HTTP status in fault {spec!r}") from None
        if not 400 <= status <= 599:
            raise ValueError(f"status fault must be 4xx or 5xx, got {status}")
        code: int | None = None
        retry_after: str | None = None
        for extra in args[1:]:
            if extra.startswith("retry-after="):
                retry_after = extra.removeprefix("retry-after=")
                try:
                    float(retry_after)
                except ValueError:
                    raise ValueError(f"bad retry-after in fault {spec!r}") from None
            else:
                try:
                    code = int(extra)
                except ValueError:
                    raise ValueError(f"bad code {extra!r} in fault {spec!r}") from None
        return Fault(spec, kind, status=status, code=code, retry_after=retry_after)
    if kind in _NO_ARG_KINDS:
        if args:
            raise ValueError(f"fault {kind!r} takes no argument")
        return Fault(spec, kind)
    if kind in _SECONDS_KINDS:
        if len(args) != 1:
            raise ValueError(f"fault {kind!r} needs seconds: {kind}:<seconds>")
        try:
            seconds = float(args[0])
        except ValueError:
            raise ValueError(f"bad seconds in fault {spec!r}") from None
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError(f"bad seconds in fault {spec!r}")
        return Fault(spec, kind, seconds=seconds)
    if kind in _COUNT_KINDS:
        if len(args) != 1:
            raise ValueError(f"fault {kind!r} needs a count: {kind}:<n>")
        try:
            count = int(args[0])
        except ValueError:
            raise ValueError(f"bad count in fault {spec!r}") from None
        if count < 0:
            raise ValueError(f"negative count in fault {spec!r}")
        return Fault(spec, kind, count=count)
    raise ValueError(f"unknown fault {kind!r}")


class FaultQueue:
    """FIFO of faults for the next inference requests. Thread-safe (tests push from another thread)."""

    def __init__(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed
        self._lock = threading.Lock()
        self._items: list[list[Any]] = []  # [Fault, remaining] ; remaining -1 = until cleared

    def push(self, fault: str, times: int = 1) -> None:
        """Queue `fault` for the next `times` requests (`times=-1`: every request until `clear()`)."""
        parsed = parse_fault(fault, self.allowed)
        if times == 0 or times < -1:
            raise ValueError("times must be >= 1, or -1 for 'until cleared'")
        with self._lock:
            self._items.append([parsed, times])

    def pop(self) -> Fault | None:
        with self._lock:
            if not self._items:
                return None
            item = self._items[0]
            fault: Fault = item[0]
            if item[1] > 0:
                item[1] -= 1
                if item[1] == 0:
                    self._items.pop(0)
            return fault

    def has(self, kind: str) -> bool:
        with self._lock:
            return any(item[0].kind == kind for item in self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"fault": item[0].spec, "times": item[1]} for item in self._items]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


# --------------------------------------------------------------------------------------------------
# Directives and conversation analysis
# --------------------------------------------------------------------------------------------------

_DIRECTIVE_RE: Final = re.compile(r"\[\[emu:([a-z][a-z0-9_-]*)(?:=([^\]]*))?\]\]")


def parse_directives(text: str) -> dict[str, str]:
    """``[[emu:key=value]]`` / ``[[emu:flag]]`` occurrences → {key: value} (flags map to "")."""
    if "[[emu:" not in text:
        return {}
    return {m.group(1): (m.group(2) or "").strip() for m in _DIRECTIVE_RE.finditer(text)}


def strip_directives(text: str) -> str:
    return _DIRECTIVE_RE.sub("", text)


def content_text(content: Any) -> str:
    """Text of a message `content`: a string, or the text parts of a content-part array."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    texts.append(text)
            elif isinstance(part, str):
                texts.append(part)
        return "".join(texts)
    return ""


def count_image_parts(content: Any) -> int:
    if not isinstance(content, list):
        return 0
    return sum(1 for p in content if isinstance(p, dict) and p.get("type") in ("image_url", "image"))


def count_prompt_tokens(texts: Iterable[str]) -> int:
    """ceil(total characters / 4), at least 1."""
    total = sum(len(t) for t in texts)
    return max(1, math.ceil(total / 4))


def embedding_vector(model: str, item: str | list[int], dimensions: int, salt: str = "") -> list[float]:
    """A deterministic unit vector for one embeddings input, every value exactly a float32.

    Different inputs, models or salts (Workers AI's `pooling`) give unrelated vectors. Float32 values
    survive the gateway's base64 packing bit for bit, so tests can compare either encoding exactly.
    """
    key = f"{model}\0{salt}\0{item if isinstance(item, str) else dumps(item).decode()}".encode()
    raw = array("h", hashlib.shake_256(key).digest(2 * dimensions))
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return array("f", [v / norm for v in raw]).tolist()


@dataclass
class Conversation:
    last_role: str | None
    user_text: str
    """Text of the LAST user message (directives included)."""
    tool_results: list[str]
    """Contents of the trailing run of `tool` messages (non-empty only when the last message is a tool)."""
    directives: dict[str, str]
    prompt_tokens: int
    images: int = 0


def conversation_from_messages(messages: Sequence[Any]) -> Conversation:
    texts: list[str] = []
    user_text = ""
    last_role: str | None = None
    images = 0
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        text = content_text(msg.get("content"))
        texts.append(text)
        role = msg.get("role")
        last_role = role if isinstance(role, str) else None
        if role == "user":
            user_text = text
            images = count_image_parts(msg.get("content"))
    tool_results: list[str] = []
    for msg in reversed(messages):
        if not isinstance(msg, dict) or msg.get("role") != "tool":
            break
        tool_results.insert(0, content_text(msg.get("content")))
    return Conversation(
        last_role=last_role,
        user_text=user_text,
        tool_results=tool_results,
        directives=parse_directives(user_text),
        prompt_tokens=count_prompt_tokens(texts),
        images=images,
    )


def conversation_from_prompt(prompt: str) -> Conversation:
    return Conversation(
        last_role="user",
        user_text=prompt,
        tool_results=[],
        directives=parse_directives(prompt),
        prompt_tokens=count_prompt_tokens([prompt]),
    )


def last_user_text(messages: Any) -> str:
    """Best-effort text of the last user message of a possibly invalid body (for fault directives)."""
    if not isinstance(messages, list):
        return ""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return content_text(msg.get("content"))
    return ""


# --------------------------------------------------------------------------------------------------
# Deterministic text
# --------------------------------------------------------------------------------------------------

WORDS: Final = (
    "alpha",
    "bravo",
    "café",
    "delta",
    "écho",
    "foxtrot",
    "golf",
    "hôtel",
    "india",
    "juliett",
    "kilo",
    "lima",
    "mike",
    "🙂",
    "novembre",
    "oscar",
    "papa",
    "québec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "x-ray",
    "yankee",
    "zoulou",
    "日本語",
    "naïve",
    "über",
)
"""`[[emu:words=n]]` cycles through these (several multi-byte UTF-8 words on purpose)."""

REASONING_TEXT: Final = "Let me think about this."
"""Reasoning emitted by reasoning models: 5 tokens."""

_TOKEN_RE: Final = re.compile(r"\s*\n+|\s+(?!\S)|\s*\S+")
"""As Llama 3's tokenizer splits whitespace: line breaks are their own token ("\n\n"), and of a run
of spaces before a word all but the last are one token (" " then " word")."""


def tokenize(text: str) -> list[str]:
    """Split on word boundaries into " word" pieces; line breaks and extra spaces are their own
    tokens (and so is trailing whitespace).

    "".join(tokenize(text)) == text.
    """
    return _TOKEN_RE.findall(text)


def words_text(n: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(n))


PARAGRAPH_BREAKS: Final = ("\n\n", "  ")
"""`[[emu:paragraphs=n]]`: after every third word, a paragraph break, then a double space, in turn."""


def paragraphs_text(n: int) -> str:
    """`n` words as `words_text`, with a whitespace-only token after every third word (see
    `PARAGRAPH_BREAKS`): answers that can be cut right after a whitespace token."""
    parts: list[str] = []
    for i in range(n):
        if i:
            parts.append(PARAGRAPH_BREAKS[(i // 3 - 1) % 2] if i % 3 == 0 else " ")
        parts.append(WORDS[i % len(WORDS)])
    return "".join(parts)


def default_text(user_text: str) -> str:
    words = strip_directives(user_text).split()
    if not words:
        return "Hello from the emulator."
    return "Hello from the emulator. You said: " + " ".join(words[:3])


def answer_text(conv: Conversation) -> str:
    """The deterministic text answer for a conversation (before max_tokens / stop handling)."""
    if conv.last_role == "tool":
        return " ".join(f"The tool said: {c}" for c in conv.tool_results)
    for directive, text_of in (("words", words_text), ("paragraphs", paragraphs_text)):
        count = conv.directives.get(directive)
        if count is not None:
            try:
                return text_of(max(0, int(count)))
            except ValueError:
                pass
    return default_text(conv.user_text)


def huge_tokens(target_bytes: int, have_bytes: int) -> list[str]:
    """Padding tokens bringing an answer to about `target_bytes` (chunky tokens, at most ~64 of them)."""
    missing = target_bytes - have_bytes
    if missing <= 0:
        return []
    size = max(64, target_bytes // 64)
    filler = "lorem" * (size // 5 + 2)
    out: list[str] = []
    while missing > 0:
        n = min(size, missing)
        out.append(" " + filler[: max(0, n - 1)])
        missing -= n
    return out


def example_from_schema(schema: Any, name: str = "", depth: int = 0) -> Any:
    """A value conforming (roughly) to a JSON Schema; used for tool arguments and JSON mode.

    string → "London" if the property name contains "location"/"city", else the property name;
    number/integer → 1; boolean → true; array → [] (or minItems copies of an item); object → its
    `required` properties (all properties if none required); enum/const → the first value.
    """
    if not isinstance(schema, dict) or depth > 8:
        return name or "value"
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return example_from_schema((non_null or options)[0], name, depth + 1)
    typ = schema.get("type")
    if isinstance(typ, list):
        non_null_types = [t for t in typ if t != "null"]
        typ = non_null_types[0] if non_null_types else "null"
    if typ is None:
        typ = "object" if isinstance(schema.get("properties"), dict) else "string"
    if typ == "string":
        lowered = name.lower()
        if "location" in lowered or "city" in lowered:
            return "London"
        return name or "value"
    if typ in ("number", "integer"):
        return 1
    if typ == "boolean":
        return True
    if typ == "null":
        return None
    if typ == "array":
        min_items = schema.get("minItems")
        if isinstance(min_items, int) and min_items > 0:
            return [example_from_schema(schema.get("items"), name, depth + 1) for _ in range(min_items)]
        return []
    if typ == "object":
        props = schema.get("properties")
        if not isinstance(props, dict):
            return {}
        required = schema.get("required")
        keys = [k for k in required if isinstance(k, str)] if isinstance(required, list) and required else []
        if not keys:
            keys = [k for k in props if isinstance(k, str)]
        return {k: example_from_schema(props.get(k), k, depth + 1) for k in keys}
    return name or "value"


# --------------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolSpec:
    name: str
    parameters: Any


def tool_specs(tools: Any) -> list[ToolSpec]:
    """Accept OpenAI `{type:function,function:{name,parameters}}` and flat `{name,parameters}` tools."""
    out: list[ToolSpec] = []
    if not isinstance(tools, list):
        return out
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        assert isinstance(fn, dict)
        name = fn.get("name")
        if isinstance(name, str):
            out.append(ToolSpec(name, fn.get("parameters")))
    return out


def forced_tool_name(tool_choice: Any) -> str | None:
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return str(fn["name"])
        if isinstance(tool_choice.get("name"), str):
            return str(tool_choice["name"])
    return None


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: Any
    arguments_json: str

    def fragments(self) -> list[str]:
        """The arguments JSON split into streaming fragments (whitespace-bounded pieces)."""
        return tokenize(self.arguments_json) or [self.arguments_json]


@dataclass
class JsonMode:
    schema: Any = None
    """A bare JSON Schema, or None for json_object."""


@dataclass
class Answer:
    reasoning: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish: str = "stop"
    stop_reason: str | None = None
    prompt_tokens: int = 1
    completion_tokens: int = 0
    json_value: Any = None
    is_json: bool = False

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def reasoning_text(self) -> str:
        return "".join(self.reasoning)

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def build_answer(
    conv: Conversation,
    *,
    tools: Any = None,
    tool_choice: Any = None,
    max_tokens: int | None = None,
    reasoning: bool = False,
    json_mode: JsonMode | None = None,
    stop: Sequence[str] = (),
    huge: int | None = None,
    allow_parallel: bool = True,
    tool_id: Callable[[], str] = lambda: "chatcmpl-tool-" + new_hex(),
) -> Answer:
    """The deterministic answer to a conversation. Tool calls win over JSON mode and text."""
    ans = Answer(prompt_tokens=conv.prompt_tokens)
    budget = max_tokens if max_tokens is not None else 1 << 62
    if reasoning:
        r = tokenize(REASONING_TEXT)
        ans.reasoning = r[:budget]
        budget -= len(ans.reasoning)
        if len(ans.reasoning) < len(r):
            ans.finish = "length"
            ans.completion_tokens = len(ans.reasoning)
            return ans
    specs = tool_specs(tools)
    if specs and tool_choice != "none" and conv.last_role == "user":
        forced = forced_tool_name(tool_choice)
        chosen = [s for s in specs if s.name == forced][:1] if forced else [specs[0]]
        if not chosen:
            chosen = [specs[0]]
        if allow_parallel and "parallel" in conv.directives:
            chosen.append(specs[1] if len(specs) > 1 and not forced else chosen[0])
        for spec in chosen:
            args = example_from_schema(spec.parameters if spec.parameters is not None else {}, "", 0)
            if not isinstance(args, dict):
                args = {}
            args_json = json.dumps(args, ensure_ascii=False)
            ans.tool_calls.append(ToolCall(tool_id(), spec.name, args, args_json))
        ans.finish = "tool_calls"
        ans.completion_tokens = len(ans.reasoning) + sum(len(c.fragments()) + 1 for c in ans.tool_calls)
        return ans
    if json_mode is not None and conv.last_role != "tool":
        value = (
            example_from_schema(json_mode.schema)
            if json_mode.schema is not None
            else {"answer": answer_text(conv)}
        )
        ans.is_json = True
        ans.json_value = value
        ans.tokens = tokenize(json.dumps(value, ensure_ascii=False))
        ans.completion_tokens = len(ans.reasoning) + len(ans.tokens)
        return ans
    text = answer_text(conv)
    for s in stop:
        if not s:
            continue
        idx = text.find(s)
        if idx != -1:  # later matches are searched in the already-cut text, so the earliest wins
            text = text[:idx]
            ans.stop_reason = s
    tokens = tokenize(text)
    if len(tokens) > budget:
        tokens = tokens[: max(0, budget)]
        ans.finish = "length"
        ans.stop_reason = None
    if huge:
        tokens = tokens + huge_tokens(huge, len("".join(tokens).encode()))
    ans.tokens = tokens
    ans.completion_tokens = len(ans.reasoning) + len(tokens)
    return ans


def partial_tokens(partial: str) -> int:
    """Tokens of a partial answer (cut at event boundaries, so whole tokens of `tokenize`)."""
    return len(tokenize(partial))


def continue_answer(ans: Answer, partial: str) -> Answer | None:
    """`ans` from after `partial`, its own start: a continuation of the same deterministic answer.

    None when `partial` is not how `ans` begins (the caller refuses the request). The prefill is read
    as prompt: its tokens move from the completion to the prompt; reasoning is not repeated.
    """
    if not ans.text.startswith(partial) or ans.tool_calls:
        return None
    consumed = taken = 0
    while taken < len(ans.tokens) and consumed < len(partial):
        consumed += len(ans.tokens[taken])
        taken += 1
    rest = ans.tokens[taken:]
    if consumed > len(partial):  # cut inside a token: its end comes first
        rest.insert(0, "".join(ans.tokens[:taken])[len(partial) :])
    ans.tokens = rest
    ans.reasoning = []
    ans.prompt_tokens += taken
    ans.completion_tokens = len(rest)
    return ans


ANSWER_STARTS: Final = ("Hello", WORDS[0])
"""How every deterministic text answer begins (the default text, the `words` directive)."""


def find_continuation(prompt: str, answer_for: Callable[[str], Answer]) -> tuple[str, str] | None:
    """(original prompt, partial) when `prompt` ends with the start of the answer to what precedes
    it (a text completion continued after a cut); None otherwise. The first split that fits wins."""
    for cut in range(1, len(prompt)):
        if prompt.startswith(ANSWER_STARTS, cut) and answer_for(prompt[:cut]).text.startswith(prompt[cut:]):
            return prompt[:cut], prompt[cut:]
    return None


LLAMA_3_BEGIN: Final = "<|begin_of_text|>"
_LLAMA_3_TURN: Final = re.compile(r"<\|start_header_id\|>(system|user|assistant)<\|end_header_id\|>\n\n")


def parse_llama_3(prompt: str) -> tuple[list[dict[str, str]], str] | None:
    """A raw prompt in the Llama 3 chat template ending inside an assistant turn: (messages before
    it, the assistant's partial text); None if it is not one."""
    if not prompt.startswith(LLAMA_3_BEGIN):
        return None
    rest = prompt[len(LLAMA_3_BEGIN) :]
    messages: list[dict[str, str]] = []
    while True:
        match = _LLAMA_3_TURN.match(rest)
        if match is None:
            return None
        role, rest = match.group(1), rest[match.end() :]
        end = rest.find("<|eot_id|>")
        if end == -1:
            return (messages, rest) if role == "assistant" and "<|" not in rest else None
        messages.append({"role": role, "content": rest[:end]})
        rest = rest[end + len("<|eot_id|>") :]


# --------------------------------------------------------------------------------------------------
# SSE
# --------------------------------------------------------------------------------------------------

DONE_EVENT: Final = b"data: [DONE]\n\n"
_CONTINUATION_RE: Final = re.compile(rb"[\x80-\xbf]")
_PAD: Final = "abdefghijklmnoprstuvxyz1234567890" * 2


def sse(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


def split_point(data: bytes) -> int:
    """Where to cut an event in two: inside the first multi-byte UTF-8 character, else the middle."""
    m = _CONTINUATION_RE.search(data)
    return m.start() if m else len(data) // 2


def padding() -> str:
    """Workers AI's `p` field: opaque random-length padding."""
    return _PAD[: random.randint(1, len(_PAD))]


# --------------------------------------------------------------------------------------------------
# ASGI plumbing
# --------------------------------------------------------------------------------------------------

JSON_HEADERS: Final[Headers] = [(b"content-type", b"application/json")]


class EmulatorAbort(RuntimeError):
    """Raised inside the app to make the server drop the connection mid-body (`abort` fault)."""


@dataclass
class JsonReply:
    status: int
    body: bytes
    headers: Headers = field(default_factory=lambda: list(JSON_HEADERS))


@dataclass
class StreamReply:
    events: list[bytes]
    """Body events, each a complete ``data: ...\\n\\n`` byte string."""
    tail: list[bytes]
    """Terminal events (usage, ``[DONE]``), dropped by `cut`."""
    headers: Headers
    status: int = 200


Reply = JsonReply | StreamReply


def json_reply(status: int, obj: Any, headers: Headers | None = None) -> JsonReply:
    return JsonReply(status, dumps(obj), list(JSON_HEADERS) + (headers or []))


def empty_reply(status: int) -> JsonReply:
    return JsonReply(status, b"", [])


class Connection:
    """One HTTP exchange: sends ASGI messages and watches for the client going away."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, record: RecordedRequest, split: bool):
        self.scope = scope
        self._receive = receive
        self._send = send
        self.record = record
        self.split = split
        self._gone = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    def watch(self) -> None:
        """Start noticing client disconnects (call once the request body has been read)."""
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                if not self.record.finished:
                    self.record.disconnected = True
                self._gone.set()
                return

    @property
    def gone(self) -> bool:
        return self._gone.is_set()

    async def wait_gone(self, seconds: float | None) -> bool:
        """Sleep up to `seconds` (forever if None); True as soon as the client has gone."""
        if self._gone.is_set():
            return True
        try:
            await asyncio.wait_for(self._gone.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def start(self, status: int, headers: Headers) -> None:
        self.record.status = status
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def event(self, data: bytes) -> None:
        if self.split and len(data) > 1:
            cut = split_point(data)
            await self.body(data[:cut])
            await self.body(data[cut:])
        else:
            await self.body(data)

    async def finish(self, data: bytes = b"") -> None:
        self.record.finished = True
        await self._send({"type": "http.response.body", "body": data, "more_body": False})

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()


async def read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request body, and whether the client disconnected while sending it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), False


class BadDirective(ValueError):
    pass


class EmulatorBase:
    """Raw-ASGI base: lifespan, `/__emulator/*` control routes, recording, fault delivery."""

    fault_kinds: ClassVar[frozenset[str]] = COMMON_FAULT_KINDS

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.faults = FaultQueue(self.fault_kinds)
        self.token_delay_s = 0.0
        """Delay between streamed events (seconds)."""
        self.split_events = True
        """Send each SSE event as two body writes, cut inside a multi-byte character when there is one."""
        self.healthy = True
        self.record_requests = True
        """False: do not keep `requests` (long load benchmarks); faults and directives still work."""

    @property
    def app(self) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        """The ASGI 3 app: the emulator object itself (uvicorn mistakes bound methods for ASGI 2)."""
        return self

    def reset(self) -> None:
        """Forget recorded requests and queued faults, and mark the server healthy again.

        Configuration (`token_delay_s`, `split_events`, constructor options) is left alone.
        """
        self.requests.clear()
        self.faults.clear()
        self.healthy = True

    # -- ASGI entry --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        raw, disconnected = await read_body(receive)
        path: str = scope["path"]
        if path.startswith("/__emulator/"):
            await self._control(scope, send, raw)
            return
        headers: dict[str, str] = {}
        for k, v in scope.get("headers", []):
            name = k.decode("latin-1").lower()
            value = v.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        try:
            body = loads(raw) if raw else None
        except ValueError:
            body = None
        record = RecordedRequest(
            method=scope["method"],
            path=path,
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            raw_body=raw,
            body=body,
            started_at=time.time(),
            disconnected=disconnected,
        )
        if self.record_requests:
            self.requests.append(record)
        if disconnected:
            return
        conn = Connection(scope, receive, send, record, self.split_events)
        try:
            await self.dispatch(conn)
        finally:
            conn.close()

    async def dispatch(self, conn: Connection) -> None:
        raise NotImplementedError

    # -- control routes ------------------------------------------------------------------------------

    async def _control(self, scope: Scope, send: Send, raw: bytes) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        status = 200
        obj: dict[str, Any] = {"ok": True}
        try:
            data = loads(raw) if raw else {}
        except ValueError:
            data = None
        if path == "/__emulator/requests" and method == "GET":
            obj = {"requests": [r.to_json() for r in list(self.requests)]}
        elif path == "/__emulator/reset" and method == "POST":
            self.reset()
        elif path == "/__emulator/faults" and method == "GET":
            obj = {"pending": self.faults.pending()}
        elif path == "/__emulator/faults" and method == "DELETE":
            self.faults.clear()
        elif path == "/__emulator/faults" and method == "POST":
            if not isinstance(data, dict) or not isinstance(data.get("fault"), str):
                status, obj = 400, {"ok": False, "error": 'body must be {"fault": "...", "times": 1}'}
            else:
                try:
                    self.faults.push(data["fault"], int(data.get("times", 1)))
                    obj = {"ok": True, "pending": self.faults.pending()}
                except (ValueError, TypeError) as exc:
                    status, obj = 400, {"ok": False, "error": str(exc)}
        elif path == "/__emulator/config" and method == "POST":
            if not isinstance(data, dict):
                status, obj = 400, {"ok": False, "error": "body must be a JSON object"}
            else:
                if "token_delay_s" in data:
                    self.token_delay_s = float(data["token_delay_s"])
                if "healthy" in data:
                    self.healthy = bool(data["healthy"])
                if "split_events" in data:
                    self.split_events = bool(data["split_events"])
                if "record_requests" in data:
                    self.record_requests = bool(data["record_requests"])
                obj = {
                    "ok": True,
                    "token_delay_s": self.token_delay_s,
                    "healthy": self.healthy,
                    "split_events": self.split_events,
                    "record_requests": self.record_requests,
                }
        else:
            status, obj = 404, {"ok": False, "error": f"no control route {method} {path}"}
        body = dumps(obj)
        await send({"type": "http.response.start", "status": status, "headers": list(JSON_HEADERS)})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    # -- faults ------------------------------------------------------------------------------------------

    def take_fault(self, record: RecordedRequest, directive_text: str) -> Fault | None:
        """The queued fault for this request, else one named by a ``[[emu:fault=...]]`` directive."""
        fault = self.faults.pop()
        if fault is None and "[[emu:fault=" in directive_text:
            spec = parse_directives(directive_text).get("fault", "")
            try:
                fault = parse_fault(spec, self.fault_kinds)
            except ValueError as exc:
                raise BadDirective(str(exc)) from None
        if fault is not None:
            record.fault = fault.spec
        return fault

    async def bad_directive(self, conn: Connection, exc: BadDirective) -> None:
        await self.send_reply(conn, JsonReply(500, f"emulator: bad fault directive: {exc}".encode(), []))

    async def prelude(self, conn: Connection, fault: Fault | None) -> bool:
        """Apply `hang` and `delay`. True if the exchange is over (client gone, or hung until gone)."""
        if fault is None:
            return False
        if fault.kind == "hang":
            conn.watch()
            await conn.wait_gone(None)
            return True
        if fault.kind == "delay":
            conn.watch()
            return await conn.wait_gone(fault.seconds)
        return False

    async def send_reply(self, conn: Connection, reply: Reply, fault: Fault | None = None) -> None:
        """Send `reply`, applying the transport-level faults `slow`, `cut`, `stall` and `abort`."""
        kind = fault.kind if fault is not None else None
        if isinstance(reply, JsonReply):
            body = reply.body
            if kind == "cut":
                body = body[: max(1, len(body) // 2)]
            headers = [*reply.headers, (b"content-length", str(len(body)).encode())]
            if kind == "first-delay":  # a whole answer's first event is the answer itself
                assert fault is not None
                conn.watch()
                if await conn.wait_gone(fault.seconds):
                    return
            await conn.start(reply.status, headers)
            if kind == "stall":  # half the body, then nothing until the client gives up
                conn.watch()
                await conn.body(body[: len(body) // 2])
                await conn.wait_gone(None)
                return
            if kind == "abort":
                assert fault is not None
                await conn.body(body[: len(body) // 2])
                raise EmulatorAbort(f"emulator fault {fault.spec}: aborting mid-body")
            await conn.finish(body)
            return
        interval = fault.seconds if fault is not None and kind == "slow" else self.token_delay_s
        if kind in ("cut", "stall"):
            assert fault is not None
            events = reply.events[: fault.count]
        else:
            events = reply.events + reply.tail
        abort_after = fault.count if fault is not None and kind == "abort" else None
        conn.watch()
        await conn.start(reply.status, reply.headers)
        if kind == "first-delay":  # headers at once, then nothing until the first event
            assert fault is not None
            if await conn.wait_gone(fault.seconds):
                return
        for i, event in enumerate(events):
            if abort_after is not None and i >= abort_after:
                break
            if i and interval > 0:
                if await conn.wait_gone(interval):
                    return
            elif conn.gone:
                return
            await conn.event(event)
        if abort_after is not None:
            assert fault is not None
            await asyncio.sleep(0)
            raise EmulatorAbort(f"emulator fault {fault.spec}: aborting mid-stream")
        if kind == "stall":  # no more events, the connection kept open until the client gives up
            await conn.wait_gone(None)
            return
        await conn.finish()
