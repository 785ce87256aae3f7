"""The status page: `GET /status` (HTML, no key) and its JSON, `GET /admin/v1/status` (admin key).

The page and its two assets are static files from `gateway/admin/static/` (in the wheel), read once
at start-up; the page asks for the admin key, keeps it in the tab's `sessionStorage` and polls the
JSON every 2 s. The JSON is read from this process's state (breakers, health verdicts, the router's
rolling window per target, configured keys), except today's usage per key and team, read from the
usage ledger at most once per `usage.flush_interval_s` (`gateway.admin.usage.TodayUsage`); keys made
by the API, teams and budgets come in through `KeyFigures`, filled by the modules that own them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import msgspec
from litestar import Response, get

from adapters.base import HealthChecked
from gateway.admin.usage import TodayUsage
from gateway.errors import NotFoundError
from gateway.limits.base import MICRO_USD, Budget, BudgetPeriod, LimiterUnavailable, Scope, ScopeKind
from gateway.routing.window import WindowFigures

if TYPE_CHECKING:
    from litestar.types import ControllerRouterHandler

    from gateway.app import Gateway
    from gateway.routing.router import Route

BreakerState = Literal["closed", "open", "half_open"]
HealthState = Literal["healthy", "unhealthy", "unchecked"]

ASSETS: Final = {
    "status.js": "text/javascript; charset=utf-8",
    "status.css": "text/css; charset=utf-8",
}
PAGE_HEADERS: Final = {
    "cache-control": "no-store",
    # Only the gateway's own assets, no inline script, no framing: the page handles the admin key.
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}
ASSET_HEADERS: Final = {
    # Short: a new release's assets are picked up within minutes without versioned names.
    "cache-control": "public, max-age=300",
    "x-content-type-options": "nosniff",
}


class TargetStatus(msgspec.Struct, frozen=True, kw_only=True):
    backend: str
    upstream_model: str
    breaker: BreakerState
    consecutive_failures: int
    retry_in_s: float | None
    """Seconds until an open breaker lets a probe through; None unless open."""
    health: HealthState
    health_detail: str | None
    recent: WindowFigures


class ModelStatus(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    kind: str
    aliases: list[str]
    targets: list[TargetStatus]


class Limits(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None


class BudgetFigures(msgspec.Struct, frozen=True, kw_only=True):
    usd: float
    period: BudgetPeriod
    spent_usd: float | None = None
    """Spent so far this period, reservations of requests in flight included; None when the limits'
    store could not be read."""
    resets_at: str | None = None
    """ISO 8601 UTC: when the period ends and the budget starts again."""


def budget_figures(budget: Budget | None) -> BudgetFigures | None:
    """A key's or team's budget as the status page shows it, before its spend is read."""
    return None if budget is None else BudgetFigures(usd=budget.usd, period=budget.period)


class UsageFigures(msgspec.Struct, frozen=True, kw_only=True):
    """Today's (UTC) usage from the ledger."""

    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    errors: int


class AccountStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What a key and a team both show: limits, and budget and usage once those exist."""

    id: str
    limits: Limits
    budget: BudgetFigures | None = None
    usage: UsageFigures | None = None


class KeyStatus(AccountStatus, frozen=True, kw_only=True):
    source: Literal["config", "api"]
    team: str | None = None
    models: list[str]


class TeamStatus(AccountStatus, frozen=True, kw_only=True):
    keys: int


_Account = TypeVar("_Account", "KeyStatus", "TeamStatus")


class GatewayStatus(msgspec.Struct, frozen=True, kw_only=True):
    generated_at: float
    """Unix seconds."""
    started_at: int
    ready: bool
    models: list[ModelStatus]
    keys: list[KeyStatus]
    teams: list[TeamStatus]
    usage_source: str
    """Where key and team usage comes from: `redis` (every replica's, as last flushed), `memory`
    (this process's), `unavailable` (Redis could not be read), `none` (before start-up)."""


KeyFigures = Callable[["Gateway", list[KeyStatus]], "tuple[list[KeyStatus], list[TeamStatus], str]"]
"""A hook from the keys/teams/usage modules: given the configured keys, the full key list (API keys
added, usage and budgets filled in), the teams, and the name of the usage source."""


def config_keys(gateway: Gateway, keys: list[KeyStatus]) -> tuple[list[KeyStatus], list[TeamStatus], str]:
    """The default: configured keys only, no teams, no usage."""
    return keys, [], "none"


KEY_FIGURES: list[KeyFigures] = [config_keys]
"""The hook in use (the last one): the API keys store and the usage ledger replace it when they land."""

_encoder: Final = msgspec.json.Encoder()


def gateway_status(gateway: Gateway, today: TodayUsage | None = None) -> GatewayStatus:
    """`today`: today's usage per key and team, read; None when it could not be."""
    now = time.monotonic()
    models = []
    if gateway.ready:
        for model in gateway.router.models():
            targets = [_target(route, now) for route in model.routes]
            models.append(
                ModelStatus(
                    name=model.name,
                    kind=model.config.kind,
                    aliases=list(model.config.aliases),
                    targets=targets,
                )
            )
    configured = [
        KeyStatus(
            id=entry.id,
            source="config",
            models=list(entry.models),
            limits=Limits(rpm=entry.rpm, tpm=entry.tpm, max_concurrency=entry.max_concurrency),
            budget=budget_figures(entry.budget),
        )
        for entry in gateway.settings.keys or []
    ]
    keys, teams, usage_source = KEY_FIGURES[-1](gateway, configured)
    if gateway.usage.source != "none":
        usage_source = gateway.usage.source
        if today is None:
            usage_source = "unavailable"
        else:
            keys = [msgspec.structs.replace(k, usage=UsageFigures(**today.of_key(k.id))) for k in keys]
            teams = [msgspec.structs.replace(t, usage=UsageFigures(**today.of_team(t.id))) for t in teams]
    return GatewayStatus(
        generated_at=round(time.time(), 3),
        started_at=gateway.started_at,
        ready=gateway.ready,
        models=models,
        keys=keys,
        teams=teams,
        usage_source=usage_source,
    )


async def with_spend(gateway: Gateway, status: GatewayStatus) -> GatewayStatus:
    """The status with each budget's spend this period, read from the limits' store (one read per
    budget; the admin API's cost, not the request path's)."""
    if gateway.limits is None:
        return status
    limiter = gateway.limits.limiter

    async def spend(kind: ScopeKind, account: _Account) -> _Account:
        figures = account.budget
        if figures is None:
            return account
        scope = Scope(kind, account.id, budget=Budget(usd=figures.usd, period=figures.period))
        try:
            found = await limiter.spent(scope)
        except LimiterUnavailable:
            return account
        if found is None:
            return account
        period, micro_usd = found
        read = msgspec.structs.replace(
            figures,
            spent_usd=micro_usd / MICRO_USD,
            resets_at=period.ends_at.isoformat().replace("+00:00", "Z"),
        )
        return msgspec.structs.replace(account, budget=read)

    keys = [await spend("key", key) for key in status.keys]
    teams = [await spend("team", team) for team in status.teams]
    return msgspec.structs.replace(status, keys=keys, teams=teams)


def _target(route: Route, now: float) -> TargetStatus:
    breaker = route.breaker
    state: BreakerState = "closed"
    if breaker.open_until:
        state = "open" if breaker.is_open(now) else "half_open"
    health_error = route.state.health_error
    checked = isinstance(route.state.adapter, HealthChecked)
    health: HealthState = "unhealthy" if health_error is not None else "healthy" if checked else "unchecked"
    return TargetStatus(
        backend=route.backend,
        upstream_model=route.model,
        breaker=state,
        consecutive_failures=breaker.failures,
        retry_in_s=round(breaker.retry_after(now), 1) if state == "open" else None,
        health=health,
        health_detail=health_error.summary if health_error is not None else None,
        recent=route.recent.figures(now),
    )


def _static(name: str) -> bytes:
    return resources.files("gateway.admin").joinpath("static", name).read_bytes()


def api_routes(gateway: Gateway) -> list[ControllerRouterHandler]:
    """Under `/admin/v1`, behind the admin key."""
    today = TodayUsage(gateway.usage, gateway.settings.usage.flush_interval_s)

    @get("/status", name="admin_status")
    async def status_json() -> Response[bytes]:
        """Models, targets, breakers, health, recent figures, keys and teams (docs/control-plane.md)."""
        read = await today.refresh()
        body = _encoder.encode(await with_spend(gateway, gateway_status(gateway, today if read else None)))
        return Response(body, media_type="application/json", headers={"cache-control": "no-store"})

    return [status_json]


def page_routes(gateway: Gateway) -> list[ControllerRouterHandler]:
    """`/status` and its assets, without a key: the page asks for it."""
    page = _static("status.html")
    assets = {name: _static(name) for name in ASSETS}

    @get("/status", name="status_page", sync_to_thread=False)
    def status_page() -> Response[bytes]:
        return Response(page, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    @get("/status/assets/{name:str}", name="status_asset", sync_to_thread=False)
    def status_asset(name: str) -> Response[bytes]:
        if name not in assets:
            raise NotFoundError(f"Invalid URL (GET /status/assets/{name})")
        return Response(assets[name], media_type=ASSETS[name], headers=ASSET_HEADERS)

    return [status_page, status_asset]


__all__ = (
    "KEY_FIGURES",
    "GatewayStatus",
    "KeyFigures",
    "KeyStatus",
    "TeamStatus",
    "api_routes",
    "gateway_status",
    "page_routes",
)
