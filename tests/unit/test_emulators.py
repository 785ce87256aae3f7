"""Fast tests of the upstream emulators over real sockets (uvicorn in a thread, plain httpx client)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.emulators.common import (
    RecordedRequest,
    build_answer,
    conversation_from_prompt,
    example_from_schema,
    parse_fault,
    split_point,
    tokenize,
)
from tests.emulators.raw import GarbageServer, ResetServer
from tests.emulators.server import ServerThread, serve
from tests.emulators.vllm import VLLMEmulator
from tests.emulators.workers_ai import GPT_OSS, HERMES, LLAMA_33, LLAMA_VISION, QWEN3, WorkersAIEmulator
from tests.waiting import wait_for

TOKEN = "cf-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City"},
                "unit": {"type": "string", "description": "Unit", "enum": ["c", "f"]},
            },
            "required": ["location"],
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string", "description": "Zone"}}},
    },
}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def data_events(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    out: list[str] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line[5:].lstrip(" ") for line in block.split("\n") if line.startswith("data:")]
        if lines:
            out.append("\n".join(lines))
    return out


def json_events(text: str) -> list[Any]:
    return [json.loads(e) for e in data_events(text) if e != "[DONE]"]


# ------------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wa_server() -> Iterator[tuple[WorkersAIEmulator, ServerThread]]:
    emu = WorkersAIEmulator(account_id="acct-123", api_token=TOKEN)
    with serve(emu.app) as server:
        yield emu, server


@pytest.fixture
def wa(wa_server: tuple[WorkersAIEmulator, ServerThread]) -> Iterator[WorkersAIEmulator]:
    emu, _ = wa_server
    emu.reset()
    yield emu
    emu.reset()
    emu.token_delay_s = 0.0


@pytest.fixture
def wac(wa_server: tuple[WorkersAIEmulator, ServerThread]) -> Iterator[httpx.Client]:
    _, server = wa_server
    with httpx.Client(base_url=f"{server.url}/client/v4/accounts/acct-123/ai/run/", headers=AUTH) as client:
        yield client


@pytest.fixture(scope="module")
def vllm_server() -> Iterator[tuple[VLLMEmulator, ServerThread]]:
    emu = VLLMEmulator(served_models=["meta-llama/Llama-3.3-70B-Instruct", "llama"], max_model_len=8192)
    with serve(emu.app) as server:
        yield emu, server


@pytest.fixture
def vl(vllm_server: tuple[VLLMEmulator, ServerThread]) -> Iterator[VLLMEmulator]:
    emu, _ = vllm_server
    emu.reset()
    yield emu
    emu.reset()
    emu.flavor = "v0.11"
    emu.api_keys = []
    emu.enable_auto_tool_choice = True
    emu.reasoning = False


@pytest.fixture
def vc(vllm_server: tuple[VLLMEmulator, ServerThread]) -> Iterator[httpx.Client]:
    _, server = vllm_server
    with httpx.Client(base_url=server.url) as client:
        yield client


def chat(vc: httpx.Client, **body: Any) -> httpx.Response:
    body.setdefault("model", "meta-llama/Llama-3.3-70B-Instruct")
    body.setdefault("messages", user("Hello there"))
    return vc.post("/v1/chat/completions", json=body)


# ------------------------------------------------------------------------------------------------------
# Common pieces
# ------------------------------------------------------------------------------------------------------


def test_fault_syntax() -> None:
    f = parse_fault("status:429:3040:retry-after=2")
    assert (f.kind, f.status, f.code, f.retry_after) == ("status", 429, 3040, "2")
    assert parse_fault("slow:0.5").seconds == 0.5
    assert parse_fault("cut:3").count == 3
    for bad in ("status", "status:200", "cut:x", "delay", "nope", "hang:1"):
        with pytest.raises(ValueError):
            parse_fault(bad)
    with pytest.raises(ValueError, match="unknown fault"):
        WorkersAIEmulator().faults.push("stream-error:1")


def test_tokens_and_schema_examples() -> None:
    assert tokenize("Hello from  the emulator.") == ["Hello", " from", " ", " the", " emulator."]
    assert tokenize("Hello.\n\nBye  ") == ["Hello.", "\n\n", "Bye", "  "]  # as Llama 3 splits them
    ans = build_answer(conversation_from_prompt("[[emu:words=7]]"), max_tokens=5)
    assert len(ans.tokens) == 5
    assert ans.finish == "length"
    assert ans.completion_tokens == 5
    assert example_from_schema(WEATHER["function"]["parameters"]) == {"location": "London"}  # type: ignore[index]
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"}}}
    assert example_from_schema(schema) == {"n": 1, "ok": True}
    data = 'data: {"response":" café"}\n\n'.encode()
    cut = split_point(data)
    with pytest.raises(UnicodeDecodeError):
        data[:cut].decode()


def test_events_are_split_inside_multibyte_characters() -> None:
    """At the ASGI level each SSE event is sent as two body messages, cut inside a UTF-8 character."""
    emu = WorkersAIEmulator()
    body = json.dumps({"messages": user("[[emu:words=3]]"), "stream": True}).encode()
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await asyncio.sleep(10)
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            sent.append(dict(message))

        scope = {
            "type": "http",
            "method": "POST",
            "path": f"/client/v4/accounts/acct-123/ai/run/{LLAMA_33}",
            "query_string": b"",
            "headers": [(b"authorization", f"Bearer {TOKEN}".encode())],
        }
        await emu.app(scope, receive, send)

    asyncio.run(run())
    parts = [m["body"] for m in sent if m["type"] == "http.response.body" and m["body"]]
    undecodable = 0
    for part in parts:
        try:
            part.decode()
        except UnicodeDecodeError:
            undecodable += 1
    assert undecodable >= 2  # the "café" event is cut inside "é"
    assert b"".join(parts).decode().count("data: ") == 8
    assert emu.requests[0].finished


# ------------------------------------------------------------------------------------------------------
# Workers AI: routing, auth, validation
# ------------------------------------------------------------------------------------------------------


def test_wa_auth_and_routing(
    wa: WorkersAIEmulator, wa_server: tuple[WorkersAIEmulator, ServerThread]
) -> None:
    url = wa_server[1].url
    body = {"messages": user("hi")}
    with httpx.Client(base_url=url) as c:
        r = c.post(f"/client/v4/accounts/acct-123/ai/run/{LLAMA_33}", json=body)
        assert r.status_code == 403
        assert r.json() == {"success": False, "errors": [{"code": 10000, "message": "Authentication error"}]}
        r = c.post(
            f"/client/v4/accounts/acct-123/ai/run/{LLAMA_33}",
            json=body,
            headers={"Authorization": "Bearer x"},
        )
        assert r.status_code == 403
        r = c.post(f"/client/v4/accounts/other/ai/run/{LLAMA_33}", json=body, headers=AUTH)
        assert r.status_code == 404
        assert r.json() == {
            "success": False,
            "errors": [
                {
                    "code": 7003,
                    "message": "Could not route to /client/v4/accounts/other/ai/run, perhaps your object "
                    "identifier is invalid?",
                }
            ],
            "messages": [],
            "result": None,
        }
        r = c.post("/client/v4/accounts/acct-123/ai/v2/run", json=body, headers=AUTH)
        assert r.status_code == 404
        assert r.json()["errors"][0]["code"] == 7003
        r = c.post("/client/v4/accounts/acct-123/ai/run/@cf/nope/model", json=body, headers=AUTH)
        assert r.status_code == 400
        assert r.json() == {
            "errors": [{"message": "No such model @cf/nope/model or task", "code": 5007}],
            "success": False,
            "result": {},
            "messages": [],
        }
        r = c.get("/client/v4/accounts/acct-123/ai/models/search", headers=AUTH)
        assert r.status_code == 200
        assert LLAMA_33 in {m["name"] for m in r.json()["result"]}
    assert wa.requests[0].headers.get("authorization") is None
    assert wa.requests[1].body == body


@pytest.mark.parametrize(
    ("model", "body", "code", "needle"),
    [
        (
            LLAMA_33,
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
            5006,
            "AiError: Bad input: Error: oneOf at '/' not met, 0 matches: required properties at '/' are "
            "'prompt', Type mismatch of '/messages/0/content', 'array' not in 'string'",
        ),
        (LLAMA_33, {"messages": [{"role": "assistant", "content": None}]}, 5006, "'null' not in 'string'"),
        (LLAMA_33, {"messages": user("hi"), "top_p": 0}, 5006, "'/top_p'"),
        (LLAMA_33, {"messages": user("hi"), "frequency_penalty": -0.5}, 5006, "'/frequency_penalty'"),
        (LLAMA_33, {"messages": user("hi"), "seed": 0}, 5006, "'/seed'"),
        (LLAMA_33, {"messages": user("x" * 131073)}, 5006, "'/messages/0/content'"),
        (LLAMA_33, {"messages": user("hi"), "prompt": "hi"}, 5006, "oneOf at '/' not met, 2 matches"),
        (LLAMA_33, {"messages": user("hi"), "functions": [{"name": "f", "parameters": {}}]}, 5006, "'code'"),
        (
            LLAMA_33,
            {
                "messages": user("hi"),
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "description": "d",
                            "parameters": {"type": "object", "properties": {"a": {"type": "string"}}},
                        },
                    }
                ],
            },
            5006,
            "'description'",
        ),
        (
            LLAMA_33,
            {
                "messages": user("hi"),
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "object"}},
                },
            },
            5006,
            "envelope",
        ),
        (
            LLAMA_33,
            {"messages": user("hi"), "stream": True, "response_format": {"type": "json_object"}},
            5006,
            "JSON Mode currently doesn't support streaming",
        ),
        (
            QWEN3,
            {"messages": [*user("hi"), {"role": "assistant", "content": None}]},
            5006,
            "'null' not in 'string'",
        ),
        (QWEN3, {"messages": user("hi"), "temperature": 2.5}, 5006, "'/temperature'"),
        (QWEN3, {"messages": user("hi"), "tools": [WEATHER], "tool_choice": "any"}, 8001, "Invalid input"),
        (
            QWEN3,
            {
                "messages": user("hi"),
                "tools": [{"type": "function", "function": {"name": "f", "description": False}}],
            },
            8001,
            "Invalid input",
        ),
        (
            LLAMA_VISION,
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
                        ],
                    }
                ]
            },
            5006,
            "HTTP URL will not be accepted",
        ),
    ],
)
def test_wa_rejects_bad_input(
    wa: WorkersAIEmulator, wac: httpx.Client, model: str, body: dict[str, Any], code: int, needle: str
) -> None:
    r = wac.post(model, json=body)
    assert r.status_code == 400, r.text
    data = r.json()
    assert data["success"] is False
    assert data["result"] == {}
    assert data["messages"] == []
    assert data["errors"][0]["code"] == code
    assert needle in data["errors"][0]["message"]


def test_wa_bad_bodies(wa: WorkersAIEmulator, wac: httpx.Client) -> None:
    r = wac.post(LLAMA_33, content=b"")
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == 3003
    r = wac.post(LLAMA_33, content=b"{not json")
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == 5006
    assert wa.requests[1].body is None
    assert wa.requests[1].raw_body == b"{not json"


def test_wa_accepts_what_the_schemas_allow(wa: WorkersAIEmulator, wac: httpx.Client) -> None:
    assert wac.post(HERMES, json={"messages": user("hi"), "top_p": 1.5}).status_code == 200
    assert (
        wac.post(LLAMA_33, json={"prompt": "hi", "raw": True, "top_p": 0.5, "unknown": 1}).status_code == 200
    )
    history = [
        *user("weather?"),
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": '{"temp": 21}'},
    ]
    r = wac.post(LLAMA_33, json={"messages": history, "tools": [WEATHER]})
    assert r.status_code == 200
    assert r.json()["result"]["response"] == 'The tool said: {"temp": 21}'
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    r = wac.post(
        LLAMA_VISION,
        json={"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, image]}]},
    )
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------------------------------------------
# Workers AI: answers
# ------------------------------------------------------------------------------------------------------


def test_wa_legacy_text(wa: WorkersAIEmulator, wac: httpx.Client) -> None:
    r = wac.post(
        LLAMA_33, json={"messages": [{"role": "system", "content": "Be brief"}, *user("What is up")]}
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "result": {
            "response": "Hello from the emulator. You said: What is up",
            "tool_calls": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
        },
        "success": True,
        "errors": [],
        "messages": [],
    }
    r = wac.post(LLAMA_33, json={"messages": user("[[emu:words=12]]"), "max_tokens": 4})
    result = r.json()["result"]
    assert result["response"] == "alpha bravo café delta"
    assert result["usage"]["completion_tokens"] == 4


def test_wa_legacy_tool_call(wa: WorkersAIEmulator, wac: httpx.Client) -> None:
    r = wac.post(LLAMA_33, json={"messages": user("weather?"), "tools": [WEATHER, CLOCK]})
    result = r.json()["result"]
    assert result["response"] is None
    assert result["tool_calls"] == [{"name": "get_weather", "arguments": {"location": "London"}}]
    r = wac.post(
        LLAMA_33,
        json={"messages": user("[[emu:parallel]]"), "tools": [WEATHER, CLOCK], "tool_choice": "auto"},
    )
    assert [c["name"] for c in r.json()["result"]["tool_calls"]] == ["get_weather", "get_time"]
    r = wac.post(LLAMA_33, json={"messages": user("[[emu:toolcalls=openai]]"), "tools": [WEATHER]})
    call = r.json()["result"]["tool_calls"][0]
    assert call["type"] == "function"
    assert call["id"].startswith("chatcmpl-tool-")
    assert json.loads(call["function"]["arguments"]) == {"location": "London"}
    r = wac.post(LLAMA_33, json={"messages": user("hi"), "tools": [WEATHER], "tool_choice": "none"})
    assert r.json()["result"]["response"].startswith("Hello from the emulator")


@pytest.mark.parametrize(
    ("form", "text"),
    [
        ("", {"name": "get_weather", "arguments": {"location": "London"}}),
        ("=parameters", {"name": "get_weather", "parameters": {"location": "London"}}),
        ("=bare", {"location": "London"}),
    ],
)
def test_wa_tool_call_written_as_text(wa: WorkersAIEmulator, wac: httpx.Client, form: str, text: Any) -> None:
    """`[[emu:tool-in-text]]`: no tool_calls, the call's JSON as the answer text, streamed per token."""
    body = {"messages": user(f"[[emu:tool-in-text{form}]]"), "tools": [WEATHER], "tool_choice": "required"}
    result = wac.post(LLAMA_33, json=body).json()["result"]
    assert result["tool_calls"] == []
    assert json.loads(result["response"]) == text
    streamed = json_events(wac.post(LLAMA_33, json={**body, "stream": True}).text)
    pieces = [e.get("response", "") for e in streamed if "usage" not in e]
    assert len([p for p in pieces if p]) > 1
    assert json.loads("".join(pieces)) == text
    qwen = wac.post(QWEN3, json=body).json()["result"]["choices"][0]
    assert (qwen["message"]["tool_calls"], qwen["finish_reason"]) == ([], "stop")
    assert json.loads(qwen["message"]["content"]) == text
    fenced = wac.post(LLAMA_33, json={**body, "messages": user("[[emu:tool-in-text=fenced]]")})
    assert fenced.json()["result"]["response"].startswith("```json\n{")


