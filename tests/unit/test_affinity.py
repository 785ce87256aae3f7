"""Session affinity's order: weighted rendezvous hashing over a model's weighted groups."""

from __future__ import annotations

import os
import subprocess
import sys
import timeit
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from adapters.canonical import ChatRequest, Message, PromptRequest
from gateway.context import RequestInfo
from gateway.routing.affinity import session_of
from gateway.translation.translate import Translated
from tests.unit.test_routing import make_router, targets

if TYPE_CHECKING:
    from adapters.canonical import CanonicalRequest
    from gateway.routing.router import ResolvedModel

ROOT = Path(__file__).resolve().parents[2]
SESSIONS = [f"session-{i}" for i in range(3000)]


def model(**weights: float) -> ResolvedModel:
    names = ("head", *weights, "tail")
    return make_router({"m": {"targets": targets(*names, **weights)}}).resolve("m")


def first_choices(resolved: ResolvedModel, skip: frozenset[str] = frozenset()) -> dict[str, str]:
    """Each session's target once the router has passed over `skip` (the group's position 1 on)."""
    return {
        session: next(r.backend for r in resolved.order(session)[1:] if r.backend not in skip)
        for session in SESSIONS
    }


def test_a_session_always_gets_the_same_order_and_the_group_keeps_its_place() -> None:
    resolved = model(a=1, b=1, c=1)
    for session in SESSIONS[:50]:
        order = [r.backend for r in resolved.order(session)]
        assert order == [r.backend for r in resolved.order(session)]
        assert (order[0], order[-1]) == ("head", "tail")
        assert sorted(order[1:4]) == ["a", "b", "c"]
    # A model without a weighted group has one order, session or not: nothing is hashed.
    fixed = make_router({"m": {"targets": targets("a", "b")}}).resolve("m")
    assert fixed.order("s") is fixed.order()


def test_sessions_spread_over_the_group_in_proportion_to_weight() -> None:
    counts = Counter(first_choices(model(a=1, b=2, c=1)).values())
    assert 0.22 < counts["a"] / len(SESSIONS) < 0.28
    assert 0.47 < counts["b"] / len(SESSIONS) < 0.53
    assert 0.22 < counts["c"] / len(SESSIONS) < 0.28


def test_only_the_sessions_of_a_target_that_leaves_move_and_they_come_back() -> None:
    resolved = model(a=1, b=1, c=1)
    before = first_choices(resolved)
    without_b = first_choices(resolved, skip=frozenset({"b"}))
    moved = {s for s in SESSIONS if before[s] != without_b[s]}
    assert moved == {s for s in SESSIONS if before[s] == "b"}
    # The moved sessions spread over the others, not all onto one.
    spread = Counter(without_b[s] for s in moved)
    assert set(spread) == {"a", "c"}
    assert min(spread.values()) > len(moved) / 3
    assert first_choices(resolved) == before


def test_the_order_is_the_same_in_every_process() -> None:
    # Fixed by config names alone, never by Python's per-process string hash: another interpreter with
    # another hash seed computes the same orders.
    script = (
        "from tests.unit.test_affinity import model; m = model(a=1, b=2, c=1); "
        "print([[r.backend for r in m.order(f'session-{i}')] for i in range(40)])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env, cwd=ROOT
    )
    resolved = model(a=1, b=2, c=1)
    assert other.stdout.strip() == str(
        [[r.backend for r in resolved.order(f"session-{i}")] for i in range(40)]
    )


def test_cost_per_request_is_reported() -> None:
    resolved = model(a=1, b=1, c=1)
    runs = 10_000
    seconds = min(timeit.repeat(lambda: resolved.order("conversation-7f3a"), number=runs, repeat=5))
    print(f"affinity order, group of 3: {seconds / runs * 1e6:.2f} us per request")


def translated(request: ChatRequest | PromptRequest) -> Translated[CanonicalRequest]:
    return Translated(request=request, public_model="m", include_usage=False, stop=[], prompt_estimate=1)


def test_the_session_is_the_cache_key_else_the_header_which_then_goes_upstream_too() -> None:
    header = RequestInfo()
    header.session = "from-header"
    chat = ChatRequest(messages=[Message(role="user", content="hi")], max_tokens=8)
    keyed = msgspec.structs.replace(chat, session_affinity="from-key")
    # The body's key wins, and the request is sent as it is.
    same, session = session_of(translated(keyed), header)
    assert (same.request, session) == (keyed, "from-key")
    # The header alone names the session, and is carried upstream as the key would be.
    sent, session = session_of(translated(chat), header)
    assert session == "from-header"
    assert isinstance(sent.request, ChatRequest)
    assert sent.request.session_affinity == "from-header"
    # Neither: no session, nothing copied.
    plain = translated(chat)
    assert session_of(plain, RequestInfo()) == (plain, None)
    # A text completion has no upstream hint, but its session still routes.
    prompt = translated(PromptRequest(prompt="hi", max_tokens=8))
    assert session_of(prompt, header) == (prompt, "from-header")
