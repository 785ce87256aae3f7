"""The kit every HTTP backend is built from: one upstream call and one table of its errors.

`Upstream` is what an HTTP adapter holds: its client, its secrets, its `ErrorTable` and the one call
(send, check the status, read an error body up to `MAX_ERROR_BODY`, then relay an SSE answer or read a
whole one). An adapter only builds the `httpx.Request` and says how to parse what comes back.

`ErrorTable` maps an upstream's error (HTTP status plus what its body said, as a `Fault`) onto the
gateway's terms: the first `Rule` whose conditions all hold wins, so a backend's error handling reads
as a table in its `errors.py` instead of an if-ladder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, Literal

import msgspec

from adapters.base import CollectedAnswer
from adapters.errors import UpstreamStatusError
from adapters.http import (
    MAX_ERROR_BODY,
    MAX_RESPONSE_BODY,
    build_client,
    fetch_whole,
    parse_retry_after,
    read_body,
    send,
)
from adapters.sse import SSEAnswer

if TYPE_CHECKING:
    import httpx

    from adapters.base import UpstreamResponse
    from adapters.canonical import Event
    from adapters.config import BackendConfig

MAX_MESSAGE_CHARS: Final = 2000
"""An upstream's error message is cut to this length before the client sees it."""


class Fault(msgspec.Struct, frozen=True):
    """What an upstream said in an error body, whichever of its shapes it used (each backend's
    `parse_error` reads its own)."""

    message: str
    code: int | None = None
    """The backend's own numeric error code (Cloudflare's `errors[0].code`)."""
    type: str | None = None
    """The backend's own error type (vLLM's `BadRequestError`, `NotFoundError`)."""
    param: str | None = None
    """The request field the upstream objected to, in its own words."""
    status: int | None = None
    """An HTTP status given inside the body (vLLM's in-band errors put it in `code`)."""


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """One row of an `ErrorTable`: when every condition given holds, the error is built from the rest.

    `text` is formatted with `where` (the backend, named), `detail` (": " + the upstream's message, or
    nothing), `message` and `status`.
    """

    # When (every condition that is set must hold; a row without conditions always matches)
    status: frozenset[int] | None = None
    codes: frozenset[int] | None = None
    types: frozenset[str] | None = None
    pattern: re.Pattern[str] | None = None
    """Searched in the upstream's message."""
    # Then
    status_code: int
    error_type: str
    code: str | None
    text: str
    mirror: frozenset[int] = frozenset()
    """Upstream statuses passed on as they are instead of `status_code` (401 and 403 for credentials)."""
    client_fault: bool = False
    quota: bool = False
    retry: bool = False
    """Pass the upstream's Retry-After on."""
    param: Literal["input", "upstream"] | None = None
    """`input`: the request's input field (`messages` or `prompt`); `upstream`: the field the upstream
    named, when it is a plain name."""

    def matches(self, status: int, fault: Fault) -> bool:
        return (
            (self.status is None or status in self.status)
            and (self.codes is None or fault.code in self.codes)
            and (self.types is None or fault.type in self.types)
            and (self.pattern is None or self.pattern.search(fault.message) is not None)
        )


