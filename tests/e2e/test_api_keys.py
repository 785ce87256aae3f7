"""Keys and teams made through the admin API: real `gateway serve` processes sharing a real Redis.

Covers the API (CRUD, errors in OpenAI's envelope), propagation to every replica (creation,
revocation, rotation with its grace), team limits shared by the team's keys, and the CLI. Every
secret the API hands out is registered with the secret scan, which checks each gateway's output
when it stops. Propagation times are printed (`-s`); the one-second target is reported, not
asserted: wall-clock bounds here are only hang guards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests import secret_scan
from tests.gateway_process import ROOT, GatewayProcess
from tests.redis_server import command
from tests.waiting import wait_for

if TYPE_CHECKING:
    from tests.redis_server import RedisClusterServers, RedisServer

ADMIN_KEY = "admin-key-for-api-keys-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CONFIG_KEY = "sk-config-key-for-api-keys-tests-0123"
REPLICAS = 3
CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def config(redis_url: str | None, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "log_level": "info",
        "admin": {"key": ADMIN_KEY},
        "backends": {"demo": {"kind": "mock", "token_delay_s": 0}},
        "models": {
            "m": {"targets": [{"backend": "demo", "model": "x"}], "aliases": ["m-alias"]},
            "other": {"targets": [{"backend": "demo", "model": "y"}]},
        },
        "keys": [{"id": "config-key", "key": CONFIG_KEY}],
    }
    if redis_url is not None:
        base["redis_url"] = redis_url
    return {**base, **extra}


_clients: list[httpx.Client] = []


def admin(url: str) -> httpx.Client:
    """An admin API client, closed after the test."""
    client = httpx.Client(base_url=f"{url}/admin/v1", headers=ADMIN, timeout=10)
    _clients.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def status_with(url: str, secret: str) -> int:
    return httpx.get(f"{url}/v1/models", headers=bearer(secret), timeout=10).status_code


def created(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    assert response.status_code == 201, response.text
    body = response.json()
    secret_scan.register(body["secret"], f"API key {body['key']['id']}")
    return body["secret"], body["key"]


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    detail: dict[str, Any] = response.json()["error"]
    return detail


@pytest.fixture
def run() -> str:
    """Ids unique to this test: the session's Redis is shared by every test."""
    return "t" + os.urandom(3).hex()


@pytest.fixture
def gateway(redis_server: RedisServer, tmp_path: Path) -> Iterator[GatewayProcess]:
    with GatewayProcess(config(redis_server.url), tmp_path) as process:
        yield process


def test_keys_crud_and_their_effect(gateway: GatewayProcess, run: str) -> None:
    api = admin(gateway.url)
    team = api.post("/teams", json={"id": f"{run}-team", "rpm": 100, "metadata": {"owner": "search"}})
    assert team.status_code == 201, team.text
    assert team.json()["rpm"] == 100
    secret, key = created(
        api.post("/keys", json={"id": f"{run}-a", "team": f"{run}-team", "models": ["m-alias"], "tpm": 1000})
    )
    assert secret.startswith("sk-gw-")
    assert len(secret) == len("sk-gw-") + 48
    assert key["team"] == f"{run}-team"
    assert key["secret_hint"] == f"sk-gw-…{secret[-4:]}"
    assert "sha256" not in key
    # The key works at once on the replica that made it, for the models it may use only.
    models = httpx.get(f"{gateway.url}/v1/models", headers=bearer(secret)).json()
    assert [m["id"] for m in models["data"]] == ["m", "m-alias"]
    chat = httpx.post(f"{gateway.url}/v1/chat/completions", headers=bearer(secret), json=CHAT)
    assert chat.status_code == 200, chat.text
    other = httpx.post(
        f"{gateway.url}/v1/chat/completions", headers=bearer(secret), json={**CHAT, "model": "other"}
    )
    assert error(other, 404)["code"] == "model_not_found"
    # Config keys keep working beside API keys.
    assert status_with(gateway.url, CONFIG_KEY) == 200

    listed = api.get("/keys").json()
    assert listed["object"] == "list"
    mine = [k for k in listed["data"] if k["id"] == f"{run}-a"]
    assert mine == [key]
    assert secret not in api.get("/keys").text
    assert api.get(f"/keys/{run}-a").json() == key

    patched = api.patch(f"/keys/{run}-a", json={"tpm": None, "rpm": 50, "metadata": {"env": "prod"}})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["tpm"], patched.json()["rpm"], patched.json()["metadata"]) == (
        None,
        50,
        {"env": "prod"},
    )
    assert patched.json()["updated_at"] is not None
    assert api.get(f"/keys/{run}-a").json()["rpm"] == 50

    # The status page lists API keys and teams, never a secret.
    status = api.get("/status")
    assert secret not in status.text
    listed_keys = {k["id"]: k for k in status.json()["keys"]}
    assert listed_keys[f"{run}-a"]["source"] == "api"
    assert listed_keys[f"{run}-a"]["limits"] == {"rpm": 50}
    assert listed_keys["config-key"]["source"] == "config"
    teams = {t["id"]: t for t in status.json()["teams"]}
    assert teams[f"{run}-team"]["keys"] == 1

    revoked = api.delete(f"/keys/{run}-a")
    assert revoked.json() == {"id": f"{run}-a", "object": "key", "deleted": True}
    refused = httpx.get(f"{gateway.url}/v1/models", headers=bearer(secret))
    assert error(refused, 401)["code"] == "invalid_api_key"
    assert secret not in refused.text
    assert error(api.get(f"/keys/{run}-a"), 404)["code"] == "key_not_found"