@pytest.mark.parametrize(
    ("directive", "check"),
    [
        ("[[emu:response=number]]", lambda res: res["response"] == 42),
        ("[[emu:response=null]]", lambda res: res["response"] is None and res["tool_calls"] == []),
        ("[[emu:result=string]]", lambda res: res == "Hello from the emulator."),
    ],
)
def test_wa_odd_result_shapes(wa: WorkersAIEmulator, wac: httpx.Client, directive: str, check: Any) -> None:
    r = wac.post(LLAMA_33, json={"messages": user(directive)})
    assert check(r.json()["result"]), r.text


def test_wa_json_mode(wa: WorkersAIEmulator, wac: httpx.Client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "languages": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "languages"],
    }
    r = wac.post(
        LLAMA_33,
        json={"messages": user("hi"), "response_format": {"type": "json_schema", "json_schema": schema}},
    )
    assert r.json()["result"]["response"] == {"name": "name", "languages": []}
    r = wac.post(HERMES, json={"messages": user("hi"), "response_format": {"type": "json_object"}})
    assert r.json()["result"]["response"] == {"answer": "Hello from the emulator. You said: hi"}
    envelope = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    r = wac.post(QWEN3, json={"messages": user("hi"), "response_format": envelope})
    assert json.loads(r.json()["result"]["choices"][0]["message"]["content"]) == {
        "name": "name",
        "languages": [],
    }


