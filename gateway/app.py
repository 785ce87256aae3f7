"""The application factory: `create_app(settings)` builds the Litestar app and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Protocol

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
from gateway.limits import RateLimits, create_rate_limits
from gateway.observability.logs import flush_periodically, get_logger
from gateway.observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.observability.metrics import Metrics
from gateway.observability.tracing import Tracing, configure_tracing
from gateway.openai.responses import ModelList, ModelObject, encoder
from gateway.routing.health import HealthProber
from gateway.routing.router import Router
from gateway.state.responses import ResponseStore, create_response_store
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


class Gateway:
    """What the request handlers need, created in the lifespan and torn down with it."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.started_at = int(time.time())
        self.keys = KeyRing(settings.keys, settings.models) if settings.keys else None
        """The config file's `keys:`, or None."""
        self.api_keys: ApiKeyCache | None = None
        """Keys made through the admin API (with `admin:` and `redis_url`), or None."""
        if settings.admin is not None and settings.redis_url.strip():
            from gateway.keys.cache import ApiKeyCache
            from gateway.keys.store import KeyStore

            self.api_keys = ApiKeyCache(KeyStore.from_url(settings.redis_url.strip()), settings.models)
        api_index = self.api_keys.index if self.api_keys is not None else None
        self._indexes = tuple(index for index in (self.keys, api_index) if index is not None) or None
        """Where keys are looked up, config keys first; None: neither exists, requests need no key."""
        self.limits: RateLimits | None = None
        self.usage = UsageLedger(settings.usage)
        """The usage ledger: the request middleware records into it from the first request on."""
        self._responses: ResponseStore | None = None
        self._adapters: dict[str, Adapter] = {}
        self._router: Router | None = None
        self._prober: HealthProber | None = None
        self._tracing: Tracing | None = None

    @property
    def router(self) -> Router:
        if self._router is None:
            raise GatewayError("the gateway is starting up or shutting down")
        return self._router

    @property
    def responses(self) -> ResponseStore:
        """Stored Responses: in Redis when `redis_url` is set, else in process."""
        if self._responses is None:
            raise GatewayError("the gateway is starting up or shutting down")
        return self._responses

    @property
    def ready(self) -> bool:
        return self._router is not None

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
        self._adapters = {
            name: create_adapter(name, config) for name, config in self.settings.backends.items()
        }
        self.limits = create_rate_limits(self.settings)
        self.limits.on_store_failure = self.metrics.store_error
        self._responses = create_response_store(self.settings.redis_url, self.settings.responses)
        self.usage.start(create_usage_store(self.settings.redis_url, self.settings.usage))
        self._tracing = configure_tracing()
        self._router = Router(self.settings, self._adapters, self.metrics, self._tracing)
        self._prober = HealthProber(self._router.health_checked())
        self._prober.start()
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

    async def stop(self) -> None:
        if self._prober is not None:
            await self._prober.stop()
            self._prober = None
        self._router = None
        if self.api_keys is not None:
            await self.api_keys.aclose()
        if self.limits is not None:
            await self.limits.aclose()
            self.limits = None
        if self._responses is not None:
            await self._responses.aclose()
            self._responses = None
        await self.usage.stop()  # after the server drained: every request is recorded by now
        for adapter in self._adapters.values():
            await adapter.aclose()
        self._adapters = {}
        if self._tracing is not None:
            self._tracing.shutdown()  # exports the spans still buffered
            self._tracing = None


def create_app(settings: Settings) -> Litestar:
    metrics = Metrics()
    gateway = Gateway(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        flusher = asyncio.create_task(flush_periodically())
        await gateway.start()
        _tune_gc()
        collector = asyncio.create_task(collect_periodically())
        try:
            yield
        finally:
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
                    gateway.router,
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
            name for n, model in settings.models.items() if model.kind == kind for name in (n, *model.aliases)
        ]

    openapi_document = build_openapi(
        "LLM gateway", API_VERSION, public_names("chat"), public_names("embeddings")
    )

    @get(OPENAPI_PATH, sync_to_thread=False)
    def openapi() -> Response[bytes]:
        return Response(openapi_document, media_type="application/json")

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