def test_admin_api_errors(gateway: GatewayProcess, run: str) -> None:
    api = admin(gateway.url)
    created(api.post("/keys", json={"id": f"{run}-dup"}))
    cases: list[tuple[str, str, Any, int, str | None, str | None]] = [
        ("POST", "/keys", {"id": f"{run}-dup"}, 409, "id", "key_exists"),
        ("POST", "/keys", {"id": "config-key"}, 409, "id", "key_exists"),
        ("POST", "/keys", {"models": ["m"]}, 400, "id", None),
        ("POST", "/keys", {"id": "has/slash"}, 400, "id", None),
        ("POST", "/keys", {"id": f"{run}-x", "rpm": 0}, 400, "rpm", None),
        ("POST", "/keys", {"id": f"{run}-x", "rpm": "ten"}, 400, "rpm", None),
        ("POST", "/keys", {"id": f"{run}-x", "secret": "mine"}, 400, "secret", None),
        ("POST", "/keys", {"id": f"{run}-x", "models": ["nope"]}, 400, "models", None),
        ("POST", "/keys", {"id": f"{run}-x", "models": []}, 400, "models", None),
        ("POST", "/keys", {"id": f"{run}-x", "team": f"{run}-none"}, 400, "team", "team_not_found"),
        ("POST", "/keys", {"id": f"{run}-x", "expires_at": "2020-01-01T00:00:00Z"}, 400, "expires_at", None),
        ("POST", "/keys", {"id": f"{run}-x", "expires_at": "2099-01-01T00:00:00"}, 400, "expires_at", None),
        # In UTC past the datetime range (year 10000, year 0): 400s, not 500s.
        (
            "POST",
            "/keys",
            {"id": f"{run}-x", "expires_at": "9999-12-31T23:59:59-12:00"},
            400,
            "expires_at",
            None,
        ),
        (
            "POST",
            "/keys",
            {"id": f"{run}-x", "expires_at": "0001-01-01T00:00:00+14:00"},
            400,
            "expires_at",
            None,
        ),
        ("PATCH", f"/keys/{run}-dup", {"expires_at": "9999-12-31T23:00:00-23:59"}, 400, "expires_at", None),
        (
            "POST",
            "/keys",
            {"id": f"{run}-x", "budget": {"usd": -1, "period": "day"}},
            400,
            "budget.usd",
            None,
        ),
        ("POST", "/keys", {"id": f"{run}-x", "metadata": {"a": 1}}, 400, "metadata[...]", None),
        ("PATCH", f"/keys/{run}-dup", {"id": "renamed"}, 400, "id", None),
        ("PATCH", f"/keys/{run}-dup", {"models": None}, 400, "models", None),
        ("PATCH", f"/keys/{run}-none", {"rpm": 1}, 404, None, "key_not_found"),
        ("POST", f"/keys/{run}-dup/rotate", {"grace_s": -1}, 400, "grace_s", None),
        ("POST", f"/keys/{run}-none/rotate", {}, 404, None, "key_not_found"),
        ("DELETE", f"/keys/{run}-none", None, 404, None, "key_not_found"),
        ("GET", f"/teams/{run}-none", None, 404, None, "team_not_found"),
        ("DELETE", f"/teams/{run}-none", None, 404, None, "team_not_found"),
        ("POST", "/teams", {"id": f"{run}-t", "models": ["m"]}, 400, "models", None),
    ]
    for method, path, body, status, param, code in cases:
        detail = error(api.request(method, path, json=body), status)
        assert (detail["param"], detail["type"]) == (param, "invalid_request_error"), (path, body, detail)
        if code is not None:
            assert detail["code"] == code, (path, body, detail)
    not_json = api.post("/keys", content=b"{not json", headers={"content-type": "application/json"})
    assert "could not parse the JSON body" in error(not_json, 400)["message"]
    # Without the admin key: a 401, as for every admin route.
    assert httpx.get(f"{gateway.url}/admin/v1/keys").status_code == 401

    # A team with keys is not deleted unless asked to revoke them too.
    assert api.post("/teams", json={"id": f"{run}-t"}).status_code == 201
    assert error(api.post("/teams", json={"id": f"{run}-t"}), 409)["code"] == "team_exists"
    secret, _ = created(api.post("/keys", json={"id": f"{run}-member", "team": f"{run}-t"}))
    in_use = error(api.delete(f"/teams/{run}-t"), 409)
    assert in_use["code"] == "team_has_keys"
    assert f"{run}-member" in in_use["message"]
    forced = api.delete(f"/teams/{run}-t", params={"force": "true"})
    assert forced.json() == {
        "id": f"{run}-t",
        "object": "team",
        "deleted": True,
        "revoked_keys": [f"{run}-member"],
    }
    assert status_with(gateway.url, secret) == 401
    assert api.get(f"/keys/{run}-member").status_code == 404


