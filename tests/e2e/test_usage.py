"""The usage ledger across replicas: two `gateway serve` processes sharing one real Redis.

Each replica serves a counted number of requests (streamed and not, for two keys and two models, plus
refusals by a shared rpm limit); once flushed, `GET /admin/v1/usage` on either replica totals exactly
what was sent: requests, the tokens the responses reported, the cost at the configured prices, and
the errors. Then the grouping variants, the retention TTL in Redis, bad parameters, `gateway usage`
(table, `--json`, `--csv`, errors) against a running gateway, no Redis call per request, and the
shutdown's flush.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from gateway.cli import main
from tests.gateway_process import ROOT, GatewayProcess
from tests.redis_server import RedisServer
from tests.waiting import wait_for

ADMIN_KEY = "admin-usage-test-6d0f2a91c4"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
PRICES = {"cheap": (0.15, 0.6), "dear": (3.0, 15.0)}
"""USD per million input and output tokens, per model."""
REQUESTS_PER_REPLICA = 6
LIMITED_RPM = 3
LIMITED_SENT = 4
"""Requests per replica with the limited key: across both replicas only `LIMITED_RPM` get through."""
RETENTION_DAYS = 7
FIELDS = ("requests", "input_tokens", "output_tokens", "cost_usd", "errors")


def secret(name: str) -> str:
    return f"sk-usage-{name}-{'5e1f' * 6}"


@pytest.fixture
def replicas(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[list[GatewayProcess], str]]:
    run = "u" + os.urandom(3).hex()  # key ids of this run: the shared Redis holds other runs' rows too
    config: dict[str, Any] = {
        "redis_url": redis_server.url,
        "admin": {"key": ADMIN_KEY},
        "usage": {"retention_days": RETENTION_DAYS, "flush_interval_s": 0.2},
        "backends": {"demo": {"kind": "mock", "token_delay_s": 0}},
        "models": {
            name: {
                "targets": [{"backend": "demo", "model": "mock"}],
                "price": {"input_per_mtok": price[0], "output_per_mtok": price[1]},
            }
            for name, price in PRICES.items()
        },
        "keys": [
            {"id": f"{run}-a", "key": secret(f"{run}-a")},
            {"id": f"{run}-b", "key": secret(f"{run}-b")},
            {"id": f"{run}-limited", "key": secret(f"{run}-limited"), "rpm": LIMITED_RPM},
        ],
    }
    processes = [GatewayProcess(config, tmp_path) for _ in range(2)]
    try:
        for process in processes:
            process.start()
        yield processes, run
    finally:
        for process in processes:
            process.stop()


def micro_usd(model: str, prompt: int, completion: int) -> int:
    input_price, output_price = PRICES[model]
    return math.ceil(prompt * input_price + completion * output_price)


def test_usage_totals_equal_what_two_replicas_served(
    replicas: tuple[list[GatewayProcess], str], redis_server: RedisServer, tmp_path: Path
) -> None:
    processes, run = replicas
    sent: dict[tuple[str, str], list[int]] = {}  # (key, model): requests, input, output, cost µUSD, errors
    for index, process in enumerate(processes):
        for i in range(REQUESTS_PER_REPLICA):
            key = f"{run}-{'ab'[i % 2]}"
            model = "cheap" if i % 3 else "dear"
            client = openai.OpenAI(base_url=process.url + "/v1", api_key=secret(key), max_retries=0)
            counts = sent.setdefault((key, model), [0, 0, 0, 0, 0])
            if i % 2:
                stream = client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": f"stream {index} {i} " * (i + 1)}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
                usage = next(chunk.usage for chunk in stream if chunk.usage is not None)
            else:
                answer = client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": f"hello {index} {i} " * (i + 1)}]
                )
                assert answer.usage is not None
                usage = answer.usage
            counts[0] += 1
            counts[1] += usage.prompt_tokens
            counts[2] += usage.completion_tokens
            counts[3] += micro_usd(model, usage.prompt_tokens, usage.completion_tokens)
        limited = f"{run}-limited"
        for _ in range(LIMITED_SENT):
            response = httpx.post(
                process.url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {secret(limited)}"},
                json={"model": "cheap", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
            )
            counts = sent.setdefault((limited, "cheap"), [0, 0, 0, 0, 0])
            counts[0] += 1
            if response.status_code == 429:
                counts[4] += 1
                continue
            assert response.status_code == 200, response.text
            usage = response.json()["usage"]
            counts[1] += usage["prompt_tokens"]
            counts[2] += usage["completion_tokens"]
            counts[3] += micro_usd("cheap", usage["prompt_tokens"], usage["completion_tokens"])
    limited_errors = sent[(f"{run}-limited", "cheap")][4]
    assert limited_errors == 2 * LIMITED_SENT - LIMITED_RPM  # the shared limit refused the rest

    def expected(group: str) -> dict[str | None, list[int]]:
        groups: dict[str | None, list[int]] = {}
        for (key, model), counts in sent.items():
            name = {"key": key, "model": model, "team": None}[group]
            into = groups.setdefault(name, [0, 0, 0, 0, 0])
            for i, amount in enumerate(counts):
                into[i] += amount
        return groups

    def shown(counts: list[int]) -> dict[str, Any]:
        """As the API shows counters: cost in USD (counted in micro-USD)."""
        return {
            field: count / 1_000_000 if field == "cost_usd" else count
            for field, count in zip(FIELDS, counts, strict=True)
        }

    everything = [0, 0, 0, 0, 0]
    for counts in sent.values():
        for i, amount in enumerate(counts):
            everything[i] += amount
    total = shown(everything)
    keys = sorted({key for key, _ in sent})

    def run_usage(process: GatewayProcess, **params: str) -> dict[str, Any]:
        # One key's rows each (the shared Redis holds other runs' too), summed.
        answers = []
        for key in keys:
            response = httpx.get(
                process.url + "/admin/v1/usage", params={**params, "key": key}, headers=ADMIN
            )
            assert response.status_code == 200, response.text
            answers.append(response.json())
        return {"answers": answers, "requests": sum(a["totals"]["requests"] for a in answers)}

    # The other replica's counters arrive within a flush interval: wait for all of them on both.
    for process in processes:

        def complete(process: GatewayProcess = process) -> bool:
            return bool(run_usage(process)["requests"] == total["requests"])

        wait_for(complete)

    by_key = {}
    for key in keys:
        body = httpx.get(
            processes[0].url + "/admin/v1/usage", params={"key": key, "group_by": "key"}, headers=ADMIN
        ).json()
        assert body["source"] == "redis"
        assert body["group_by"] == "key"
        assert len(body["data"]) == 1
        by_key[key] = body["data"][0]
    assert by_key == {key: {"key": key, **shown(counts)} for key, counts in expected("key").items()}

    for group in ("model", "team", "day"):
        merged: dict[str | None, list[int]] = {}
        for answer in run_usage(processes[1], group_by=group)["answers"]:
            for row in answer["data"]:
                into = merged.setdefault(row[group], [0, 0, 0, 0, 0])
                for i, field in enumerate(FIELDS):
                    into[i] += round(row[field] * 1_000_000) if field == "cost_usd" else row[field]
        if group == "day":
            assert len(merged) == 1  # today (a run across midnight would split it)
            assert list(merged.values()) == [everything]
        else:
            assert merged == expected(group)

    # Retention: every hash and the day's index expire `retention_days` after the day ends.
    day = httpx.get(processes[0].url + "/admin/v1/usage", headers=ADMIN).json()["from"]
    member = json.dumps([keys[0], None, "cheap"], separators=(",", ":"))
    with redis.Redis.from_url(redis_server.url) as store:
        for name in (f"llmgw:{{usage:{day}}}:index", f"llmgw:{{usage:{day}}}:row:{member}"):
            assert RETENTION_DAYS * 86_400 < store.ttl(name) <= (RETENTION_DAYS + 1) * 86_400, name

    # The CLI against a running gateway: JSON, CSV and the table.
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        "GATEWAY_ADMIN_URL": processes[0].url,
        "GATEWAY_ADMIN_KEY": ADMIN_KEY,
    }

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "usage", *args],
            capture_output=True,
            text=True,
            env=environment,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    limited = f"{run}-limited"
    as_json = json.loads(cli("--key", limited, "--group-by", "model", "--json"))
    assert as_json["data"] == [{"model": "cheap", **shown(sent[(limited, "cheap")])}]
    rows = list(csv.DictReader(io.StringIO(cli("--key", limited, "--group-by", "model", "--csv"))))
    assert rows == [
        {
            "model": "cheap",
            "requests": str(sent[(limited, "cheap")][0]),
            "input_tokens": str(sent[(limited, "cheap")][1]),
            "output_tokens": str(sent[(limited, "cheap")][2]),
            "cost_usd": f"{sent[(limited, 'cheap')][3] / 1_000_000:.6f}",
            "errors": str(sent[(limited, "cheap")][4]),
        }
    ]
    table = cli("--key", limited, "--admin-url", processes[1].url, "--admin-key", ADMIN_KEY)
    assert "requests" in table.splitlines()[0]
    assert any(line.split()[0] == as_json["from"] for line in table.splitlines()[1:])
    assert ADMIN_KEY not in table


def test_bad_usage_parameters_are_400s_naming_the_parameter(tmp_path: Path) -> None:
    config = {
        "admin": {"key": ADMIN_KEY},
        "backends": {"demo": {"kind": "mock"}},
        "models": {"m": {"targets": [{"backend": "demo", "model": "x"}]}},
    }
    with GatewayProcess(config, tmp_path) as gateway:
        url = gateway.url + "/admin/v1/usage"
        for params, param in (
            ({"from": "2026-13-01"}, "from"),
            ({"to": "yesterday"}, "to"),
            ({"from": "2026-01-02", "to": "2026-01-01"}, "to"),
            ({"from": "2024-01-01", "to": "2026-01-01"}, "from"),
            ({"group_by": "hour"}, "group_by"),
            ({"keys": "a"}, "keys"),
        ):
            response = httpx.get(url, params=params, headers=ADMIN)
            assert response.status_code == 400, (params, response.text)
            assert response.json()["error"]["param"] == param
        assert httpx.get(url).status_code == 401
        # Without Redis the process's own ledger answers: a request counted at once.
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="none", max_retries=0)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        body = httpx.get(url, params={"group_by": "model"}, headers=ADMIN).json()
        assert body["source"] == "memory"
        assert [(row["model"], row["requests"], row["errors"]) for row in body["data"]] == [("m", 1, 0)]


def script_calls(store: redis.Redis) -> int:
    """EVALSHA and EVAL calls the server has run (the ledger's only writes are script calls)."""
    stats = store.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


def test_no_round_trip_per_request_and_shutdown_writes_what_is_pending(tmp_path: Path) -> None:
    """A flush interval longer than the test: the requests cause no Redis call (their key and model
    have no limits, so the limiter makes none either), and only the shutdown's flush writes them, in
    one script call. A Redis of its own, so no other test's calls are counted."""
    key_id = "u" + os.urandom(3).hex()
    sent = 20
    with RedisServer() as server, redis.Redis.from_url(server.url) as store:
        config = {
            "redis_url": server.url,
            "admin": {"key": ADMIN_KEY},
            "usage": {"flush_interval_s": 60},
            "backends": {"demo": {"kind": "mock", "token_delay_s": 0}},
            "models": {"m": {"targets": [{"backend": "demo", "model": "x"}]}},
            "keys": [{"id": key_id, "key": secret(key_id)}],
        }
        with GatewayProcess(config, tmp_path) as gateway:
            client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret(key_id), max_retries=0)
            answers = [
                client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi " * n}])
                for n in range(1, sent + 1)
            ]
            # Not from the usage API: reading it writes the process's pending counters first.
            day = datetime.datetime.now(datetime.UTC).date().isoformat()
            assert script_calls(store) == 0
        assert 1 <= script_calls(store) <= 2  # one batch (its EVALSHA again after loading the script)
        member = json.dumps([key_id, None, "m"], separators=(",", ":"))
        stored = store.hgetall(f"llmgw:{{usage:{day}}}:row:{member}")
    assert {name.decode(): int(value) for name, value in stored.items()} == {
        "requests": sent,
        "input_tokens": sum(answer.usage.prompt_tokens for answer in answers if answer.usage),
        "output_tokens": sum(answer.usage.completion_tokens for answer in answers if answer.usage),
    }


