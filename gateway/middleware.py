"""The one piece of middleware: request ids for every HTTP request, whatever route answers it.

It wraps Litestar's ASGI handler (outside routing and exception handling), so 404s and error
responses carry `x-request-id` too. Raw ASGI, because it runs on every request.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, Final

from gateway.context import RequestInfo

if TYPE_CHECKING:
    from gateway.asgi import Message, Receive, Scope, Send

_USABLE_ID: Final = re.compile(rb"[\x21-\x7e]{1,128}")
"""Client ids are echoed in headers and logs: printable ASCII without spaces, at most 128 bytes."""


def new_request_id() -> str:
    return "req_" + os.urandom(12).hex()


class RequestMiddleware:
    __slots__ = ("_app",)

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        raw_id = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                raw_id = value
                break
        request_id = raw_id.decode("ascii") if raw_id and _USABLE_ID.fullmatch(raw_id) else new_request_id()
        scope["state"]["request_info"] = RequestInfo(request_id)
        id_header = (b"x-request-id", request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        await self._app(scope, receive, send_with_id)


__all__ = ("RequestMiddleware", "new_request_id")