class ErrorTable:
    """A backend's upstream errors as `UpstreamStatusError`s, by the first matching `Rule`."""

    __slots__ = ("_code_label", "_rules", "_tidy")

    def __init__(
        self,
        rules: Iterable[Rule],
        *,
        code_label: str | None = None,
        tidy: Callable[[str], str] | None = None,
    ) -> None:
        self._rules = tuple(rules)
        if not self._rules or any(
            getattr(self._rules[-1], name) is not None for name in ("status", "codes", "types", "pattern")
        ):
            raise ValueError("an error table ends with a row without conditions")
        self._code_label = code_label
        """How the backend's own codes are named in messages, e.g. `Workers AI error` (None: not shown)."""
        self._tidy = tidy
        """Cleans the upstream's message before it is matched and shown."""

    def error(
        self,
        backend: str,
        status: int,
        fault: Fault,
        retry_after: float | None = None,
        *,
        input_param: str = "messages",
    ) -> UpstreamStatusError:
        message = fault.message if self._tidy is None else self._tidy(fault.message)
        if message is not fault.message:
            fault = msgspec.structs.replace(fault, message=message)
        rule = next(rule for rule in self._rules if rule.matches(status, fault))
        where = f"backend '{backend}'"
        if self._code_label is not None and fault.code is not None:
            where += f" ({self._code_label} {fault.code})"
        detail = f": {message}" if message else ""
        param = None
        if rule.param == "input":
            param = input_param
        elif rule.param == "upstream":
            param = _plain_param(fault.param)
        return UpstreamStatusError(
            backend,
            rule.text.format(where=where, detail=detail, message=message, status=status),
            status_code=status if status in rule.mirror else rule.status_code,
            error_type=rule.error_type,
            code=rule.code,
            param=param,
            upstream_status=status,
            client_fault=rule.client_fault,
            quota=rule.quota,
            retry_after=retry_after if rule.retry else None,
        )


def when(
    rule: Rule,
    *,
    status: Iterable[int] | None = None,
    codes: Iterable[int] | None = None,
    types: Iterable[str] | None = None,
    pattern: str | None = None,
    text: str | None = None,
) -> Rule:
    """`rule`'s outcome under these conditions (a backend's row built from a common outcome below),
    with the backend's own `text` if given. `pattern` is searched case-insensitively."""
    return msgspec.structs.replace(
        rule,
        status=frozenset(status) if status is not None else None,
        codes=frozenset(codes) if codes is not None else None,
        types=frozenset(types) if types is not None else None,
        pattern=re.compile(pattern, re.IGNORECASE) if pattern is not None else None,
        text=rule.text if text is None else text,
    )


# Outcomes more than one backend's table uses; each backend says when (`when`).
CREDENTIALS_REJECTED: Final = Rule(
    status_code=401,
    mirror=frozenset({401, 403}),
    error_type="authentication_error",
    code="upstream_credentials_rejected",
    text="the gateway's upstream credentials were rejected by {where}{detail}",
)
MODEL_NOT_FOUND: Final = Rule(
    status_code=404,
    error_type="invalid_request_error",
    code="model_not_found",
    text="{where} does not serve the configured upstream model{detail}",
)
NO_SUCH_ROUTE: Final = Rule(
    status_code=502,
    error_type="upstream_error",
    code="upstream_not_found",
    text="{where} has no such route{detail}",
)
RATE_LIMITED: Final = Rule(
    status_code=429,
    error_type="rate_limit_exceeded",
    code="rate_limit_exceeded",
    text="{where} is rate limited{detail}",
    retry=True,
)
TIMED_OUT: Final = Rule(
    status_code=504, error_type="timeout", code="upstream_timeout", text="{where} timed out{detail}"
)
TOO_LARGE: Final = Rule(
    status_code=413,
    error_type="invalid_request_error",
    code="request_too_large",
    text="{where} found the request too large{detail}",
    client_fault=True,
)
REJECTED: Final = Rule(
    status_code=400,
    error_type="invalid_request_error",
    code=None,
    text="{where} rejected the request{detail}",
    client_fault=True,
)
FAILED: Final = Rule(
    status_code=502,
    error_type="upstream_error",
    code="upstream_error",
    text="{where} failed with HTTP {status}{detail}",
    retry=True,
)
"""The last row of every table: any other status."""


def _plain_param(param: str | None) -> str | None:
    """An upstream's field name (`temperature`, vLLM's `body.temperature`) when it is a plain name."""
    if param is None:
        return None
    name = param.removeprefix("body.")
    return name if name.replace("_", "").replace(".", "").isalnum() else None


