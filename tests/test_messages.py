"""Anthropic's Messages API: the official `anthropic` SDK, and requests shaped as Claude Code sends them,
against fake Kimi providers and the embedded engine."""

from __future__ import annotations

import base64
import json
from typing import Any

import anthropic
import httpx
import pytest

from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess
from tests import images, pdfs
from tests.fakes.upstream import Answer, FakeUpstream
from tests.upstreams import MODEL

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]
MOON = {"provider": {"only": ["moon"]}}


@pytest.fixture(scope="module")
def gw(upstream_gateway: GatewayProcess) -> GatewayProcess:
    return upstream_gateway


@pytest.fixture()
def claude(gw: GatewayProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=30)


def _events(
    gw: GatewayProcess, body: dict[str, Any], path: str = "/v1/messages", **headers: str
) -> list[tuple[str, dict[str, Any]]]:
    """The raw event stream: (event name, data) pairs."""
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream("POST", gw.base_url + path, json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200, response.read()
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                assert data["type"] == name  # the data's type names its event, as Anthropic's do
                events.append((name, data))
    return events


def _check_block_order(events: list[tuple[str, dict[str, Any]]]) -> None:
    """What the SDK's accumulator and Claude Code rely on: message_start first, blocks opened in index
    order before their deltas, one open at a time, message_stop last."""
    assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
    open_index, next_index = None, 0
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index, next_index = data["index"], next_index + 1
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert open_index is None


# ---- create ----------------------------------------------------------------------------------------------


def test_create_with_thinking_and_usage(claude: anthropic.Anthropic, fakes: dict[str, FakeUpstream]) -> None:
    fakes["moon"].script(
        Answer(reasoning="Paris is in France.", content="Sunny.", prompt_tokens=30, cached_tokens=8)
    )
    message = claude.messages.create(model=MODEL, max_tokens=200, messages=ASK, extra_body=MOON)  # type: ignore[arg-type]
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert [b.type for b in message.content] == ["thinking", "text"]
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking == "Paris is in France." and thinking.signature
    assert text.type == "text" and text.text == "Sunny."
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    # Anthropic counts cached input apart from input_tokens.
    assert message.usage.input_tokens == 22 and message.usage.cache_read_input_tokens == 8
    assert message.usage.output_tokens == 12 and message.usage.cache_creation_input_tokens == 0
    sent = fakes["moon"].requests[-1].body
    assert sent["messages"] == [{"role": "user", "content": "What's the weather in Paris?"}]
    assert sent["max_tokens"] == 200


def test_request_fields_are_mapped(claude: anthropic.Anthropic, fakes: dict[str, FakeUpstream]) -> None:
    claude.messages.create(
        model=MODEL,
        max_tokens=64,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=ASK,
        stop_sequences=["END"],
        metadata={"user_id": "user-42"},
        thinking={"type": "disabled"},
        # The newest SDK dropped sampling parameters from create(); older clients still send them.
        extra_body={"temperature": 0.5, "top_p": 0.9, **MOON},
    )
    sent = fakes["moon"].requests[-1].body
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["temperature"] == pytest.approx(0.3)  # x 0.6, as Moonshot's Anthropic endpoint does
    assert sent["top_p"] == 0.9
    assert sent["stop"] == ["END"] and sent["user"] == "user-42"
    assert sent["thinking"] == {"type": "disabled"}
    assert "cache_control" not in json.dumps(sent)


def test_max_tokens_is_required_and_errors_have_anthropic_s_shape(
    gw: GatewayProcess, claude: anthropic.Anthropic
) -> None:
    response = httpx.post(gw.base_url + "/v1/messages", json={"model": MODEL, "messages": ASK})
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such-model", max_tokens=10, messages=ASK)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=[
                {"role": "user", "content": [{"type": "tool_use", "id": "x", "name": "y", "input": {}}]}
            ],
        )
    # Anthropic's server tools the gateway does not run are not Kimi's: a clear 400, not a silent drop.
    with pytest.raises(anthropic.BadRequestError, match="server tools"):
        claude.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=ASK,
            tools=[{"type": "code_execution_20250825", "name": "code_execution"}],
        )
    # Web search it runs, where a search backend is set up (not here): a 400 that says so.
    with pytest.raises(anthropic.BadRequestError, match="web search is not set up"):
        claude.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=ASK,
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )


