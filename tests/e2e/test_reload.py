"""Live reload (`SIGHUP`, `POST /admin/v1/reload`) of a real `gateway serve` process.

The config file is rewritten under the running process, which then reads it again: models, targets,
backends, keys and limits change without a restart, an invalid file changes nothing, and requests in
flight during reloads all complete. With `--workers 2` both a `SIGHUP` to the supervisor and a POST
to one worker reach every worker (`GET /admin/v1/reload` tells which worker answered and how many
reloads it applied). `GatewayProcess.stop` scans the output for every configured secret.
"""

from __future__ import annotations

import asyncio
import copy
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest

from tests import secret_scan
from tests.e2e.conftest import VLLM_MODEL, vllm_backend
from tests.gateway_process import GatewayProcess
from tests.waiting import wait_for

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

    from tests.emulators.vllm import VLLMEmulator
    from tests.redis_server import RedisServer

ADMIN_KEY = "admin-key-for-reload-tests-5b1e0c"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
KEY_ONE = "sk-gw-reload-key-one-0123456789abcdef"
KEY_TWO = "sk-gw-reload-key-two-fedcba9876543210"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]


def mock_config(**models: Any) -> dict[str, Any]:
    return {
        "backends": {"a": {"kind": "mock", "token_delay_s": 0}, "b": {"kind": "mock", "token_delay_s": 0}},
        "models": models or {"m": {"targets": [{"backend": "a", "model": "x"}]}},
        "admin": {"key": ADMIN_KEY},
    }


def reload(gateway: GatewayProcess) -> httpx.Response:
    return httpx.post(f"{gateway.url}/admin/v1/reload", headers=ADMIN, timeout=30)


def sdk(gateway: GatewayProcess, key: str = "sk-none") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=20)


def backend_of(client: openai.OpenAI, model: str) -> str:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=USER)
    return raw.headers["x-gateway-backend"]


def logged(gateway: GatewayProcess, event: str) -> list[dict[str, Any]]:
    return wait_for(lambda: [line for line in gateway.log_lines(settle_s=0) if line.get("event") == event])


def test_a_reload_adds_a_model_and_changes_a_target(tmp_path: Path) -> None:
    with GatewayProcess(mock_config(), tmp_path) as gateway, sdk(gateway) as client:
        assert backend_of(client, "m") == "a"
        new = mock_config(
            m={"targets": [{"backend": "b", "model": "x"}]},
            added={"targets": [{"backend": "a", "model": "y"}], "aliases": ["added-alias"]},
        )
        new["http"] = {"max_body_bytes": 4096}  # needs a restart: reported, not applied
        gateway.rewrite(new)
        answer = reload(gateway)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "reloaded"
        assert body["changed"] == ["models.m", "models.added"]
        assert [(n["kind"], n["path"]) for n in body["notices"]] == [("restart_required", "http")]
        assert body["duration_ms"] > 0
        assert backend_of(client, "m") == "b"
        assert backend_of(client, "added-alias") == "a"
        assert {model.id for model in client.models.list()} == {"m", "added", "added-alias"}
        assert "added" in httpx.get(f"{gateway.url}/schema/openapi.json").text
        # The running body limit is kept (4 KiB would refuse this body).
        assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 8000}])
        line = logged(gateway, "config_reloaded")[0]
        assert line["changed"] == ["models.m", "models.added"]
        # The same file again changes nothing.
        again = reload(gateway).json()
        assert (again["status"], again["changed"]) == ("reloaded", [])
        state = httpx.get(f"{gateway.url}/admin/v1/reload", headers=ADMIN).json()
        assert state["generation"] == 1
        assert reload(gateway).status_code == 200
        assert httpx.post(f"{gateway.url}/admin/v1/reload").status_code == 401  # the admin key


def test_an_invalid_file_changes_nothing_and_every_problem_has_its_yaml_path(tmp_path: Path) -> None:
    config = mock_config()
    config["keys"] = [{"id": "one", "key": KEY_ONE}]
    with GatewayProcess(config, tmp_path) as gateway, sdk(gateway, KEY_ONE) as client:
        broken = copy.deepcopy(config)
        broken["models"] = {
            "m": {"targets": [{"backend": "nowhere", "model": "x"}]},
            "n": {"targets": [{"backend": "b", "model": "x"}], "rpm": 0},
        }
        broken["keys"] = [{"id": "one"}]
        gateway.rewrite(broken)
        answer = reload(gateway)
        assert answer.status_code == 422
        body = answer.json()
        assert body["status"] == "invalid"
        paths = {problem["path"] for problem in body["problems"]}
        assert {"models.m.targets[0].backend", "models.n.rpm", "keys[0]"} <= paths, body
        assert body["error"]["code"] == "invalid_config"
        assert "models.m.targets[0].backend" in body["error"]["message"]
        # Nothing changed: the old model, target and key still serve.
        assert backend_of(client, "m") == "a"
        assert {model.id for model in client.models.list()} == {"m"}
        failed = logged(gateway, "config_reload_failed")[0]
        assert any(problem.startswith("models.m.targets[0].backend: ") for problem in failed["problems"])
        # A file that is not YAML at all: the problem names its line, without a path.
        gateway.config_path.write_text("models: [unclosed\n")
        answer = reload(gateway)
        assert answer.status_code == 422
        [problem] = answer.json()["problems"]
        assert problem["path"] is None
        assert "invalid YAML" in problem["message"]
        assert httpx.get(f"{gateway.url}/admin/v1/reload", headers=ADMIN).json()["generation"] == 0
    assert KEY_ONE not in gateway.output()