def test_wa_legacy_stream_text(wa: WorkersAIEmulator, wac: httpx.Client) -> None:
    r = wac.post(LLAMA_33, json={"messages": user("[[emu:words=6]]"), "stream": True})
    assert r.headers["content-type"] == "text/event-stream"
    raw = data_events(r.text)
    assert raw[-1] == "[DONE]"
    events = json_events(r.text)
    assert events[0]["response"] == ""
    assert events[0]["tool_calls"] == []
    assert events[0]["p"]
    assert "".join(e.get("response", "") for e in events[1:-1]) == "alpha bravo café delta écho foxtrot"
    assert "response" not in events[-2]
    assert events[-2]["tool_calls"] == []
    assert events[-1] == {
        "response": "",
        "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10},
    }
    assert wa.requests[-1].finished
    assert not wa.requests[-1].disconnected


def test_wa_legacy_stream_tools(wa: WorkersAIEmulator, wac: httpx.Client) -> None:
    r = wac.post(LLAMA_33, json={"messages": user("weather?"), "tools": [WEATHER], "stream": True})
    events = json_events(r.text)
    calls = [e["tool_calls"] for e in events if e.get("tool_calls")]
    assert calls == [[{"name": "get_weather", "arguments": {"location": "London"}}]]
    r = wac.post(
        LLAMA_33,
        json={"messages": user("[[emu:toolstream=incremental]]"), "tools": [WEATHER], "stream": True},
    )
    events = json_events(r.text)
    header = events[1]["tool_calls"][0]
    assert header["index"] == 0
    assert header["function"] == {"name": "get_weather"}
    assert header["id"]
    args = "".join(
        e["tool_calls"][0]["function"]["arguments"]
        for e in events
        if e.get("tool_calls")
        and "arguments" in e["tool_calls"][0].get("function", {})
        and e["tool_calls"][0].get("index") == 0
    )
    assert json.loads(args) == {"location": "London"}
    assert {"tool_calls": [{"id": None, "type": None, "function": {"name": None, "arguments": ""}}]} in events
    assert {"finish_reason": "tool_calls"} in events
    assert "usage" in events[-1]


