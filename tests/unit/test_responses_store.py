"""The stored-responses store: in process and in a real redis-server (and a Redis Cluster), with the
same contract: records and items scoped to their owner, a size cap, expiry, deletion."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest
from redis.asyncio import Redis

from gateway.config import ResponsesSettings
from gateway.openai.responses_api import (
    OutputMessage,
    OutputTextPart,
    ResponseObject,
    ResponseText,
    ResponseTextFormat,
)
from gateway.state.responses import (
    MemoryResponseStore,
    RedisResponseStore,
    ResponseStore,
    StoredResponse,
    StoreUnavailable,
    create_response_store,
)
from tests.emulators.server import free_port

if TYPE_CHECKING:
    from tests.redis_server import RedisClusterServers, RedisServer


def record(response_id: str, text: str = "hello") -> StoredResponse:
    response = ResponseObject(
        id=response_id,
        created_at=1,
        status="completed",
        model="m",
        text=ResponseText(format=ResponseTextFormat(type="text")),
        output=[
            OutputMessage(id=f"msg_{response_id}", status="completed", content=[OutputTextPart(text=text)])
        ],
    )
    return StoredResponse(
        response=response, input_items=[{"id": "msg_in", "type": "message", "role": "user"}]
    )


async def exercise(store: ResponseStore, run: str) -> None:
    alice, bob = f"alice-{run}", f"bob-{run}"
    kept = record(f"resp_{run}")
    output: list[dict[str, Any]] = [{"id": f"msg_resp_{run}", "type": "message", "role": "assistant"}]
    assert await store.put(alice, kept, [{"id": "msg_in", "type": "message"}, *output])
    got = await store.get(alice, kept.response.id)
    assert got is not None
    assert got.response.output[0].id == f"msg_resp_{run}"
    assert got.input_items == kept.input_items
    assert await store.get(bob, kept.response.id) is None  # another owner sees nothing
    assert set(await store.items(alice, ["msg_in", f"msg_resp_{run}", "msg_missing"])) == {
        "msg_in",
        f"msg_resp_{run}",
    }
    assert await store.items(bob, ["msg_in"]) == {}
    assert not await store.delete(bob, kept.response.id)
    assert await store.delete(alice, kept.response.id)
    assert await store.get(alice, kept.response.id) is None
    assert not await store.delete(alice, kept.response.id)
    huge = record(f"resp_big_{run}", "x" * 4096)
    assert not await store.put(alice, huge, [])  # above max_stored_bytes: not stored
    assert await store.get(alice, huge.response.id) is None


SMALL = ResponsesSettings(max_stored_bytes=2048, memory_budget_bytes=64 * 1024)


def test_memory_store() -> None:
    asyncio.run(exercise(MemoryResponseStore(SMALL), "m"))


def test_memory_store_forgets_the_oldest_beyond_its_budget_and_expires() -> None:
    async def main() -> None:
        store = MemoryResponseStore(ResponsesSettings(max_stored_bytes=4096, memory_budget_bytes=4096))
        for i in range(10):
            assert await store.put("o", record(f"resp_{i}", "y" * 600), [])
        assert await store.get("o", "resp_0") is None
        assert await store.get("o", "resp_9") is not None
        short = MemoryResponseStore(ResponsesSettings(store_ttl_s=1))
        await short.put("o", record("resp_t"), [])
        assert await short.get("o", "resp_t") is not None
        deadline = time.monotonic() + 10
        while await short.get("o", "resp_t") is not None:  # expires after about a second
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)

    asyncio.run(main())


def test_redis_store(redis_server: RedisServer) -> None:
    async def main() -> None:
        store = create_response_store(redis_server.url, SMALL)
        assert isinstance(store, RedisResponseStore)
        try:
            await exercise(store, "r")
            await store.put("carol", record("resp_ttl"), [])
            client = Redis.from_url(redis_server.url)
            keys = [key async for key in client.scan_iter(match="gw:resp:{carol}:*")]
            assert keys
            ttls = [await client.ttl(key) for key in keys]
            assert all(SMALL.store_ttl_s - 60 < ttl <= SMALL.store_ttl_s for ttl in ttls)
            await client.aclose()
        finally:
            await store.aclose()

    asyncio.run(main())


def test_redis_cluster_store(redis_cluster: RedisClusterServers) -> None:
    async def main() -> None:
        store = create_response_store(redis_cluster.url, SMALL)
        try:
            await exercise(store, "c")
        finally:
            await store.aclose()

    asyncio.run(main())


def test_unreachable_redis_raises_store_unavailable() -> None:
    async def main() -> None:
        store = create_response_store(f"redis://127.0.0.1:{free_port()}", SMALL)
        try:
            with pytest.raises(StoreUnavailable):
                await store.get("o", "resp_x")
            with pytest.raises(StoreUnavailable):
                await store.put("o", record("resp_x"), [])
        finally:
            await store.aclose()

    asyncio.run(main())
