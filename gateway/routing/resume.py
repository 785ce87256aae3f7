"""Mid-stream failover: an answer whose upstream fails after it has begun continues on another target.

For a model with `resume: true`, `open_answer` wraps the router's answer in a `Resumed`. When the
upstream fails after the failover boundary (reset, cut, no event within the backend's `timeout_s`,
an error event) and the failure is not the client's, the same request is sent again with the text
relayed so far as `prefill`, a partial assistant turn the backend continues (`adapters.base.Continues`):
vLLM's `continue_final_message`, Workers AI's raw prompt in the model's chat template, the mock. Only
the continuation is relayed, so the client sees one stream, one id, the text once.

- Targets: those of the model's order whose adapter can continue this request, the one that failed
  last (a cut is often one connection's fault, and the same target beats no answer). If nothing was
  relayed yet, the original request is sent again (a restart needs no prefill): any target will do.
- Tool calls are not continued: their deltas are held until the answer's finish and relayed then, so
  a call cut mid-way was never seen by the client and is generated again, whole, by the continuation.
- Reasoning is relayed as it comes; a continuation's reasoning is dropped (it continues the answer,
  and would think again only after a restart).
- Usage: the client is told the answer's own usage, as one call would have reported it. The
  continuation reads the prefill as prompt, so its `prompt_tokens` less the prefill's tokens is the
  original prompt, and the tokens the cut calls produced plus its `completion_tokens` are the
  answer's. A cut call's tokens are its own count when it reported usage, else its events (one per
  token in vLLM's and Workers AI's streams); the prefill's are its text events. After a restart
  (nothing was relayed), the discarded call's tokens are still added to the completion.
- A failure after the answer's finish (only its usage or end marker missing) ends it as complete,
  its usage estimated by the writer: a continuation would only write past its end.
- At most `resume_max` continuations per answer; after that, or when no target can continue (or all
  fail), the answer ends with the in-band error it would have had without `resume`.
- A non-streamed answer is read from the upstream as a stream and collected here, so that a failure
  mid-body keeps the text produced so far; it is returned whole, as before. If it cannot be
  continued, it is started again on the other targets, as without `resume` (nothing was sent yet).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final, cast

import msgspec
from msgspec import UNSET

from adapters.base import Continues
from adapters.canonical import (
    ChatRequest,
    EmbeddingRequest,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from adapters.errors import UpstreamError
from gateway.errors import RoutingError
from gateway.observability.logs import get_logger
from gateway.routing.affinity import session_of
from gateway.routing.router import from_upstream

if TYPE_CHECKING:
    from adapters.canonical import CanonicalRequest, Event, PromptRequest
    from gateway.context import RequestInfo
    from gateway.routing.router import Answer, ResolvedModel, Route, Router
    from gateway.translation.translate import Translated

log = get_logger("gateway.routing")
_replace: Final = msgspec.structs.replace


async def open_answer(
    router: Router, translated: Translated[CanonicalRequest], model: ResolvedModel, *, info: RequestInfo
) -> Answer | Resumed:
    """The router's answer; for a model with `resume: true`, one that survives its upstream."""
    request = translated.request
    if not model.config.resume or isinstance(request, EmbeddingRequest) or not _one_answer(request):
        return await router.open(translated, model, info=info)
    generated = cast("Translated[ChatRequest | PromptRequest]", translated)  # narrowed by `request`
    if request.stream:
        return Resumed(router, generated, model, await router.open(translated, model, info=info), info)
    streamed = _replace(generated, request=_replace(request, stream=True))
    resumed = Resumed(router, streamed, model, await router.open(streamed, model, info=info), info)
    try:
        resumed.collected = [event async for event in resumed.events()]
    except UpstreamError as exc:
        failed = resumed.route
        await resumed.aclose()
        order = [route for route in model.order(_session(translated, info)) if route is not failed]
        if exc.client_fault or not order:
            raise from_upstream(exc, resumed.attempts) from exc
        # Nothing was sent to the client: as without `resume`, the answer starts again elsewhere.
        attempts = resumed.attempts
        answer = await router.open(translated, model, info=info, order=order)
        answer.attempts += attempts
        info.attempts = answer.attempts
        return answer
    finally:
        await resumed.aclose()
    return resumed


def _session(translated: Translated[Any], info: RequestInfo) -> str | None:
    """The request's affinity session: a restart or continuation keeps to its ranking of targets."""
    return session_of(translated, info)[1]