def test_an_expired_key_is_refused(gateway: GatewayProcess, run: str) -> None:
    api = admin(gateway.url)
    # Far enough ahead that even a slow creation is in time, near enough to wait for.
    soon = (datetime.now(UTC) + timedelta(seconds=6)).isoformat()
    secret, key = created(api.post("/keys", json={"id": f"{run}-brief", "expires_at": soon}))
    assert key["expires_at"].endswith("Z")
    wait_for(lambda: status_with(gateway.url, secret) == 401)
    refused = httpx.get(f"{gateway.url}/v1/models", headers=bearer(secret))
    assert "has expired" in error(refused, 401)["message"]


def test_without_redis_the_keys_api_says_what_it_needs(tmp_path: Path) -> None:
    with GatewayProcess(config(None), tmp_path) as gateway:
        detail = error(admin(gateway.url).post("/keys", json={"id": "k"}), 503)
        assert detail["code"] == "key_store_unavailable"
        assert "redis_url" in detail["message"]
        assert error(admin(gateway.url).get("/teams"), 503)["code"] == "key_store_unavailable"


def test_with_a_key_store_requests_need_a_key_even_without_a_keys_section(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = {k: v for k, v in config(redis_server.url).items() if k != "keys"}
    with GatewayProcess(settings, tmp_path) as gateway:
        assert error(httpx.get(f"{gateway.url}/v1/models"), 401)["code"] == "invalid_api_key"
        secret, _ = created(admin(gateway.url).post("/keys", json={"id": "t" + os.urandom(3).hex()}))
        assert status_with(gateway.url, secret) == 200


SHADOWING_KEY = "sk-config-key-shadowing-an-api-key-4567"


def test_a_config_key_shadows_an_api_key_of_the_same_id(
    gateway: GatewayProcess, redis_server: RedisServer, tmp_path: Path, run: str
) -> None:
    """An id is one key's (issue 18): a gateway started with a `keys:` id an API key already has
    uses the config key and does not load the API key (no shared counters or usage rows), says so
    in an error line, and lists the API key as shadowed; a reload keeping the id still applies."""
    shared = f"{run}-shared"
    secret, _ = created(admin(gateway.url).post("/keys", json={"id": shared}))
    settings = config(redis_server.url)
    later = f"{run}-later"
    settings["keys"] = [
        *settings["keys"],
        {"id": shared, "key": SHADOWING_KEY},
        {"id": later, "key": SHADOWING_KEY + "-later"},
    ]
    with GatewayProcess(settings, tmp_path) as shadowing:
        assert status_with(shadowing.url, SHADOWING_KEY) == 200
        assert error(httpx.get(f"{shadowing.url}/v1/models", headers=bearer(secret)), 401)["code"] == (
            "invalid_api_key"
        )
        assert status_with(gateway.url, secret) == 200  # where no config key has the id, it works
        # A key made meanwhile by a replica whose file lacks the id reaches this one shadowed too.
        later_secret, _ = created(admin(gateway.url).post("/keys", json={"id": later}))

        def shadowed_lines() -> list[dict[str, Any]]:
            return [line for line in shadowing.log_lines() if line.get("event") == "api_key_shadowed"]

        wait_for(lambda: len(shadowed_lines()) == 2)
        assert [(line["key"], line["level"]) for line in shadowed_lines()] == [
            (shared, "error"),
            (later, "error"),
        ]
        assert status_with(shadowing.url, later_secret) == 401
        api = admin(shadowing.url)
        listed = {key["id"]: key for key in api.get("/keys").json()["data"]}
        assert listed[shared]["shadowed"] is True
        assert api.get(f"/keys/{shared}").json()["shadowed"] is True
        assert "shadowed" not in admin(gateway.url).get(f"/keys/{shared}").json()
        status = api.get("/status")
        assert status.status_code == 200, status.text
        assert [key["source"] for key in status.json()["keys"] if key["id"] == shared] == ["config"]
        # The same file again: the shadowed id is not "already an API key's" to the reload.
        assert api.post("/reload").status_code == 200
        # The config key gone, the API key is loaded.
        shadowing.rewrite(config(redis_server.url))
        assert api.post("/reload").status_code == 200
        assert status_with(shadowing.url, secret) == 200
        assert status_with(shadowing.url, SHADOWING_KEY) == 401


@pytest.fixture(scope="module")
def replicas(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[GatewayProcess]]:
    """Three gateway processes sharing the session's Redis, for this module's replica tests."""
    directory = tmp_path_factory.mktemp("replicas")
    processes = [GatewayProcess(config(redis_server.url), directory) for _ in range(REPLICAS)]
    try:
        for process in processes:
            process.start()
        yield processes
    finally:
        for process in processes:
            process.stop()


def seen_everywhere(urls: list[str], secret: str, status: int) -> float:
    """Seconds until every replica answers `status` for the secret (polled; hang guard only)."""
    started = time.monotonic()
    for url in urls:

        def answered(url: str = url) -> bool:
            return status_with(url, secret) == status

        wait_for(answered)
    return time.monotonic() - started


def test_keys_reach_every_replica(replicas: list[GatewayProcess], run: str) -> None:
    urls = [process.url for process in replicas]
    first, second = admin(urls[0]), admin(urls[1])
    secret, _ = created(first.post("/keys", json={"id": f"{run}-shared"}))
    created_s = seen_everywhere(urls[1:], secret, 200)
    assert all(status_with(url, secret) == 200 for url in urls)

    # Rotated on replica 2: the new secret works everywhere, the old one too, within its grace.
    rotated = second.post(f"/keys/{run}-shared/rotate", json={"grace_s": 600})
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    secret_scan.register(new_secret, "rotated API key")
    rotated_s = seen_everywhere([urls[0], urls[2]], new_secret, 200)
    assert all(status_with(url, secret) == 200 for url in urls)
    assert rotated.json()["key"]["previous_valid_until"] is not None
    # Rotated again without grace: the previous secret stops everywhere.
    again = second.post(f"/keys/{run}-shared/rotate", json={"grace_s": 0})
    latest = again.json()["secret"]
    secret_scan.register(latest, "rotated API key")
    seen_everywhere(urls, new_secret, 401)
    assert all(status_with(url, secret) == 401 for url in urls)
    assert all(status_with(url, latest) == 200 for url in urls)

    # Revoked on replica 1: refused everywhere.
    assert first.delete(f"/keys/{run}-shared").status_code == 200
    revoked_s = seen_everywhere(urls[1:], latest, 401)
    print(
        f"\npropagation to the other replicas: created {created_s * 1000:.0f} ms, rotated "
        f"{rotated_s * 1000:.0f} ms, revoked {revoked_s * 1000:.0f} ms"
    )


def test_team_limits_are_shared_by_its_keys(replicas: list[GatewayProcess], run: str) -> None:
    urls = [process.url for process in replicas]
    api = admin(urls[0])
    assert api.post("/teams", json={"id": f"{run}-team", "rpm": 3}).status_code == 201
    first, _ = created(api.post("/keys", json={"id": f"{run}-one", "team": f"{run}-team"}))
    second, _ = created(api.post("/keys", json={"id": f"{run}-two", "team": f"{run}-team", "rpm": 100}))
    seen_everywhere(urls, second, 200)  # /v1/models is not rate limited
    answers = [
        httpx.post(f"{url}/v1/chat/completions", headers=bearer(secret), json=CHAT, timeout=10)
        for url, secret in zip(urls + urls, [first, second, first, second, first, second], strict=True)
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429, 429]
    assert f"team {run}-team" in error(answers[3], 429)["message"]
    # Raised on one replica, the team's new limit applies everywhere.
    assert api.patch(f"/teams/{run}-team", json={"rpm": 1000}).status_code == 200
    wait_for(
        lambda: (
            httpx.post(f"{urls[2]}/v1/chat/completions", headers=bearer(first), json=CHAT).status_code == 200
        )
    )


def cli(url: str, *args: str, key: str = ADMIN_KEY) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"GATEWAY_ADMIN_URL": url, "GATEWAY_ADMIN_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def test_the_cli_against_a_running_gateway(gateway: GatewayProcess, run: str) -> None:
    team = cli(
        gateway.url,
        "teams",
        "create",
        f"{run}-team",
        "--rpm",
        "60",
        "--budget-usd",
        "5",
        "--budget-period",
        "month",
    )
    assert team.returncode == 0, team.stderr
    made = cli(gateway.url, "keys", "create", f"{run}-cli", "--team", f"{run}-team", "--model", "m", "--json")
    assert made.returncode == 0, made.stderr
    body = json.loads(made.stdout)
    secret = body["secret"]
    secret_scan.register(secret, "CLI-made key")
    assert body["key"]["models"] == ["m"]
    assert status_with(gateway.url, secret) == 200

    listed = cli(gateway.url, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:3] == ["ID", "TEAM", "MODELS"]
    assert any(row.split()[:3] == [f"{run}-cli", f"{run}-team", "m"] for row in rows)
    assert secret not in listed.stdout
    shown = cli(gateway.url, "keys", "show", f"{run}-cli", "--json")
    assert json.loads(shown.stdout)["team"] == f"{run}-team"
    teams = cli(gateway.url, "teams", "list")
    assert any(row.split()[:3] == [f"{run}-team", "60", "-"] for row in teams.stdout.splitlines())
    assert "$5/month" in teams.stdout
    updated = cli(gateway.url, "teams", "update", f"{run}-team", "--clear", "rpm", "--json")
    assert json.loads(updated.stdout)["rpm"] is None

    rotated = cli(gateway.url, "keys", "rotate", f"{run}-cli", "--grace-s", "0")
    assert rotated.returncode == 0, rotated.stderr
    new_secret = rotated.stdout.splitlines()[0].removeprefix("secret: ")
    secret_scan.register(new_secret, "CLI-rotated key")
    assert new_secret.startswith("sk-gw-")
    assert status_with(gateway.url, new_secret) == 200
    assert status_with(gateway.url, secret) == 401

    duplicate = cli(gateway.url, "keys", "create", f"{run}-cli")
    assert duplicate.returncode == 1
    assert "HTTP 409 key_exists" in duplicate.stderr
    wrong_key = cli(gateway.url, "keys", "list", key="not-the-admin-key")
    assert wrong_key.returncode == 1
    assert "HTTP 401" in wrong_key.stderr
    assert "not-the-admin-key" not in wrong_key.stderr
    unused = cli(gateway.url, "teams", "delete", f"{run}-team")
    assert unused.returncode == 1
    assert "team_has_keys" in unused.stderr
    revoked = cli(gateway.url, "keys", "revoke", f"{run}-cli")
    assert revoked.returncode == 0, revoked.stderr
    assert status_with(gateway.url, new_secret) == 401
    assert cli(gateway.url, "teams", "delete", f"{run}-team").returncode == 0
    unreachable = cli("http://127.0.0.1:9", "keys", "list")
    assert unreachable.returncode == 1
    assert "cannot reach the gateway" in unreachable.stderr


def test_the_cli_sends_an_id_as_one_path_segment(gateway: GatewayProcess, run: str) -> None:
    """An id with `/`, `..` or `?` names no key; it must not reach another route (a team, another key)."""
    team = f"{run}-team"
    assert admin(gateway.url).post("/teams", json={"id": team}).status_code == 201
    created(admin(gateway.url).post("/keys", json={"id": f"{run}-k"}))
    for args in (
        ("keys", "show", f"x/../../teams/{team}"),
        ("keys", "revoke", f"x/../../teams/{team}"),
        ("keys", "show", f"{run}-k?x=1"),
        ("keys", "revoke", f"{run}-k#x"),
        ("teams", "delete", f"{team}/../{team}"),
    ):
        answer = cli(gateway.url, *args)
        assert answer.returncode == 1, (args, answer.stdout)
        assert "HTTP 404" in answer.stderr, (args, answer.stderr)
    assert admin(gateway.url).get(f"/teams/{team}").status_code == 200
    assert admin(gateway.url).get(f"/keys/{run}-k").status_code == 200


def test_the_cli_refuses_a_malformed_admin_key_without_echoing_it(gateway: GatewayProcess) -> None:
    """A key read from a file with its CRLF works (the gateway strips it too); one with a stray
    character is a clear error, no traceback, and neither the key nor the URL's password is shown."""
    assert cli(gateway.url, "keys", "list", key=ADMIN_KEY + "\r\n").returncode == 0
    assert cli(gateway.url, "usage", key=ADMIN_KEY + "\r\n").returncode == 0
    for key in ("admin-kéy-with-non-ascii-0123456789", "admin-key\r\nx-injected: 1-0123456789"):
        for words in (("keys", "list"), ("usage",)):
            answer = cli(gateway.url, *words, key=key)
            assert answer.returncode == 1, answer.stderr
            assert "Traceback" not in answer.stderr
            assert "admin key" in answer.stderr
            assert "admin-k" not in answer.stderr
    with_password = gateway.url.replace("http://", "http://user:hunter2-password@")
    for words in (("keys", "list"), ("usage",)):
        answer = cli(with_password.replace(str(gateway.port), "9"), *words)
        assert answer.returncode == 1
        assert "cannot reach the gateway" in answer.stderr
        assert "hunter2-password" not in answer.stderr
        invalid = cli(with_password.replace(str(gateway.port), "not-a-port"), *words)
        assert invalid.returncode != 0
        assert "invalid admin URL" in invalid.stderr
        assert "Traceback" not in invalid.stderr
        assert "hunter2-password" not in invalid.stderr


def test_keys_reach_every_replica_on_a_redis_cluster(
    redis_cluster: RedisClusterServers, tmp_path: Path
) -> None:
    with (
        GatewayProcess(config(redis_cluster.url), tmp_path) as first,
        GatewayProcess(config(redis_cluster.url), tmp_path) as second,
    ):
        key_id = "t" + os.urandom(3).hex()
        secret, _ = created(admin(first.url).post("/keys", json={"id": key_id}))
        created_s = seen_everywhere([second.url], secret, 200)
        assert admin(second.url).delete(f"/keys/{key_id}").status_code == 200
        revoked_s = seen_everywhere([first.url], secret, 401)
        print(f"\ncluster propagation: created {created_s * 1000:.0f} ms, revoked {revoked_s * 1000:.0f} ms")


def test_replicas_resubscribe_after_losing_their_connection(
    replicas: list[GatewayProcess], redis_server: RedisServer, run: str
) -> None:
    urls = [process.url for process in replicas]
    # Every subscriber's connection is cut; each replica reconnects, resubscribes and resyncs.
    assert int(command(redis_server.port, "CLIENT", "KILL", "TYPE", "pubsub").lstrip(b":")) >= REPLICAS
    secret, _ = created(admin(urls[0]).post("/keys", json={"id": f"{run}-after-cut"}))
    seen_everywhere(urls[1:], secret, 200)
    assert admin(urls[0]).delete(f"/keys/{run}-after-cut").status_code == 200
    seen_everywhere(urls[1:], secret, 401)