def test_wa_qwen_shapes(wa: WorkersAIEmulator, wac: httpx.Client) -> None:
    r = wac.post(QWEN3, json={"messages": user("hi"), "max_tokens": 100})
    result = r.json()["result"]
    assert result["id"].startswith("chatcmpl-")
    assert result["object"] == "chat.completion"
    choice = result["choices"][0]
    assert choice["message"]["reasoning_content"] == "Let me think about this."
    assert choice["message"]["content"] == "Hello from the emulator. You said: hi"
    assert choice["finish_reason"] == "stop"
    assert choice["stop_reason"] is None
    assert result["usage"]["completion_tokens"] == 5 + 7
    r = wac.post(QWEN3, json={"messages": user("hi"), "chat_template_kwargs": {"enable_thinking": False}})
    assert r.json()["result"]["choices"][0]["message"]["reasoning_content"] is None
    r = wac.post(QWEN3, json={"messages": user("hi"), "max_tokens": 3})
    choice = r.json()["result"]["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == ""
    r = wac.post(
        QWEN3,
        json={
            "messages": user("w"),
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        },
    )
    message = r.json()["result"]["choices"][0]["message"]
    assert message["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"location": "London"}',
    }


def test_wa_qwen_stream(wa: WorkersAIEmulator, wac: httpx.Client) -> None:
    r = wac.post(QWEN3, json={"messages": user("weather?"), "tools": [WEATHER], "stream": True})
    events = json_events(r.text)
    assert events[0] == {
        "choices": [
            {
                "delta": {"content": "", "reasoning_content": None, "role": "assistant"},
                "finish_reason": None,
                "index": 0,
            }
        ]
    }
    assert any("id" in e for e in events)
    assert any("id" not in e for e in events)
    deltas = [e["choices"][0]["delta"] for e in events if e.get("choices")]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "Let me think about this."
    calls = [d["tool_calls"][0] for d in deltas if d.get("tool_calls")]
    assert calls[0]["id"].startswith("chatcmpl-tool-")
    assert calls[0]["function"]["name"] == "get_weather"
    assert all(c["id"] is None and c["function"]["name"] is None for c in calls[1:])
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"location": "London"}
    finish = events[-2]
    assert finish["choices"][0]["finish_reason"] == "tool_calls"
    assert finish["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
    assert events[-1]["response"] == ""
    assert events[-1]["usage"]["total_tokens"] > 0
    assert data_events(r.text)[-1] == "[DONE]"


def test_wa_gpt_oss(wa: WorkersAIEmulator, wac: httpx.Client) -> None:
    r = wac.post(GPT_OSS, json={"messages": user("hi"), "stream": True})
    assert r.headers["content-type"] == "application/json"
    message = r.json()["result"]["choices"][0]["message"]
    assert message["reasoning"] == "Let me think about this."
    assert message["content"].startswith("Hello")
    r = wac.post(GPT_OSS, json={"input": "hi", "reasoning": {"effort": "low"}})
    output = r.json()["result"]["output"]
    assert [o["type"] for o in output] == ["reasoning", "message"]


# ------------------------------------------------------------------------------------------------------
# Workers AI: faults
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "code", "needle"),
    [
        ("status:429:3040:retry-after=7", 429, 3040, "No more data centers"),
        ("status:429:3036", 429, 3036, "daily free allocation of 10,000 neurons"),
        ("status:429:3021", 429, 3021, "per min rate reached"),
        ("status:400:5006", 400, 5006, "Bad input"),
        ("status:403:10000", 403, 10000, "Authentication error"),
        ("status:500", 500, 3043, "Internal server error"),
        ("status:503", 503, 7009, "Upstream service unavailable"),
    ],
)
def test_wa_status_faults(
    wa: WorkersAIEmulator, wac: httpx.Client, fault: str, status: int, code: int, needle: str
) -> None:
    wa.faults.push(fault)
    r = wac.post(LLAMA_33, json={"messages": user("hi"), "stream": True})
    assert r.status_code == status
    assert r.json()["success"] is False
    assert r.json()["errors"][0]["code"] == code
    assert needle in r.json()["errors"][0]["message"]
    assert r.headers.get("retry-after") == ("7" if "retry-after" in fault else None)
    assert wac.post(LLAMA_33, json={"messages": user("hi")}).status_code == 200  # times=1
    assert wa.requests[0].fault == fault
    assert wa.requests[1].fault is None