def test_sighup_reloads_the_config_file(tmp_path: Path) -> None:
    with GatewayProcess(mock_config(), tmp_path) as gateway, sdk(gateway) as client:
        gateway.rewrite(mock_config(m={"targets": [{"backend": "b", "model": "x"}]}))
        gateway.send_signal(signal.SIGHUP)
        assert logged(gateway, "config_reloaded")[0]["changed"] == ["models.m"]
        assert backend_of(client, "m") == "b"


def test_keys_and_model_limits_change_by_reload(tmp_path: Path) -> None:
    config = mock_config(m={"targets": [{"backend": "a", "model": "x"}], "rpm": 100})
    config["keys"] = [{"id": "one", "key": KEY_ONE}]
    with (
        GatewayProcess(config, tmp_path) as gateway,
        sdk(gateway, KEY_ONE) as one,
        sdk(gateway, KEY_TWO) as two,
    ):
        for _ in range(3):
            one.chat.completions.create(model="m", messages=USER)
        with pytest.raises(openai.AuthenticationError):
            two.chat.completions.create(model="m", messages=USER)
        new = mock_config(m={"targets": [{"backend": "a", "model": "x"}], "rpm": 4})
        new["keys"] = [{"id": "two", "key": KEY_TWO}]
        gateway.rewrite(new)
        body = reload(gateway).json()
        assert body["changed"] == ["models.m", "keys.two", "keys.one"]
        with pytest.raises(openai.AuthenticationError):
            one.chat.completions.create(model="m", messages=USER)
        # The three requests already counted in the window count against the new rpm of 4.
        two.chat.completions.create(model="m", messages=USER)
        with pytest.raises(openai.RateLimitError) as refused:
            two.chat.completions.create(model="m", messages=USER)
        assert "model m" in refused.value.message
    output = gateway.output()
    assert KEY_ONE not in output
    assert KEY_TWO not in output


def load_config(vllm_url: str, generation: int) -> dict[str, Any]:
    """Each generation changes the backend (a new adapter, the old one closed once drained), the
    model's targets and its hedging, so every reload replaces what requests in flight hold."""
    backend = vllm_backend(vllm_url, timeout_s=20 + generation % 2)
    target = {"backend": "vllm", "model": VLLM_MODEL}
    model: dict[str, Any] = {"targets": [target] if generation % 2 else [target, {**target, "weight": 1}]}
    if generation % 3 == 1:
        model["hedge_after_ms"] = 10_000
    return {"backends": {"vllm": backend}, "models": {"llama": model}, "admin": {"key": ADMIN_KEY}}


REQUESTS = 200
RELOADS = 10
CONCURRENCY = 24


def test_reloads_under_load_fail_no_request(vllm: VLLMEmulator, vllm_server: Any, tmp_path: Path) -> None:
    vllm.token_delay_s = 0.005  # streams of about 20 words last ~0.1 s: reloads land inside them
    url = vllm_server[1].url
    with GatewayProcess(load_config(url, 0), tmp_path) as gateway:
        with sdk(gateway) as client:
            expected = client.chat.completions.create(model="llama", messages=USER).choices[0].message.content
        assert expected
        answers, durations = asyncio.run(_load(gateway, url))
    streamed = [text for stream, text, _ in answers if stream]
    assert len(answers) == REQUESTS
    assert len(streamed) == REQUESTS // 2
    assert all(text == expected and finish == "stop" for _, text, finish in answers)
    assert len(durations) == RELOADS
    print(f"\n{REQUESTS} requests ({len(streamed)} streamed) all ok under {RELOADS} reloads; "
          f"reload ms: min {min(durations):.1f} max {max(durations):.1f}")  # fmt: skip


