"""Benchmark: what looking a key up costs per request, config keys beside 1,000 API-made keys.

    .venv/bin/python -m tests.bench_api_keys [--keys 1000] [--loops 200000]

Times `Gateway.authenticate` (the header scan, the SHA-256, the index lookups, the expiry check) in
process, without Redis: the API keys are put into the cache as a resync would, which is all the
request path ever reads.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import timeit
from datetime import UTC, datetime, timedelta

import msgspec

from gateway.admin.keys import digest_hex, new_secret, secret_hint
from gateway.app import Gateway
from gateway.config import Settings
from gateway.context import RequestInfo
from gateway.keys.records import KeyRecord
from gateway.observability.metrics import Metrics

CONFIG_KEY = "sk-config-key-for-the-benchmark-0123456789"


def gateway(api_keys: int) -> tuple[Gateway, str]:
    raw = {
        "backends": {"demo": {"kind": "mock"}},
        "models": {"m": {"targets": [{"backend": "demo", "model": "x"}]}},
        "keys": [{"id": f"config-{i}", "key": f"{CONFIG_KEY}-{i}"} for i in range(10)],
        "redis_url": "redis://127.0.0.1:1",  # never contacted: the cache is filled directly
        "admin": {"key": "admin-key-for-the-benchmark"},
    }
    settings = msgspec.convert(raw, Settings)
    gw = Gateway(settings, Metrics())
    cache = gw.api_keys
    assert cache is not None
    now = datetime.now(UTC)
    secret = ""
    for i in range(api_keys):
        secret = new_secret()
        record = KeyRecord(
            id=f"api-{i}",
            rpm=100,
            expires_at=now + timedelta(days=1) if i % 2 else None,
            created_at=now,
            secret_hint=secret_hint(secret),
            sha256=digest_hex(secret),
        )
        cache.put_key(record.id, record)
    return gw, secret


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--loops", type=int, default=200_000)
    args = parser.parse_args()
    gw, secret = gateway(args.keys)
    info = RequestInfo()
    cases = {
        "config key": f"{CONFIG_KEY}-3",
        f"API key (1 of {args.keys}, with an expiry)": secret,
    }
    sha = timeit.timeit(lambda: hashlib.sha256(secret.encode()).digest(), number=args.loops)
    print(f"sha256 of the key alone: {sha / args.loops * 1e6:.2f} us")
    for name, key in cases.items():
        headers = [(b"host", b"gw"), (b"authorization", f"Bearer {key}".encode()), (b"content-type", b"json")]
        assert gw.authenticate(headers, info) is not None
        total = timeit.timeit(functools.partial(gw.authenticate, headers, info), number=args.loops)
        print(f"authenticate, {name}: {total / args.loops * 1e6:.2f} us")


if __name__ == "__main__":
    main()
