"""Property: any OpenAI chat request, through the gateway's real decode, limits, translation and Workers
AI body builder, either becomes a body every Workers AI model's published input schema accepts (the
emulator's own validators and checks, called directly), or is refused with a clear 400.

Requests are generated broadly: every role, string and part content, tool-call history, tools with
random JSON schemas (nested objects, arrays, type lists, anyOf, enums, missing descriptions), tool
choices, JSON mode, and sampling parameters inside and outside OpenAI's ranges.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.errors import UpstreamStatusError
from adapters.workers_ai.request import upstream_body
from gateway.api.chat import decode_chat_request
from gateway.config import HTTPLimits, ModelConfig, Target
from gateway.errors import GatewayError
from gateway.openai.limits import check_chat_request
from gateway.translation.translate import translate
from tests.emulators.workers_ai import DEFAULT_MODELS, WAModel, WorkersAIEmulator, schema_failure

PROPERTY_SETTINGS = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI failures reproduce
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMITS = HTTPLimits()
EMULATOR = WorkersAIEmulator(account_id="acct", api_token="token")

# JSON schemas for tool parameters


name = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_-]{0,10}", fullmatch=True)
text = st.text(max_size=20)
scalar_schema = st.fixed_dictionaries(
    {"type": st.sampled_from(["string", "integer", "number", "boolean", "null"])},
    optional={"description": text, "enum": st.lists(st.one_of(text, st.integers()), max_size=3)},
)
odd_schema: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.fixed_dictionaries({"type": st.lists(st.sampled_from(["string", "null", "integer"]), max_size=3)}),
    st.fixed_dictionaries({"anyOf": st.lists(scalar_schema, max_size=3)}),
    st.fixed_dictionaries({"enum": st.lists(text, min_size=1, max_size=3)}),
    st.just({}),
)


def _compound(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("object"), "properties": st.dictionaries(name, children, max_size=4)},
            optional={"required": st.lists(name, max_size=2), "description": text},
        ),
        st.fixed_dictionaries({"type": st.just("array"), "items": children}),
    )


json_schema = st.recursive(st.one_of(scalar_schema, odd_schema), _compound, max_leaves=12)
parameters = st.one_of(
    st.none(),
    st.builds(
        lambda props: {"type": "object", "properties": props}, st.dictionaries(name, json_schema, max_size=5)
    ),
    json_schema,
)

# Messages


text_part = st.builds(lambda t: {"type": "text", "text": t}, text)
image_part = st.builds(
    lambda u: {"type": "image_url", "image_url": {"url": u}},
    st.sampled_from(["data:image/png;base64,iVBORw0KGgo=", "https://example.com/a.png"]),
)
plain_content = st.one_of(text, st.lists(text_part, min_size=1, max_size=3))
tool_call = st.builds(
    lambda cid, n, a: {"id": cid, "type": "function", "function": {"name": n, "arguments": a}},
    st.from_regex(r"call_[a-z0-9]{3,9}", fullmatch=True),
    name,
    st.sampled_from(["{}", '{"a": 1}', "not json"]),
)
message = st.one_of(
    st.builds(lambda c: {"role": "system", "content": c}, plain_content),
    st.builds(lambda c: {"role": "developer", "content": c}, plain_content),
    st.builds(
        lambda c: {"role": "user", "content": c},
        st.one_of(text, st.lists(st.one_of(text_part, image_part), min_size=1, max_size=3)),
    ),
    st.fixed_dictionaries(
        {"role": st.just("assistant")},
        optional={"content": st.one_of(st.none(), text), "tool_calls": st.lists(tool_call, max_size=2)},
    ),
    st.builds(
        lambda c, cid: {"role": "tool", "content": c, "tool_call_id": cid},
        plain_content,
        st.from_regex(r"call_[a-z0-9]{3,9}", fullmatch=True),
    ),
    st.builds(lambda c, n: {"role": "function", "content": c, "name": n}, st.one_of(st.none(), text), name),
)

# Whole requests


tool = st.builds(
    lambda n, d, p: {
        "type": "function",
        "function": {
            "name": n,
            **({"description": d} if d is not None else {}),
            **({"parameters": p} if p else {}),
        },
    },
    name,
    st.one_of(st.none(), text),
    parameters,
)
response_format = st.one_of(
    st.just({"type": "text"}),
    st.just({"type": "json_object"}),
    st.builds(
        lambda s: {"type": "json_schema", "json_schema": {"name": "answer", "schema": s}},
        st.builds(
            lambda props: {"type": "object", "properties": props},
            st.dictionaries(name, json_schema, max_size=3),
        ),
    ),
)
sampling = {
    "temperature": st.floats(-1, 3, allow_nan=False),
    "top_p": st.floats(-0.5, 1.5, allow_nan=False),
    "top_k": st.integers(-5, 200),
    "seed": st.integers(-(2**40), 2**40),
    "frequency_penalty": st.floats(-3, 3, allow_nan=False),
    "presence_penalty": st.floats(-3, 3, allow_nan=False),
    "repetition_penalty": st.floats(-1, 3, allow_nan=False),
    "max_tokens": st.integers(-1, 200_000),
    "max_completion_tokens": st.integers(-1, 200_000),
    "n": st.integers(0, 3),
    "stream": st.booleans(),
    "stop": st.one_of(text, st.lists(text, max_size=5)),
    "parallel_tool_calls": st.booleans(),
    "reasoning_effort": st.sampled_from(["none", "minimal", "low", "medium", "high", "xhigh", "bogus"]),
}


@st.composite
def chat_request(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "pub", "messages": draw(st.lists(message, min_size=0, max_size=6))}
    body.update(draw(st.fixed_dictionaries({}, optional=sampling)))
    if draw(st.booleans()):
        tools: list[dict[str, Any]] = draw(st.lists(tool, min_size=0, max_size=3))
        body["tools"] = tools
        names: list[str] = [t["function"]["name"] for t in tools] or ["missing"]
        body["tool_choice"] = draw(
            st.one_of(
                st.none(),
                st.sampled_from(["auto", "none", "required"]),
                st.builds(lambda n: {"type": "function", "function": {"name": n}}, st.sampled_from(names)),
            )
        )
        if body["tool_choice"] is None:
            del body["tool_choice"]
    if draw(st.booleans()):
        body["response_format"] = draw(response_format)
    return body


def model_config(model: WAModel) -> ModelConfig:
    return ModelConfig(targets=[Target(backend="cf", model=model.name)], vision=model.vision)


def emulator_refusal(model: WAModel, body: dict[str, Any]) -> str | None:
    """What the emulator would answer 400 with (its schema, then its per-model checks), or None."""
    failure = schema_failure(VALIDATORS[model.name], body)
    if failure is not None:
        return failure
    reply = EMULATOR._vision_check(body) if model.vision else None
    if reply is None and model.shape == "openai":
        reply = EMULATOR._openai_checks(body)
    return None if reply is None else reply.body.decode(errors="replace")


VALIDATORS = {model.name: model.validator() for model in DEFAULT_MODELS}


@pytest.mark.parametrize("model", DEFAULT_MODELS, ids=[m.name.rsplit("/", 1)[-1] for m in DEFAULT_MODELS])
@PROPERTY_SETTINGS
@given(request=chat_request())
def test_any_chat_request_maps_to_an_accepted_workers_ai_body_or_a_clear_400(
    model: WAModel, request: dict[str, Any]
) -> None:
    outcome = workers_ai_body(model, json.dumps(request).encode())
    if isinstance(outcome, GatewayError):
        assert outcome.status_code == 400, outcome
        assert outcome.message
    elif isinstance(outcome, UpstreamStatusError):
        assert outcome.client_fault, outcome
        assert outcome.status_code == 400, outcome
        assert outcome.message
    else:
        refusal = emulator_refusal(model, outcome)
        assert refusal is None, f"{model.name} refuses {outcome}: {refusal}"


def workers_ai_body(model: WAModel, raw: bytes) -> dict[str, Any] | GatewayError | UpstreamStatusError:
    """The JSON body the Workers AI adapter would send for `raw`, or the error that refuses it."""
    try:
        payload = decode_chat_request(raw)
        check_chat_request(payload, LIMITS)
        translated = translate(payload, public_model="pub", model=model_config(model))
        canonical = translated.request
        stream = canonical.stream and canonical.response_format is msgspec.UNSET  # as the adapter asks
        body: dict[str, Any] = msgspec.json.decode(
            msgspec.json.encode(upstream_body(canonical, stream=stream, backend="cf"))
        )
    except (GatewayError, UpstreamStatusError) as exc:
        return exc
    return body