def test_upstream_failure_is_typed(claude: anthropic.Anthropic, fakes: dict[str, FakeUpstream]) -> None:
    from tests.fakes.upstream import Fault

    fakes["moon"].script(Fault("status", status=400, message="Invalid request: bad thing"))
    with pytest.raises(anthropic.APIStatusError) as failed:
        claude.messages.create(model=MODEL, max_tokens=10, messages=ASK, extra_body=MOON)  # type: ignore[arg-type]
    assert failed.value.body["type"] == "error"  # type: ignore[index]


# ---- streaming -------------------------------------------------------------------------------------------


def test_stream_helper_and_raw_event_order(
    gw: GatewayProcess, claude: anthropic.Anthropic, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["moon"].script(
        Answer(reasoning="Let me think it over.", content="It is sunny in Paris.", cached_tokens=4)
    )
    with claude.messages.stream(model=MODEL, max_tokens=100, messages=ASK, extra_body=MOON) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "It is sunny in Paris."
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Let me think it over."  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 16 and final.usage.cache_read_input_tokens == 4

    fakes["moon"].script(Answer(reasoning="Let me think it over.", content="It is sunny in Paris."))
    events = _events(gw, {"model": MODEL, "max_tokens": 100, "messages": ASK, "stream": True, **MOON})
    _check_block_order(events)
    names = [name for name, _ in events]
    assert names[1] == "ping"
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["usage"]["input_tokens"] > 0  # never zeros
    # The thinking block ends with its signature, just before its stop.
    stop = names.index("content_block_stop")
    assert events[stop - 1][1]["delta"]["type"] == "signature_delta"
    delta = next(d for n, d in events if n == "message_delta")
    assert delta["delta"]["stop_reason"] == "end_turn" and delta["usage"]["output_tokens"] == 12


def test_streamed_tool_call_arrives_as_partial_json(
    claude: anthropic.Anthropic, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["moon"].script(
        Answer(
            reasoning="I need the weather.",
            content="",
            tool_calls=[("get_weather", '{"city": "Paris"}')],
            finish="tool_calls",
        )
    )
    with claude.messages.stream(
        model=MODEL, max_tokens=100, messages=ASK, tools=[WEATHER], extra_body=MOON
    ) as stream:  # type: ignore[arg-type,list-item]
        partial = [e.partial_json for e in stream if e.type == "input_json"]  # type: ignore[union-attr]
        final = stream.get_final_message()
    assert "".join(partial) == '{"city": "Paris"}'
    tool = final.content[-1]
    assert tool.type == "tool_use" and tool.name == "get_weather" and tool.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"


def test_error_mid_stream_is_an_error_event(
    gw: GatewayProcess, claude: anthropic.Anthropic, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["moon"].script(Answer(content="one two three four five six", error_after=3))
    with (
        pytest.raises(anthropic.APIStatusError),
        claude.messages.stream(
            model=MODEL,
            max_tokens=100,
            messages=ASK,
            extra_body=MOON,  # type: ignore[arg-type]
        ) as stream,
    ):
        for _ in stream:
            pass


# ---- tools, thinking given back, images, documents ----------------------------------------------------


def test_tool_round_trip_with_thinking_given_back(
    claude: anthropic.Anthropic, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["moon"].script(
        Answer(
            reasoning="I should look it up.",
            content="",
            tool_calls=[("get_weather", '{"city": "Paris"}')],
            finish="tool_calls",
        ),
        Answer(reasoning="It is sunny.", content="Sunny in Paris."),
    )
    first = claude.messages.create(
        model=MODEL, max_tokens=100, messages=ASK, tools=[WEATHER], extra_body=MOON
    )  # type: ignore[arg-type,list-item]
    assert first.stop_reason == "tool_use"
    tool = first.content[-1]
    assert tool.type == "tool_use"
    second = claude.messages.create(
        model=MODEL,
        max_tokens=100,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            *ASK,
            {"role": "assistant", "content": first.content},  # thinking (with its signature) and tool_use
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": tool.id,
                        "content": [{"type": "text", "text": '{"sky": "sunny"}'}],
                    },
                    {"type": "text", "text": "Thanks!"},
                ],
            },
        ],
        extra_body=MOON,
    )
    assert second.content[-1].text == "Sunny in Paris."  # type: ignore[union-attr]
    sent = fakes["moon"].requests[-1].body["messages"]
    assistant, result, user = sent[1], sent[2], sent[3]
    assert (
        assistant["reasoning_content"] == "I should look it up."
    )  # Kimi's rule for thinking tool-call turns
    assert assistant["tool_calls"][0]["id"] == tool.id
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert result == {"role": "tool", "tool_call_id": tool.id, "content": '{"sky": "sunny"}'}
    assert user["role"] == "user" and user["content"] == [{"type": "text", "text": "Thanks!"}]


