"""Stored Responses: what `previous_response_id`, `item_reference`, GET, DELETE and `input_items` read.

A record is one response and every input item the model saw for it (a continued response's record
holds the whole conversation before it, so continuing it is one read, not a walk down the chain).
Each item with an id is also kept on its own, so `item_reference`s resolve in one read. Records and
items are scoped to the key that created them: the store key names the owner, so another key's id
is simply not found. Everything expires after `responses.store_ttl_s`; a record larger than
`responses.max_stored_bytes` is not stored.

`RedisResponseStore` (with `redis_url`): a conversation started on one replica continues on any
other. Round trips: one `GET` per `previous_response_id`, one `MGET` per request with
`item_reference`s, one pipelined write per stored response; DELETE reads then deletes. The owner is
a hash tag (`{owner}`), so one owner's keys share a Cluster slot and multi-key calls work there too.
Unreachable: reads raise `StoreUnavailable`; the caller answers 503 (a stateless request never reads).

`MemoryResponseStore` (without): the same in process, bounded by `responses.memory_budget_bytes`
(oldest first out).
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import msgspec

from gateway.openai.responses_api import ResponseObject

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from gateway.config import ResponsesSettings

STORE_TIMEOUT_S: Final = 2.0
"""One store call (a round trip, or a pipeline) must finish within this."""
PREFIX: Final = "gw:resp"
VALID_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,200}")


class StoredResponse(msgspec.Struct):
    response: ResponseObject
    input_items: list[dict[str, Any]]
    """Every input item of the response, the conversation it continues first; each has an `id`."""


_record_decoder: Final = msgspec.json.Decoder(StoredResponse)
_item_decoder: Final = msgspec.json.Decoder(dict[str, Any])
_encoder: Final = msgspec.json.Encoder()


class StoreUnavailable(Exception):
    """The shared store could not be reached (or answered too slowly)."""


class ResponseStore(Protocol):
    kind: str

    async def get(self, owner: str, response_id: str) -> StoredResponse | None: ...

    async def items(self, owner: str, item_ids: list[str]) -> dict[str, dict[str, Any]]: ...

    async def put(self, owner: str, record: StoredResponse, items: list[dict[str, Any]]) -> bool:
        """Store the record and its items; False when it is larger than the cap."""
        ...

    async def delete(self, owner: str, response_id: str) -> bool: ...

    async def aclose(self) -> None: ...


def _encode(record: StoredResponse, items: list[dict[str, Any]]) -> tuple[bytes, list[tuple[str, bytes]]]:
    return _encoder.encode(record), [(item["id"], _encoder.encode(item)) for item in items if "id" in item]


class MemoryResponseStore:
    kind = "memory"

    def __init__(self, settings: ResponsesSettings) -> None:
        self._ttl = settings.store_ttl_s
        self._cap = settings.max_stored_bytes
        self._budget = settings.memory_budget_bytes
        self._size = 0
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def _read(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._drop(key)
            return None
        return entry[1]

    def _write(self, key: str, value: bytes, expires: float) -> None:
        self._drop(key)
        self._entries[key] = (expires, value)
        self._size += len(value)
        while self._size > self._budget and self._entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._size -= len(entry[1])

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        raw = self._read(_record_key(owner, response_id))
        return None if raw is None else _record_decoder.decode(raw)

    async def items(self, owner: str, item_ids: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for item_id in item_ids:
            raw = self._read(_item_key(owner, item_id))
            if raw is not None:
                found[item_id] = _item_decoder.decode(raw)
        return found

    async def put(self, owner: str, record: StoredResponse, items: list[dict[str, Any]]) -> bool:
        body, encoded = _encode(record, items)
        if len(body) > self._cap:
            return False
        expires = time.monotonic() + self._ttl
        for item_id, value in encoded:
            self._write(_item_key(owner, item_id), value, expires)
        self._write(_record_key(owner, record.response.id), body, expires)
        return True

    async def delete(self, owner: str, response_id: str) -> bool:
        record = await self.get(owner, response_id)
        if record is None:
            return False
        for item in record.response.output:
            self._drop(_item_key(owner, item.id))
        self._drop(_record_key(owner, response_id))
        return True

    async def aclose(self) -> None:
        self._entries.clear()
        self._size = 0


class RedisResponseStore:
    kind = "redis"

    def __init__(self, client: Redis | RedisCluster, settings: ResponsesSettings) -> None:
        self._client = client
        self._ttl = settings.store_ttl_s
        self._cap = settings.max_stored_bytes

    @classmethod
    def from_url(cls, url: str, settings: ResponsesSettings) -> RedisResponseStore:
        from gateway.limits.redis import connect

        return cls(connect(url), settings)

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        raw = await self._call(self._client.get(_record_key(owner, response_id)))
        return None if raw is None else _record_decoder.decode(raw)

    async def items(self, owner: str, item_ids: list[str]) -> dict[str, dict[str, Any]]:
        values = await self._call(self._client.mget([_item_key(owner, i) for i in item_ids]))
        return {
            item_id: _item_decoder.decode(raw) for item_id, raw in zip(item_ids, values, strict=True) if raw
        }

    async def put(self, owner: str, record: StoredResponse, items: list[dict[str, Any]]) -> bool:
        body, encoded = _encode(record, items)
        if len(body) > self._cap:
            return False
        pipe = self._client.pipeline(transaction=False)
        for item_id, value in encoded:
            pipe.set(_item_key(owner, item_id), value, ex=self._ttl)
        pipe.set(_record_key(owner, record.response.id), body, ex=self._ttl)
        await self._call(pipe.execute())
        return True

    async def delete(self, owner: str, response_id: str) -> bool:
        record = await self.get(owner, response_id)
        if record is None:
            return False
        keys = [_item_key(owner, item.id) for item in record.response.output]
        await self._call(self._client.delete(_record_key(owner, response_id), *keys))
        return True

    async def _call(self, call: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            with anyio.fail_after(STORE_TIMEOUT_S):
                return await call
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(type(exc).__name__) from None

    async def aclose(self) -> None:
        await self._client.aclose()


def _record_key(owner: str, response_id: str) -> str:
    return f"{PREFIX}:{{{owner}}}:r:{response_id}"


def _item_key(owner: str, item_id: str) -> str:
    return f"{PREFIX}:{{{owner}}}:i:{item_id}"


def create_response_store(redis_url: str, settings: ResponsesSettings) -> ResponseStore:
    url = redis_url.strip()
    if url:
        return RedisResponseStore.from_url(url, settings)
    return MemoryResponseStore(settings)


__all__ = (
    "VALID_ID",
    "MemoryResponseStore",
    "RedisResponseStore",
    "ResponseStore",
    "StoreUnavailable",
    "StoredResponse",
    "create_response_store",
)
