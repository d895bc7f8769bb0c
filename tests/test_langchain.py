"""LangChain's `ChatOpenAI` against the embedded model: invoke, stream, bind_tools and
with_structured_output (json_schema), the calls LangChain apps make first."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess


class Place(BaseModel):
    """A city and the country it is in."""

    city: str = Field(description="the city's name")
    country: str = Field(description="the country's name")


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}."


@pytest.fixture(scope="module")
def llm(gateway: GatewayProcess) -> ChatOpenAI:
    return ChatOpenAI(
        model=LOCAL_MODEL,
        base_url=gateway.api,
        api_key="unused",  # type: ignore[arg-type]
        temperature=0,
        max_completion_tokens=60,
        max_retries=0,
        timeout=120,
    )


def test_invoke(llm: ChatOpenAI) -> None:
    reply = llm.invoke([HumanMessage("What is the capital of France?")])
    assert isinstance(reply, AIMessage) and isinstance(reply.content, str) and reply.content.strip()
    usage = reply.usage_metadata
    assert usage is not None and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert reply.response_metadata["model_name"] == LOCAL_MODEL


def test_stream(llm: ChatOpenAI) -> None:
    chunks = list(llm.stream("Say hello.", stream_usage=True))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    text = "".join(str(c.content) for c in chunks)
    assert text.strip()
    total: Any = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert total.usage_metadata is not None and total.usage_metadata["output_tokens"] > 0


def test_bind_tools_round_trip(llm: ChatOpenAI) -> None:
    with_tools = llm.bind_tools([get_weather], tool_choice="required")
    question = HumanMessage("What is the weather in Paris?")
    reply = with_tools.invoke([question])
    assert isinstance(reply, AIMessage) and reply.tool_calls
    call = reply.tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"].get("city"), str)
    answer = llm.bind_tools([get_weather]).invoke(
        [question, reply, ToolMessage(get_weather(call["args"]["city"]), tool_call_id=call["id"])]
    )
    assert isinstance(answer, AIMessage)


def test_with_structured_output_json_schema(llm: ChatOpenAI) -> None:
    structured = llm.with_structured_output(Place, method="json_schema", strict=True)
    place = structured.invoke("Name a city in Italy and its country.")
    assert isinstance(place, Place) and place.city and place.country
