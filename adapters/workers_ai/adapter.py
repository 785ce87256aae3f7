"""Cloudflare Workers AI (`POST {base_url}/accounts/{account_id}/ai/run/{model}`): the adapter, built
from the kit (`adapters.upstream`).

Request narrowing is in `request.py`, answer parsing (three `result` shapes, two stream formats) in
`answers.py`, the table of Cloudflare codes in `errors.py`, the config block (and Cloudflare AI Gateway)
in `config.py`, embeddings in `embeddings.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec

from adapters.canonical import SESSION_HEADER, PromptRequest
from adapters.http import Endpoint
from adapters.upstream import Upstream
from adapters.workers_ai import embeddings
from adapters.workers_ai.answers import StreamParser, envelope_result, result_events
from adapters.workers_ai.errors import ERRORS, parse_error_body
from adapters.workers_ai.request import continuation_body, prompt_body, upstream_body
from adapters.workers_ai.templates import chat_can_continue, prompt_can_continue

if TYPE_CHECKING:
    from adapters.base import UpstreamResponse
    from adapters.canonical import ChatRequest, EmbeddingRequest, Event
    from adapters.errors import UpstreamStatusError
    from adapters.workers_ai.config import WorkersAIConfig

_encoder: Final = msgspec.json.Encoder()


class WorkersAIAdapter:
    native: Final = frozenset[str]()
    """The gateway emulates `n` and `stop`, and refuses `logit_bias`: Workers AI takes none of them."""

    def __init__(self, name: str, config: WorkersAIConfig) -> None:
        self.name = name
        self._config = config
        self._upstream = Upstream(name, config, errors=ERRORS, parse_error=parse_error_body)
        self._run_url = config.run_url()
        self._headers = config.headers()
        self._endpoints: dict[str, Endpoint] = {}

    async def aclose(self) -> None:
        await self._upstream.aclose()

    def can_continue(self, request: ChatRequest | PromptRequest, model: str) -> bool:
        """Only as a raw prompt in the model's chat template: known for the Llama 3 family."""
        if isinstance(request, PromptRequest):
            return prompt_can_continue(request, model)
        return chat_can_continue(request, model)

    async def chat(self, request: ChatRequest, model: str, *, request_id: str) -> UpstreamResponse:
        # JSON mode does not stream on Workers AI: ask for the whole answer and replay it as events.
        stream = request.stream and request.response_format is msgspec.UNSET
        if request.prefill is not msgspec.UNSET:
            body = _encoder.encode(continuation_body(request, stream=stream, backend=self.name))
        else:
            body = _encoder.encode(upstream_body(request, stream=stream, backend=self.name))
        affinity = request.session_affinity
        return await self._run(model, body, None if affinity is msgspec.UNSET else {SESSION_HEADER: affinity})

    async def complete(self, request: PromptRequest, model: str, *, request_id: str) -> UpstreamResponse:
        if request.prefill is not msgspec.UNSET:
            body = continuation_body(request, stream=request.stream, backend=self.name)
            return await self._run(model, _encoder.encode(body))
        return await self._run(model, _encoder.encode(prompt_body(request, backend=self.name)))

    async def embed(self, request: EmbeddingRequest, model: str, *, request_id: str) -> UpstreamResponse:
        return await embeddings.embed(self, request, model, max_concurrency=self._config.max_concurrency)

    def _endpoint(self, model: str) -> Endpoint:
        endpoint = self._endpoints.get(model)
        if endpoint is None:
            # Model names come from the config only, so this cache is bounded by the config.
            endpoint = self._endpoints[model] = Endpoint(self._run_url + model, self._headers)
        return endpoint

    async def _run(self, model: str, body: bytes, headers: dict[str, str] | None = None) -> UpstreamResponse:
        """POST one body to the model's route; both input schemas answer in the same shapes.

        An SSE answer is streamed whatever was asked; a JSON body is read whole: asked for, or sent by
        models that ignore `stream` (gpt-oss, some Kimi builds).
        """
        return await self._upstream.call(
            self._endpoint(model).post(body, headers),
            parse_event=StreamParser(self.name).parse,
            parse_answer=self._answer_events,
        )

    async def post_whole(self, model: str, body: bytes) -> bytes:
        """POST one body to the model's route; the whole answer of a success, else its mapped error."""
        return await self._upstream.fetch(self._endpoint(model).post(body))

    def failed_answer(self, raw: bytes) -> UpstreamStatusError:
        """The error of a 200 answer whose envelope says `success: false`."""
        return self._upstream.status_error(502, raw)

    def redact(self, text: str) -> str:
        return self._upstream.redact(text)

    def _answer_events(self, raw: bytes) -> list[Event]:
        result = envelope_result(raw, self.name)
        if result is None:
            raise self.failed_answer(raw)
        return list(result_events(result, self.name))


def create(name: str, config: WorkersAIConfig) -> WorkersAIAdapter:
    return WorkersAIAdapter(name, config)


__all__ = ("WorkersAIAdapter", "create")
