"""Several choices (`n` > 1) from backends that generate one per call: one upstream call per choice.

`open_answer` is the pipeline's way into routing. One choice, or a model whose every target generates
the choices itself (vLLM: `request.n` is set), is one `Router.open`. Otherwise the calls are made
concurrently, each through `Router.open` with its own failover, each with its own seed (the client's
seed + choice index, so the choices differ but stay reproducible) and, for text completions with
several prompts, its own prompt. The answer begins only when every call has begun; if one cannot, the
request fails with that call's error and the others are closed. Their events are merged into one
stream of `Indexed` events, in arrival order, for the writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Final

import msgspec
from msgspec import UNSET

from adapters.canonical import Event, Indexed, PromptRequest

if TYPE_CHECKING:
    from adapters.canonical import CanonicalRequest
    from gateway.context import RequestInfo
    from gateway.routing.router import Answer, ResolvedModel, Router
    from gateway.translation.translate import Translated


async def open_answer(
    router: Router, translated: Translated[CanonicalRequest], model: ResolvedModel, *, info: RequestInfo
) -> Answer | MultiAnswer:
    """The answer to `translated`: one upstream call, or one per choice (the pipeline calls
    `Router.open` itself for a single choice)."""
    if translated.n == 1 or translated.request.n is not UNSET:
        return await router.open(translated, model, info=info)
    branches = [branch(translated, index) for index in range(translated.n)]
    # Each branch is one call of the same request: the answer's backend and attempts are noted below.
    tasks = [asyncio.ensure_future(router.open(one, model, info=info, record=False)) for one in branches]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:
        await _abandon(tasks)
        raise
    failed = next((task for task in tasks if task.done() and (task.cancelled() or task.exception())), None)
    if failed is not None:
        await _abandon(tasks)
        error = None if failed.cancelled() else failed.exception()
        raise error or asyncio.CancelledError()
    return MultiAnswer([task.result() for task in tasks])


def branch(translated: Translated[CanonicalRequest], index: int) -> Translated[CanonicalRequest]:
    """The single-choice request for choice `index`: its prompt and its own seed."""
    request = translated.request
    changes: dict[str, object] = {}
    sample = index % translated.samples if translated.prompts else index
    if request.seed is not UNSET:
        changes["seed"] = request.seed + sample
    if isinstance(request, PromptRequest):
        changes["prompt"] = translated.prompts[index // translated.samples]
    request = msgspec.structs.replace(request, **changes)
    return msgspec.structs.replace(translated, request=request, n=1)


async def _abandon(tasks: Sequence[asyncio.Future[Answer]]) -> None:
    """Cancel the calls still being opened and close those that have begun."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and task.exception() is None:
            await task.result().aclose()


class MultiAnswer:
    """One answer per choice, opened concurrently, read as one answer with `Indexed` events."""

    __slots__ = ("_answers", "_merged", "attempts", "backend", "collected")

    def __init__(self, answers: list[Answer]) -> None:
        self._answers = answers
        self._merged: _Merged | None = None
        self.attempts = sum(answer.attempts for answer in answers)
        """Upstream calls made for all choices together."""
        self.backend = ", ".join(dict.fromkeys(answer.backend for answer in answers))
        """The backends that answered, each once, in choice order."""
        self.collected: list[Event] | None = None
        if all(answer.collected is not None for answer in answers):
            self.collected = [
                Indexed(index, event)
                for index, answer in enumerate(answers)
                for event in answer.collected or ()
                if not isinstance(event, Indexed)  # single-choice calls never send these
            ]

    def events(self) -> _Merged:
        self._merged = _Merged(self._answers)
        return self._merged

    async def aclose(self) -> None:
        if self._merged is not None:
            self._merged.cancel()
        for answer in self._answers:
            await answer.aclose()


_END: Final = object()


class _Merged:
    """The choices' streams as one: each read by its own task into a queue, in arrival order.

    `close_choice` lets the writer end one choice early (a stop sequence matched): its upstream call
    is closed while the others go on.
    """

    __slots__ = ("_answers", "_open", "_queue", "_tasks")

    def __init__(self, answers: list[Answer]) -> None:
        self._answers = answers
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._open = len(answers)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._pump(index, answer)) for index, answer in enumerate(self._answers)
            ]
        while self._open:
            item = await self._queue.get()
            if item is _END:
                self._open -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                return item  # type: ignore[return-value]
        raise StopAsyncIteration

    async def _pump(self, index: int, answer: Answer) -> None:
        put = self._queue.put_nowait
        try:
            async for event in answer.events():
                if not isinstance(event, Indexed):  # single-choice calls never send these
                    put(Indexed(index, event))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure must reach the writer (reported in-band), or it waits forever
            put(exc)
        put(_END)

    async def close_choice(self, index: int) -> None:
        task = self._tasks[index] if index < len(self._tasks) else None
        if task is not None and not task.done():
            task.cancel()
            self._open -= 1
        await self._answers[index].aclose()

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()


__all__ = ("MultiAnswer", "branch", "open_answer")