class Resumed:
    """A streamed answer that continues on another target when its upstream fails mid-way."""

    __slots__ = ("_current", "_first", "_info", "_model", "_router", "_translated", "collected")

    def __init__(
        self,
        router: Router,
        translated: Translated[ChatRequest | PromptRequest],
        model: ResolvedModel,
        answer: Answer,
        info: RequestInfo,
    ) -> None:
        self._router = router
        self._translated = translated
        self._model = model
        self._first = answer
        self._current = answer
        self._info = info
        self.collected: list[Event] | None = None
        """A non-streamed answer's events, read whole (with its continuations) by `open_answer`."""

    @property
    def backend(self) -> str:
        """The backend that began the answer (for `x-gateway-backend`, sent before any resume)."""
        return self._first.backend

    @property
    def route(self) -> Route:
        """The target answering now (the last continuation's)."""
        return self._current.route

    @property
    def attempts(self) -> int:
        return self._info.attempts if self._info.resumes else self._first.attempts

    async def events(self) -> AsyncIterator[Event]:
        answer = self._current
        text: list[str] = []  # the text pieces relayed, one per token
        held: list[Event] = []  # the current call's tool-call deltas, relayed at its finish
        carried = 0  # tokens the cut calls produced (their completion tokens)
        prefilled = 0  # of those, the prefill's: the continuation reads them as prompt
        resumes = 0
        finished = False
        sent = ""  # whitespace the client has and the prefill had not: the continuation repeats it
        while True:
            produced = pieces = repeated = 0
            reported: Usage | None = None
            try:
                async for event in answer.events():
                    if isinstance(event, TextDelta):
                        if sent and event.text:
                            kept = _after_sent(event.text, sent)
                            if not kept:  # all of it repeats what the client has
                                sent = sent[len(event.text) :]
                                repeated += 1
                                continue
                            sent = ""
                            event = TextDelta(kept)
                        if event.text:  # role and keep-alive events carry no token
                            pieces += 1
                            text.append(event.text)
                        yield event
                    elif isinstance(event, ToolCallDelta):
                        produced += 1
                        held.append(event)
                    elif isinstance(event, ReasoningDelta):
                        produced += 1
                        if not resumes:
                            yield event
                    elif isinstance(event, Usage):
                        reported = event
                        yield _answer_usage(event, prefilled, carried - repeated) if resumes else event
                    elif isinstance(event, Finish):
                        for delta in held:
                            yield delta
                        held.clear()
                        finished = True
                        yield event
                    else:
                        yield event
                for delta in held:
                    yield delta
                return
            except UpstreamError as exc:
                if exc.client_fault:
                    raise
                if finished:
                    # Only the usage (or the end marker) was missing: the answer is whole, and the
                    # writer estimates its usage. A continuation would write past its end.
                    log.info("stream_ended_after_finish", backend=answer.route.backend, code=exc.code)
                    return
                held.clear()
                carried += (
                    reported.completion_tokens - repeated if reported is not None else produced + pieces
                )
                failed = answer.route
                if resumes >= self._model.config.resume_max:
                    self._router.count_resume(self._model, failed.backend, "exhausted")
                    raise
                await answer.aclose()
                resumes += 1
                relayed = "".join(text)
                # Chat templates trim each message (Llama 3's `| trim`), so a prefill's trailing
                # whitespace would be lost and generated again: it is sent without it, and the
                # continuation's repeat of it (what the client already has) is dropped.
                prefill = relayed.rstrip()
                sent = relayed[len(prefill) :]
                trimmed = _trailing_blank_pieces(text)
                prefilled = len(text) - trimmed
                if prefill and self._translated.request.max_tokens - carried < 1:
                    # The cut came as the answer reached its length: nothing is left to continue.
                    yield Usage(self._translated.prompt_estimate, carried)
                    yield Finish("length")
                    return
                # The trimmed whitespace is generated again: its tokens are the continuation's too.
                following = await self._continue(failed, prefill, carried - trimmed, exc)
                if following is None:
                    raise
                answer = self._current = following

    async def _continue(self, failed: Route, prefill: str, carried: int, exc: UpstreamError) -> Answer | None:
        """The answer of the first target that takes the continuation; None when none can."""
        translated = self._translated
        request = translated.request
        model = self._model
        if prefill:
            request = _replace(request, prefill=prefill, max_tokens=request.max_tokens - carried)
            able = [route for route in model.routes if _can_continue(route, request)]
        else:
            able = list(model.routes)  # nothing relayed yet: the original request, restarted
        order = [
            route
            for route in model.order(_session(translated, self._info))
            if route in able and route is not failed
        ]
        if failed in able:
            order.append(failed)
        if not order:
            self._router.count_resume(model, failed.backend, "unavailable")
            log.warning("stream_not_resumed", backend=failed.backend, reason="no target can continue it")
            return None
        info = self._info
        try:
            answer = await self._router.open(
                _replace(translated, request=request), model, info=info, record=False, order=order
            )
        except RoutingError as error:
            self._router.count_resume(model, failed.backend, "failed")
            log.warning("stream_not_resumed", backend=failed.backend, reason=error.message)
            return None
        info.attempts += answer.attempts
        info.price = answer.route.price  # the continuation's target bills the answer
        info.resumes += 1
        self._router.count_resume(model, failed.backend, "resumed")
        log.info(
            "stream_resumed",
            backend=failed.backend,
            resumed_on=answer.backend,
            code=exc.code,
            prefill_chars=len(prefill),
            resume=info.resumes,
        )
        return answer

    async def aclose(self) -> None:
        await self._current.aclose()


def _one_answer(request: ChatRequest | PromptRequest) -> bool:
    """One choice of one prompt: several (`Indexed` events) are not resumed."""
    return request.n is UNSET and (isinstance(request, ChatRequest) or isinstance(request.prompt, str))


def _can_continue(route: Route, request: ChatRequest | PromptRequest) -> bool:
    adapter = route.adapter
    return isinstance(adapter, Continues) and adapter.can_continue(request, route.model)


def _after_sent(piece: str, sent: str) -> str:
    """`piece` without its start that repeats the start of `sent` (whitespace the client has)."""
    common = 0
    for mine, theirs in zip(piece, sent, strict=False):
        if mine != theirs:
            break
        common += 1
    return piece[common:]


def _trailing_blank_pieces(text: list[str]) -> int:
    """How many of the last pieces are whitespace only (trimmed off a prefill)."""
    count = 0
    for piece in reversed(text):
        if not piece.isspace():
            break
        count += 1
    return count


def _answer_usage(usage: Usage, prefilled: int, carried: int) -> Usage:
    """A continuation's usage as the whole answer's: its prompt without the prefill's `prefilled`
    tokens, and the `carried` tokens of the cut calls added to its completion."""
    return Usage(
        max(0, usage.prompt_tokens - prefilled),
        carried + usage.completion_tokens,
        usage.cached_tokens,
        usage.reasoning_tokens,
    )


__all__ = ("Resumed", "open_answer")
