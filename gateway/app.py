"""The application factory: `create_app(settings)` builds the Litestar app and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec
from litestar import Litestar, Request, Response, asgi, delete, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath

from adapters import Adapter, create_adapter
from adapters.errors import UpstreamError
from gateway.admin.listener import ListenerGate
from gateway.admin.routes import admin_routes
from gateway.api.chat import ChatResult, chat_completion
from gateway.api.completions import text_completion
from gateway.api.embeddings import create_embeddings
from gateway.api.messages import api_version, count_tokens, create_message
from gateway.api.responses import StoredResponseAction, create_response, input_items, retrieve
from gateway.api.responses import cancel as cancel_response
from gateway.api.responses import delete as delete_response
from gateway.config import ConfigError, load_config
from gateway.edge.asgi import (
    CONNECTION_STATE,
    ClientDisconnectedError,
    Receive,
    Scope,
    Send,
    header,
    read_body,
    respond,
)
from gateway.edge.auth import KeyPolicy, KeyRing, authenticate, check_model
from gateway.edge.middleware import RequestMiddleware, bare_segments
from gateway.edge.openapi import OPENAPI_PATH, build_openapi
from gateway.errors import (
    GatewayError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    RequestTooLargeError,
    error_response,
    surface_of,
)
from gateway.limits import RateLimits, create_rate_limits, model_scopes
from gateway.limits.redis import connect
from gateway.observability.logs import flush_periodically, get_logger
from gateway.observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.observability.metrics import Metrics
from gateway.observability.tracing import Tracing, configure_tracing
from gateway.openai.responses import ModelList, ModelObject, encoder
from gateway.reload import Invalid, Notice, ReloadAnswer, Reloaded, plan
from gateway.routing.affinity import SESSION_HEADER
from gateway.routing.health import HealthProber
from gateway.routing.router import Router
from gateway.routing.shared_state import SharedBreakers
from gateway.state.responses import ResponseStore, create_response_store
from gateway.translation.translate import session_token
from gateway.usage.ledger import UsageLedger, create_usage_store

if TYPE_CHECKING:
    from litestar.handlers import ASGIRouteHandler

    from gateway.config import Settings
    from gateway.context import RequestInfo
    from gateway.keys.cache import ApiKeyCache
    from gateway.translation.messages import ApiVersion

OWNER: Final = "llm-gateway"
API_VERSION: Final = "0.1.0"
"""The `info.version` of the OpenAPI document (the package's version)."""


class Pipeline(Protocol):
    """An inference endpoint's work once the key is known and the body read (`gateway.chat`, ...)."""

    def __call__(
        self,
        router: Router,
        raw_body: bytes,
        *,
        key: KeyPolicy | None,
        limits: RateLimits | None,
        info: RequestInfo,
    ) -> Awaitable[ChatResult]: ...


class MessagesPipeline(Protocol):
    """An Anthropic Messages endpoint (`gateway.api.messages`): a pipeline that also takes the version."""

    def __call__(
        self,
        router: Router,
        raw_body: bytes,
        *,
        version: ApiVersion,
        key: KeyPolicy | None,
        limits: RateLimits | None,
        info: RequestInfo,
    ) -> Awaitable[ChatResult]: ...


log = get_logger("gateway")


class Live:
    """One configuration's router (and through it its adapters), taken once by each request.

    A reload builds a new one and swaps it in with one assignment: a request that already took the
    old one keeps it to its end, and the old adapters are closed only when its last request is done.
    """

    __slots__ = ("_idle", "in_flight", "router")

    def __init__(self, router: Router) -> None:
        self.router = router
        self.in_flight = 0
        """Inference requests that took this configuration and have not finished."""
        self._idle: asyncio.Event | None = None

    def enter(self) -> Router:
        self.in_flight += 1
        return self.router

    def leave(self) -> None:
        self.in_flight -= 1
        if not self.in_flight and self._idle is not None:
            self._idle.set()

    async def drained(self, timeout_s: float) -> bool:
        """Wait until no request uses this configuration (False: `timeout_s` passed first)."""
        if not self.in_flight:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


class Gateway:
    """What the request handlers need, created in the lifespan and torn down with it."""

    def __init__(self, settings: Settings, metrics: Metrics, config_path: str | None = None) -> None:
        self.settings = settings
        """The configuration in effect (after a reload: the file's, with the restart-only sections
        as they were at start-up)."""
        self.metrics = metrics
        self.config_path = config_path
        """The file a reload reads (None: the app was built from settings alone, no reload)."""
        self.started_at = int(time.time())
        self.generation = 0
        """Configurations applied by reloads since start-up (`GET /admin/v1/reload`)."""
        self.keys = KeyRing(settings.keys, settings.models) if settings.keys else None
        """The config file's `keys:`, or None."""
        self.api_keys: ApiKeyCache | None = None
        """Keys made through the admin API (with `admin:` and `redis_url`), or None."""
        if settings.admin is not None and settings.redis_url.strip():
            from gateway.keys.cache import ApiKeyCache
            from gateway.keys.store import KeyStore

            self.api_keys = ApiKeyCache(
                KeyStore.from_url(settings.redis_url.strip()), settings.models, config_ids=settings.key_ids
            )
        api_index = self.api_keys.index if self.api_keys is not None else None
        self._indexes = tuple(index for index in (self.keys, api_index) if index is not None) or None
        """Where keys are looked up, config keys first; None: neither exists, requests need no key."""
        self.limits: RateLimits | None = None
        self.usage = UsageLedger(settings.usage)
        """The usage ledger: the request middleware records into it from the first request on."""
        self._responses: ResponseStore | None = None
        self._live: Live | None = None
        self._draining: list[Live] = []
        """Replaced configurations with requests still in flight (their adapters are still open)."""
        self._retiring: set[asyncio.Task[None]] = set()
        self._reloading = asyncio.Lock()
        self._prober: HealthProber | None = None
        self._shared_breakers: SharedBreakers | None = None
        self._tracing: Tracing | None = None

    @property
    def router(self) -> Router:
        return self.live.router

    @property
    def live(self) -> Live:
        """The configuration in effect; a request takes it once (`Live.enter`) and keeps it."""
        if self._live is None:
            raise GatewayError("the gateway is starting up or shutting down")
        return self._live

    @property
    def responses(self) -> ResponseStore:
        """Stored Responses: in Redis when `redis_url` is set, else in process."""
        if self._responses is None:
            raise GatewayError("the gateway is starting up or shutting down")
        return self._responses

    @property
    def ready(self) -> bool:
        return self._live is not None

    def authenticate(
        self, headers: Iterable[tuple[bytes, bytes]], info: RequestInfo, *, anthropic: bool = False
    ) -> KeyPolicy | None:
        """The caller's key policy (None when running without keys); raises a 401 otherwise.

        Anthropic clients send the key as `x-api-key` (which then wins over `Authorization`, as on
        Anthropic's API) or as `Authorization: Bearer` (the Python SDK 2.x, `ANTHROPIC_AUTH_TOKEN`).
        """
        if self._indexes is None:
            return None
        # Straight from the ASGI scope (names are lower-case there): `request.headers` parses them all.
        authorization = api_key = None
        for name, value in headers:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif (name == b"x-api-key" and anthropic) or (name == b"api-key" and api_key is None):
                api_key = value.decode("latin-1")
        if anthropic and api_key:
            authorization = None
        policy = authenticate(authorization, api_key, self._indexes)
        info.key_id = policy.id
        info.team_id = policy.team_id
        return policy

    async def start(self) -> None:
        adapters = {name: create_adapter(name, config) for name, config in self.settings.backends.items()}
        self.limits = create_rate_limits(self.settings)
        self.limits.on_store_failure = self.metrics.store_error
        self._responses = create_response_store(self.settings.redis_url, self.settings.responses)
        self.usage.start(create_usage_store(self.settings.redis_url, self.settings.usage))
        self._tracing = configure_tracing()
        self._live = Live(Router(self.settings, adapters, self.metrics, self._tracing))
        self._prober = HealthProber(self._live.router.health_checked())
        self._prober.start()
        if self.settings.redis_url:
            self._shared_breakers = SharedBreakers(
                connect(self.settings.redis_url), self._live.router.breakers, self.metrics
            )
            self._shared_breakers.start()
        if self.api_keys is not None:
            await self.api_keys.start()
        if self._indexes is None:
            log.warning(
                "no_api_keys",
                message="no `keys:` section: the gateway serves anyone who can reach it, without a key",
            )
        log.info(
            "rate_limits",
            store=self.limits.store,
            failure_mode=self.settings.rate_limit_failure_mode,
            keys=len(self.settings.keys or []),
            api_keys=None if self.api_keys is None else len(self.api_keys.keys),
        )

    async def reload(self) -> ReloadAnswer:
        """Read the config file again and apply what changed (see `gateway.reload`); logs the outcome.

        Nothing is awaited between building the new objects and the swap, so no request sees half
        of a reload; reloads run one at a time.
        """
        async with self._reloading:
            started = time.perf_counter()
            answer = await self._reload()
            answer = msgspec.structs.replace(
                answer, duration_ms=round((time.perf_counter() - started) * 1000, 2)
            )
        if isinstance(answer, Reloaded):
            log.info(
                "config_reloaded",
                config=self.config_path,
                changed=answer.changed,
                notices=[notice.message for notice in answer.notices],
                duration_ms=answer.duration_ms,
            )
        else:
            log.error(
                "config_reload_failed",
                config=self.config_path,
                problems=[f"{p.path}: {p.message}" if p.path else p.message for p in answer.problems],
                duration_ms=answer.duration_ms,
            )
        return answer

    async def _reload(self) -> ReloadAnswer:
        source = self.config_path or "<no config file>"
        if self.config_path is None or self._live is None or self.limits is None:
            return Invalid.of(source, ["the gateway was not started from a config file"])
        try:
            loaded = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            return Invalid.of(source, exc.problems)
        changes = plan(self.settings, loaded.settings)
        taken = self._api_key_ids_in(changes.settings)
        if taken:
            return Invalid.of(source, taken)
        notices = [*changes.notices, *(Notice("config_notice", text) for text in loaded.notices)]
        if not changes.changed:
            return Reloaded(notices=notices)
        settings = changes.settings
        old = self._live
        running = {adapter.name: adapter for adapter in old.router.adapters()}
        adapters: dict[str, Adapter] = {}
        created: list[Adapter] = []
        try:
            for name, config in settings.backends.items():
                kept = running.get(name)
                if kept is not None and self.settings.backends.get(name) == config:
                    adapters[name] = kept
                else:
                    adapters[name] = create_adapter(name, config)
                    created.append(adapters[name])
            keys = KeyRing(settings.keys, settings.models) if settings.keys else None
            router = Router(settings, adapters, self.metrics, self._tracing, previous=old.router)
        except (OSError, ValueError) as exc:  # a TLS CA the file names but cannot be loaded, ...
            for adapter in created:
                await adapter.aclose()
            return Invalid.of(source, [f"cannot apply the file: {exc}"])
        if keys is None and self.keys is not None and self.api_keys is None:
            log.warning("no_api_keys", message="no `keys:` section any more: the gateway serves anyone")
        # The swap: one assignment each, no await in between.
        self._live = Live(router)
        self.keys = keys
        api_index = self.api_keys.index if self.api_keys is not None else None
        self._indexes = tuple(index for index in (keys, api_index) if index is not None) or None
        if self.api_keys is not None:
            self.api_keys.set_config(settings.models, settings.key_ids)
        self.limits.set_model_scopes(model_scopes(settings))
        if self._shared_breakers is not None:
            self._shared_breakers.track(router.breakers)
        self.settings = settings
        self.generation += 1
        if self._prober is not None:
            await self._prober.stop()
        self._prober = HealthProber(router.health_checked())
        self._prober.start()
        self._draining.append(old)
        task = asyncio.create_task(self._retire(old), name="retire-config")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return Reloaded(changed=changes.changed, notices=notices)

    async def _retire(self, old: Live) -> None:
        """Close the replaced configuration's adapters that nothing uses any more, once its requests
        are done (or after the grace: the longest model deadline or `http.shutdown_grace_s`)."""
        grace = max(
            [self.settings.http.shutdown_grace_s, *(m.timeout_s for m in self.settings.models.values())]
        )
        if not await old.drained(grace):
            log.warning("config_reload_grace_over", in_flight=old.in_flight, grace_s=grace)
        self._draining.remove(old)
        await self._close_unused(old.router.adapters())

    def _api_key_ids_in(self, settings: Settings) -> list[str]:
        """Problems for config keys whose id a key made through the admin API already has."""
        made = self.api_keys.keys if self.api_keys is not None else {}
        return [
            f"keys[{i}].id: '{entry.id}' is already the id of a key made through the admin API"
            for i, entry in enumerate(settings.keys or [])
            if entry.id in made
        ]

    async def _close_unused(self, adapters: list[Adapter]) -> None:
        in_use = {
            id(a)
            for live in (self._live, *self._draining)
            if live is not None
            for a in live.router.adapters()
        }
        for adapter in adapters:
            if id(adapter) not in in_use:
                await adapter.aclose()

    async def stop(self) -> None:
        if self._prober is not None:
            await self._prober.stop()
            self._prober = None
        if self._shared_breakers is not None:
            await self._shared_breakers.stop()
            self._shared_breakers = None
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        lives = [live for live in (self._live, *self._draining) if live is not None]
        self._live = None
        self._draining = []
        if self.api_keys is not None:
            await self.api_keys.aclose()
        if self.limits is not None:
            await self.limits.aclose()
            self.limits = None
        if self._responses is not None:
            await self._responses.aclose()
            self._responses = None
        await self.usage.stop()  # after the server drained: every request is recorded by now
        await self._close_unused(list({id(a): a for live in lives for a in live.router.adapters()}.values()))
        if self._tracing is not None:
            self._tracing.shutdown()  # exports the spans still buffered
            self._tracing = None


def create_app(settings: Settings, config_path: str | None = None) -> Litestar:
    """`config_path`: the file `settings` came from, which `SIGHUP` and `POST /admin/v1/reload` read
    again (None: no reload)."""
    metrics = Metrics()
    gateway = Gateway(settings, metrics, config_path)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        flusher = asyncio.create_task(flush_periodically())
        await gateway.start()
        _tune_gc()
        collector = asyncio.create_task(collect_periodically())
        loop = asyncio.get_running_loop()
        reloads: set[asyncio.Task[ReloadAnswer]] = set()

        def on_hangup() -> None:
            task = loop.create_task(gateway.reload(), name="reload-on-sighup")
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        # Signals reach the main thread only (an app served from another thread reloads by POST).
        on_signal = config_path is not None and threading.current_thread() is threading.main_thread()
        if on_signal:
            loop.add_signal_handler(signal.SIGHUP, on_hangup)
        try:
            yield
        finally:
            if on_signal:
                loop.remove_signal_handler(signal.SIGHUP)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)  # not the default (exit) while stopping
            await asyncio.gather(*reloads, return_exceptions=True)
            await gateway.stop()
            for task in (flusher, collector):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def inference_route(
        path: str, name: str, pipeline: Pipeline | None = None, *, messages: MessagesPipeline | None = None
    ) -> ASGIRouteHandler:
        """A raw ASGI route for an inference endpoint: key, body, then the pipeline's answer.

        `messages`: an Anthropic Messages endpoint instead, which also needs `anthropic-version`.
        """

        @asgi(path, name=name, copy_scope=False)
        async def handler(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["method"] != "POST":
                raise MethodNotAllowedError(f"Invalid method for URL ({scope['method']} {scope['path']})")
            state = scope["state"]
            info: RequestInfo = state["request_info"]
            info.http_10 = scope.get("http_version") == "1.0"
            session = header(scope, SESSION_HEADER)
            if session:
                info.session = session_token(session)
            live = gateway.live  # this request's configuration to its end, whatever reloads meanwhile
            router = live.enter()
            try:
                await serve(scope, receive, send, state, info, router)
            finally:
                live.leave()

        async def serve(
            scope: Scope,
            receive: Receive,
            send: Send,
            state: dict[str, Any],
            info: RequestInfo,
            router: Router,
        ) -> None:
            key = gateway.authenticate(scope["headers"], info, anthropic=messages is not None)
            run: Pipeline
            if messages is not None:
                run = functools.partial(messages, version=api_version(header(scope, b"anthropic-version")))
            else:
                assert pipeline is not None
                run = pipeline
            http = settings.http
            try:
                body = await read_body(
                    scope, receive, limit=http.max_body_bytes, timeout_s=http.body_timeout_s
                )
            except ClientDisconnectedError:
                # Gone before its body arrived (or it sent a malformed one): nobody to answer, and
                # a client fault, not the gateway's (a 499 in the log line and the metrics).
                info.client_closed = True
                return

            def produce() -> Awaitable[ChatResult]:
                return run(
                    router,
                    body,
                    key=key,
                    limits=gateway.limits,
                    info=info,
                )

            if await respond(receive, send, produce, state.get(CONNECTION_STATE)):
                info.client_closed = True

        return handler

    chat_completions = inference_route("/v1/chat/completions", "chat_completions", chat_completion)
    completions = inference_route("/v1/completions", "completions", text_completion)
    embeddings = inference_route("/v1/embeddings", "embeddings", create_embeddings)
    messages = inference_route("/v1/messages", "messages", messages=create_message)
    messages_count_tokens = inference_route(
        "/v1/messages/count_tokens", "messages_count_tokens", messages=count_tokens
    )

    async def responses_pipeline(
        router: Router,
        raw_body: bytes,
        *,
        key: KeyPolicy | None,
        limits: RateLimits | None,
        info: RequestInfo,
    ) -> ChatResult:
        return await create_response(
            router,
            raw_body,
            key=key,
            limits=limits,
            info=info,
            store=gateway.responses,
        )

    responses = inference_route("/v1/responses", "responses", responses_pipeline)

    def stored_response_route(route: Any, action: StoredResponseAction) -> Any:
        """A route on one stored response (`gateway.api.responses`): key, then the action's JSON."""

        async def handler(request: Request[Any, Any, Any], response_id: FromPath[str]) -> Response[bytes]:
            key = gateway.authenticate(request.scope["headers"], request_info(request))
            body = await action(gateway.responses, key, response_id, request.query_params)
            return Response(body, media_type="application/json")

        return route(handler)

    stored = "/v1/responses/{response_id:str}"
    stored_responses = [
        stored_response_route(get(stored, name="get_response"), retrieve),
        stored_response_route(delete(stored, status_code=200, name="delete_response"), delete_response),
        stored_response_route(
            post(f"{stored}/cancel", status_code=200, name="cancel_response"), cancel_response
        ),
        stored_response_route(get(f"{stored}/input_items", name="list_input_items"), input_items),
    ]

    @get("/v1/models")
    async def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
        key = gateway.authenticate(request.scope["headers"], request_info(request))
        router = gateway.router
        data = [
            ModelObject(id=name, created=gateway.started_at, owned_by=OWNER)
            for name in router.public_names()
            if key is None or key.allows(router.resolve(name).name)
        ]
        return Response(encoder.encode(ModelList(data=data)), media_type="application/json")

    @get("/v1/models/{model_id:path}")
    async def get_model(request: Request[Any, Any, Any], model_id: FromPath[str]) -> Response[bytes]:
        key = gateway.authenticate(request.scope["headers"], request_info(request))
        name = model_id.lstrip("/")
        check_model(key, name, gateway.router.resolve(name).name)
        body = encoder.encode(ModelObject(id=name, created=gateway.started_at, owned_by=OWNER))
        return Response(body, media_type="application/json")

    def public_names(kind: str) -> list[str]:
        return [
            name
            for model in gateway.router.models()
            if model.config.kind == kind
            for name in (model.name, *model.config.aliases)
        ]

    openapi_documents: dict[Router, bytes] = {}
    """The document of the router in effect (its model names), built once per configuration."""

    @get(OPENAPI_PATH, sync_to_thread=False)
    def openapi() -> Response[bytes]:
        router = gateway.router
        document = openapi_documents.get(router)
        if document is None:
            openapi_documents.clear()
            document = openapi_documents[router] = build_openapi(
                "LLM gateway", API_VERSION, public_names("chat"), public_names("embeddings")
            )
        return Response(document, media_type="application/json")

    @get("/metrics", sync_to_thread=False)
    def metrics_endpoint() -> Response[bytes]:
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz")
    async def readyz() -> Response[dict[str, Any]]:
        if not gateway.ready:
            return Response({"status": "starting"}, status_code=503)
        unavailable = gateway.router.models_without_healthy_target()
        if unavailable:
            body = {"status": "unavailable", "models_without_healthy_target": unavailable}
            return Response(body, status_code=503)
        return Response({"status": "ready"})

    app = Litestar(
        route_handlers=[
            chat_completions,
            completions,
            responses,
            *stored_responses,
            embeddings,
            messages,
            messages_count_tokens,
            list_models,
            get_model,
            metrics_endpoint,
            healthz,
            readyz,
            openapi,
            *admin_routes(gateway),
        ],
        openapi_config=None,  # `gateway.openapi` documents the raw inference routes Litestar cannot see
        lifespan=[lifespan],
        exception_handlers={
            GatewayError: _handle_error,
            UpstreamError: _handle_error,
            HTTPException: _handle_http_exception,
            Exception: _handle_unexpected,
        },
        logging_config=None,
    )
    # Outside routing and exception handling, so every response (404s and errors too) is covered.
    bare = bare_segments(route.path for route in app.routes)
    handler: Any = app.asgi_handler
    if settings.admin is not None and settings.admin.listen is not None:
        handler = ListenerGate(handler, settings.admin.listen.port)
    app.asgi_handler = RequestMiddleware(handler, metrics, bare, gateway.usage)  # type: ignore[assignment]
    return app


GC_THRESHOLDS: Final = (50_000, 20, 100)
FULL_COLLECTION_INTERVAL_S: Final = 60.0


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the request path.

    Nearly everything a request allocates is freed by reference counting, but at the default
    thresholds the collector still ran often enough to walk every long-lived object (modules,
    config, pools) in multi-millisecond pauses. Freezing what start-up created and collecting the
    young generation less often measured: p99 at 1 connection 5.5 -> 1.0 ms, at 32 connections
    40 -> 12.6 ms, CPU per request 332 -> 294 us.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def collect_periodically(interval_s: float = FULL_COLLECTION_INTERVAL_S) -> None:
    """A full collection once a minute: at `GC_THRESHOLDS` the oldest generation is collected only
    every ~100 million allocations, so cyclic garbage that had lived long enough to reach it (a
    pooled connection and its parser, an exception and its frames) stayed for many minutes, and a
    10-minute soak grew by about 1 MiB a minute. The heap start-up created is frozen and not walked,
    so a collection costs milliseconds, once a minute, instead of a pause every few hundred requests.
    """
    log = get_logger("gateway.gc")
    while True:
        await asyncio.sleep(interval_s)
        started = time.perf_counter()
        found = gc.collect()
        log.debug("gc_full_collection", unreachable=found, ms=round((time.perf_counter() - started) * 1e3, 2))


def request_info(request: Request[Any, Any, Any]) -> RequestInfo:
    """The request's record, made by `RequestMiddleware`."""
    info: RequestInfo = request.scope["state"]["request_info"]
    return info


def _render(
    request: Request[Any, Any, Any], exc: GatewayError | UpstreamError, status: int | None = None
) -> Response[bytes]:
    """The error in the envelope of the route's clients (OpenAI's, or Anthropic's on /v1/messages)."""
    surface = surface_of(request.scope["path"])
    info = request.scope["state"].get("request_info")
    request_id = info.request_id if info is not None else None
    code, body, headers = error_response(exc, surface, request_id=request_id)
    if surface == "anthropic" and request_id:
        headers = {**headers, "request-id": request_id}
    return Response(body, status_code=status or code, media_type="application/json", headers=headers)


def _handle_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, GatewayError | UpstreamError)
    _note_error(request, exc)
    return _render(request, exc)


def _note_error(request: Request[Any, Any, Any], exc: GatewayError | UpstreamError) -> None:
    info: RequestInfo | None = request.scope["state"].get("request_info")
    if info is not None:
        info.refused(exc.error_type, exc.code, exc.param)


def _handle_http_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    error: GatewayError
    if exc.status_code == 404:
        error = NotFoundError(f"Invalid URL ({where})")
    elif exc.status_code == 405:
        error = NotFoundError(f"Invalid method for URL ({where})")
        _note_error(request, error)
        return _render(request, error, 405)
    elif exc.status_code == 413:
        error = RequestTooLargeError("The request body is too large.")
    else:
        error = InvalidRequestError(str(exc.detail))
        _note_error(request, error)
        return _render(request, error, exc.status_code)
    _note_error(request, error)
    return _render(request, error)


def _handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.error("unhandled_exception", path=request.url.path, exc_info=exc)
    info: RequestInfo | None = request.scope["state"].get("request_info")
    if info is not None:
        info.refused("server_error", "internal_error")
    return _render(request, GatewayError("The gateway hit an internal error while handling the request."))


__all__ = ("Gateway", "create_app", "request_info")
