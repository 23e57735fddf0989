"""The OpenAI Agents SDK with its default model class (`OpenAIResponsesModel`, over `/v1/responses`)
against the gateway's mock model: a plain answer, and a function-tool loop, streamed and not."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from agents import Agent, RunConfig, Runner, function_tool, set_tracing_disabled
from agents.models.openai_provider import OpenAIProvider
from agents.models.openai_responses import OpenAIResponsesModel

from tests.conftest import log_rows

set_tracing_disabled(True)  # the SDK would otherwise export traces to OpenAI


@function_tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"sunny in {city}"


def run_config(async_client: openai.AsyncOpenAI) -> RunConfig:
    # The provider the SDK uses by default, given our client: it serves models over the Responses API.
    return RunConfig(model_provider=OpenAIProvider(openai_client=async_client))


def test_default_model_class_is_the_responses_model(async_client: openai.AsyncOpenAI) -> None:
    model = OpenAIProvider(openai_client=async_client).get_model("mock-gpt-model")
    assert isinstance(model, OpenAIResponsesModel)


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_agent_answers_and_runs_a_tool_loop(async_client: openai.AsyncOpenAI, streamed: bool) -> None:
    plain = Agent(name="echo", instructions="Repeat the user.", model="mock-gpt-model")
    tooled = Agent(name="weather", instructions="Use tools.", model="mock-gpt-model", tools=[get_weather])

    async def run(agent: Agent[Any], prompt: str) -> Any:
        if not streamed:
            return await Runner.run(agent, prompt, run_config=run_config(async_client))
        result = Runner.run_streamed(agent, prompt, run_config=run_config(async_client))
        async for _ in result.stream_events():
            pass
        return result

    async def both() -> tuple[Any, Any]:  # one event loop: the client's connections belong to it
        return await run(plain, "hello agents"), await run(tooled, "get_weather please")

    answer, looped = asyncio.run(both())
    assert answer.final_output == "hello agents"
    # The mock calls a tool whose name the user mentions; the tool's result is then echoed back.
    assert looped.final_output == "sunny in get_weather please"
    kinds = [item.type for item in looped.new_items]
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"]

    rows = log_rows(endpoint="responses")
    assert len(rows) == 3 and all(r.status_code == 200 and r.stream is streamed for r in rows)
