"""Routing parts on their own: the breaker's states, concurrency slots, target order, the all-failed error."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import msgspec
import pytest

from adapters import create_adapter
from adapters.config import BreakerConfig
from adapters.errors import UpstreamConnectError, UpstreamStatusError, UpstreamTimeout
from gateway.config import Settings
from gateway.routing.breaker import Breaker
from gateway.routing.router import Failure, Route, Router, _routing_error
from gateway.routing.slots import Slots, acquire_any
from gateway.timers import Deadline


def make_router(models: dict[str, Any], **backend: Any) -> Router:
    names = {t["backend"] for m in models.values() for t in m["targets"]}
    settings = msgspec.convert(
        {"backends": {n: {"kind": "mock", **backend} for n in names}, "models": models}, Settings
    )
    return Router(settings, {n: create_adapter(n, c) for n, c in settings.backends.items()})


def targets(*names: str, **weights: float) -> list[dict[str, Any]]:
    return [{"backend": n, "model": "m", **({"weight": weights[n]} if n in weights else {})} for n in names]


# Breaker


def test_breaker_opens_after_the_threshold_and_lets_one_probe_through() -> None:
    breaker = Breaker("b/m", BreakerConfig(failure_threshold=3, cooldown_s=10))
    for now in (0.0, 1.0):
        assert breaker.available(now)
        breaker.failed(now, probe=breaker.begin())
    assert breaker.available(2.0)
    breaker.failed(2.0, probe=breaker.begin())
    assert not breaker.available(2.5)
    assert breaker.is_open(2.5)
    assert breaker.retry_after(2.5) == pytest.approx(9.5)
    assert breaker.available(12.0)
    assert not breaker.is_open(12.0)  # cooled down: half-open counts as usable
    assert breaker.begin() is True
    assert not breaker.available(12.1)  # only one probe at a time
    breaker.succeeded(probe=True)
    assert breaker.available(12.2)
    assert (breaker.failures, breaker.open_until) == (0, 0.0)


def test_failed_probe_rearms_the_full_cooldown() -> None:
    breaker = Breaker("b/m", BreakerConfig(failure_threshold=1, cooldown_s=5))
    breaker.failed(0.0, probe=breaker.begin())
    assert breaker.begin() is True
    breaker.failed(6.0, probe=True)
    assert not breaker.available(10.9)
    assert breaker.available(11.0)


def test_neutral_outcome_frees_the_probe_without_a_verdict() -> None:
    breaker = Breaker("b/m", BreakerConfig(failure_threshold=1, cooldown_s=5))
    breaker.failed(0.0, probe=False)
    assert breaker.begin() is True
    breaker.released(probe=True)
    assert breaker.available(5.0)
    assert breaker.failures == 1


def test_a_late_failure_of_an_older_request_does_not_free_the_probe() -> None:
    breaker = Breaker("b/m", BreakerConfig(failure_threshold=1, cooldown_s=5))
    breaker.failed(0.0, probe=False)
    assert breaker.begin() is True  # the probe, at t >= 5
    breaker.released(probe=False)  # some other request, started before the breaker opened
    assert not breaker.available(5.5)


def test_any_success_closes_the_breaker() -> None:
    breaker = Breaker("b/m", BreakerConfig(failure_threshold=2, cooldown_s=5))
    breaker.failed(0.0, probe=False)
    breaker.succeeded(probe=False)
    breaker.failed(1.0, probe=False)
    assert breaker.available(1.5)  # the count started again


# Slots


@pytest.mark.anyio
async def test_freed_slot_goes_to_the_longest_waiter() -> None:
    slots = Slots(1)
    assert slots.try_acquire()
    assert not slots.try_acquire()
    first = asyncio.ensure_future(acquire_any([slots], 5))
    second = asyncio.ensure_future(acquire_any([slots], 5))
    await asyncio.sleep(0)
    slots.release()
    assert await first is slots
    assert not second.done()
    assert slots.in_use == 1
    slots.release()
    assert await second is slots
    slots.release()
    assert slots.in_use == 0


@pytest.mark.anyio
async def test_waiting_on_several_backends_takes_the_first_free_one() -> None:
    a, b = Slots(1), Slots(1)
    assert a.try_acquire()
    assert b.try_acquire()
    waiter = asyncio.ensure_future(acquire_any([a, b], 5))
    await asyncio.sleep(0)
    b.release()
    assert await waiter is b
    a.release()
    assert (a.in_use, b.in_use, len(a.waiters), len(b.waiters)) == (0, 1, 0, 0)


@pytest.mark.anyio
async def test_waiting_ends_at_the_timeout_and_leaves_no_waiter_behind() -> None:
    slots = Slots(1)
    assert slots.try_acquire()
    assert await acquire_any([slots], 0.01) is None
    assert await acquire_any([slots], 0) is None
    assert not slots.waiters
    slots.release()
    assert slots.in_use == 0


def test_unbounded_slots_count_nothing() -> None:
    slots = Slots(None)
    assert all(slots.try_acquire() for _ in range(1000))
    slots.release()
    assert slots.in_use == 0


# Deadline


@pytest.mark.anyio
async def test_deadline_cancellation_is_withdrawn_and_reported() -> None:
    timer = Deadline(0.01)
    with pytest.raises(asyncio.CancelledError):  # noqa: PT012 - the sleep is what gets cancelled
        try:
            await asyncio.sleep(5)
        finally:
            timed_out = timer.disarm()
    assert timed_out
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
    await asyncio.sleep(0)  # the task is usable again


@pytest.mark.anyio
async def test_deadline_that_did_not_fire_changes_nothing() -> None:
    timer = Deadline(5)
    await asyncio.sleep(0)
    assert timer.disarm() is False
    await asyncio.sleep(0.02)  # the disarmed timer never cancels the task


@pytest.mark.anyio
async def test_outside_cancellation_wins_over_the_deadline() -> None:
    """The client went away just as the deadline passed: the cancellation must still propagate."""
    task = asyncio.current_task()
    assert task is not None
    timer = Deadline(10)
    task.cancel()  # the client is gone ...
    timer._expire()  # ... and the deadline fires before the task runs again
    with pytest.raises(asyncio.CancelledError):  # noqa: PT012 - the sleep is what gets cancelled
        try:
            await asyncio.sleep(1)
        finally:
            timed_out = timer.disarm()
    assert timed_out is False
    assert task.cancelling() == 1
    task.uncancel()


# Order


def test_targets_without_weights_keep_their_order() -> None:
    model = make_router({"m": {"targets": targets("a", "b", "c")}}).resolve("m")
    assert [r.backend for r in model.order()] == ["a", "b", "c"]
    assert model.order() is model.order()  # nothing is built per request


def test_adjacent_weighted_targets_share_load_in_proportion_and_keep_their_place() -> None:
    model = make_router({"m": {"targets": targets("a", "b", "c", "d", b=3, c=1)}}).resolve("m")
    firsts: Counter[str] = Counter()
    for _ in range(4000):
        order = [r.backend for r in model.order()]
        assert order[0] == "a"
        assert order[3] == "d"
        assert sorted(order[1:3]) == ["b", "c"]
        firsts[order[1]] += 1
    assert 0.70 < firsts["b"] / 4000 < 0.80


def test_public_names_and_aliases_are_listed_once() -> None:
    router = make_router(
        {"m": {"targets": targets("a", "b"), "aliases": ["x", "y"]}, "n": {"targets": targets("b")}}
    )
    assert router.public_names() == ["m", "x", "y", "n"]


def test_targets_on_the_same_backend_and_model_share_one_breaker() -> None:
    router = make_router({"m": {"targets": targets("a")}, "n": {"targets": targets("a", "b")}})
    assert router.resolve("m").routes[0].breaker is router.resolve("n").routes[0].breaker


# The all-failed error


def failure_set(*errors: Any) -> tuple[Any, list[Failure]]:
    model = make_router({"chat": {"targets": targets(*[f"t{i}" for i in range(len(errors))])}}).resolve(
        "chat"
    )
    routes: list[Route] = model.routes
    failures = [
        error if isinstance(error, Failure) else Failure.of(route, error)
        for route, error in zip(routes, errors, strict=True)
    ]
    return model, failures


def timeout(name: str) -> UpstreamTimeout:
    return UpstreamTimeout(name, f"backend '{name}' sent nothing", status_code=504, code="upstream_timeout")


def rate_limited(name: str, *, retry_after: float | None = None, quota: bool = False) -> UpstreamStatusError:
    return UpstreamStatusError(
        name, "busy", status_code=429, upstream_status=429, retry_after=retry_after, quota=quota
    )


@pytest.mark.parametrize(
    ("errors", "status", "code"),
    [
        pytest.param([timeout("t0"), timeout("t1")], 504, "upstream_timeout", id="all-timeouts"),
        pytest.param([rate_limited("t0"), timeout("t1")], 503, "upstream_unavailable", id="busy-or-timeout"),
        pytest.param(
            [rate_limited("t0"), UpstreamConnectError("t1", "refused")], 502, "upstream_error", id="mixed"
        ),
    ],
)
def test_all_failed_status_fits_what_happened(errors: list[Any], status: int, code: str) -> None:
    model, failures = failure_set(*errors)
    error = _routing_error(model, failures, attempts=2)
    assert (error.status_code, error.code) == (status, code)
    assert error.headers["x-gateway-attempts"] == "2"
    assert error.message.startswith("No backend could answer for model 'chat' (2 targets). 1) t0: ")


def test_retry_after_comes_from_the_last_failure_and_quota_stops_sdk_retries() -> None:
    model, failures = failure_set(
        rate_limited("t0", retry_after=30, quota=True), rate_limited("t1", retry_after=2.4, quota=True)
    )
    error = _routing_error(model, failures, attempts=2)
    assert error.headers["retry-after"] == "2"
    assert error.headers["x-should-retry"] == "false"
    model, failures = failure_set(rate_limited("t0", retry_after=30), UpstreamConnectError("t1", "refused"))
    assert "retry-after" not in _routing_error(model, failures, attempts=2).headers


def test_a_single_failure_keeps_its_own_status_and_code() -> None:
    model, failures = failure_set(rate_limited("t0", retry_after=3))
    error = _routing_error(model, failures, attempts=1)
    assert (error.status_code, error.code, error.message) == (429, None, "busy")
    assert error.headers == {"x-gateway-attempts": "1", "retry-after": "3"}
