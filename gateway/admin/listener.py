"""Keeps the admin listener and the public one apart, when `admin.listen` gives the admin API its own.

Both listeners are served by the same app in the same process (one uvicorn server with two sockets),
so the request's listener is told by the local port it arrived on (the ASGI scope's `server`): one
tuple index and one prefix check per request, and only when a separate admin listener is configured.
The public listener answers 404 for the admin paths, the admin listener 404 for everything else
except the probes, both in OpenAI's envelope as for any unknown URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from gateway.errors import NotFoundError, error_response

if TYPE_CHECKING:
    from gateway.edge.asgi import Receive, Scope, Send

ADMIN_PATHS: Final = frozenset({"/status", "/metrics"})
ADMIN_PREFIXES: Final = ("/admin/", "/status/")
"""With `ADMIN_PATHS`: served on the admin listener only (the admin API, the status page and its
assets, metrics); `/statusx` or `/metrics/x` are ordinary public paths (404s there)."""
PROBES: Final = frozenset({"/healthz", "/readyz"})
"""Served on both listeners: orchestrators may probe either."""


class ListenerGate:
    """ASGI middleware that refuses a path on the listener it does not belong to."""

    __slots__ = ("_admin_port", "_app")

    def __init__(self, app: Any, admin_port: int) -> None:
        self._app = app
        self._admin_port = admin_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            server = scope.get("server")
            on_admin = server is not None and server[1] == self._admin_port
            path: str = scope["path"]
            admin_path = path in ADMIN_PATHS or path.startswith(ADMIN_PREFIXES)
            if on_admin != admin_path and not (on_admin and path in PROBES):
                await _not_found(scope, send)
                return
        await self._app(scope, receive, send)


async def _not_found(scope: Scope, send: Send) -> None:
    error = NotFoundError(f"Invalid URL ({scope['method']} {scope['path']})")
    info = scope["state"].get("request_info")
    if info is not None:
        info.refused(error.error_type, error.code, error.param)
    status, body, _ = error_response(error, request_id=info.request_id if info is not None else None)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ("ADMIN_PATHS", "ADMIN_PREFIXES", "PROBES", "ListenerGate")