def test_wa_hang_and_delay(wa: WorkersAIEmulator, wac: httpx.Client) -> None:
    wa.faults.push("hang")
    with pytest.raises(httpx.ReadTimeout):
        wac.post(LLAMA_33, json={"messages": user("hi")}, timeout=0.3)
    wait_for(lambda: wa.requests[0].disconnected)
    assert wa.requests[0].status is None
    assert not wa.requests[0].finished
    start = time.monotonic()
    r = wac.post(LLAMA_33, json={"messages": user("hi [[emu:fault=delay:0.3]]")})
    assert r.status_code == 200
    assert time.monotonic() - start >= 0.3


def test_wa_slow_and_token_delay(wa: WorkersAIEmulator, wac: httpx.Client) -> None:
    wa.faults.push("slow:0.05")
    start = time.monotonic()
    r = wac.post(LLAMA_33, json={"messages": user("[[emu:words=3]]"), "stream": True})
    assert r.status_code == 200
    assert time.monotonic() - start >= 0.05 * 6
    wa.token_delay_s = 0.02
    start = time.monotonic()
    wac.post(LLAMA_33, json={"messages": user("[[emu:words=3]]"), "stream": True})
    assert time.monotonic() - start >= 0.02 * 6


def test_wa_client_disconnect_mid_stream(wa: WorkersAIEmulator, wac: httpx.Client) -> None:
    wa.token_delay_s = 0.05
    with wac.stream("POST", LLAMA_33, json={"messages": user("[[emu:words=40]]"), "stream": True}) as r:
        for _ in r.iter_bytes():
            break
    wait_for(lambda: wa.requests[0].disconnected)
    assert not wa.requests[0].finished


def test_wa_cut_and_abort(wa: WorkersAIEmulator, wac: httpx.Client) -> None:
    wa.faults.push("cut:3")
    r = wac.post(LLAMA_33, json={"messages": user("[[emu:words=6]]"), "stream": True})
    assert r.status_code == 200
    assert len(data_events(r.text)) == 3
    assert "[DONE]" not in r.text
    assert wa.requests[-1].finished
    wa.faults.push("cut:1")
    r = wac.post(LLAMA_33, json={"messages": user("hi")})
    with pytest.raises(json.JSONDecodeError):
        r.json()
    wa.faults.push("abort:2")
    got: list[bytes] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        wac.stream("POST", LLAMA_33, json={"messages": user("[[emu:words=6]]"), "stream": True}) as resp,
    ):
        got.extend(resp.iter_bytes())
    assert b"".join(got).count(b"data: ") == 2
    assert not wa.requests[-1].finished


def test_wa_malformed_utf8_jsonbody_huge(wa: WorkersAIEmulator, wac: httpx.Client) -> None:
    wa.faults.push("malformed")
    r = wac.post(LLAMA_33, json={"messages": user("hi"), "stream": True})
    assert data_events(r.text)[0] == '{"response": "oops'
    wa.faults.push("malformed")
    r = wac.post(LLAMA_33, json={"messages": user("hi")})
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        r.json()
    wa.faults.push("invalid-utf8")
    r = wac.post(LLAMA_33, json={"messages": user("hi"), "stream": True})
    assert b"\xff\xfe" in r.content
    wa.faults.push("invalid-utf8")
    r = wac.post(LLAMA_33, json={"messages": user("hi")})
    with pytest.raises(UnicodeDecodeError):
        r.content.decode()
    wa.faults.push("json-body")
    r = wac.post(LLAMA_33, json={"messages": user("hi"), "stream": True})
    assert r.headers["content-type"] == "application/json"
    assert r.json()["result"]["response"].startswith("Hello")
    wa.faults.push("huge:200000")
    r = wac.post(LLAMA_33, json={"messages": user("hi")})
    assert 200000 <= len(r.json()["result"]["response"].encode()) < 201000


