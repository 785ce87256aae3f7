"""`POST /admin/v1/reload`: read the config file again and apply it (`Gateway.reload`, `gateway.reload`).

The answer is 200 `{"status": "reloaded", "changed": [...], "notices": [...], "duration_ms": ...}`,
or, when the file is invalid (and nothing changed), 422 with `{"status": "invalid", "problems":
[{"path", "message"}, ...], "error": {...}}`: the problems with their YAML paths, and the same in
OpenAI's error envelope. With `--workers N` the worker that answers reloads itself and then sends
`SIGHUP` to the supervisor, which passes it to every worker (`gateway.cli.ReloadingMultiprocess`);
the others read the same file, and the one that answered finds nothing more to change.
`GET /admin/v1/reload` tells which worker answered and how many reloads it applied.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Final

import msgspec
from litestar import Response, get, post

from gateway.observability.logs import get_logger
from gateway.reload import Reloaded

if TYPE_CHECKING:
    from litestar.types import ControllerRouterHandler

    from gateway.app import Gateway

SUPERVISOR_ENV: Final = "GATEWAY_SUPERVISOR_PID"
"""Set by `gateway serve --workers N` for its workers: the process that passes `SIGHUP` to all of them."""

log = get_logger("gateway.reload")
_encoder: Final = msgspec.json.Encoder()


def routes(gateway: Gateway) -> list[ControllerRouterHandler]:
    """Under `/admin/v1`, behind the admin key."""

    @post("/reload", name="admin_reload", status_code=200)
    async def reload() -> Response[bytes]:
        answer = await gateway.reload()
        reloaded = isinstance(answer, Reloaded)
        if reloaded:
            _reload_other_workers()
        status = 200 if reloaded else 422
        return Response(_encoder.encode(answer), status_code=status, media_type="application/json")

    @get("/reload", name="admin_reload_state", sync_to_thread=False)
    def reload_state() -> ReloadState:
        """Which process answered and how many reloads it has applied: with `--workers N`, polling
        this shows when every worker has the new configuration."""
        return ReloadState(pid=os.getpid(), generation=gateway.generation)

    return [reload, reload_state]


class ReloadState(msgspec.Struct, frozen=True):
    pid: int
    """The answering process (one of the workers with `--workers N`)."""
    generation: int
    """Configurations it applied by reloads since it started (0: the one it started with)."""


def _reload_other_workers() -> None:
    """Under `--workers N`, have the supervisor pass the reload on to every worker."""
    supervisor = os.environ.get(SUPERVISOR_ENV, "")
    if (
        not supervisor or not supervisor.isdigit() or int(supervisor) != os.getppid()
    ):  # not (or no longer) under the supervisor
        return
    os.kill(int(supervisor), signal.SIGHUP)
    log.info("config_reload_propagated", supervisor_pid=int(supervisor))


__all__ = ("SUPERVISOR_ENV", "ReloadState", "routes")
