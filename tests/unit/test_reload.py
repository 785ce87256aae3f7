"""What a reload applies (`gateway.reload.plan`), how its problems are listed, and what a new router
keeps from the one it replaces (`Router(previous=...)`)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import msgspec

from adapters import create_adapter
from gateway.app import Gateway
from gateway.config import ConfigError, Settings, load_config, parse_config
from gateway.observability.metrics import Metrics
from gateway.reload import LIVE, RESTART_REQUIRED, Invalid, Problem, Reloaded, plan, problem_of
from gateway.routing.router import Router

if TYPE_CHECKING:
    from pathlib import Path


def settings(**overrides: Any) -> Settings:
    config: dict[str, Any] = {
        "backends": {"a": {"kind": "mock"}, "b": {"kind": "mock"}},
        "models": {"m": {"targets": [{"backend": "a", "model": "x"}]}},
        **overrides,
    }
    return msgspec.convert(config, Settings)


def test_every_setting_is_either_applied_by_a_reload_or_needs_a_restart() -> None:
    assert sorted((*LIVE, *RESTART_REQUIRED)) == sorted(Settings.__struct_fields__)


def test_restart_only_sections_keep_their_running_values_and_are_reported() -> None:
    running = settings()
    new = settings(listen={"port": 9999}, redis_url="redis://:hunter2@example:6379", log_level="debug")
    changes = plan(running, new)
    assert changes.changed == []
    assert [notice.path for notice in changes.notices] == ["listen", "redis_url", "log_level"]
    assert changes.settings == running
    assert "hunter2" not in msgspec.json.encode(changes.notices).decode()


def test_changed_lists_entries_added_changed_and_removed() -> None:
    one, two = {"id": "k1", "key": "sk-one-0123456789"}, {"id": "k2", "key": "sk-two-0123456789"}
    running = settings(keys=[one, two])
    new = settings(
        models={
            "m": {"targets": [{"backend": "b", "model": "x"}]},
            "n": {"targets": [{"backend": "a", "model": "y"}]},
        },
        backends={"a": {"kind": "mock", "token_delay_s": 0}, "b": {"kind": "mock"}},
        keys=[{**one, "rpm": 5}, {"id": "k3", "key": "sk-three-012345678"}],
    )
    assert plan(running, new).changed == [
        "backends.a",
        "models.m",
        "models.n",
        "keys.k1",
        "keys.k3",
        "keys.k2",
    ]


def test_problems_keep_their_yaml_paths() -> None:
    text = (
        '{"backends": {"a": {"kind": "mock"}}, "models": {"m": {"targets": [{"backend": "z", "model": ""}]}}}'
    )
    try:
        parse_config(text, environ={})
    except ConfigError as exc:
        answer = Invalid.of("gateway.yaml", exc.problems)
    paths = [problem.path for problem in answer.problems]
    assert paths == ["models.m.targets[0].backend", "models.m.targets[0].model"]
    assert answer.error.code == "invalid_config"
    assert problem_of("line 2, column 3: invalid YAML: found ':'") == Problem(
        None, "line 2, column 3: invalid YAML: found ':'"
    )
    assert problem_of("cannot read the file: No such file") == Problem(
        None, "cannot read the file: No such file"
    )


def test_a_new_router_keeps_the_state_of_unchanged_backends_and_models() -> None:
    before = settings(
        models={
            "kept": {"targets": [{"backend": "a", "model": "x"}]},
            "moved": {"targets": [{"backend": "a", "model": "y"}, {"backend": "b", "model": "y"}]},
        }
    )
    adapters = {name: create_adapter(name, config) for name, config in before.backends.items()}
    old = Router(before, adapters)
    after = settings(
        backends={"a": {"kind": "mock"}, "b": {"kind": "mock", "token_delay_s": 0}},
        models={
            "kept": {"targets": [{"backend": "a", "model": "x"}]},
            "moved": {"targets": [{"backend": "a", "model": "y"}, {"backend": "b", "model": "y"}], "rpm": 5},
        },
    )
    new_adapters = {"a": adapters["a"], "b": create_adapter("b", after.backends["b"])}
    new = Router(after, new_adapters, previous=old)
    assert new.resolve("kept") is old.resolve("kept")  # unchanged model and backend: kept whole
    old_moved, new_moved = old.resolve("moved").routes, new.resolve("moved").routes
    assert new_moved[0].breaker is old_moved[0].breaker  # backend a unchanged
    assert new_moved[0].state is old_moved[0].state  # its slots and health verdict
    assert new_moved[1].breaker is not old_moved[1].breaker  # backend b changed: afresh
    assert new_moved[1].adapter is new_adapters["b"]


def test_replaced_adapters_are_closed_once_their_last_request_is_done(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"

    def write(timeout_s: float) -> None:
        backend = {"kind": "vllm", "base_url": "http://127.0.0.1:9/v1", "timeout_s": timeout_s}
        path.write_text(json.dumps({"backends": {"vllm": backend}, "models": {"m": {"targets": [TARGET]}}}))

    async def run() -> None:
        write(5)
        gateway = Gateway(load_config(path).settings, Metrics(), str(path))
        await gateway.start()
        live = gateway.live
        live.enter()  # a request in flight on the first configuration
        old = gateway.router.resolve("m").routes[0].adapter
        write(6)
        answer = await gateway.reload()
        assert isinstance(answer, Reloaded)
        assert answer.changed == ["backends.vllm"]
        new = gateway.router.resolve("m").routes[0].adapter
        assert new is not old
        for _ in range(20):
            await asyncio.sleep(0)
        assert not is_closed(old)  # its request is still running
        live.leave()
        for _ in range(100):
            if is_closed(old):
                break
            await asyncio.sleep(0)
        assert is_closed(old)
        assert not is_closed(new)
        await gateway.stop()
        assert is_closed(new)

    asyncio.run(run())


TARGET = {"backend": "vllm", "model": "llama"}


def is_closed(adapter: Any) -> bool:
    closed: bool = adapter._upstream.client.is_closed
    return closed


def test_the_new_routers_breakers_are_those_of_its_targets_only() -> None:
    before = settings(
        models={
            "kept": {"targets": [{"backend": "a", "model": "x"}]},
            "gone": {"targets": [{"backend": "a", "model": "z"}]},
        }
    )
    adapters = {name: create_adapter(name, config) for name, config in before.backends.items()}
    old = Router(before, adapters)
    after = settings(
        models={
            "kept": {"targets": [{"backend": "a", "model": "x"}]},
            "new": {"targets": [{"backend": "a", "model": "x"}, {"backend": "b", "model": "w"}]},
        }
    )
    new = Router(after, adapters, previous=old)
    assert set(new.breakers) == {("a", "x"), ("b", "w")}
    assert new.breakers[("a", "x")] is old.breakers[("a", "x")]
    assert new.resolve("new").routes[0].breaker is old.breakers[("a", "x")]