def test_wa_fault_control_over_http(wa: WorkersAIEmulator, wac: httpx.Client, wa_server: Any) -> None:
    url = wa_server[1].url
    with httpx.Client(base_url=url) as c:
        r = c.post("/__emulator/faults", json={"fault": "status:429:3040", "times": 2})
        assert r.status_code == 200
        assert r.json()["pending"] == [{"fault": "status:429:3040", "times": 2}]
        assert c.post("/__emulator/faults", json={"fault": "bogus"}).status_code == 400
        assert wac.post(LLAMA_33, json={"messages": user("hi")}).status_code == 429
        assert wac.post(LLAMA_33, json={"messages": user("hi")}).status_code == 429
        assert wac.post(LLAMA_33, json={"messages": user("hi")}).status_code == 200
        recorded = c.get("/__emulator/requests").json()["requests"]
        assert [x["status"] for x in recorded] == [429, 429, 200]
        assert recorded[2]["body"] == {"messages": user("hi")}
        c.post("/__emulator/faults", json={"fault": "status:500", "times": -1})
        assert [wac.post(LLAMA_33, json={"messages": user("hi")}).status_code for _ in range(3)] == [500] * 3
        assert c.post("/__emulator/reset").status_code == 200
    assert wa.requests == []
    assert len(wa.faults) == 0
    r = wac.post(LLAMA_33, json={"messages": user("[[emu:fault=nonsense]]")})
    assert r.status_code == 500
    assert b"bad fault directive" in r.content


# ------------------------------------------------------------------------------------------------------
# vLLM
# ------------------------------------------------------------------------------------------------------


