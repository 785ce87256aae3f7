"""Public model names → targets, and the failover boundary.

`Router.open` is the only place that decides whether another target may be tried: for a stream,
until the upstream's first event is in hand (nothing has reached the client yet); for a whole
answer, until it has been read completely. After that, failures belong to the writer, in-band.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

from adapters.errors import UpstreamError
from gateway.errors import ModelNotFoundError

if TYPE_CHECKING:
    from adapters.base import Adapter, UpstreamResponse
    from adapters.canonical import Event
    from gateway.config import ModelConfig, Settings
    from gateway.translate import Translated

_END: Final = object()


class Route:
    __slots__ = ("adapter", "backend", "model")

    def __init__(self, backend: str, adapter: Adapter, model: str) -> None:
        self.backend = backend
        self.adapter = adapter
        self.model = model


class ResolvedModel:
    __slots__ = ("config", "name", "routes")

    def __init__(self, name: str, config: ModelConfig, routes: list[Route]) -> None:
        self.name = name
        self.config = config
        self.routes = routes


class Answer:
    """An upstream answer that has begun well: the first event of a stream, or all events of a whole one."""

    __slots__ = ("_first", "_iterator", "_upstream", "attempts", "collected", "route")

    def __init__(
        self,
        route: Route,
        upstream: UpstreamResponse,
        *,
        attempts: int,
        collected: list[Event] | None = None,
        first: object = _END,
        iterator: AsyncIterator[Event] | None = None,
    ) -> None:
        self.route = route
        self.attempts = attempts
        self.collected = collected
        self._upstream = upstream
        self._first = first
        self._iterator = iterator

    async def events(self) -> AsyncIterator[Event]:
        if self._first is _END or self._iterator is None:
            return
        first, self._first = self._first, _END
        yield first  # type: ignore[misc]
        async for event in self._iterator:
            yield event

    async def aclose(self) -> None:
        await self._upstream.aclose()


class Router:
    def __init__(self, settings: Settings, adapters: dict[str, Adapter]) -> None:
        self._models: dict[str, ResolvedModel] = {}
        for name, config in settings.models.items():
            routes = [Route(t.backend, adapters[t.backend], t.model) for t in config.targets]
            resolved = ResolvedModel(name, config, routes)
            self._models[name] = resolved
            for alias in config.aliases:
                self._models[alias] = resolved

    def resolve(self, name: str) -> ResolvedModel:
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFoundError(
                f"The model `{name}` does not exist or you do not have access to it.", param="model"
            ) from None

    def public_names(self) -> list[str]:
        return list(self._models)

    async def open(self, translated: Translated, model: ResolvedModel, *, request_id: str) -> Answer:
        last_error: UpstreamError | None = None
        for attempt, route in enumerate(model.routes, start=1):
            try:
                return await self._try(route, translated, attempt=attempt, request_id=request_id)
            except UpstreamError as exc:
                if exc.client_fault:
                    raise
                last_error = exc
        assert last_error is not None
        raise last_error

    async def _try(self, route: Route, translated: Translated, *, attempt: int, request_id: str) -> Answer:
        request = translated.request
        upstream = await route.adapter.chat(request, route.model, request_id=f"{request_id}-{attempt}")
        try:
            iterator = upstream.events()
            if not request.stream:
                collected = [event async for event in iterator]
                return Answer(route, upstream, attempts=attempt, collected=collected)
            first = await anext(iterator, _END)
            return Answer(route, upstream, attempts=attempt, first=first, iterator=iterator)
        except BaseException:
            await upstream.aclose()
            raise


__all__ = ("Answer", "ResolvedModel", "Route", "Router")
