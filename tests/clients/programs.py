"""What a user of each Python client library writes, unchanged but for the gateway's base URL and key.

Each program runs four checks against one model and returns what the library handed back:
`chat` (one answer), `stream` (the streamed text), `tools` (a tool loop: the model calls
`get_weather`, the library runs it, the model answers with its result) and `structured` (a pydantic
`Person` from structured output). A check that raised gives `error: <type>: <message>`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

CHAT = "hello there"
TOOL_PROMPT = "Use get_weather for Paris"
PERSON = "Ann"


class Person(BaseModel):
    name: str
    age: int


class City(BaseModel):
    city: str


def get_weather_text(city: str) -> str:
    return f"sunny in {city}"


def failure(exc: Exception) -> str:
    return f"error: {type(exc).__name__}: {str(exc)[:300]}"


def run_checks(checks: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, check in checks.items():
        try:
            out[name] = check()
        except Exception as exc:  # the matrix shows what failed and why
            out[name] = failure(exc)
    return out


def run_async_checks(checks: dict[str, Callable[[], Awaitable[Any]]]) -> dict[str, Any]:
    """Async checks, all in one event loop (an async client's connections belong to the loop that opened them)."""

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, check in checks.items():
            try:
                out[name] = await check()
            except Exception as exc:
                out[name] = failure(exc)
        return out

    return asyncio.run(run())


# ---- the openai SDK and its helpers --------------------------------------------------------------


def openai_sdk(base_url: str, key: str, model: str) -> dict[str, Any]:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    weather = openai.pydantic_function_tool(City, name="get_weather", description="Current weather in a city")

    def chat() -> Any:
        return (
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": CHAT}])
            .choices[0]
            .message.content
        )

    def stream() -> Any:
        with client.chat.completions.stream(model=model, messages=[{"role": "user", "content": CHAT}]) as events:
            return events.get_final_completion().choices[0].message.content

    def tools() -> Any:
        messages: list[Any] = [{"role": "user", "content": TOOL_PROMPT}]
        first = client.chat.completions.parse(model=model, messages=messages, tools=[weather])
        message = first.choices[0].message
        messages.append(message)
        for call in message.tool_calls or []:
            args = call.function.parsed_arguments
            assert isinstance(args, City)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": get_weather_text(args.city)})
        return client.chat.completions.parse(model=model, messages=messages, tools=[weather]).choices[0].message.content

    def structured() -> Any:
        answer = client.chat.completions.parse(
            model=model, messages=[{"role": "user", "content": PERSON}], response_format=Person
        )
        return answer.choices[0].message.parsed

    return run_checks({"chat": chat, "stream": stream, "tools": tools, "structured": structured})


# ---- LangChain -------------------------------------------------------------------------------------


def langchain(base_url: str, key: str, model: str) -> dict[str, Any]:
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=model, base_url=base_url, api_key=key, max_retries=0)  # type: ignore[arg-type]

    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return get_weather_text(city)

    def tools() -> Any:
        bound = llm.bind_tools([get_weather])
        messages: list[Any] = [HumanMessage(TOOL_PROMPT)]
        answer = bound.invoke(messages)
        messages.append(answer)
        assert answer.tool_calls, "no tool call"
        messages.extend(get_weather.invoke(call) for call in answer.tool_calls)
        return bound.invoke(messages).content

    return run_checks(
        {
            "chat": lambda: llm.invoke(CHAT).content,
            "stream": lambda: "".join(str(chunk.content) for chunk in llm.stream(CHAT)),
            "tools": tools,
            # The default method sends json_schema; function_calling sends a named tool and
            # parallel_tool_calls: false.
            "structured": lambda: llm.with_structured_output(Person).invoke(PERSON),
            "structured_function_calling": lambda: llm.with_structured_output(Person, method="function_calling").invoke(
                PERSON
            ),
        }
    )


# ---- pydantic-ai -----------------------------------------------------------------------------------


def pydantic_ai(base_url: str, key: str, model: str) -> dict[str, Any]:
    from pydantic_ai import Agent, NativeOutput
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    llm = OpenAIChatModel(model, provider=OpenAIProvider(base_url=base_url, api_key=key))

    async def chat() -> Any:
        return (await Agent(llm).run(CHAT)).output

    async def stream() -> Any:
        async with Agent(llm).run_stream(CHAT) as result:
            return "".join([delta async for delta in result.stream_text(delta=True)])

    async def tools() -> Any:
        agent = Agent(llm)

        @agent.tool_plain
        def get_weather(city: str) -> str:
            """Current weather in a city."""
            return get_weather_text(city)

        return (await agent.run(TOOL_PROMPT)).output

    async def structured() -> Any:  # json_schema
        return (await Agent(llm, output_type=NativeOutput(Person)).run(PERSON)).output

    async def structured_tool_output() -> Any:  # pydantic-ai's default: a final_result tool
        return (await Agent(llm, output_type=Person).run(PERSON)).output

    return run_async_checks(
        {
            "chat": chat,
            "stream": stream,
            "tools": tools,
            "structured": structured,
            "structured_tool_output": structured_tool_output,
        }
    )


# ---- openai-agents ----------------------------------------------------------------------------------


def openai_agents(base_url: str, key: str, model: str) -> dict[str, Any]:
    import openai
    from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)  # no traces sent anywhere
    llm = OpenAIChatCompletionsModel(
        model, openai_client=openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0)
    )

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return get_weather_text(city)

    async def chat() -> Any:
        return (await Runner.run(Agent(name="a", model=llm), CHAT)).final_output

    async def stream() -> Any:
        result = Runner.run_streamed(Agent(name="a", model=llm), CHAT)
        parts = []
        async for event in result.stream_events():
            data = getattr(event, "data", None)
            if getattr(data, "type", "") == "response.output_text.delta":
                parts.append(data.delta)  # type: ignore[union-attr]
        return "".join(parts)

    async def tools() -> Any:
        return (await Runner.run(Agent(name="a", model=llm, tools=[get_weather]), TOOL_PROMPT)).final_output

    async def structured() -> Any:  # json_schema, strict
        return (await Runner.run(Agent(name="a", model=llm, output_type=Person), PERSON)).final_output

    return run_async_checks({"chat": chat, "stream": stream, "tools": tools, "structured": structured})


PROGRAMS: dict[str, Callable[[str, str, str], dict[str, Any]]] = {
    "openai": openai_sdk,
    "langchain-openai": langchain,
    "pydantic-ai": pydantic_ai,
    "openai-agents": openai_agents,
}