def test_vllm_auth_health_version_models(vl: VLLMEmulator, vc: httpx.Client) -> None:
    vl.api_keys = ["vllm-key"]
    r = chat(vc)
    assert r.status_code == 401
    assert r.json() == {"error": "Unauthorized"}
    assert vc.get("/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert vc.get("/health").status_code == 200
    assert vc.get("/health").content == b""
    assert vc.get("/version").json() == {"version": "0.11.0"}
    r = vc.get("/v1/models", headers={"Authorization": "Bearer vllm-key"})
    models = r.json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [
        "meta-llama/Llama-3.3-70B-Instruct",
        "llama",
    ]
    card = models["data"][0]
    assert card["owned_by"] == "vllm"
    assert card["max_model_len"] == 8192
    assert card["permission"][0]["object"] == "model_permission"
    r = vc.post(
        "/v1/chat/completions", headers={"Authorization": "bearer vllm-key"}, json={"messages": user("hi")}
    )
    assert r.status_code == 200
    assert r.json()["model"] == "meta-llama/Llama-3.3-70B-Instruct"
    assert vc.get("/nope").status_code == 404


def test_vllm_content_type_and_json(vl: VLLMEmulator, vc: httpx.Client) -> None:
    r = vc.post(
        "/v1/chat/completions",
        content=json.dumps({"messages": user("hi")}),
        headers={"content-type": "text/plain"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Unsupported Media Type: Only 'application/json' is allowed"
    r = vc.post("/v1/chat/completions", content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "JSON decode error" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("flavor", "expected"),
    [
        (
            "legacy",
            {
                "object": "error",
                "message": "The model `gpt-4` does not exist.",
                "type": "NotFoundError",
                "param": None,
                "code": 404,
            },
        ),
        (
            "v0.11",
            {
                "error": {
                    "message": "The model `gpt-4` does not exist.",
                    "type": "NotFoundError",
                    "param": None,
                    "code": 404,
                }
            },
        ),
        (
            "v0.33",
            {
                "error": {
                    "message": "The model `gpt-4` does not exist. "
                    "Valid aliases: meta-llama/Llama-3.3-70B-Instruct, llama.",
                    "type": "NotFoundError",
                    "param": "model",
                    "code": 404,
                }
            },
        ),
    ],
)
def test_vllm_unknown_model(vl: VLLMEmulator, vc: httpx.Client, flavor: Any, expected: Any) -> None:
    vl.flavor = flavor
    r = chat(vc, model="gpt-4")
    assert r.status_code == 404
    assert r.json() == expected


@pytest.mark.parametrize(
    ("body", "needle", "param"),
    [
        ({"temperature": -0.1}, "temperature must be", "temperature"),
        ({"top_p": 0}, "top_p must be in (0, 1], got 0.0.", "top_p"),
        ({"presence_penalty": 2.5}, "presence_penalty must be in [-2, 2], got 2.5.", "presence_penalty"),
        ({"n": 2, "temperature": 0}, "n must be 1 when using greedy sampling, got 2.", "n"),
        (
            {"stream_options": {"include_usage": True}},
            "Stream options can only be defined when `stream=True`.",
            "stream_options",
        ),
        ({"tool_choice": "auto"}, "When using `tool_choice`, `tools` must be set.", "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "does not match any of the specified `tools`",
            "tool_choice",
        ),
        ({"max_tokens": 0}, "max_tokens must be at least 1, got 0.", "max_tokens"),
        ({"temperature": "hot"}, "Input should be a valid number", "temperature"),
        ({"messages": "hi"}, "Input should be a valid list", "messages"),
        ({"seed": 2**63}, "less than or equal to", "seed"),
    ],
)
@pytest.mark.parametrize("flavor", ["v0.11", "v0.33"])
def test_vllm_validation(
    vl: VLLMEmulator, vc: httpx.Client, flavor: Any, body: Any, needle: str, param: str
) -> None:
    vl.flavor = flavor
    r = chat(vc, **body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert needle in error["message"]
    assert error["code"] == 400
    assert error["param"] == (param if flavor == "v0.33" else None)


def test_vllm_validation_flavor_specifics(vl: VLLMEmulator, vc: httpx.Client) -> None:
    assert chat(vc, temperature=3.0).status_code == 200  # v0.11: no upper bound
    vl.flavor = "v0.33"
    assert chat(vc, temperature=3.0).json()["error"]["message"] == "temperature must be in [0, 2], got 3.0."
    assert chat(vc, tools=[]).status_code == 400
    vl.flavor = "legacy"
    r = chat(vc, top_p=0)
    assert r.json() == {
        "object": "error",
        "message": "top_p must be in (0, 1], got 0.0.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    vl.flavor = "v0.11"
    vl.enable_auto_tool_choice = False
    r = chat(vc, tools=[WEATHER])
    assert r.json()["error"]["message"] == (
        '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
    )
    assert chat(vc, tools=[WEATHER], tool_choice="required").status_code == 200
    assert chat(vc, top_k=40, min_p=0.1, repetition_penalty=1.1, whatever={"x": 1}).status_code == 200


def test_vllm_context_length(vl: VLLMEmulator, vc: httpx.Client) -> None:
    long_text = "x" * (8192 * 4)
    r = chat(vc, messages=user(long_text))
    assert r.status_code == 400
    assert r.json()["error"]["message"] == (
        "This model's maximum context length is 8192 tokens. However, your request has 8192 input tokens. "
        "Please reduce the length of the input messages. None"
    )
    r = chat(vc, messages=user("x" * 4000), max_tokens=8000)
    assert r.json()["error"]["message"].startswith(
        "'max_tokens' or 'max_completion_tokens' is too large: 8000."
    )
    vl.flavor = "v0.33"
    r = chat(vc, messages=user("x" * (8190 * 4)), max_tokens=10)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "input_tokens"
    assert error["message"] == (
        "You passed 8190 input tokens and requested 10 output tokens. However, the model's context length "
        "is only 8192 tokens, resulting in a maximum input length of 8182 tokens. Please reduce the length "
        "of the input prompt. (parameter=input_tokens, value=8190)"
    )


@pytest.mark.parametrize("flavor", ["legacy", "v0.11", "v0.33"])
def test_vllm_nonstream_shapes(vl: VLLMEmulator, vc: httpx.Client, flavor: Any) -> None:
    vl.flavor = flavor
    vl.reasoning = True
    r = vc.post(
        "/v1/chat/completions",
        json={"model": "llama", "messages": user("Hello there")},
        headers={"X-Request-Id": "req-42"},
    )
    data = r.json()
    assert data["id"] == "chatcmpl-req-42"
    assert data["object"] == "chat.completion"
    assert data["model"] == "llama"
    message = data["choices"][0]["message"]
    assert message["content"] == "Hello from the emulator. You said: Hello there"
    field = "reasoning" if flavor == "v0.33" else "reasoning_content"
    assert message[field] == "Let me think about this."
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["choices"][0]["stop_reason"] is None
    assert ("tool_calls" in message) == (flavor != "v0.33")
    assert data["usage"] == {
        "prompt_tokens": 3,
        "total_tokens": 3 + 13,
        "completion_tokens": 13,
        "prompt_tokens_details": None,
    }
    assert ("token_ids" in data["choices"][0]) == (flavor != "legacy")


def test_vllm_stream_sequence_and_usage_rules(vl: VLLMEmulator, vc: httpx.Client) -> None:
    r = chat(vc, stream=True, stream_options={})
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = json_events(r.text)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[0]["prompt_token_ids"] is None
    content = [e for e in events if e["choices"] and "content" in e["choices"][0]["delta"]][1:]
    assert (
        "".join(e["choices"][0]["delta"]["content"] for e in content)
        == "Hello from the emulator. You said: Hello there"
    )
    assert content[-1]["choices"][0]["finish_reason"] == "stop"
    assert "stop_reason" in content[-1]["choices"][0]
    assert all(e["choices"][0]["finish_reason"] is None for e in content[:-1])
    assert events[-1]["choices"] == []
    assert events[-1]["usage"]["completion_tokens"] == 8
    assert data_events(r.text)[-1] == "[DONE]"
    assert "usage" not in json_events(chat(vc, stream=True).text)[-1]
    vl.flavor = "v0.33"
    assert "usage" not in json_events(chat(vc, stream=True, stream_options={}).text)[-1]
    last = json_events(chat(vc, stream=True, stream_options={"include_usage": True}).text)[-1]
    assert last["usage"] == {"prompt_tokens": 3, "total_tokens": 11, "completion_tokens": 8}


def test_vllm_tools(vl: VLLMEmulator, vc: httpx.Client) -> None:
    r = chat(vc, messages=user("weather?"), tools=[WEATHER, CLOCK])
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["id"].startswith("chatcmpl-tool-")
    assert call["function"] == {
        "name": "get_weather",
        "arguments": '{"location": "London"}',
    }
    named = {"type": "function", "function": {"name": "get_time"}}
    choice = chat(vc, messages=user("t"), tools=[WEATHER, CLOCK], tool_choice=named).json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == ""
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "get_time", "arguments": '{"tz": "tz"}'}
    r = chat(vc, messages=user("w [[emu:parallel]]"), tools=[WEATHER, CLOCK], stream=True)
    events = json_events(r.text)
    deltas = [e["choices"][0]["delta"] for e in events]
    headers = [d["tool_calls"][0] for d in deltas if "tool_calls" in d and "id" in d["tool_calls"][0]]
    assert [(h["index"], h["function"]) for h in headers] == [
        (0, {"name": "get_weather"}),
        (1, {"name": "get_time"}),
    ]
    frags = [d["tool_calls"][0] for d in deltas if "tool_calls" in d and "id" not in d["tool_calls"][0]]
    assert json.loads("".join(f["function"]["arguments"] for f in frags if f["index"] == 1)) == {"tz": "tz"}
    assert events[-1]["choices"][0] == {
        "index": 0,
        "delta": {"content": ""},
        "logprobs": None,
        "finish_reason": "tool_calls",
        "stop_reason": None,
        "token_ids": None,
    }
    history = [
        *user("weather?"),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]
    assert (
        chat(vc, messages=history, tools=[WEATHER]).json()["choices"][0]["message"]["content"]
        == "The tool said: sunny"
    )


def test_vllm_n_stop_and_max_tokens(vl: VLLMEmulator, vc: httpx.Client) -> None:
    data = chat(vc, n=2, stop=["emulator"]).json()
    assert [c["index"] for c in data["choices"]] == [0, 1]
    assert data["choices"][0]["message"]["content"] == "Hello from the "
    assert data["choices"][0]["stop_reason"] == "emulator"
    assert data["choices"][0]["finish_reason"] == "stop"
    data = chat(vc, max_completion_tokens=2).json()
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 2
    events = json_events(chat(vc, n=2, stream=True, messages=user("[[emu:words=2]]")).text)
    assert [e["choices"][0]["index"] for e in events] == [0, 1, 0, 1, 0, 1]
    assert chat(vc, seed=-(2**63)).status_code == 200


def test_vllm_completions(vl: VLLMEmulator, vc: httpx.Client) -> None:
    r = vc.post("/v1/completions", json={"model": "llama", "prompt": "[[emu:words=30]]"})
    data = r.json()
    assert data["object"] == "text_completion"
    assert data["id"].startswith("cmpl-")
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 16
    r = vc.post("/v1/completions", json={"prompt": "Say hi", "echo": True, "max_tokens": 50})
    assert r.json()["choices"][0]["text"] == "Say hiHello from the emulator. You said: Say hi"
    r = vc.post(
        "/v1/completions",
        json={"prompt": ["a", "b"], "stream": True, "stream_options": {"include_usage": True}},
    )
    events = json_events(r.text)
    assert {e["choices"][0]["index"] for e in events if e["choices"]} == {0, 1}
    assert events[-1]["choices"] == []
    assert events[-1]["usage"]["prompt_tokens"] == 2
    r = vc.post("/v1/completions", json={"prompt": "x", "suffix": "y"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "suffix is not currently supported"


def test_vllm_faults(vl: VLLMEmulator, vc: httpx.Client) -> None:
    vl.faults.push("stream-error:2")
    raw = data_events(chat(vc, stream=True).text)
    assert len(raw) == 4
    assert raw[-1] == "[DONE]"
    assert json.loads(raw[2])["error"]["type"] == "BadRequestError"
    vl.flavor = "legacy"
    vl.faults.push("stream-error:0")
    assert json.loads(data_events(chat(vc, stream=True).text)[0])["object"] == "error"
    vl.flavor = "v0.11"
    vl.faults.push("unhealthy")
    assert vc.get("/health").status_code == 503
    assert vc.get("/health").status_code == 503
    assert chat(vc).status_code == 200
    assert vc.get("/health").status_code == 200
    vl.healthy = False
    assert vc.get("/health").status_code == 503
    vl.faults.push("status:503:retry-after=1")
    r = chat(vc)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["type"] == "ServiceUnavailableError"
    vl.faults.push("cut:2")
    assert "[DONE]" not in chat(vc, stream=True).text
    vl.faults.push("abort:1")
    with pytest.raises(httpx.RemoteProtocolError):
        chat(vc, stream=True)
    r = chat(vc, messages=user("[[emu:fault=malformed]]"))
    assert r.status_code == 200
    assert r.text.startswith('{"id": "chatcmpl-oops"')
    r = chat(vc, messages=user("[[emu:fault=huge:50000]]"), stream=True)
    assert len("".join(e["choices"][0]["delta"].get("content", "") for e in json_events(r.text))) >= 50000
    assert [rec.fault for rec in vl.requests if rec.path == "/v1/chat/completions"][-2:] == [
        "malformed",
        "huge:50000",
    ]


def test_vllm_with_openai_sdk(vl: VLLMEmulator, vllm_server: tuple[VLLMEmulator, ServerThread]) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=vllm_server[1].url + "/v1", api_key="k", max_retries=0)
    try:
        stream = client.chat.completions.create(
            model="llama",
            messages=[{"role": "user", "content": "[[emu:words=5]]"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "alpha bravo café delta écho"
        completion = client.chat.completions.create(
            model="llama", messages=[{"role": "user", "content": "hi"}], tools=[WEATHER]
        )
        assert completion.choices[0].message.tool_calls is not None
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    finally:
        client.close()
    rec: RecordedRequest = vl.requests[0]
    assert rec.body["stream_options"] == {"include_usage": True}
    assert rec.headers["authorization"] == "Bearer k"


# ------------------------------------------------------------------------------------------------------
# Raw socket faults
# ------------------------------------------------------------------------------------------------------


def test_reset_server() -> None:
    with ResetServer() as server, httpx.Client() as client:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            client.post(server.url + "/v1/chat/completions", json={})
        assert server.connections == 1
    with ResetServer(send_before_reset=ResetServer.PARTIAL_SSE) as server, httpx.Client() as client:
        got: list[bytes] = []
        with client.stream("POST", server.url, json={}) as r:
            assert r.status_code == 200
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                got.extend(r.iter_bytes())
        assert b"".join(got).startswith(b"data: ")


def test_garbage_server() -> None:
    with GarbageServer() as server, httpx.Client() as client, pytest.raises(httpx.RemoteProtocolError):
        client.get(server.url + "/health")