def test_tool_choice_and_error_results(claude: anthropic.Anthropic, fakes: dict[str, FakeUpstream]) -> None:
    claude.messages.create(
        model="kimi-k2-turbo-preview",
        max_tokens=50,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        messages=[
            *ASK,
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "timeout", "is_error": True}
                ],
            },
        ],
        extra_body=MOON,
    )
    sent = fakes["moon"].requests[-1].body
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False
    assert sent["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "Error: timeout"}
    claude.messages.create(
        model="kimi-k2-turbo-preview",
        max_tokens=50,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        messages=ASK,
        extra_body=MOON,
    )  # type: ignore[list-item,arg-type]
    assert fakes["moon"].requests[-1].body["tool_choice"] == "required"


def test_image_blocks_reach_a_vision_model(
    claude: anthropic.Anthropic, fakes: dict[str, FakeUpstream]
) -> None:
    png = images.encoded(images.receipt())
    claude.messages.create(
        model="kimi-vl-a3b-thinking",
        max_tokens=50,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/png",
                            "data": base64.b64encode(png).decode(),
                        },
                    },
                    {"type": "text", "text": "What is the total?"},
                ],
            }
        ],
        extra_body={"provider": {"only": ["vllm"]}},
    )
    content = fakes["vllm"].requests[-1].body["messages"][0]["content"]
    assert content[0]["type"] == "image_url" and content[0]["image_url"]["url"].startswith("data:image/")
    assert content[1] == {"type": "text", "text": "What is the total?"}


def test_text_document_becomes_text(claude: anthropic.Anthropic, fakes: dict[str, FakeUpstream]) -> None:
    claude.messages.create(
        model=MODEL,
        max_tokens=50,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "source": {
                            "type": "text",
                            "media_type": "text/plain",
                            "data": "Invoice total: 42 EUR",
                        },
                        "title": "invoice.txt",
                    },
                    {"type": "text", "text": "What is the total?"},
                ],
            }
        ],
        extra_body=MOON,
    )
    content = fakes["moon"].requests[-1].body["messages"][0]["content"]
    text = json.dumps(content)
    assert "Invoice total: 42 EUR" in text and "invoice.txt" in text


def test_pdf_document_goes_through_the_files_pipeline(
    claude: anthropic.Anthropic, fakes: dict[str, FakeUpstream]
) -> None:
    pdf = pdfs.text_pdf(["Invoice 7781", "Total due: 42 EUR"])
    claude.messages.create(
        model=MODEL,
        max_tokens=50,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "source": {
                            "type": "base64",
                            "media_type": "application/pdf",
                            "data": base64.b64encode(pdf).decode(),
                        },
                        "title": "invoice.pdf",
                    },
                    {"type": "text", "text": "What is due?"},
                ],
            }
        ],
        extra_body=MOON,
    )
    text = json.dumps(fakes["moon"].requests[-1].body["messages"])
    assert "Invoice 7781" in text and "Total due: 42 EUR" in text  # the PDF's text, extracted here


def test_prefill_continues_the_assistant_turn(
    claude: anthropic.Anthropic, fakes: dict[str, FakeUpstream]
) -> None:
    claude.messages.create(
        model=MODEL,
        max_tokens=50,
        messages=[*ASK, {"role": "assistant", "content": "The weather is"}],
        extra_body=MOON,  # type: ignore[arg-type]
    )
    last = fakes["moon"].requests[-1].body["messages"][-1]
    assert last["role"] == "assistant" and last["content"] == "The weather is" and last["partial"] is True


# ---- Claude Code -----------------------------------------------------------------------------------------


def _claude_code_body() -> dict[str, Any]:
    """A request as Claude Code sends it: system blocks with cache_control, many tools whose schemas carry
    `$schema` and `additionalProperties`, metadata, thinking, and extras Kimi cannot honour."""
    tools = [
        {
            "name": f"Tool{i}",
            "description": f"Tool number {i}",
            "input_schema": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"path": {"type": "string", "description": "a path"}},
                "required": ["path"],
                "additionalProperties": False,
            },
            **({"cache_control": {"type": "ephemeral"}} if i == 19 else {}),
        }
        for i in range(20)
    ]
    return {
        "model": MODEL,
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
            {
                "type": "text",
                "text": "Answer in the user's language.",
                "cache_control": {"type": "ephemeral"},
            },
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                    {"type": "text", "text": "list files", "cache_control": {"type": "ephemeral"}},
                ],
            }
        ],
        "tools": tools,
        "metadata": {"user_id": "user_abc_account__session_123"},
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
        **MOON,
    }