def test_the_cli_says_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process (`gateway.cli.main`, as `python -m gateway` runs it) against a running gateway."""
    config = {
        "admin": {"key": ADMIN_KEY},
        "backends": {"demo": {"kind": "mock"}},
        "models": {"m": {"targets": [{"backend": "demo", "model": "x"}]}},
    }
    for name in ("GATEWAY_ADMIN_URL", "GATEWAY_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)
    with GatewayProcess(config, tmp_path) as gateway:

        def cli(*args: str) -> tuple[int, str, str]:
            status = main(["usage", *args])
            out, err = capsys.readouterr()
            return status, out, err

        status, _, err = cli()
        assert status == 2
        assert "GATEWAY_ADMIN_URL" in err
        status, out, err = cli("--admin-url", gateway.url, "--admin-key", "not-" + ADMIN_KEY)
        assert status == 1
        assert "401" in err
        assert ADMIN_KEY not in err + out
        monkeypatch.setenv("GATEWAY_ADMIN_URL", gateway.url)
        monkeypatch.setenv("GATEWAY_ADMIN_KEY", ADMIN_KEY)
        status, _, err = cli("--from", "2026-02-30")
        assert status == 1
        assert "Invalid 'from' date" in err
        assert cli("--csv") == (0, "day,requests,input_tokens,output_tokens,cost_usd,errors\n", "")
    status, _, err = cli("--csv")
    assert status == 1
    assert "cannot reach" in err
