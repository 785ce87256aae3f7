"""The gateway's configuration: YAML, `${VAR}` / `${VAR:-default}` interpolation, strict validation.

`load_config(path)` returns a `LoadedConfig` or raises `ConfigError` listing every problem with its
YAML path (e.g. `backends.cloudflare.api_token: must not be empty (CLOUDFLARE_API_TOKEN is not set)`),
never a traceback. Interpolation happens on string values after YAML parsing, so a secret containing
`#` or `:` cannot change the document's structure.

What one value may be is said by its type (`Meta` bounds and patterns, `Literal` choices): msgspec
checks it, the JSON Schema (`gateway config-schema`) tells editors, and the reference page
(`python -m gateway.config_reference`) tells readers, all from the same declaration. A `Meta` may word
its refusal with `extra={"problem": ...}`. What needs more than one value (references between
sections, duplicates, `key` vs `key_sha256`, an empty value that `when_unconfigured` may excuse, a file
that must exist) is checked by hand below, after the types; so are the per-key and per-model limits,
the key id and digest and the Redis scheme, whose problems are reported together with those checks.
"""

from __future__ import annotations

import hashlib
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

import msgspec
import yaml
from msgspec import Meta

from adapters import BackendConfigs
from adapters import proxy as proxies
from adapters.mock import MockConfig
from adapters.secret import hide_secrets
from gateway.limits.base import Budget, Price

DEFAULT_CONFIG_PATH: Final = "config/gateway.yaml"
DEFAULT_MAX_TOKENS: Final = 4096
"""`max_tokens` sent upstream when the client sets none (Workers AI would otherwise stop at 256)."""
DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_S: Final = 30.0
DEFAULT_SHUTDOWN_GRACE_S: Final = 30.0
DEFAULT_MAX_MESSAGES: Final = 2048
DEFAULT_MAX_SCHEMA_DEPTH: Final = 32
DEFAULT_MAX_HEADER_BYTES: Final = 64 * 1024
DEFAULT_HEADER_TIMEOUT_S: Final = 10.0
DEFAULT_MAX_OUTPUT_TOKENS: Final = 1_048_576
DEFAULT_MODEL_TIMEOUT_S: Final = 120.0
DEFAULT_RESPONSES_TTL_S: Final = 30 * 24 * 3600
DEFAULT_MAX_STORED_BYTES: Final = 8 * 1024 * 1024
"""A model's total deadline until its answer begins, over every target tried."""

_VAR: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_KEY_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,63}")
_SHA256_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
REDIS_SCHEMES: Final = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
_MSGSPEC_PATH: Final = re.compile(r" - at `\$([^`]*)`$")
_PATH_STEP: Final = re.compile(r"[^.\[\]]+")
_REFUSED_VALUE: Final = re.compile(r"Expected `[^`]+` |Invalid enum value")
"""msgspec's words for a value of the right type that a `Meta` bound, pattern or `Literal` refuses."""