ParseEvent = Callable[[bytes], Iterable["Event"]]
"""One `data:` payload of an SSE answer → its canonical events."""
ParseAnswer = Callable[[bytes], list["Event"]]
"""A whole answer's body → its canonical events."""


class Upstream:
    """One HTTP backend's side of the network: client, secrets, error table and the upstream call."""

    __slots__ = ("_errors", "_parse_error", "_secrets", "client", "name", "timeout_s")

    def __init__(
        self,
        name: str,
        config: BackendConfig,
        *,
        errors: ErrorTable,
        parse_error: Callable[[bytes], Fault],
    ) -> None:
        self.name = name
        self.timeout_s = config.timeout_s
        self.client = build_client(
            timeout_s=config.timeout_s,
            max_connections=config.max_concurrency,
            ca_file=config.tls_ca_file,
            proxy=config.proxy,
        )
        self._secrets = [secret for secret in config.secrets() if secret]
        self._errors = errors
        self._parse_error = parse_error

    async def aclose(self) -> None:
        await self.client.aclose()

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def call(
        self,
        request: httpx.Request,
        *,
        parse_event: ParseEvent,
        parse_answer: ParseAnswer,
        sse: bool = True,
        input_param: str = "messages",
    ) -> UpstreamResponse:
        """Send `request`; raise `UpstreamError` unless the answer began well.

        An answer with status >= 400 becomes the error table's `UpstreamStatusError`. An
        `text/event-stream` answer is relayed as it arrives when `sse` is true; any other body is read
        whole (up to `MAX_RESPONSE_BODY`) and parsed by `parse_answer`.
        """
        name, timeout_s = self.name, self.timeout_s
        response = await send(self.client, request, backend=name, timeout_s=timeout_s)
        try:
            if response.status_code >= 400:
                raw = await read_body(response, backend=name, timeout_s=timeout_s, limit=MAX_ERROR_BODY)
                raise self.status_error(response.status_code, raw, response.headers, input_param=input_param)
            if sse and "text/event-stream" in response.headers.get("content-type", ""):
                return SSEAnswer(response, backend=name, timeout_s=timeout_s, parse=parse_event)
            raw = await read_body(response, backend=name, timeout_s=timeout_s, limit=MAX_RESPONSE_BODY)
        except BaseException:
            await response.aclose()
            raise
        await response.aclose()
        return CollectedAnswer(parse_answer(raw))

    async def fetch(self, request: httpx.Request, *, input_param: str = "messages") -> bytes:
        """Send `request`; the whole body of a success (a non-streamed operation: embeddings), else the
        error table's error for its status."""

        def error(status: int, raw: bytes, headers: httpx.Headers) -> UpstreamStatusError:
            return self.status_error(status, raw, headers, input_param=input_param)

        return await fetch_whole(
            self.client, request, backend=self.name, timeout_s=self.timeout_s, status_error=error
        )

    def status_error(
        self, status: int, raw: bytes, headers: httpx.Headers | None = None, *, input_param: str = "messages"
    ) -> UpstreamStatusError:
        """The error for an upstream error body (secrets redacted, message bounded)."""
        fault = self._parse_error(raw)
        fault = msgspec.structs.replace(fault, message=self.redact(fault.message)[:MAX_MESSAGE_CHARS])
        retry_after = parse_retry_after(headers) if headers is not None else None
        return self._errors.error(self.name, status, fault, retry_after, input_param=input_param)


__all__ = (
    "CREDENTIALS_REJECTED",
    "FAILED",
    "MAX_MESSAGE_CHARS",
    "MODEL_NOT_FOUND",
    "NO_SUCH_ROUTE",
    "RATE_LIMITED",
    "REJECTED",
    "TIMED_OUT",
    "TOO_LARGE",
    "ErrorTable",
    "Fault",
    "ParseAnswer",
    "ParseEvent",
    "Rule",
    "Upstream",
    "when",
)
