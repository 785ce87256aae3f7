"""Upstream connections the pool drops are freed at once by reference counting.

The gateway collects the oldest generation of cyclic garbage only once a minute (`gateway.app`), and
pooled connections live long enough to reach it: a dropped connection still tied in a cycle (its
parser calls back into it; a raised error holds the frames that hold it) would sit there until then.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from adapters.http import build_client
from adapters.transport import _Connection
from tests.emulators.raw import GarbageServer, ResetServer
from tests.emulators.server import serve


async def closing_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every request with `connection: close`, so no connection goes back to the pool."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"connection", b"close")]})
    await send({"type": "http.response.body", "body": b"ok"})


def live_connections() -> int:
    return sum(type(thing) is _Connection for thing in gc.get_objects())


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.anyio
@pytest.mark.usefixtures("collector_off")
async def test_connections_dropped_after_an_answer_or_a_fault_are_freed_without_the_collector() -> None:
    with serve(closing_app) as closing, GarbageServer() as garbage, ResetServer() as reset:
        async with build_client(timeout_s=2) as client:  # the adapters' client over the transport
            baseline = live_connections()
            for _ in range(10):
                assert (await client.get(f"{closing.url}/")).text == "ok"  # not kept: it holds its connection
            for url in (garbage.url, reset.url):
                for _ in range(10):
                    with pytest.raises(httpx.HTTPError):
                        await client.get(f"{url}/")
            for _ in range(3):  # let closing sockets deliver `connection_lost` and let go of their protocol
                await asyncio.sleep(0)
            assert live_connections() == baseline
