"""What the pipelines record about a request for its log line (the client's `user` and `metadata`), and
the request context every log line written for the request carries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import msgspec
import pytest

from gateway.api.chat import chat_completion
from gateway.api.completions import text_completion
from gateway.app import Gateway
from gateway.config import Settings
from gateway.context import RequestInfo, add_request_fields, bind_request, current_request, unbind_request
from gateway.observability.metrics import Metrics

pytestmark = pytest.mark.anyio

CONFIG = {
    "backends": {"instant": {"kind": "mock", "token_delay_s": 0}},
    "models": {"mock": {"targets": [{"backend": "instant", "model": "mock"}]}},
}


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gateway = Gateway(msgspec.convert(CONFIG, Settings), Metrics())
    await gateway.start()
    yield gateway
    await gateway.stop()


async def test_chat_records_user_and_metadata(gateway: Gateway) -> None:
    info = RequestInfo("req-1")
    body = {
        "model": "mock",
        "messages": [{"role": "user", "content": "hi"}],
        "user": "end-user-7",
        "metadata": {"ticket": "T-9"},
    }
    result = await chat_completion(gateway.router, json.dumps(body).encode(), info=info)
    assert result.body is not None
    assert (info.user, info.metadata) == ("end-user-7", {"ticket": "T-9"})


async def test_completions_record_user(gateway: Gateway) -> None:
    info = RequestInfo("req-2")
    body = {"model": "mock", "prompt": "Once", "user": "end-user-8"}
    result = await text_completion(gateway.router, json.dumps(body).encode(), info=info)
    assert result.body is not None
    assert json.loads(result.body)["object"] == "text_completion"
    assert (info.user, info.metadata) == ("end-user-8", None)


async def test_the_bound_request_names_every_line_logged_for_it_also_in_tasks_it_starts() -> None:
    info = RequestInfo("req-3")
    token = bind_request(info)
    try:
        assert add_request_fields(None, "info", {"event": "a"}) == {"event": "a", "request_id": "req-3"}
        info.key_id, info.model = "team-a", "mock"

        async def in_a_task() -> dict[str, object]:
            return add_request_fields(None, "warning", {"event": "b", "model": "explicit"})

        assert await asyncio.ensure_future(in_a_task()) == {
            "event": "b",
            "model": "explicit",
            "request_id": "req-3",
            "key": "team-a",
        }
    finally:
        unbind_request(token)
    assert current_request() is None
    assert add_request_fields(None, "info", {"event": "c"}) == {"event": "c"}
