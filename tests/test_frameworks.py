"""Agent frameworks with their default settings, on Kimi K2.5 with thinking on, through a scripted upstream
that calls the tools it is offered (tests/fakes/agent.py): the OpenAI Agents SDK (Responses and chat
completions, a tool and a handoff), pydantic-ai (a tool and structured output), LangChain's ChatAnthropic
(tools, and structured output by JSON schema) and LiteLLM as a client. Kimi's rules (reasoning on replayed
tool-call turns, no forced tool choice while thinking) are adapted for them (catalog/rules.py), and
Anthropic's structured output reaches the model."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from kimi_gateway.testing import GatewayProcess
from tests.fakes.agent import ToolCaller
from tests.fakes.upstream import FakeUpstream

K25 = "kimi-k2.5"
MOON = {"provider": {"only": ["moon"]}}


class Weather(BaseModel):
    city: str
    celsius: int


@pytest.fixture()
def agent(fakes: dict[str, FakeUpstream]) -> FakeUpstream:
    fakes["moon"].agent = ToolCaller()
    return fakes["moon"]


def _thinking_turns(fake: FakeUpstream) -> list[dict[str, Any]]:
    """The replayed assistant tool-call turns of the last request: what Kimi checks for reasoning."""
    messages = fake.requests[-1].body["messages"]
    return [m for m in messages if m["role"] == "assistant" and m.get("tool_calls")]


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_openai_agents_tool_and_handoff(
    upstream_gateway: GatewayProcess, agent: FakeUpstream, api: str
) -> None:
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        RunConfig,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # nothing leaves the machine
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return "sunny, 21 C"

    client = AsyncOpenAI(base_url=upstream_gateway.api, api_key="unused", max_retries=0)
    model = (
        OpenAIResponsesModel(model=K25, openai_client=client)
        if api == "responses"
        else OpenAIChatCompletionsModel(model=K25, openai_client=client)
    )
    settings = ModelSettings(extra_body=MOON)
    weather = Agent(name="weather", instructions="Weather questions.", tools=[get_weather], model=model)
    triage = Agent(name="triage", instructions="Hand weather over.", handoffs=[weather], model=model)
    result = Runner.run_sync(
        triage, "What is the weather in Paris?", run_config=RunConfig(model_settings=settings)
    )
    assert result.final_output == "It is sunny in Paris."
    assert asked == ["Paris"] and result.last_agent.name == "weather"
    assert all(turn.get("reasoning_content") for turn in _thinking_turns(agent))


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_pydantic_ai_tool_and_structured_output(
    upstream_gateway: GatewayProcess, agent: FakeUpstream, api: str
) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(base_url=upstream_gateway.api, api_key="unused")
    model = (
        OpenAIResponsesModel(K25, provider=provider)
        if api == "responses"
        else OpenAIChatModel(K25, provider=provider)
    )
    looked_up: list[str] = []
    runner: Agent[None, Weather] = Agent(model, output_type=Weather, model_settings={"extra_body": MOON})

    @runner.tool_plain
    def temperature(city: str) -> int:
        """The temperature in a city, in degrees Celsius."""
        looked_up.append(city)
        return 21

    result = asyncio.run(runner.run("How warm is it in Paris?"))
    assert result.output == Weather(city="Paris", celsius=21)
    assert looked_up == ["Paris"]
    # pydantic-ai forces its output tool: thinking is turned off for those requests rather than refused.
    assert agent.requests[-1].body.get("thinking") == {"type": "disabled"}


def test_langchain_chat_anthropic_tools_and_structured_output(
    upstream_gateway: GatewayProcess, agent: FakeUpstream
) -> None:
    from langchain_anthropic import ChatAnthropic

    # Only the fake Moonshot serves K2.5 here: no provider pin needed.
    chat = ChatAnthropic(  # type: ignore[call-arg]
        model=K25, base_url=upstream_gateway.base_url, api_key="unused", max_retries=0
    )
    called = chat.bind_tools([Weather]).invoke("What is the weather in Paris?")
    assert called.tool_calls[0]["name"] == "Weather"  # type: ignore[attr-defined]
    assert called.tool_calls[0]["args"] == {"city": "Paris", "celsius": 21}  # type: ignore[attr-defined]
    # Before, output_config.format was accepted and ignored: the answer was not JSON.
    structured = chat.with_structured_output(Weather, method="json_schema").invoke("Weather in Paris?")
    assert structured == Weather(city="Paris", celsius=21)
    sent = agent.requests[-1].body
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"]["properties"].keys() == {"city", "celsius"}


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_litellm_as_a_client(
    upstream_gateway: GatewayProcess, agent: FakeUpstream, route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LiteLLM's own price map would be fetched from the network at import: the copy it ships instead.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    base = upstream_gateway.api if route == "openai" else upstream_gateway.base_url
    kwargs: dict[str, Any] = {"model": f"{route}/{K25}", "api_base": base, "api_key": "unused"}
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = litellm.completion(messages=question, tools=[weather], **kwargs)
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert call.function.arguments.replace(" ", "") == '{"city":"Paris"}'
    # The loop goes on as LiteLLM users write it: the assistant turn back as LiteLLM returned it, then the
    # tool's result; Kimi gets the turn's reasoning either way.
    turn = first.choices[0].message.model_dump(exclude_none=True)
    result = {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}
    second = litellm.completion(messages=[*question, turn, result], tools=[weather], **kwargs)
    assert second.choices[0].message.content == "It is sunny in Paris."
    assert all(turn.get("reasoning_content") is not None for turn in _thinking_turns(agent))
    shaped = litellm.completion(messages=question, response_format=Weather, **kwargs)
    assert Weather.model_validate_json(shaped.choices[0].message.content) == Weather(city="Paris", celsius=21)
