"""The OpenAI Agents SDK, with its default model settings (the Responses API), against `make run`.

`make run` is `gateway serve --config config/gateway.yaml`; without Cloudflare credentials its models
are answered by the built-in mock. The agent has a function tool and an output type: the SDK calls
`/v1/responses` (streamed and not) with flat strict tools, `include`, the whole item list replayed
(its earlier output items with their ids, then the `function_call_output`) and
`text.format: json_schema` for the final output.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pydantic
import pytest
from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled

from tests.emulators.server import free_port

ROOT = Path(__file__).resolve().parents[2]


class Forecast(pydantic.BaseModel):
    city: str
    summary: str


calls: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    calls.append(city)
    return f"sunny in {city}"


@pytest.fixture(scope="module")
def make_run_url() -> Iterator[str]:
    """The gateway as `make run` starts it, on a free port, with no Cloudflare credentials."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", "config/gateway.yaml", "--port", str(port)],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)
        if process.stderr is not None:
            process.stderr.close()


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_agent_with_a_tool_and_an_output_type(make_run_url: str, streamed: bool) -> None:
    async def main() -> Forecast:
        client = openai.AsyncOpenAI(base_url=f"{make_run_url}/v1", api_key="sk-anything", max_retries=0)
        set_default_openai_client(client, use_for_tracing=False)
        set_tracing_disabled(True)
        agent = Agent(
            name="forecaster",
            instructions="Use the tool, then answer.",
            model="llama-3.3-70b",
            tools=[get_weather],
            output_type=Forecast,
        )
        try:
            if streamed:
                result = Runner.run_streamed(agent, "What is the weather in Oslo?")
                async for _ in result.stream_events():
                    pass
            else:
                result = await Runner.run(agent, "What is the weather in Oslo?")  # type: ignore[assignment]
            return result.final_output_as(Forecast, raise_if_incorrect_type=True)
        finally:
            await client.close()

    calls.clear()
    forecast = asyncio.run(main())
    assert calls == ["example"]  # the mock calls the tool with example arguments, once
    assert forecast == Forecast(city="example", summary="example")
