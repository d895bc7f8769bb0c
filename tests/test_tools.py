"""Tool calls on the embedded model: forced, named, automatic, streamed, and the tool-result follow-up."""

from __future__ import annotations

import json

import jsonschema
import openai

from kimi_gateway.testing import LOCAL_MODEL

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    },
}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_required_tool_call(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=LOCAL_MODEL, messages=QUESTION, tools=[WEATHER, TIME], tool_choice="required", temperature=0
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    call = calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in {"get_weather", "get_time"}
    schema = (WEATHER if call.function.name == "get_weather" else TIME)["function"]["parameters"]
    jsonschema.validate(json.loads(call.function.arguments), schema)


def test_named_tool_choice_forces_that_tool(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=QUESTION,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        temperature=0,
    )
    calls = response.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_time"]
    assert "timezone" in json.loads(calls[0].function.arguments)


def test_tool_choice_none_answers_in_text(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=QUESTION,
        tools=[WEATHER],
        tool_choice="none",
        temperature=0,
        max_tokens=20,
    )
    assert response.choices[0].message.tool_calls is None
    assert response.choices[0].message.content


def test_automatic_tool_call_then_tool_result_follow_up(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model=LOCAL_MODEL, messages=QUESTION, tools=[WEATHER], temperature=0
    )
    assert first.choices[0].finish_reason == "tool_calls"
    call = (first.choices[0].message.tool_calls or [])[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    history = [
        *QUESTION,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"sky": "sunny", "celsius": 21})},
    ]
    second = client.chat.completions.create(
        model=LOCAL_MODEL, messages=history, tools=[WEATHER], temperature=0
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None
    assert "sunny" in (second.choices[0].message.content or "")

    # The same follow-up streamed: the answer arrives as content deltas, with no envelope JSON in it.
    stream = client.chat.completions.create(
        model=LOCAL_MODEL, messages=history, tools=[WEATHER], temperature=0, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == second.choices[0].message.content
    assert "response" not in text and "{" not in text


def test_streamed_tool_call_deltas(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=QUESTION,
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for fragment in delta.tool_calls or []:
            slot = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
            slot["id"] += fragment.id or ""
            if fragment.function:
                slot["name"] += fragment.function.name or ""
                slot["arguments"] += fragment.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}


def test_unknown_named_tool_is_a_400(client: openai.OpenAI) -> None:
    try:
        client.chat.completions.create(
            model=LOCAL_MODEL,
            messages=QUESTION,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    except openai.BadRequestError as exc:
        assert exc.body["param"] == "tool_choice"  # type: ignore[index]
    else:
        raise AssertionError("expected a 400")


def test_unconstrained_parts_of_a_tool_schema_take_any_value(client: openai.OpenAI) -> None:
    # Claude Code's tool list has a property given only as {"description": ...}; before, the embedded
    # model refused the whole request with 400 "Unrecognized schema", so Claude Code could not use it.
    note = {
        "type": "function",
        "function": {
            "name": "save_note",
            "description": "Save a note",
            "parameters": {
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "extra": {"description": "Anything else to keep with the note"},
                    "tags": {"type": "array", "items": {}},
                },
                "required": ["title", "extra"],
            },
        },
    }
    response = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=[{"role": "user", "content": "Save a note titled groceries."}],
        tools=[note],
        tool_choice="required",
        temperature=0,
        max_tokens=200,
    )
    calls = response.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["save_note"]
    arguments = json.loads(calls[0].function.arguments)
    jsonschema.validate(arguments, note["function"]["parameters"])  # type: ignore[index]