class Listen(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the gateway accepts connections; `gateway serve --host/--port` override it."""

    host: str = "127.0.0.1"
    """Address to bind: `127.0.0.1` for this machine only, `0.0.0.0` for every interface."""
    port: Annotated[int, Meta(ge=1, le=65535, extra={"problem": "must be between 1 and 65535"})] = 8080
    """TCP port."""


class HTTPLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Bounds on what a client may send, and how long shutdown waits; every one is optional."""

    max_body_bytes: Annotated[int, Meta(ge=1024)] = DEFAULT_MAX_BODY_BYTES
    """Largest request body accepted; larger ones get a 413 before they are read."""
    body_timeout_s: Annotated[float, Meta(gt=0)] = DEFAULT_BODY_TIMEOUT_S
    """A request body must arrive within this; a client trickling it slower gets a 408."""
    shutdown_grace_s: Annotated[float, Meta(ge=0)] = DEFAULT_SHUTDOWN_GRACE_S
    """After SIGTERM, requests and streams in flight get this long to finish; then they are cut off."""
    max_messages: Annotated[int, Meta(ge=1)] = DEFAULT_MAX_MESSAGES
    """Most `messages` in a chat request (and prompts in a completions request); more get a 400."""
    max_schema_depth: Annotated[int, Meta(ge=1)] = DEFAULT_MAX_SCHEMA_DEPTH
    """Deepest nesting of a tool's `parameters` (or a `response_format` JSON schema); deeper gets a 400."""
    max_header_bytes: Annotated[int, Meta(ge=1024)] = DEFAULT_MAX_HEADER_BYTES
    """Largest request head (request line and headers together); larger gets a 431 and the connection
    is closed."""
    header_timeout_s: Annotated[float, Meta(gt=0)] = DEFAULT_HEADER_TIMEOUT_S
    """A request head must arrive within this of its first byte (or of the connection opening); a
    client trickling it slower (slowloris) has its connection closed. Idle keep-alive connections are
    closed after uvicorn's 5 s."""
    max_output_tokens: Annotated[int, Meta(ge=1)] = DEFAULT_MAX_OUTPUT_TOKENS
    """Largest `max_tokens` / `max_completion_tokens` a request may ask for; more gets a 400."""


class Target(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One place a model can be served from: a backend and the model name it knows."""

    backend: str
    """A key of `backends`."""
    model: str
    """The model name the backend knows, e.g. `@cf/meta/llama-3.3-70b-instruct-fp8-fast`."""
    weight: Annotated[float, Meta(gt=0)] | None = None
    """Adjacent targets with a weight share load in this proportion (a random order per request); the
    group as a whole keeps its place in the list."""
    price: Price | None = None
    """What this target's answers cost, when it differs from the model's `price` (a vLLM target on
    your own GPUs may set 0)."""


class ModelConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A public model (the key of `models:` is the name clients send as `model`) and where it is served."""

    targets: list[Target]
    """Tried in order, at least one; what fails over and what does not is in the operations guide."""
    kind: Literal["chat", "embeddings"] = "chat"
    """What the model serves: `chat` (`/v1/chat/completions`, `/v1/completions`) or `embeddings`
    (`/v1/embeddings`). Calling a model on the other kind's endpoint is a 400 naming the right one."""
    aliases: list[str] = msgspec.field(default_factory=list)
    """Extra public names for this model (e.g. `gpt-4o-mini` for clients that cannot change the name)."""
    vision: bool = False
    """The targets accept image parts; otherwise images are refused with a 400."""
    json_mode: bool = True
    """The targets honour `response_format` (JSON mode): Workers AI's llama, hermes, qwen and gpt-oss
    families and vLLM do, hence the default. False: `response_format` (`json_object`, `json_schema`)
    is refused with a 400 naming the parameter and the model (or dropped, see `drop_unsupported`)
    instead of reaching a backend that would fail or ignore it."""
    drop_unsupported: bool = False
    """Parameters the gateway would refuse for this model (`logprobs`, `top_logprobs`, `logit_bias`,
    audio, image parts on a non-vision model, `prediction`, `web_search_options`, `response_format`
    without `json_mode`; for completions `suffix`, `logprobs`, `best_of` above `n`) are dropped
    instead of answered with a 400, and the gateway logs `unsupported_parameters_dropped` with the
    request id, the model and the parameters. Useful for a model migrated from OpenAI whose clients
    send such parameters by habit; leave it off where a silent difference would hurt."""
    default_max_tokens: Annotated[int, Meta(ge=1, extra={"problem": "must be at least 1"})] = (
        DEFAULT_MAX_TOKENS
    )
    """`max_tokens` sent upstream when the client sets none (Workers AI would otherwise stop at 256)."""
    timeout_s: Annotated[float, Meta(gt=0)] = DEFAULT_MODEL_TIMEOUT_S
    """Deadline for all attempts together, until a stream's first token or a whole answer is in hand.
    Keep each backend's `timeout_s` below it, or a hung first target uses it up."""
    rpm: int | None = None
    """Requests per minute to this model from all keys together (protects a backend); at least 1."""
    tpm: int | None = None
    """Prompt + completion tokens per minute to this model from all keys together; at least 1."""
    price: Price | None = None
    """USD per million input and output tokens (`{input_per_mtok, output_per_mtok}`), what budgets
    and the usage ledger charge for this model's answers; a target's own `price` wins. Unset: 0."""
    hedge_after_ms: Annotated[int, Meta(ge=1, extra={"problem": "must be at least 1"})] | None = None
    """Hedged first tokens: when a target has not produced its first event (a stream's first token,
    or a whole answer) this many milliseconds after it was called, the same request is also sent to
    the next eligible target and the first to answer wins; the other is closed at once. Off when
    unset (and `hedge_after` is unset). See the reliability guide."""
    hedge_after: Literal["p95"] | None = None
    """`p95`: hedge after the target's own measured 95th percentile time to first event (the last
    128 answers, at least 50 ms; no hedge until 20 answers were measured). Not with `hedge_after_ms`."""
    hedge_max_ratio: Annotated[float, Meta(ge=0, le=1)] = 0.1
    """At most this share of the model's requests (per gateway process) start a hedge, so extra
    upstream calls stay bounded; a token bucket with one hedge of slack and at most
    `100 * hedge_max_ratio` hedges saved up."""
    resume: bool = False
    """Mid-stream failover: when an answer's upstream fails after its text has begun (connection
    reset or cut, no event within the backend's `timeout_s`, an error event), continue the same
    answer on another target that can prefill (vLLM; Workers AI's Llama 3 models; the mock): the
    original request plus the text so far as a partial assistant turn, of which only the
    continuation is relayed. Non-streamed answers are then read from the upstream as a stream, so
    a cut keeps its text. Each continuation re-reads the prompt upstream. See the reliability guide."""
    resume_max: Annotated[int, Meta(ge=1, le=10)] = 2
    """With `resume`: at most this many continuations per answer; the next failure ends it with the
    in-band error it would have had without `resume`."""


class KeyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One client API key (`keys:` entry): who it is, what it may use, and how much."""

    id: str
    """Names the key in logs, metrics and rate-limit messages; the key itself never appears. 1-64
    characters: letters, digits and `. _ : @ / -`, unique among the keys."""
    key: str | None = None
    """The secret itself (usually `${VAR}`), or ..."""
    key_sha256: str | None = None
    """... its SHA-256 as 64 hex digits (`printf %s "$KEY"` piped into `sha256sum`), so the config
    need not hold the secret. Exactly one of `key` and `key_sha256`; every key distinct."""
    rpm: int | None = None
    """Requests per minute; at least 1, or leave it out for no limit."""
    tpm: int | None = None
    """Prompt + completion tokens per minute; at least 1, or leave it out for no limit."""
    max_concurrency: int | None = None
    """Requests in flight at once, across all replicas; at least 1, or leave it out for no limit."""
    budget: Budget | None = None
    """A spend cap, `{usd, period: day|week|month}` (UTC periods; weeks start on Monday), charged at the
    models' `price`."""
    models: list[str] = msgspec.field(default_factory=lambda: ["*"])
    """Public model names (or aliases) the key may use; `"*"` for all."""

    def __post_init__(self) -> None:
        hide_secrets(self, "key")  # never printed, logged or serialised (`adapters.secret`)


class AdminSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The admin API (`/admin/v1/...`), guarded by its own Bearer key (docs/control-plane.md)."""

    listen: Listen | None = None
    """A separate listener for the admin API, `/status` and `/metrics` (an internal address): they are
    then served there only, and the public listener answers 404 for them. Left out: the admin API is
    served on the public listener beside `/v1` (and `/metrics` stays there)."""
    key: str | None = None
    """The admin key itself (usually `${VAR}`), sent as `Authorization: Bearer <key>`, or ..."""
    key_sha256: str | None = None
    """... its SHA-256 as 64 hex digits (`gateway keys hash`). Exactly one of `key` and `key_sha256`."""

    def __post_init__(self) -> None:
        hide_secrets(self, "key")  # never printed, logged or serialised (`adapters.secret`)


LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]


class ResponsesSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Stored Responses (`/v1/responses` with `store`, the default): in Redis when `redis_url` is set."""

    store_ttl_s: Annotated[int, Meta(ge=1)] = DEFAULT_RESPONSES_TTL_S
    """How long a stored response (and the conversation it continues) can be read or continued."""
    max_stored_bytes: Annotated[int, Meta(ge=1024)] = DEFAULT_MAX_STORED_BYTES
    """Largest stored record (the response plus every input item before it); a larger one is not
    stored, and the response says `store: false`."""
    memory_budget_bytes: Annotated[int, Meta(ge=1024)] = 256 * 1024 * 1024
    """Without Redis: the in-process store's size; the oldest responses are forgotten beyond it."""


class UsageSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The usage ledger (`GET /admin/v1/usage`, `gateway usage`): counters per UTC day, key, team
    and model, in Redis when `redis_url` is set (docs/control-plane.md)."""

    retention_days: Annotated[int, Meta(ge=1, le=3660)] = 90
    """How many days a day's counters are kept after the day ends (Redis expires them then)."""
    flush_interval_s: Annotated[float, Meta(ge=0.05, le=60)] = 1.0
    """How often each process writes its counters to Redis, in one batch: the usage API's figures
    lag the other replicas' traffic by up to this."""


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole file: `backends` and `models` are required, everything else has a default."""

    listen: Listen = Listen()
    """Where to accept connections."""
    http: HTTPLimits = HTTPLimits()
    """Request size and time bounds, and the shutdown grace period."""
    backends: dict[str, BackendConfigs]
    """Upstream services by name (a non-empty mapping), each with a `kind`."""
    models: dict[str, ModelConfig]
    """Public model names (a non-empty mapping) and the targets that serve them."""
    log_level: Annotated[LogLevel, Meta(extra={"problem": "must be one of debug, info, warning, error"})] = (
        "info"
    )
    """Least severe log events written (upper case works too); `$GATEWAY_LOG_LEVEL` overrides it."""
    log_format: Annotated[LogFormat, Meta(extra={"problem": "must be one of auto, json, console"})] = "auto"
    """`auto` is console on a terminal and one JSON line per event otherwise; `$GATEWAY_LOG_FORMAT`
    overrides it."""
    keys: list[KeyConfig] | None = None
    """Client API keys, a non-empty list. Keys made through the admin API work beside them when
    `admin:` and `redis_url` are set; without this section and without those, the gateway is open to
    anyone who can reach it (and says so at start-up)."""
    redis_url: str = ""
    """Shared rate-limit store (`redis://`, `rediss://`, `unix://`, `redis+cluster://`,
    `rediss+cluster://`); empty: limits are kept in process (a single instance)."""
    rate_limit_failure_mode: Literal["open", "closed"] = "open"
    """When the store is unreachable: serve without limits (open) or refuse with a 503 (closed)."""
    responses: ResponsesSettings = ResponsesSettings()
    """Stored `/v1/responses`: how long they are kept and how large they may be (docs/responses.md)."""
    admin: AdminSettings | None = None
    """The admin API and its key; without this section there is no admin API (docs/control-plane.md)."""
    usage: UsageSettings = UsageSettings()
    """The usage ledger: how long its counters are kept and how often they are written."""

    def __post_init__(self) -> None:
        hide_secrets(self, "redis_url")  # it may carry a password

    @property
    def key_ids(self) -> frozenset[str]:
        """The ids of the `keys:` entries (an API-made key may not have one of them)."""
        return frozenset(entry.id for entry in self.keys or [])


class LoadedConfig(msgspec.Struct, frozen=True):
    settings: Settings
    notices: list[str]
    """Warnings to log once at start-up (e.g. a backend replaced by the mock for lack of credentials)."""


class ConfigError(Exception):
    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s)"]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


def default_config_path() -> str:
    return os.environ.get("GATEWAY_CONFIG") or DEFAULT_CONFIG_PATH


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"cannot read the file: {exc.strerror or exc}"]) from None
    return parse_config(text, source=source, environ=os.environ if environ is None else environ)


def parse_config(text: str, *, source: str = "<config>", environ: Mapping[str, str]) -> LoadedConfig:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        hint = " (inside {...} or [...], quote values that use ${VAR})" if "${" in text else ""
        raise ConfigError(source, [f"{where}invalid YAML: {problem}{hint}"]) from None
    if raw is None:
        raw = {}
    unset: dict[str, list[str]] = {}
    raw = _interpolate(raw, "", environ, unset)
    problems: list[str] = []
    settings = _validate(raw, problems, unset)
    if settings is not None:
        _check_proxies(settings, environ, problems)
    if settings is None or problems:
        raise ConfigError(source, problems)
    return _resolve_unconfigured(settings, source, unset)


def _interpolate(value: Any, path: str, environ: Mapping[str, str], unset: dict[str, list[str]]) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = environ.get(name)
            if found:
                return found
            if default is not None:
                return default
            unset.setdefault(path, []).append(name)
            return ""

        return _VAR.sub(replace, value)
    if isinstance(value, dict):
        return {key: _interpolate(item, _join(path, str(key)), environ, unset) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, f"{path}[{i}]", environ, unset) for i, item in enumerate(value)]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _validate(raw: Any, problems: list[str], unset: dict[str, list[str]]) -> Settings | None:
    """Settings from the interpolated YAML, or None when its shape is wrong; problems go to `problems`.

    A value refused by a bound that words its own problem (`Meta(extra={"problem": ...})`, on fields
    with a default) is reported and left out, so the checks across values still run and the file's
    problems are listed together, as when those bounds were checked by hand.
    """
    if not isinstance(raw, dict):
        problems.append("the top level must be a mapping of keys (listen, backends, models, ...)")
        return None
    if isinstance(raw.get("log_level"), str):
        raw = {**raw, "log_level": raw["log_level"].lower()}
    fields = {field.encode_name: field for field in msgspec.structs.fields(Settings)}
    shaped = True
    for key in raw:
        if key not in fields:
            problems.append(f"{key}: unknown key (known keys: {', '.join(sorted(fields))})")
            shaped = False
    clean: dict[str, Any] = {}
    for key, field in fields.items():
        if key not in raw:
            if field.required:
                problems.append(f"{key}: missing required section")
                shaped = False
            continue
        value = raw[key]
        if key in ("backends", "models"):
            if not isinstance(value, dict) or not value:
                problems.append(f"{key}: must be a non-empty mapping of names to definitions")
                shaped = False
                continue
            entry_type = BackendConfigs if key == "backends" else ModelConfig
            entries = {
                name: _convert(e, entry_type, f"{key}.{name}", problems, unset) for name, e in value.items()
            }
            shaped &= all(entry is not _MISSHAPEN for entry in entries.values())
            clean[key] = entries
        elif key == "keys":
            if not isinstance(value, list) or not value:
                problems.append("keys: must be a non-empty list of keys (remove the section to run open)")
                shaped = False
                continue
            items = [
                _convert(entry, KeyConfig, f"keys[{i}]", problems, unset) for i, entry in enumerate(value)
            ]
            shaped &= all(item is not _MISSHAPEN for item in items)
            clean[key] = items
        else:
            converted = _convert(value, field.type, key, problems, unset)
            shaped &= converted is not _MISSHAPEN
            if converted is not _LEFT_OUT:
                clean[key] = converted
    if not shaped:
        return None
    settings = msgspec.convert(clean, Settings, strict=False)
    _check_references(settings, problems, unset)
    _check_keys_and_limits(settings, problems, unset)
    return settings


_MISSHAPEN: Final = object()
"""`_convert`'s answer for a value of the wrong shape (type, unknown or missing key, other bounds)."""
_LEFT_OUT: Final = object()
"""`_convert`'s answer for a whole value refused by a worded bound: leave it out, the default applies."""


def _convert(value: Any, type_: Any, path: str, problems: list[str], unset: dict[str, list[str]]) -> Any:
    """`value` checked against `type_`: the raw value to build the settings from, less the values refused
    by worded bounds (each reported), or `_MISSHAPEN` (reported too)."""
    while True:
        try:
            msgspec.convert(value, type_, strict=False)
            return value
        except msgspec.ValidationError as exc:
            message, where = _split_msgspec_error(str(exc))
            declared = _declared_problem(type_, where) if _REFUSED_VALUE.match(message) else None
            full = _join(path, where) if where else path
            problems.append(f"{full}: {declared or message}{_unset_hint(full, unset)}")
            if declared is None:
                return _MISSHAPEN
            if not where:
                return _LEFT_OUT
            value = _without(value, _PATH_STEP.findall(where))
            if value is _MISSHAPEN:
                return _MISSHAPEN


def _without(value: Any, steps: list[str]) -> Any:
    """A copy of `value` without the mapping key at the end of `steps`, or `_MISSHAPEN` if there is none."""
    head, rest = steps[0], steps[1:]
    if isinstance(value, dict) and head in value:
        if not rest:
            return {key: item for key, item in value.items() if key != head}
        inner = _without(value[head], rest)
        return _MISSHAPEN if inner is _MISSHAPEN else {**value, head: inner}
    if isinstance(value, list) and head.isdigit() and int(head) < len(value) and rest:
        inner = _without(value[int(head)], rest)
        return _MISSHAPEN if inner is _MISSHAPEN else [*value[: int(head)], inner, *value[int(head) + 1 :]]
    return _MISSHAPEN


def _split_msgspec_error(text: str) -> tuple[str, str]:
    match = _MSGSPEC_PATH.search(text)
    where = match.group(1).lstrip(".") if match else ""
    message = text[: match.start()] if match else text
    unknown = re.match(r"Object contains unknown field `([^`]+)`", message)
    if unknown:
        return "unknown key", _join(where, unknown.group(1))
    message = re.sub(r"Object missing required field `([^`]+)`", r"missing required key '\1'", message)
    if message.startswith("Invalid value") and where.endswith("kind"):
        message += " (known kinds: " + ", ".join(_backend_kinds()) + ")"
    return message, where


def _declared_problem(type_: Any, where: str) -> str | None:
    """How the `Meta` of the value at `where` (a msgspec path below `type_`) words its refusal, if it does."""
    for step in _PATH_STEP.findall(where):
        type_ = _child_type(type_, step)
        if type_ is None:
            return None
    for meta in _metas(type_):
        if meta.extra and "problem" in meta.extra:
            return str(meta.extra["problem"])
    return None


def _child_type(type_: Any, step: str) -> Any:
    for member in _members(type_):
        origin = typing.get_origin(member)
        if step.isdigit() and origin is list:
            return typing.get_args(member)[0]
        if origin is dict:
            return typing.get_args(member)[1]
        if isinstance(member, type) and issubclass(member, msgspec.Struct):
            found = typing.get_type_hints(member, include_extras=True).get(step)
            if found is not None:
                return found
    return None


def _members(type_: Any) -> list[Any]:
    """`type_` without its `Annotated` layer, split into the members of a union."""
    if typing.get_origin(type_) is Annotated:
        type_ = typing.get_args(type_)[0]
    if isinstance(type_, types.UnionType) or typing.get_origin(type_) is typing.Union:
        return [m for arg in typing.get_args(type_) for m in _members(arg)]
    return [type_]


def _metas(type_: Any) -> list[Meta]:
    if typing.get_origin(type_) is Annotated:
        return [arg for arg in typing.get_args(type_)[1:] if isinstance(arg, Meta)]
    if isinstance(type_, types.UnionType) or typing.get_origin(type_) is typing.Union:
        return [meta for arg in typing.get_args(type_) for meta in _metas(arg)]
    return []


def _backend_kinds() -> list[str]:
    kinds = []
    for config_type in BackendConfigs.__args__:
        tag = msgspec.inspect.type_info(config_type).tag  # type: ignore[attr-defined]
        kinds.append(str(tag))
    return kinds


def _unset_hint(path: str, unset: dict[str, list[str]]) -> str:
    names = unset.get(path)
    return f" ({', '.join(names)} is not set)" if names else ""


def _check_references(settings: Settings, problems: list[str], unset: dict[str, list[str]]) -> None:
    for name, backend in settings.backends.items():
        for key, value in backend.required_values().items():
            if not value.strip() and backend.when_unconfigured is None:
                path = f"backends.{name}.{key}"
                problems.append(f"{path}: must not be empty{_unset_hint(path, unset)}")
        if backend.when_unconfigured is not None and backend.when_unconfigured not in settings.backends:
            problems.append(
                f"backends.{name}.when_unconfigured: '{backend.when_unconfigured}' is not a backend"
            )
        if backend.tls_ca_file is not None and not Path(backend.tls_ca_file).is_file():
            problems.append(f"backends.{name}.tls_ca_file: no such file: {backend.tls_ca_file}")
    public: dict[str, str] = {}
    for name, model in settings.models.items():
        if not model.targets:
            problems.append(f"models.{name}.targets: must list at least one target")
        for i, target in enumerate(model.targets):
            path = f"models.{name}.targets[{i}]"
            if target.backend not in settings.backends:
                known = ", ".join(sorted(settings.backends))
                problems.append(
                    f"{path}.backend: '{target.backend}' is not defined under backends (defined: {known})"
                )
            if not target.model.strip():
                problems.append(f"{path}.model: must not be empty{_unset_hint(path + '.model', unset)}")
        if model.hedge_after_ms is not None and model.hedge_after is not None:
            problems.append(f"models.{name}: set one of hedge_after_ms and hedge_after, not both")
        for public_name, path in [(name, f"models.{name}")] + [
            (alias, f"models.{name}.aliases[{i}]") for i, alias in enumerate(model.aliases)
        ]:
            if not public_name.strip():
                problems.append(f"{path}: a public model name must not be empty")
            elif public_name in public:
                problems.append(
                    f"{path}: '{public_name}' is already the name or an alias of {public[public_name]}"
                )
            else:
                public[public_name] = f"models.{name}"


def _check_proxies(settings: Settings, environ: Mapping[str, str], problems: list[str]) -> None:
    """Each backend's `proxy:`, and the environment's proxies when a backend uses them. Messages name
    the setting or variable, never its value (a proxy URL may carry a password)."""
    for name, backend in settings.backends.items():
        problem = proxies.check(backend.proxy)
        if problem is not None:
            problems.append(f"backends.{name}.proxy: {problem}")
    if any(backend.proxy is None for backend in settings.backends.values()):
        try:
            proxies.ProxyPolicy.from_environment(environ)
        except proxies.ProxyURLError as exc:
            problems.append(f"environment: {exc}")


def _check_keys_and_limits(settings: Settings, problems: list[str], unset: dict[str, list[str]]) -> None:
    public = {alias for name, model in settings.models.items() for alias in (name, *model.aliases)}
    for name, model in settings.models.items():
        for field in ("rpm", "tpm"):
            value = getattr(model, field)
            if value is not None and value < 1:
                problems.append(f"models.{name}.{field}: must be at least 1")
    ids: dict[str, str] = {}
    digests: dict[str, str] = {}
    for i, entry in enumerate(settings.keys or []):
        path = f"keys[{i}]"
        if not _KEY_ID.fullmatch(entry.id):
            problems.append(
                f"{path}.id: '{entry.id}' must be 1-64 characters: letters, digits and . _ : @ / - "
                "(it names the key in logs, metrics and Redis)"
            )
        elif entry.id in ids:
            problems.append(f"{path}.id: '{entry.id}' is already the id of {ids[entry.id]}")
        else:
            ids[entry.id] = path
        digest = key_digest(entry)
        if entry.key is not None and entry.key_sha256 is not None:
            problems.append(f"{path}: set either key or key_sha256, not both")
        elif entry.key is None and entry.key_sha256 is None:
            problems.append(f"{path}: missing key or key_sha256")
        elif entry.key is not None and not entry.key.strip():
            problems.append(f"{path}.key: must not be empty{_unset_hint(path + '.key', unset)}")
        elif entry.key is not None and entry.key != entry.key.strip():
            problems.append(f"{path}.key: must not start or end with whitespace")
        elif entry.key_sha256 is not None and not _SHA256_HEX.fullmatch(entry.key_sha256):
            problems.append(
                f"{path}.key_sha256: must be 64 hex digits (the SHA-256 of the key, e.g. "
                f'`printf %s "$KEY" | sha256sum`){_unset_hint(path + ".key_sha256", unset)}'
            )
        elif digest in digests:
            problems.append(f"{path}: the same key as {digests[digest]}; every key must be distinct")
        else:
            digests[digest] = path
        for field in ("rpm", "tpm", "max_concurrency"):
            value = getattr(entry, field)
            if value is not None and value < 1:
                problems.append(f"{path}.{field}: must be at least 1 (leave it out for no limit)")
        if not entry.models:
            problems.append(f'{path}.models: must list at least one model name, or "*" for all')
        for j, allowed in enumerate(entry.models):
            if allowed != "*" and allowed not in public:
                problems.append(
                    f"{path}.models[{j}]: '{allowed}' is not a model name or alias under models "
                    f"(defined: {', '.join(sorted(public))})"
                )
    _check_admin(settings, problems, unset)
    url = settings.redis_url.strip()
    if url:
        scheme = urlsplit(url).scheme
        if scheme not in REDIS_SCHEMES:
            problems.append(
                f"redis_url: the scheme must be one of {', '.join(s + '://' for s in REDIS_SCHEMES)} "
                "(or leave it empty for in-process limits)"
            )


def _check_admin(settings: Settings, problems: list[str], unset: dict[str, list[str]]) -> None:
    admin = settings.admin
    if admin is None:
        return
    if admin.key is not None and admin.key_sha256 is not None:
        problems.append("admin: set either key or key_sha256, not both")
    elif admin.key is None and admin.key_sha256 is None:
        problems.append("admin: missing key or key_sha256 (the admin API is never open)")
    elif admin.key is not None and not admin.key.strip():
        problems.append(f"admin.key: must not be empty{_unset_hint('admin.key', unset)}")
    elif admin.key_sha256 is not None and not _SHA256_HEX.fullmatch(admin.key_sha256):
        problems.append(
            "admin.key_sha256: must be 64 hex digits (the SHA-256 of the key: `gateway keys hash`)"
            f"{_unset_hint('admin.key_sha256', unset)}"
        )
    if admin.listen is not None and admin.listen.port == settings.listen.port:
        problems.append(
            f"admin.listen.port: {admin.listen.port} is the public listener's port; the admin "
            "listener needs its own (or leave admin.listen out to serve the admin API on the public one)"
        )


def key_digest(entry: KeyConfig | AdminSettings) -> str:
    """The key's SHA-256 as lower-case hex, from `key` or `key_sha256`."""
    if entry.key is not None:
        return hashlib.sha256(entry.key.encode()).hexdigest()
    return (entry.key_sha256 or "").lower()


def _resolve_unconfigured(settings: Settings, source: str, unset: dict[str, list[str]]) -> LoadedConfig:
    """Replace backends that lack required values by their `when_unconfigured` stand-in."""
    stand_ins: dict[str, str] = {}
    notices: list[str] = []
    for name, backend in settings.backends.items():
        empty = [key for key, value in backend.required_values().items() if not value.strip()]
        if not empty or backend.when_unconfigured is None:
            continue
        stand_in = backend.when_unconfigured
        stand_ins[name] = stand_in
        variables = sorted({var for key in empty for var in unset.get(f"backends.{name}.{key}", [])})
        missing = ", ".join(variables) if variables else ", ".join(empty)
        kind = "the built-in mock" if isinstance(settings.backends.get(stand_in), MockConfig) else "backend"
        notices.append(
            f"backend '{name}' is not configured ({missing} not set): its models are served by "
            f"{kind} '{stand_in}' instead. Set the missing values to use it."
        )
    if not stand_ins:
        return LoadedConfig(settings, notices)
    problems = [
        f"backends.{name}.when_unconfigured: '{stand_in}' is not configured either"
        for name, stand_in in stand_ins.items()
        if stand_in in stand_ins
    ]
    if problems:
        raise ConfigError(source, problems)
    models = {
        name: msgspec.structs.replace(
            model,
            targets=[
                msgspec.structs.replace(t, backend=stand_ins[t.backend]) if t.backend in stand_ins else t
                for t in model.targets
            ],
        )
        for name, model in settings.models.items()
    }
    backends = {name: b for name, b in settings.backends.items() if name not in stand_ins}
    return LoadedConfig(msgspec.structs.replace(settings, backends=backends, models=models), notices)


def secrets_of(settings: Settings) -> list[str]:
    """Every configured secret, for redaction and for tests that scan output for leaks."""
    secrets = [s for backend in settings.backends.values() for s in backend.secrets() if s]
    secrets += [entry.key for entry in settings.keys or [] if entry.key]
    if settings.admin is not None and settings.admin.key:
        secrets.append(settings.admin.key)
    secrets += [p for backend in settings.backends.values() if (p := proxies.proxy_password(backend.proxy))]
    password = urlsplit(settings.redis_url).password if settings.redis_url else None
    if password:
        secrets.append(password)
    return secrets


__all__ = (
    "DEFAULT_CONFIG_PATH",
    "REDIS_SCHEMES",
    "AdminSettings",
    "ConfigError",
    "HTTPLimits",
    "KeyConfig",
    "Listen",
    "LoadedConfig",
    "ModelConfig",
    "Settings",
    "Target",
    "UsageSettings",
    "default_config_path",
    "key_digest",
    "load_config",
    "parse_config",
    "secrets_of",
)