async def _load(gateway: GatewayProcess, vllm_url: str) -> tuple[list[tuple[bool, str, str]], list[float]]:
    """`REQUESTS` requests, half streamed, at most `CONCURRENCY` at once, with a reload after every
    `REQUESTS // RELOADS` of them started; returns (stream, text, finish reason) and reload times."""
    gate = asyncio.Semaphore(CONCURRENCY)
    durations: list[float] = []
    async with (
        openai.AsyncOpenAI(
            base_url=f"{gateway.url}/v1", api_key="sk-none", max_retries=0, timeout=30
        ) as client,
        httpx.AsyncClient(timeout=30) as admin,
    ):

        async def one(index: int) -> tuple[bool, str, str]:
            async with gate:
                stream = index % 2 == 0
                if stream:
                    text, finish = "", ""
                    async for chunk in await client.chat.completions.create(
                        model="llama",
                        messages=USER,
                        stream=True,
                    ):
                        if chunk.choices:
                            text += chunk.choices[0].delta.content or ""
                            finish = chunk.choices[0].finish_reason or finish
                    return stream, text, finish
                answer = await client.chat.completions.create(model="llama", messages=USER)
                return stream, answer.choices[0].message.content or "", answer.choices[0].finish_reason

        async def reloads() -> None:
            for generation in range(1, RELOADS + 1):
                await started[generation * (REQUESTS // RELOADS) - CONCURRENCY // 2].wait()
                gateway.rewrite(load_config(vllm_url, generation))
                answer = await admin.post(f"{gateway.url}/admin/v1/reload", headers=ADMIN)
                assert answer.status_code == 200, answer.text
                assert answer.json()["changed"], answer.text
                durations.append(answer.json()["duration_ms"])

        started = [asyncio.Event() for _ in range(REQUESTS)]
        """`started[i]` is set once request i has been sent off."""
        tasks = []
        reloader = asyncio.create_task(reloads())
        for index in range(REQUESTS):
            tasks.append(asyncio.create_task(one(index)))
            started[index].set()
            await asyncio.sleep(0)
        answers = await asyncio.gather(*tasks)
        await reloader
    return list(answers), durations


def _worker_generations(gateway: GatewayProcess) -> dict[int, int]:
    """pid → reloads applied, for each worker that answered one of a bounded number of polls (each
    on its own connection, which either worker may accept)."""
    seen: dict[int, int] = {}
    with httpx.Client(headers={**ADMIN, "connection": "close"}) as client:

        def poll(_: int) -> None:
            state = client.get(f"{gateway.url}/admin/v1/reload").json()
            seen[state["pid"]] = state["generation"]

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(poll, range(16)))
    return seen


@pytest.mark.parametrize("how", ["sighup", "post"])
def test_with_two_workers_a_reload_reaches_both(tmp_path: Path, how: str) -> None:
    with GatewayProcess(mock_config(), tmp_path, workers=2) as gateway:

        def both_workers() -> dict[int, int]:
            seen = _worker_generations(gateway)
            return seen if len(seen) == 2 else {}

        workers = wait_for(both_workers)
        assert set(workers.values()) == {0}
        for generation in (1, 2):
            target = "b" if generation == 1 else "a"
            gateway.rewrite(mock_config(m={"targets": [{"backend": target, "model": str(generation)}]}))
            if how == "sighup":
                gateway.send_signal(signal.SIGHUP)
            else:
                assert reload(gateway).json()["changed"] == ["models.m"]

            def both_reloaded(generation: int = generation) -> bool:
                seen = _worker_generations(gateway)
                return set(seen) == set(workers) and set(seen.values()) == {generation}

            wait_for(both_reloaded)
        # Reloaded in place, never restarted: the same two processes.
        assert set(_worker_generations(gateway)) == set(workers)


def test_a_reload_keeps_api_made_keys_and_refuses_their_ids_in_the_file(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    run = "r" + os.urandom(3).hex()  # the session's Redis is shared: ids unique to this test
    config = mock_config(m={"targets": [{"backend": "a", "model": "x"}], "aliases": ["m-old"]})
    config |= {"redis_url": redis_server.url, "keys": [{"id": f"{run}-config", "key": KEY_ONE}]}
    with GatewayProcess(config, tmp_path) as gateway:
        made = httpx.post(
            f"{gateway.url}/admin/v1/keys", headers=ADMIN, json={"id": f"{run}-api", "models": ["m-old"]}
        )
        assert made.status_code == 201, made.text
        secret = made.json()["secret"]
        secret_scan.register(secret, "API key")
        with sdk(gateway, secret) as api_client, sdk(gateway, KEY_ONE) as config_client:
            assert backend_of(api_client, "m") == "a"
            # The alias the API key names its model by now belongs to model n; m moves to backend b
            # and the config key is limited to it.
            new = mock_config(
                m={"targets": [{"backend": "b", "model": "x"}]},
                n={"targets": [{"backend": "a", "model": "y"}], "aliases": ["m-old"]},
            )
            config_key = {"id": f"{run}-config", "key": KEY_ONE, "models": ["m"]}
            new |= {"redis_url": redis_server.url, "keys": [config_key]}
            gateway.rewrite(new)
            assert reload(gateway).json()["changed"] == ["models.m", "models.n", f"keys.{run}-config"]
            assert backend_of(config_client, "m") == "b"
            assert backend_of(api_client, "m-old") == "a"  # the API key follows its alias to n
            with pytest.raises(openai.NotFoundError):
                api_client.chat.completions.create(model="m", messages=USER)
            # A config key may not take the id of an API-made key: the reload changes nothing.
            new["keys"].append({"id": f"{run}-api", "key": KEY_TWO})
            gateway.rewrite(new)
            answer = reload(gateway)
            assert answer.status_code == 422
            assert answer.json()["problems"][0]["path"] == "keys[1].id"
            assert backend_of(api_client, "m-old") == "a"
