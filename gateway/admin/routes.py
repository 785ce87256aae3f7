"""Every admin route, collected from the admin modules: each adds one line to `GUARDED` or `UNGUARDED`.

A module exposes `routes(gateway) -> list of route handlers`. `GUARDED` routes have paths relative to
`/admin/v1` and need the admin key (`AdminAuth`, applied once to all of them here); `UNGUARDED` routes
keep their own paths and need no key (the status page's HTML and assets, which then ask for it).
Without an `admin:` section there are no admin routes at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from litestar import Router, get

from gateway.admin import keys, reload, status, usage
from gateway.admin.auth import AdminAuth

if TYPE_CHECKING:
    from litestar.types import ControllerRouterHandler

    from gateway.app import Gateway

RouteFactory = Callable[["Gateway"], Sequence["ControllerRouterHandler"]]
ADMIN_API: Final = "/admin/v1"


def _ping_routes(gateway: Gateway) -> list[ControllerRouterHandler]:
    @get("/ping", name="admin_ping", sync_to_thread=False)
    def ping() -> dict[str, str]:
        """The admin key is right and the gateway answers (what `gateway keys ...` checks first)."""
        return {"status": "ok"}

    return [ping]


GUARDED: Final[tuple[RouteFactory, ...]] = (
    _ping_routes,
    status.api_routes,
    keys.routes,
    usage.api_routes,
    reload.routes,
)
"""Route factories whose routes live under `/admin/v1` and need the admin key."""
UNGUARDED: Final[tuple[RouteFactory, ...]] = (status.page_routes,)
"""Route factories whose routes keep their own paths and need no admin key."""


def admin_routes(gateway: Gateway) -> list[ControllerRouterHandler]:
    """The admin routes to mount in the app (none without `admin:`)."""
    admin = gateway.settings.admin
    if admin is None:
        return []
    guarded = [handler for factory in GUARDED for handler in factory(gateway)]
    unguarded = [handler for factory in UNGUARDED for handler in factory(gateway)]
    return [Router(ADMIN_API, route_handlers=guarded, guards=[AdminAuth(admin)]), *unguarded]


__all__ = ("ADMIN_API", "GUARDED", "UNGUARDED", "RouteFactory", "admin_routes")