def test_a_claude_code_request_is_answered(gw: GatewayProcess, fakes: dict[str, FakeUpstream]) -> None:
    fakes["moon"].script(
        Answer(
            reasoning="The user wants files.",
            content="",
            tool_calls=[("Tool3", '{"path": "."}')],
            finish="tool_calls",
        )
    )
    headers = {
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,"
        "fine-grained-tool-streaming-2025-05-14",
        "x-api-key": "unused",
        "x-app": "cli",
        "X-Claude-Code-Session-Id": "session-123",
    }
    events = _events(gw, _claude_code_body(), "/v1/messages?beta=true", **headers)
    _check_block_order(events)
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["thinking", "tool_use"] and starts[1]["name"] == "Tool3"
    assert next(d for n, d in events if n == "message_delta")["delta"]["stop_reason"] == "tool_use"
    sent = fakes["moon"].requests[-1].body
    assert len(sent["tools"]) == 20 and sent["thinking"] == {"type": "enabled"}
    assert sent["messages"][0]["content"].startswith("You are Claude Code")


def test_count_tokens(gw: GatewayProcess, claude: anthropic.Anthropic) -> None:
    counted = claude.messages.count_tokens(model=MODEL, messages=ASK, system="Be brief.", tools=[WEATHER])  # type: ignore[list-item]
    assert counted.input_tokens > 0
    bigger = claude.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "word " * 400}])
    assert bigger.input_tokens > counted.input_tokens
    for path in ("/v1/messages/count_tokens?beta=true", "/anthropic/v1/messages/count_tokens"):
        response = httpx.post(gw.base_url + path, json={"model": MODEL, "messages": ASK})
        assert response.status_code == 200 and response.json()["input_tokens"] > 0
    bad = httpx.post(gw.base_url + "/v1/messages/count_tokens", json={"model": MODEL})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_count_tokens_counts_tool_input_and_thinking(claude: anthropic.Anthropic) -> None:
    """In agent loops the replayed tool calls are most of the context: they must count."""
    question = {"role": "user", "content": "Read the file."}
    bare = claude.messages.count_tokens(model=MODEL + ":floor", messages=[question])
    turns = [
        question,
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should read it. " * 200, "signature": "x"},
                {"type": "tool_use", "id": "call_1", "name": "Read", "input": {"text": "word " * 4000}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "done"}]},
    ]
    counted = claude.messages.count_tokens(model=MODEL, messages=turns)  # type: ignore[arg-type]
    assert counted.input_tokens > bare.input_tokens + 5000  # 20,000 characters of input, 3,800 of thinking


def test_adjacent_assistant_turns_are_one_turn(
    claude: anthropic.Anthropic, fakes: dict[str, FakeUpstream]
) -> None:
    claude.messages.create(
        model=MODEL,
        max_tokens=20,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            *ASK,
            {
                "role": "assistant",
                "content": [{"type": "thinking", "thinking": "Look it up.", "signature": "s"}],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Oslo"}}
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "rain"}]},
        ],
        extra_body=MOON,
    )
    sent = fakes["moon"].requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["reasoning_content"] == "Look it up." and sent[1]["tool_calls"][0]["id"] == "c1"


def test_models_in_anthropic_s_shape(gw: GatewayProcess, claude: anthropic.Anthropic) -> None:
    page = claude.models.list(limit=2)
    assert len(page.data) == 2 and page.data[0].type == "model" and page.data[0].display_name
    ids = [m.id for m in claude.models.list(limit=100).data]
    assert MODEL in ids and ids == sorted(set(ids), key=ids.index)
    assert [m.id for m in page.data] == ids[:2] and page.has_more
    one = claude.models.retrieve(MODEL)
    assert one.id == MODEL and one.created_at.year >= 2024
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.models.retrieve("no-such-model")
    assert missing.value.body["type"] == "error"  # type: ignore[index]  # Anthropic's shape for its SDK
    # Without anthropic-version, the OpenAI shape stays.
    assert httpx.get(gw.api + "/models").json()["object"] == "list"


