"""vLLM's OpenAI-compatible server (`POST {base_url}/chat/completions`, `POST {base_url}/completions`,
`POST {base_url}/embeddings`, `GET {root}/health`): the adapter, built from the kit (`adapters.upstream`).

Request narrowing is in `request.py`, answer parsing and vLLM's quirks in `answers.py`, its error
table in `errors.py`, its config block in `config.py`, embeddings in `embeddings.py`.
"""

from __future__ import annotations

import functools
from random import getrandbits
from typing import TYPE_CHECKING, Final

import msgspec
from msgspec import UNSET

from adapters.canonical import SESSION_HEADER
from adapters.errors import UpstreamStatusError
from adapters.http import Endpoint, build_client, transport_errors
from adapters.secret import reveal
from adapters.upstream import Upstream
from adapters.vllm import answers, embeddings
from adapters.vllm.errors import ERRORS, parse_error_body
from adapters.vllm.request import can_continue, completion_body, upstream_body

if TYPE_CHECKING:
    from adapters.base import UpstreamResponse
    from adapters.canonical import ChatRequest, EmbeddingRequest, Event, PromptRequest
    from adapters.errors import UpstreamError
    from adapters.upstream import ParseAnswer, ParseEvent
    from adapters.vllm.config import VLLMConfig

PROBE_TIMEOUT_S: Final = 5.0

_encoder: Final = msgspec.json.Encoder()

_Parsers = tuple["ParseEvent", "ParseAnswer"]


class VLLMAdapter:
    native: Final = frozenset({"n", "logit_bias"})

    def __init__(self, name: str, config: VLLMConfig) -> None:
        self.name = name
        self._upstream = Upstream(name, config, errors=ERRORS, parse_error=parse_error_body)
        headers = {"content-type": "application/json"}
        if config.api_key:
            headers["authorization"] = f"Bearer {reveal(config.api_key)}"
        base_url = config.base_url.rstrip("/")
        self._chat = Endpoint(f"{base_url}/chat/completions", headers)
        self._completions = Endpoint(f"{base_url}/completions", headers)
        self._embeddings = Endpoint(f"{base_url}/embeddings", headers)
        # Probes get their own small pool: a backend at max_concurrency must still answer its health check.
        self._probe_timeout_s = min(PROBE_TIMEOUT_S, config.timeout_s)
        self._probe = build_client(
            timeout_s=self._probe_timeout_s, max_connections=1, ca_file=config.tls_ca_file, proxy=config.proxy
        )
        self._health = Endpoint(f"{base_url.removesuffix('/v1')}/health", {})
        # The parsers of each answer kind, bound to this backend's name once.
        self._chat_one = self._bind(answers.chunk_events, answers.answer_events)
        self._chat_many = self._bind(answers.multi_chunk_events, answers.multi_answer_events)
        self._text_one = self._bind(answers.text_chunk_events, answers.text_answer_events)
        self._text_many = self._bind(answers.multi_text_chunk_events, answers.multi_text_answer_events)

    def _bind(self, *parsers: answers.Parse) -> _Parsers:
        chunk, answer = (functools.partial(_with_backend, parse, self.name) for parse in parsers)
        return chunk, answer

    async def aclose(self) -> None:
        await self._upstream.aclose()
        await self._probe.aclose()

    def can_continue(self, request: ChatRequest | PromptRequest, model: str) -> bool:
        return can_continue(request)

    async def chat(self, request: ChatRequest, model: str, *, request_id: str) -> UpstreamResponse:
        body = _encoder.encode(upstream_body(request, model, backend=self.name))
        parsers = self._chat_one if request.n is UNSET else self._chat_many
        # vLLM ignores the header; a router in front of it can pin the session to one replica with it.
        affinity = None if request.session_affinity is UNSET else request.session_affinity
        return await self._call(self._chat, body, request.stream, request_id, parsers, affinity=affinity)

    async def complete(self, request: PromptRequest, model: str, *, request_id: str) -> UpstreamResponse:
        body = _encoder.encode(completion_body(request, model, backend=self.name))
        single = request.n is UNSET and isinstance(request.prompt, str)
        parsers = self._text_one if single else self._text_many
        return await self._call(self._completions, body, request.stream, request_id, parsers, "prompt")

    async def embed(self, request: EmbeddingRequest, model: str, *, request_id: str) -> UpstreamResponse:
        return await embeddings.embed(self, request, model, request_id=request_id)

    async def post_embeddings(self, body: bytes, *, request_id: str) -> bytes:
        """POST to `/embeddings`; the whole answer of a success, else its mapped error."""
        return await self._upstream.fetch(
            self._embeddings.post(body, _request_id(request_id)), input_param="input"
        )

    def failed_answer(self, raw: bytes) -> UpstreamError:
        """The error of a 200 answer that is an error object."""
        return answers.in_band_error(raw, self.name)

    async def _call(
        self,
        endpoint: Endpoint,
        body: bytes,
        stream: bool,
        request_id: str,
        parsers: _Parsers,
        input_param: str = "messages",
        *,
        affinity: str | None = None,
    ) -> UpstreamResponse:
        headers = _request_id(request_id)
        if affinity is not None:
            headers[SESSION_HEADER] = affinity
        http_request = endpoint.post(body, headers)
        parse_event, parse_answer = parsers
        return await self._upstream.call(
            http_request,
            parse_event=parse_event,
            parse_answer=parse_answer,
            sse=stream,
            input_param=input_param,
        )

    async def check_health(self) -> None:
        with transport_errors(self.name, timeout_s=self._probe_timeout_s):
            response = await self._probe.send(self._health.get())
        if response.status_code != 200:
            raise UpstreamStatusError(
                self.name,
                f"backend '{self.name}' failed its health check (HTTP {response.status_code})",
                status_code=503,
                error_type="service_unavailable",
                code="upstream_unhealthy",
                upstream_status=response.status_code,
            )

    def redact(self, text: str) -> str:
        return self._upstream.redact(text)


def _request_id(request_id: str) -> dict[str, str]:
    # vLLM makes X-Request-Id its engine request id: clients may reuse theirs, so add a random part.
    return {"x-request-id": f"{request_id}-{getrandbits(32):08x}"}


def _with_backend(parse: answers.Parse, backend: str, payload: bytes) -> list[Event]:
    return parse(payload, backend)


def create(name: str, config: VLLMConfig) -> VLLMAdapter:
    return VLLMAdapter(name, config)


__all__ = ("VLLMAdapter", "create")
