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
from collections.abc import Iterator
from pathlib import Path

import openai
import pydantic
import pytest
import yaml
from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled

from tests.gateway_process import GatewayProcess

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


@pytest.fixture
def make_run_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """`gateway serve` on `make run`'s config (on a free port), with no Cloudflare credentials."""
    for name in [name for name in os.environ if name.startswith("CLOUDFLARE_")]:
        monkeypatch.delenv(name)
    config = yaml.safe_load((ROOT / "config" / "gateway.yaml").read_text())
    with GatewayProcess(config, tmp_path) as gateway:
        yield gateway.url


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