def test_prefixed_base_url(gw: GatewayProcess, fakes: dict[str, FakeUpstream]) -> None:
    client = anthropic.Anthropic(base_url=gw.base_url + "/anthropic", auth_token="unused", max_retries=0)
    fakes["moon"].script(Answer(content="Prefixed."))
    message = client.messages.create(model=MODEL, max_tokens=10, messages=ASK, extra_body=MOON)  # type: ignore[arg-type]
    assert message.content[0].text == "Prefixed."  # type: ignore[union-attr]


# ---- the embedded engine ---------------------------------------------------------------------------------


def test_embedded_engine_through_the_sdk(gateway: GatewayProcess) -> None:
    client = anthropic.Anthropic(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=120)
    message = client.messages.create(
        model=LOCAL_MODEL,
        max_tokens=20,
        extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    with client.messages.stream(
        model=LOCAL_MODEL,
        max_tokens=12,
        extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "Say hello."}],
    ) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed and final.content[0].text == streamed  # type: ignore[union-attr]
    assert final.stop_reason in ("end_turn", "max_tokens")
    counted = client.messages.count_tokens(
        model=LOCAL_MODEL, messages=[{"role": "user", "content": "Say hello."}]
    )
    assert 0 < counted.input_tokens < 100


def test_receipt_image_with_the_embedded_engine(gateway: GatewayProcess) -> None:
    client = anthropic.Anthropic(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=120)
    png = images.encoded(images.receipt())
    message = client.messages.create(
        model=LOCAL_MODEL,
        max_tokens=40,
        extra_body={"temperature": 0},
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is the TOTAL on this receipt?"},
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/png",
                            "data": base64.b64encode(png).decode(),
                        },
                    },
                ],
            }
        ],
    )
    assert "5.75" in message.content[0].text  # type: ignore[union-attr]


def test_stop_sequence_is_reported_where_the_provider_names_it(
    claude: anthropic.Anthropic, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["vllm"].script(
        Answer(content="One, two", stop_sequence="three"), Answer(content="One, two", stop_sequence="three")
    )
    vllm = {"provider": {"only": ["vllm"]}}
    message = claude.messages.create(
        model=MODEL, max_tokens=20, messages=ASK, stop_sequences=["three"], extra_body=vllm
    )  # type: ignore[arg-type]
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "three"
    with claude.messages.stream(
        model=MODEL, max_tokens=20, messages=ASK, stop_sequences=["three"], extra_body=vllm
    ) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "three"


def test_stop_sequence_on_the_embedded_engine(gateway: GatewayProcess) -> None:
    client = anthropic.Anthropic(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=120)
    message = client.messages.create(
        model=LOCAL_MODEL,
        max_tokens=40,
        extra_body={"temperature": 0},
        stop_sequences=["3"],
        messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
    )
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "3"
    assert "3" not in message.content[0].text  # type: ignore[union-attr]


def test_claude_code_s_system_messages_are_taken_in_place(
    gw: GatewayProcess, claude: anthropic.Anthropic, fakes: dict[str, FakeUpstream]
) -> None:
    # Claude Code 2.1 sends a system message inside `messages`, and opens its system prompt with a
    # billing line that changes every request. Before: 400 `Invalid value for 'messages[1].role'`, a
    # wording Claude Code does not know, so it stopped at its first request.
    fakes["moon"].script(Answer(content="Done."))
    billing = "x-anthropic-billing-header: cc_version=2.1.3.a1b; cc_entrypoint=sdk-cli; cch=9f2e1;"
    answer = claude.messages.create(
        model=MODEL,
        max_tokens=64,
        system=[
            {"type": "text", "text": billing},
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        ],
        messages=[
            {"role": "user", "content": "List the files."},
            {"role": "system", "content": "The user's working directory is /tmp."},  # type: ignore[typeddict-item]
            {"role": "user", "content": [{"type": "text", "text": "Go on."}]},
        ],
        extra_body=MOON,
    )
    assert answer.content[0].text == "Done."  # type: ignore[union-attr]
    sent = fakes["moon"].requests[-1].body["messages"]
    assert sent == [
        {"role": "system", "content": "You are Claude Code."},
        {"role": "user", "content": "List the files."},
        {"role": "system", "content": "The user's working directory is /tmp."},
        {"role": "user", "content": [{"type": "text", "text": "Go on."}]},
    ]
    # What is still refused is said in Anthropic's own wording: a dotted path, then the reason.
    refused = httpx.post(
        gw.base_url + "/v1/messages",
        json={"model": MODEL, "max_tokens": 8, "messages": [*ASK, {"role": "tool", "content": "x"}]},
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["message"].startswith("messages.1.role: Input should be"), refused.text
