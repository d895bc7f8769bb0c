"""OpenAI's Responses API through the official `openai` SDK (`client.responses.*`), against fake Kimi
providers and the embedded engine."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess
from tests import billing, images, pdfs, services
from tests.fakes.upstream import Answer, FakeUpstream
from tests.upstreams import MODEL

MOON = {"provider": {"only": ["moon"]}}
OROUTER = {"provider": {"only": ["orouter"]}}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def gw(upstream_gateway: GatewayProcess) -> GatewayProcess:
    return upstream_gateway


@pytest.fixture()
def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.api, api_key="unused", max_retries=0, timeout=30)


def test_create_from_a_string(client: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    fakes["moon"].script(Answer(reasoning="Easy.", content="Paris.", prompt_tokens=25, cached_tokens=5))
    response = client.responses.create(
        model=MODEL, input="Capital of France?", instructions="Answer in one word.", extra_body=MOON
    )
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.output_text == "Paris."
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].summary[0].text == "Easy."  # type: ignore[union-attr]
    usage = response.usage
    assert usage is not None and usage.input_tokens == 25 and usage.output_tokens == 12
    assert usage.input_tokens_details.cached_tokens == 5 and usage.total_tokens == 37
    sent = fakes["moon"].requests[-1].body["messages"]
    assert sent == [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Capital of France?"},
    ]


def test_request_fields_are_mapped(client: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    fakes["moon"].script(Answer(content='{"city": "Paris"}'))
    response = client.responses.create(
        model=MODEL,
        input=[
            {"role": "developer", "content": "Be exact."},
            {"role": "user", "content": [{"type": "input_text", "text": "Where?"}]},
        ],
        max_output_tokens=77,
        temperature=0.4,
        reasoning={"effort": "low"},
        text={"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}},
        metadata={"run": "7"},
        store=False,
        extra_body=MOON,
    )
    assert json.loads(response.output_text) == {"city": "Paris"}
    assert response.metadata == {"run": "7"} and response.max_output_tokens == 77
    sent = fakes["moon"].requests[-1].body
    assert sent["max_tokens"] == 77 and sent["temperature"] == 0.4
    assert sent["messages"][0] == {"role": "system", "content": "Be exact."}
    assert sent["response_format"]["json_schema"]["name"] == "place"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)  # store=False: nothing kept


def test_length_cut_is_incomplete(client: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    fakes["moon"].script(Answer(content="A long", finish="length"))
    response = client.responses.create(
        model=MODEL, input="Tell me a story.", max_output_tokens=2, extra_body=MOON
    )
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


def test_stream_helper_and_sequence_numbers(
    gw: GatewayProcess, client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["moon"].script(Answer(reasoning="Thinking it over.", content="It is sunny in Paris."))
    with client.responses.stream(model=MODEL, input="Weather in Paris?", extra_body=MOON) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "It is sunny in Paris." and final.output_text == "It is sunny in Paris."
    assert final.output[0].type == "reasoning" and final.status == "completed"

    fakes["moon"].script(Answer(reasoning="Thinking it over.", content="It is sunny in Paris."))
    body = {"model": MODEL, "input": "Weather in Paris?", "stream": True, **MOON}
    with httpx.stream("POST", gw.api + "/responses", json=body, timeout=30) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    # Each item is announced before its deltas, and closed after them.
    for added, delta, done in (
        ("response.output_item.added", "response.reasoning_summary_text.delta", "response.output_item.done"),
        ("response.content_part.added", "response.output_text.delta", "response.content_part.done"),
    ):
        assert kinds.index(added) < kinds.index(delta) < len(kinds) - 1 - kinds[::-1].index(done)
    assert not any("error" in e for e in events if e["type"] != "response.completed")
    assert events[-1]["response"]["usage"]["output_tokens"] == 12


def test_failure_mid_stream_is_an_error_event_and_response_failed(
    gw: GatewayProcess, client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    # OpenRouter's fake: the two failures here open its breaker, not the one the other tests use.
    fakes["orouter"].script(Answer(content="one two three four five six", error_after=3))
    body = {"model": MODEL, "input": "Count.", "stream": True, "provider": {"only": ["orouter"]}}
    with httpx.stream("POST", gw.api + "/responses", json=body, timeout=30) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created" and kinds[-2:] == ["error", "response.failed"]
    assert events[-1]["response"]["status"] == "failed" and events[-1]["response"]["error"]["message"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    fakes["orouter"].script(Answer(content="one two three four five six", error_after=3))
    with (
        pytest.raises(openai.APIError),
        client.responses.stream(model=MODEL, input="Count.", extra_body=OROUTER) as stream,
    ):
        stream.get_final_response()


def test_input_file_is_read(client: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    pdf = base64.b64encode(pdfs.text_pdf(["Quarterly revenue: 9 million"])).decode()
    client.responses.create(
        model=MODEL,
        input=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "input_file",
                        "filename": "report.pdf",
                        "file_data": f"data:application/pdf;base64,{pdf}",
                    },
                    {"type": "input_text", "text": "Revenue?"},
                ],
            }
        ],
        store=False,
        extra_body=MOON,
    )
    assert "Quarterly revenue: 9 million" in json.dumps(fakes["moon"].requests[-1].body["messages"])


def test_function_calling_round_trip(client: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    fakes["moon"].script(
        Answer(
            reasoning="Look it up.",
            content="",
            tool_calls=[("get_weather", '{"city": "Paris"}')],
            finish="tool_calls",
        ),
        Answer(content="Sunny."),
    )
    first = client.responses.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER], extra_body=MOON)  # type: ignore[list-item]
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    replay: list[Any] = [
        {"role": "user", "content": "Weather in Paris?"},
        *[item.model_dump(exclude_none=True) for item in first.output],
    ]
    replay.append({"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "sunny"}'})
    second = client.responses.create(model=MODEL, input=replay, tools=[WEATHER], store=False, extra_body=MOON)  # type: ignore[list-item]
    assert second.output_text == "Sunny."
    sent = fakes["moon"].requests[-1].body["messages"]
    assert sent[1]["reasoning_content"] == "Look it up."  # the replayed reasoning item, on its turn
    assert sent[1]["tool_calls"][0]["id"] == call.call_id
    assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": '{"sky": "sunny"}'}
    assert fakes["moon"].requests[-1].body["tools"][0]["function"]["name"] == "get_weather"


def test_streamed_function_call(client: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    fakes["moon"].script(
        Answer(content="", tool_calls=[("get_weather", '{"city": "Oslo"}')], finish="tool_calls")
    )
    with client.responses.stream(
        model=MODEL, input="Weather in Oslo?", tools=[WEATHER], extra_body=MOON
    ) as stream:  # type: ignore[list-item]
        pieces = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert "".join(pieces) == '{"city": "Oslo"}'
    call = final.output[-1]
    assert (
        call.type == "function_call" and call.arguments == '{"city": "Oslo"}' and call.status == "completed"
    )


def test_previous_response_id_chains(
    gw: GatewayProcess, client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["moon"].script(
        Answer(
            reasoning="Check.",
            content="",
            tool_calls=[("get_weather", '{"city": "Rome"}')],
            finish="tool_calls",
        ),
        Answer(content="Sunny in Rome."),
        Answer(content="You asked about Rome."),
    )
    first = client.responses.create(
        model=MODEL, input="Weather in Rome?", instructions="Be brief.", tools=[WEATHER], extra_body=MOON
    )  # type: ignore[list-item]
    call = first.output[-1]
    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],  # type: ignore[union-attr]
        tools=[WEATHER],  # type: ignore[list-item]
        extra_body=MOON,
    )
    third = client.responses.create(
        model=MODEL, previous_response_id=second.id, input="What did I ask?", extra_body=MOON
    )
    assert third.output_text == "You asked about Rome." and third.previous_response_id == second.id
    sent = fakes["moon"].requests[-1].body["messages"]
    roles = [m["role"] for m in sent]
    # The instructions of the first are not carried over; its call and the call's output are.
    assert roles == ["user", "assistant", "tool", "assistant", "user"]
    assert sent[1]["tool_calls"][0]["id"] == call.call_id and sent[2]["content"] == "sunny"  # type: ignore[union-attr]
    assert sent[3]["content"] == "Sunny in Rome."
    # Stored: retrieve, input items, delete.
    kept = client.responses.retrieve(second.id)
    assert kept.output_text == "Sunny in Rome." and kept.id == second.id
    items = client.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["function_call_output"]
    asked = client.responses.input_items.list(third.id).data[0]
    assert asked.type == "message" and asked.content[0].text == "What did I ask?"  # type: ignore[union-attr]
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, previous_response_id=first.id, input="again", extra_body=MOON)


def test_input_image(client: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    url = images.data_url(images.encoded(images.receipt()))
    client.responses.create(
        model="kimi-vl-a3b-thinking",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Total?"},
                    {"type": "input_image", "image_url": url},
                ],
            }
        ],
        store=False,
        extra_body={"provider": {"only": ["vllm"]}},
    )
    content = fakes["vllm"].requests[-1].body["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "Total?"}
    assert content[1]["type"] == "image_url" and content[1]["image_url"]["url"].startswith("data:image/")


def test_unsupported_parts_are_refused_clearly(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="function tools"):
        client.responses.create(model=MODEL, input="Use it", tools=[{"type": "computer_use_preview"}])  # type: ignore[list-item]
    with pytest.raises(openai.BadRequestError, match="vector_store_ids"):
        client.responses.create(model=MODEL, input="Search", tools=[{"type": "file_search"}])  # type: ignore[list-item]
    with pytest.raises(openai.BadRequestError, match="background"):
        client.responses.create(model=MODEL, input="Hi", background=True)


def test_embedded_engine(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.api, api_key="unused", max_retries=0, timeout=120)
    url = images.data_url(images.encoded(images.receipt()))
    response = client.responses.create(
        model=LOCAL_MODEL,
        temperature=0,
        max_output_tokens=40,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is the TOTAL on this receipt?"},
                    {"type": "input_image", "image_url": url},
                ],
            }
        ],
    )
    assert "5.75" in response.output_text
    text, last = "", None
    with client.responses.stream(model=LOCAL_MODEL, input="Say hello.", max_output_tokens=10) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                text += event.delta
            last = event
    # Cut at max_output_tokens, the stream ends as OpenAI's does then: with `response.incomplete`.
    assert last is not None and last.type in ("response.completed", "response.incomplete")
    final = last.response  # type: ignore[union-attr]
    assert text and final.output_text == text and final.usage is not None and final.usage.output_tokens > 0


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_stored_responses_are_owned_by_their_account(
    tmp_path: Path, fakes: dict[str, FakeUpstream], database: str
) -> None:
    """On PostgreSQL, two replicas share the store: a chain started on one continues on the other."""
    url = services.fresh_postgres_database() if database == "postgresql" else None
    extra = f'database_url = "{url}"' if url else ""
    gw = billing.start(tmp_path / "gw", billing.config(fakes["moon"], extra=extra))
    other = billing.start(tmp_path / "other", billing.config(fakes["moon"], extra=extra)) if url else gw
    try:
        ops = billing.Operator(gw)
        alice, bob = ops.key_for("alice"), ops.key_for("bob")
        ops.recharge("alice", "5")
        ops.recharge("bob", "5")
        # The other replica leaves its keyless bootstrap within its key cache's bound (5 s).
        deadline = time.monotonic() + 10
        while httpx.get(other.api + "/models").status_code != 401:
            assert time.monotonic() < deadline, "the other replica never saw the first key"
            time.sleep(0.1)
        mine = openai.OpenAI(base_url=gw.api, api_key=alice, max_retries=0)
        theirs = openai.OpenAI(base_url=other.api, api_key=bob, max_retries=0)
        fakes["moon"].script(Answer(content="First answer."), Answer(content="Second answer."))
        response = mine.responses.create(model=billing.K25, input="Hi", metadata={"k": "v"})
        elsewhere = openai.OpenAI(base_url=other.api, api_key=alice, max_retries=0)
        assert elsewhere.responses.retrieve(response.id).output_text == "First answer."
        followup = elsewhere.responses.create(
            model=billing.K25, input="More", previous_response_id=response.id
        )
        assert followup.output_text == "Second answer."
        sent = fakes["moon"].requests[-1].body["messages"]
        assert [m["content"] for m in sent] == ["Hi", "First answer.", "More"]
        with pytest.raises(openai.NotFoundError):
            theirs.responses.retrieve(response.id)
        with pytest.raises(openai.NotFoundError):
            theirs.responses.create(model=billing.K25, input="Hi", previous_response_id=response.id)
        with pytest.raises(openai.NotFoundError):
            theirs.responses.delete(response.id)
        with pytest.raises(openai.NotFoundError):
            theirs.responses.input_items.list(response.id)
        with pytest.raises(openai.NotFoundError):  # nor can its items be referenced
            theirs.responses.create(
                model=billing.K25, input=[{"type": "item_reference", "id": response.output[0].id}]
            )
        assert mine.responses.retrieve(response.id).metadata == {"k": "v"}
        # Charged as any request: the response id is the generation's id.
        record = billing.generation(gw, alice, response.id)
        assert record["model"] == billing.K25 and record["total_cost"] > 0
    finally:
        gw.stop()
        if other is not gw:
            other.stop()
        if url:
            services.drop_postgres_database(url)


CODEX_TOOLS = [
    {"type": "function", "name": "shell", "parameters": {"type": "object", "properties": {}}},
    {
        "type": "namespace",
        "name": "mcp__demo__",
        "description": "Tools in the mcp__demo__ namespace.",
        "tools": [
            {
                "type": "function",
                "name": "lookup_order",
                "description": "Look up an order",
                "strict": False,
                "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
            }
        ],
    },
    {"type": "web_search", "external_web_access": False},
]


@pytest.mark.parametrize("stream", [False, True])
def test_codex_s_namespaced_tools_and_web_search(
    gw: GatewayProcess, fakes: dict[str, FakeUpstream], stream: bool
) -> None:
    # Codex CLI sends MCP tools grouped in a `namespace` tool, and a `web_search` tool. Before: 400
    # `unsupported_tool` on its first request.
    fakes["moon"].script(
        Answer(
            reasoning="Look it up.",
            content="",
            tool_calls=[("mcp__demo__lookup_order", '{"order_id": "7"}')],
            finish="tool_calls",
        )
    )
    body = {"model": MODEL, "input": "Where is order 7?", "tools": CODEX_TOOLS, "stream": stream, **MOON}
    answer = httpx.post(gw.api + "/responses", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-gateway-adapted"] == "dropped_tool:web_search"
    sent = fakes["moon"].requests[-1].body["tools"]
    assert [t["function"]["name"] for t in sent] == ["shell", "mcp__demo__lookup_order"]
    if stream:
        events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")]
        added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
        response = next(e["response"] for e in events if e["type"] == "response.completed")
        assert added[-1]["name"] == "lookup_order" and added[-1]["namespace"] == "mcp__demo__"
    else:
        response = answer.json()
    call = response["output"][-1]
    assert call["type"] == "function_call"
    assert (call["name"], call["namespace"]) == ("lookup_order", "mcp__demo__")
    # Codex sends the call back with its namespace, and the output: the model sees its flat name.
    fakes["moon"].script(Answer(content="Order 7 ships today."))
    followup = {
        "model": MODEL,
        "input": [
            {"type": "message", "role": "user", "content": "Where is order 7?"},
            response["output"][0],  # the reasoning (Kimi wants it back with its call)
            {k: call[k] for k in ("type", "call_id", "name", "namespace", "arguments")},
            {"type": "function_call_output", "call_id": call["call_id"], "output": "ships today"},
        ],
        "tools": CODEX_TOOLS,
        "store": False,
        **MOON,
    }
    assert httpx.post(gw.api + "/responses", json=followup, timeout=30).status_code == 200
    history = fakes["moon"].requests[-1].body["messages"]
    assert history[1]["tool_calls"][0]["function"]["name"] == "mcp__demo__lookup_order"
    # Continued by id, the stored call keeps its flat name for the model too.
    fakes["moon"].script(Answer(content="Done."))
    chained = {"model": MODEL, "previous_response_id": response["id"], "input": "Thanks", **MOON}
    assert httpx.post(gw.api + "/responses", json=chained, timeout=30).status_code == 200
    history = fakes["moon"].requests[-1].body["messages"]
    assert history[1]["tool_calls"][0]["function"]["name"] == "mcp__demo__lookup_order"


def test_tools_whose_flat_names_collide_are_refused(gw: GatewayProcess) -> None:
    tools = [
        {"type": "namespace", "name": "a", "tools": [{"type": "function", "name": "x__y"}]},
        {"type": "function", "name": "a__x__y"},
    ]
    refused = httpx.post(
        gw.api + "/responses", json={"model": MODEL, "input": "Hi", "tools": tools, **MOON}, timeout=30
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "duplicate_tool_name"


def test_strict_requests_still_refuse_tools_not_served(gw: GatewayProcess) -> None:
    body = {
        "model": MODEL,
        "input": "Search.",
        "tools": [{"type": "web_search"}],
        "provider": {"only": ["moon"], "require_parameters": True},
    }
    refused = httpx.post(gw.api + "/responses", json=body, timeout=30)
    # Strict: not dropped, and this gateway has no search backend: a 400 that says so.
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "tool_unavailable"
    assert "web search is not set up" in refused.json()["error"]["message"]


def test_errors_name_the_responses_fields(gw: GatewayProcess) -> None:
    # A rule checked on the chat form named `messages[1].reasoning_content`, a field this client never
    # sent: the Responses error names `input`.
    body = {
        "model": MODEL,
        "input": [
            {"type": "message", "role": "user", "content": "Weather?"},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ],
        "tools": [WEATHER],
        "store": False,
        "provider": {"only": ["moon"], "require_parameters": True},
    }
    refused = httpx.post(gw.api + "/responses", json=body, timeout=30)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "input", refused.text


def test_item_references_name_stored_items(gw: GatewayProcess, fakes: dict[str, FakeUpstream]) -> None:
    # The AI SDK's Responses tool loop sends the reasoning (and messages) it was given back by reference
    # when responses are stored. Before: 400 "'item_reference' input items are not supported".
    fakes["moon"].script(Answer(reasoning="Paris is the capital.", content="Paris."), Answer(content="Rome."))
    first = httpx.post(
        gw.api + "/responses", json={"model": MODEL, "input": "Capital of France?", **MOON}, timeout=30
    ).json()
    reasoning, message = first["output"]
    assert reasoning["type"] == "reasoning" and message["type"] == "message"
    follow = {
        "model": MODEL,
        "input": [
            {"role": "user", "content": "Capital of France?"},
            {"type": "item_reference", "id": reasoning["id"]},
            {"type": "item_reference", "id": message["id"]},
            {"role": "user", "content": "And of Italy?"},
        ],
        **MOON,
    }
    answer = httpx.post(gw.api + "/responses", json=follow, timeout=30)
    assert answer.status_code == 200, answer.text
    sent = fakes["moon"].requests[-1].body["messages"]
    assert sent[1] == {"role": "assistant", "content": "Paris.", "reasoning_content": "Paris is the capital."}
    # Bounded: a small body repeating a reference to a large item must not expand without end.
    follow["input"] = [{"type": "item_reference", "id": message["id"]}] * 300
    many = httpx.post(gw.api + "/responses", json=follow, timeout=30)
    assert many.status_code == 400 and many.json()["error"]["param"] == "input"
    for unknown in ("rs_" + "0" * 32, "msg_not_ours"):
        follow["input"] = [{"type": "item_reference", "id": unknown}]
        missing = httpx.post(gw.api + "/responses", json=follow, timeout=30)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "item_not_found"
