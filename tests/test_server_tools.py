"""Server-side tools (web search, web fetch) run by the gateway inside one request, as clients ask for them:
OpenRouter's `openrouter:web_search` tools, `plugins: [{"id": "web"}]` and `:online` over chat completions,
Anthropic's `web_search_20250305` and `web_fetch_20250910` over Messages; streamed and not; with their
bounds and their charges. The model is a scripted fake Kimi that searches and fetches (tests/fakes/web.py);
the search backend and the pages are fakes on loopback; the gateway's own parts are real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from kimi_gateway.testing import GatewayProcess, wait_until
from tests import billing
from tests.billing import K25
from tests.fakes.upstream import Answer, FakeUpstream, Fault
from tests.fakes.web import Researcher, WebSite

ACCOUNT = "acct_tools"
SEARCH_PRICE = "0.01"
FETCH_PRICE = "0.002"


@pytest.fixture(scope="module")
def site() -> Iterator[WebSite]:
    web = WebSite()
    yield web
    web.stop()


def _tools_config(site: WebSite, extra: str = "") -> str:
    return f"""
[media]
allow_hosts = ["{site.host}"]

[routing]
keepalive_seconds = 0.5

[tools]
max_steps = 4
max_tool_seconds = 2
max_result_bytes = 4096
{extra}

[tools.web_search]
backend = "searxng"
base_url = "{site.base_url}"
price_per_call = {SEARCH_PRICE}

[tools.web_fetch]
price_per_page = {FETCH_PRICE}
"""


@pytest.fixture(scope="module")
def gateway(
    fake_servers: dict[str, FakeUpstream], site: WebSite, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, str]]:
    gw = billing.start(
        tmp_path_factory.mktemp("tools"), billing.config(fake_servers["moon"], extra=_tools_config(site))
    )
    ops = billing.Operator(gw)
    _MANAGEMENT[gw.port] = ops.key
    key = ops.key_for(ACCOUNT)
    ops.recharge(ACCOUNT, "5")
    yield gw, key
    gw.stop()


_MANAGEMENT: dict[int, str] = {}


def _management_key(gw: GatewayProcess) -> str:
    return _MANAGEMENT[gw.port]


@pytest.fixture()
def web(site: WebSite, fakes: dict[str, FakeUpstream]) -> WebSite:
    site.reset()
    return site


def _researcher(fakes: dict[str, FakeUpstream], **options: Any) -> Researcher:
    model = Researcher(**options)
    fakes["moon"].agent = model
    return model


def _openai(gateway: tuple[GatewayProcess, str]) -> openai.OpenAI:
    gw, key = gateway
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=key, max_retries=0)


def _anthropic(gateway: tuple[GatewayProcess, str]) -> anthropic.Anthropic:
    gw, key = gateway
    return anthropic.Anthropic(base_url=gw.base_url, api_key=key, max_retries=0)


def _model_requests(fakes: dict[str, FakeUpstream]) -> list[dict[str, Any]]:
    return [r.body for r in fakes["moon"].requests]


# ---- chat completions ---------------------------------------------------------------------------------


def test_openrouter_web_search_tool_runs_the_search_and_cites_it(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    _researcher(fakes, fetch=False)
    reply = _openai(gateway).chat.completions.create(
        model=K25,
        messages=[{"role": "user", "content": "What is Kimi K2.5?"}],
        tools=[{"type": "openrouter:web_search", "parameters": {"max_results": 2}}],  # type: ignore[list-item]
    )
    message = reply.choices[0].message
    url = web.page("/kimi-k25")
    assert url in (message.content or "")
    assert reply.choices[0].finish_reason == "stop"
    # The search ran once, with the model's query, and the model read its results in a tool message.
    assert [s["query"] for s in web.searches] == ["What is Kimi K2.5?"]
    calls = _model_requests(fakes)
    assert len(calls) == 2
    assert [t["function"]["name"] for t in calls[0]["tools"]] == ["web_search"]
    result = json.loads(calls[1]["messages"][-1]["content"])
    assert calls[1]["messages"][-1]["role"] == "tool"
    assert [r["url"] for r in result["results"]] == [url, "https://example.org/other"]
    # The assistant turn that called the tool went back with its reasoning (Kimi refuses it without).
    assert calls[1]["messages"][-2]["reasoning_content"] == "I should search."
    # Citations in OpenAI's nested shape, the first spanning where the answer names the URL.
    annotations = [a.model_dump() for a in message.annotations or ()]
    assert annotations[0]["type"] == "url_citation"
    cited = annotations[0]["url_citation"]
    assert cited["url"] == url and (message.content or "")[cited["start_index"] : cited["end_index"]] == url
    assert reply.usage is not None and reply.usage.model_extra is not None
    assert reply.usage.model_extra["server_tool_use"] == {"web_search_requests": 1, "web_fetch_requests": 0}
    # Both model calls' tokens, in one usage: the fake counts 20 prompt and 12 completion tokens each.
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (40, 24)


def test_web_plugin_streamed_gives_the_text_then_the_citations(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    _researcher(fakes, fetch=False)
    stream = _openai(gateway).chat.completions.create(
        model=K25,
        messages=[{"role": "user", "content": "Kimi K2.5 news"}],
        extra_body={"plugins": [{"id": "web", "max_results": 1}]},
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert (
        text
        == "Let me look that up."
        + f"Kimi K2.5 is a multimodal agentic model (source: {web.page('/kimi-k25')})."
    )
    finishes = [c.choices[0] for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [f.finish_reason for f in finishes] == ["stop"]
    annotations = (finishes[0].delta.model_extra or {}).get("annotations")
    assert annotations and annotations[0]["url_citation"]["url"] == web.page("/kimi-k25")
    assert len(annotations) == 1  # max_results = 1
    assert chunks[-1].usage is not None and chunks[-1].usage.model_extra is not None
    assert chunks[-1].usage.model_extra["server_tool_use"]["web_search_requests"] == 1


def test_online_variant_searches(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    _researcher(fakes, fetch=False)
    reply = _openai(gateway).chat.completions.create(
        model=K25 + ":online", messages=[{"role": "user", "content": "Kimi?"}]
    )
    assert reply.model == K25
    assert len(web.searches) == 1
    assert web.page("/kimi-k25") in (reply.choices[0].message.content or "")


def test_web_fetch_reads_the_page_main_text(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    _researcher(fakes)
    reply = _openai(gateway).chat.completions.create(
        model=K25,
        messages=[{"role": "user", "content": "Kimi K2.5 training data"}],
        tools=[{"type": "openrouter:web_search"}, {"type": "openrouter:web_fetch"}],  # type: ignore[list-item]
    )
    assert web.fetched == ["/kimi-k25"]
    calls = _model_requests(fakes)
    assert len(calls) == 3  # search, fetch, answer
    page = json.loads(calls[2]["messages"][-1]["content"])
    assert page["url"] == web.page("/kimi-k25")
    assert page["title"] == "Kimi K2.5 release notes"
    # The article's text, not the page's menus and footer (trafilatura, not the raw HTML).
    assert "15 trillion mixed visual" in page["content"]
    assert "All rights reserved" not in page["content"] and "<p>" not in page["content"]
    extra = reply.usage.model_extra if reply.usage is not None else None
    assert extra is not None and extra["server_tool_use"] == {
        "web_search_requests": 1,
        "web_fetch_requests": 1,
    }


def test_web_fetch_streamed_in_chat(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    _researcher(fakes)
    chunks = list(
        _openai(gateway).chat.completions.create(
            model=K25,
            messages=[{"role": "user", "content": "Kimi K2.5 training data"}],
            tools=[{"type": "openrouter:web_search"}, {"type": "openrouter:web_fetch"}],  # type: ignore[list-item]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    activity = [
        c.choices[0].delta.model_extra["server_tool"]
        for c in chunks
        if c.choices and c.choices[0].delta.model_extra and "server_tool" in c.choices[0].delta.model_extra
    ]
    assert [(a["type"], a["status"]) for a in activity] == [
        ("web_search", "running"),
        ("web_search", "done"),
        ("web_fetch", "running"),
        ("web_fetch", "done"),
    ]
    assert activity[-1]["results"] == [{"title": "Kimi K2.5 release notes", "url": web.page("/kimi-k25")}]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert web.page("/kimi-k25") in text
    usage = chunks[-1].usage
    assert usage is not None and usage.model_extra is not None
    assert usage.model_extra["server_tool_use"] == {"web_search_requests": 1, "web_fetch_requests": 1}
    assert web.fetched == ["/kimi-k25"]


def test_web_fetch_refuses_private_addresses(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    """The model asks for loopback pages that are not allow-listed: every spelling is refused as a tool
    result (the model reads why), and nothing is fetched."""
    gw, _ = gateway
    spellings = [
        f"http://127.0.0.1:{gw.port}/health",
        f"http://localhost:{gw.port}/health",
        f"http://[::1]:{gw.port}/health",
        f"http://2130706433:{gw.port}/health",
        "http://169.254.169.254/latest/meta-data/",
    ]
    calls = iter(spellings)

    def model(body: dict[str, Any]) -> Any:
        from tests.fakes.upstream import Answer

        url = next(calls, None)
        if url is None:
            return Answer(content="done")
        return Answer(content="", tool_calls=[("web_fetch", json.dumps({"url": url}))], finish="tool_calls")

    fakes["moon"].agent = model
    reply = _anthropic(gateway).messages.create(
        model=K25,
        max_tokens=200,
        messages=[{"role": "user", "content": "read them"}],
        tools=[{"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 10}],
    )
    errors = [b.content for b in reply.content if b.type == "web_fetch_tool_result"]
    assert len(errors) == 3  # max_steps = 4: three fetches, then the loop pauses
    assert all(e.type == "web_fetch_tool_result_error" and e.error_code == "url_not_allowed" for e in errors)
    assert reply.stop_reason == "pause_turn"
    assert web.fetched == []


# ---- Anthropic Messages -------------------------------------------------------------------------------


def test_anthropic_web_search_blocks(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    _researcher(fakes, fetch=False)
    reply = _anthropic(gateway).messages.create(
        model=K25,
        max_tokens=300,
        messages=[{"role": "user", "content": "What is Kimi K2.5?"}],
        tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
    )
    kinds = [b.type for b in reply.content]
    assert kinds == ["thinking", "server_tool_use", "web_search_tool_result", "text"]
    use, result, text = reply.content[1], reply.content[2], reply.content[3]
    assert use.type == "server_tool_use" and use.name == "web_search"
    assert use.input == {"query": "What is Kimi K2.5?"} and use.id.startswith("srvtoolu_")
    assert result.type == "web_search_tool_result" and result.tool_use_id == use.id
    assert isinstance(result.content, list)
    assert [r.url for r in result.content] == [web.page("/kimi-k25"), "https://example.org/other"]
    assert all(r.encrypted_content for r in result.content)
    assert text.type == "text" and web.page("/kimi-k25") in text.text
    # The answer names one of the two results: that one is cited, with its title and text.
    assert text.citations is not None and len(text.citations) == 1
    cited = text.citations[0]
    assert cited.type == "web_search_result_location" and cited.url == web.page("/kimi-k25")
    assert cited.title == result.content[0].title and cited.cited_text and cited.encrypted_index
    assert reply.stop_reason == "end_turn"
    assert reply.usage.server_tool_use is not None
    assert reply.usage.server_tool_use.web_search_requests == 1


def test_anthropic_web_search_streamed(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    _researcher(fakes, fetch=False)
    with _anthropic(gateway).messages.stream(
        model=K25,
        max_tokens=300,
        messages=[{"role": "user", "content": "Kimi K2.5?"}],
        tools=[{"type": "web_search_20250305", "name": "web_search"}],
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert [b.type for b in final.content] == [
        "thinking",
        "text",
        "server_tool_use",
        "web_search_tool_result",
        "text",
    ]
    use = final.content[2]
    assert use.type == "server_tool_use" and use.input == {"query": "Kimi K2.5?"}
    assert final.content[3].type == "web_search_tool_result"
    # The text before the search cites nothing; the answer cites the page it names, streamed as one
    # citations_delta into its block.
    first, answer = final.content[1], final.content[4]
    assert first.type == "text" and not first.citations
    assert answer.type == "text" and answer.citations is not None
    assert [c.url for c in answer.citations if c.type == "web_search_result_location"] == [
        web.page("/kimi-k25")
    ]
    assert events.count("citation") == 1
    assert final.stop_reason == "end_turn"
    assert final.usage.server_tool_use is not None and final.usage.server_tool_use.web_search_requests == 1
    assert events[0] == "message_start" and events[-1] == "message_stop"


def test_anthropic_web_fetch_streamed(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    """Search, fetch the first result, answer naming it: streamed, the fetch's result arrives whole as a
    document, and with the fetch tool's citations enabled the answer cites the page it read."""
    _researcher(fakes)
    with _anthropic(gateway).messages.stream(
        model=K25,
        max_tokens=300,
        messages=[{"role": "user", "content": "Kimi K2.5 training data"}],
        tools=[
            {"type": "web_search_20250305", "name": "web_search"},
            {"type": "web_fetch_20250910", "name": "web_fetch", "citations": {"enabled": True}},
        ],
    ) as stream:
        final = stream.get_final_message()
    kinds = [b.type for b in final.content]
    assert kinds.count("server_tool_use") == 2 and kinds[-1] == "text"
    fetched = next(b for b in final.content if b.type == "web_fetch_tool_result")
    assert fetched.content.type == "web_fetch_result" and fetched.content.url == web.page("/kimi-k25")
    document = fetched.content.content
    assert document.title == "Kimi K2.5 release notes" and "15 trillion mixed visual" in document.source.data
    answer = final.content[-1]
    assert answer.type == "text" and answer.citations is not None
    # Named by its URL: cited as the search result and as the fetched document (its index 0).
    by_kind = {c.type: c for c in answer.citations}
    assert by_kind["web_search_result_location"].url == web.page("/kimi-k25")
    located = by_kind["char_location"]
    assert (
        located.document_index == 0
        and located.cited_text
        and located.end_char_index == len(located.cited_text)
    )
    assert final.usage.server_tool_use is not None
    assert (
        final.usage.server_tool_use.web_search_requests,
        final.usage.server_tool_use.web_fetch_requests,
    ) == (1, 1)
    assert web.fetched == ["/kimi-k25"]


def test_anthropic_turn_with_search_results_replays(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    """The assistant turn is sent back as it came (server_tool_use, results, text): the model reads the
    search it made, as a call and its result, with the snippets the opaque content carried."""
    _researcher(fakes, fetch=False)
    client = _anthropic(gateway)
    tools: Any = [{"type": "web_search_20250305", "name": "web_search"}]
    first = client.messages.create(
        model=K25, max_tokens=300, messages=[{"role": "user", "content": "Kimi?"}], tools=tools
    )
    fakes["moon"].requests.clear()
    fakes["moon"].agent = None
    client.messages.create(
        model=K25,
        max_tokens=300,
        tools=tools,
        messages=[
            {"role": "user", "content": "Kimi?"},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": "Thanks. And in one word?"},
        ],
    )
    sent = _model_requests(fakes)[0]["messages"]
    roles = [m["role"] for m in sent]
    assert roles == ["user", "assistant", "tool", "assistant", "user"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "web_search"
    assert sent[2]["tool_call_id"] == sent[1]["tool_calls"][0]["id"]
    replayed = json.loads(sent[2]["content"])
    assert replayed["results"][0] == {
        "title": "Kimi K2.5 release notes",
        "url": web.page("/kimi-k25"),
        "snippet": "A multimodal model.",
    }


def test_max_uses_answers_the_extra_call_with_an_error(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    _researcher(fakes, fetch=False, searches=2)
    reply = _anthropic(gateway).messages.create(
        model=K25,
        max_tokens=300,
        messages=[{"role": "user", "content": "Kimi?"}],
        tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}],
    )
    results = [b for b in reply.content if b.type == "web_search_tool_result"]
    assert len(results) == 2
    assert isinstance(results[0].content, list)
    error = results[1].content
    assert not isinstance(error, list) and error.error_code == "max_uses_exceeded"
    assert len(web.searches) == 1  # the refused call never reached the backend
    assert reply.usage.server_tool_use is not None and reply.usage.server_tool_use.web_search_requests == 2


def test_the_step_bound_pauses_the_turn(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    _researcher(fakes, always_search=True)
    reply = _openai(gateway).chat.completions.create(
        model=K25,
        messages=[{"role": "user", "content": "search forever"}],
        tools=[{"type": "openrouter:web_search"}],  # type: ignore[list-item]
    )
    assert len(_model_requests(fakes)) == 4  # [tools] max_steps
    assert len(web.searches) == 3  # the last turn's call is not run: the loop paused there
    assert reply.choices[0].finish_reason == "length"
    assert (reply.choices[0].model_extra or {}).get("native_finish_reason") == "pause_turn"


def test_near_the_context_the_oldest_results_give_way(
    fake_servers: dict[str, FakeUpstream], site: WebSite, fakes: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    """A model with a small context and a loop that searches on and on: rather than fail at the context,
    the oldest tool results are replaced by a note; the task and the two latest results stay whole."""
    site.reset()
    extra = _tools_config(site).replace("max_steps = 4", "max_steps = 7")
    extra = '[models."kimi-k2.5"]\ncontext_length = 500\n' + extra
    gw = billing.start(tmp_path, billing.config(fake_servers["moon"], extra=extra))
    try:
        _researcher(fakes, always_search=True)
        client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model=K25,
            max_tokens=100,
            messages=[{"role": "user", "content": "search forever"}],
            tools=[{"type": "openrouter:web_search"}],  # type: ignore[list-item]
        )
        assert reply.choices[0].finish_reason == "length"  # the step bound, not the context, ended it
        requests = _model_requests(fakes)
        assert len(requests) == 7
        last = [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]
        assert len(last) == 6
        assert all(c.startswith("[an earlier tool result, dropped") for c in last[:-2])
        assert all('"results"' in c for c in last[-2:])
        assert requests[-1]["messages"][0]["content"] == "search forever"  # the task stays
    finally:
        gw.stop()


# ---- charges, records, refusals -----------------------------------------------------------------------


def test_a_three_step_loop_is_three_records_and_one_charge(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    """Search, then fetch, then answer: three model calls, each its own record naming the request, the
    tools priced on the call that asked for them, and the account charged once, the sum."""
    gw, _ = gateway
    ops = billing.Operator(gw, _management_key(gw))
    key = ops.key_for("acct_charged")  # an account of its own: nothing else is charged to it
    ops.recharge("acct_charged", "1")
    gateway = (gw, key)
    _researcher(fakes, fetch=True)
    headers = {"Authorization": f"Bearer {key}"}
    before = httpx.get(gw.base_url + "/api/v1/credits", headers=headers).json()["data"]
    reply = _openai(gateway).chat.completions.create(
        model=K25,
        messages=[{"role": "user", "content": "Kimi?"}],
        tools=[{"type": "openrouter:web_search"}, {"type": "openrouter:web_fetch"}],  # type: ignore[list-item]
    )
    assert reply.choices[0].message.content and web.page("/kimi-k25") in reply.choices[0].message.content

    def record(generation_id: str) -> dict[str, Any]:
        # Records are written once the response has gone out: a brief 404 first is expected.
        url = gw.base_url + "/api/v1/generation"
        found = wait_until(
            lambda: (
                (r := httpx.get(url, params={"id": generation_id}, headers=headers)).status_code == 200 and r
            )
        )
        assert found, generation_id
        data: dict[str, Any] = found.json()["data"]
        return data

    steps = [record(reply.id), record(reply.id + "-2"), record(reply.id + "-3")]
    # Kimi K2.5 at $0.60 in / $3.00 out per million: 20 + 12 tokens a call; the search's $0.01 on the
    # call that asked for it, the page's $0.002 on the next.
    tokens = Decimal(20 * 60 + 12 * 300) / Decimal(10**8)
    search, fetch = Decimal(SEARCH_PRICE), Decimal(FETCH_PRICE)
    assert [Decimal(str(s["total_cost"])) for s in steps] == [tokens + search, tokens + fetch, tokens]
    assert [s["server_tool_calls"] for s in steps] == [1, 1, 0]
    assert [Decimal(str(s["server_tool_cost"])) for s in steps] == [search, fetch, 0]
    assert [s["request_id"] for s in steps] == [reply.id] * 3
    assert [s["status"] for s in steps] == ["success"] * 3
    assert reply.usage is not None and reply.usage.model_extra is not None
    assert Decimal(str(reply.usage.model_extra["cost"])) == 3 * tokens + search + fetch
    assert reply.usage.prompt_tokens == 60 and reply.usage.completion_tokens == 36

    # The account's generation log lists the three, each naming its request.
    def mine() -> dict[str, dict[str, Any]]:
        listed = httpx.get(gw.base_url + "/api/v1/generations", headers=headers).json()["data"]
        return {g["id"]: g for g in listed if g["request_id"] == reply.id}

    assert wait_until(lambda: set(mine()) == {reply.id, reply.id + "-2", reply.id + "-3"})
    assert mine()[reply.id]["server_tool_calls"] == 1

    def spent() -> float:
        after = httpx.get(gw.base_url + "/api/v1/credits", headers=headers).json()["data"]
        return float(after["total_usage"]) - float(before["total_usage"])

    # The account is charged once, the sum (the credits API shows USD as floats).
    assert wait_until(lambda: abs(spent() - float(3 * tokens + search + fetch)) < 1e-9)


@pytest.mark.parametrize("stream", [False, True])
def test_a_later_step_failing_charges_the_calls_that_finished(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream], stream: bool
) -> None:
    """The model's second call fails. The first call finished (the provider charged for it; streamed, the
    client read its text) and is charged with its search; the failed one is an error, charged nothing.
    Streamed or not: a client cannot have work done for free by making its last call fail."""
    gw, _ = gateway
    ops = billing.Operator(gw, _management_key(gw))
    account = f"acct_failing_{int(stream)}"
    key = ops.key_for(account)
    ops.recharge(account, "1")
    researcher = Researcher(fetch=False)

    def model(body: dict[str, Any]) -> Answer | Fault:
        if any(m.get("role") == "tool" for m in body["messages"]):
            return Fault("status", 500)
        return researcher(body)

    fakes["moon"].agent = model  # type: ignore[assignment]
    headers = {"Authorization": f"Bearer {key}"}
    body = {
        "model": K25,
        "stream": stream,
        "messages": [{"role": "user", "content": "Kimi?"}],
        "tools": [{"type": "openrouter:web_search"}],
    }
    with httpx.stream(
        "POST", gw.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as response:
        text = response.read().decode()
    if stream:
        assert response.status_code == 200 and "Let me look that up." in text and '"error"' in text
    else:
        assert response.status_code >= 500, text

    def records() -> list[dict[str, Any]]:
        listed = httpx.get(gw.base_url + "/api/v1/generations", headers=headers).json()["data"]
        return sorted(listed, key=lambda g: g["id"])

    assert wait_until(lambda: len(records()) == 2)
    first, second = records()  # the account's only request: its two model calls
    assert second["id"] == first["id"] + "-2" and second["request_id"] == first["id"]
    tokens = Decimal(20 * 60 + 12 * 300) / Decimal(10**8)
    search = Decimal(SEARCH_PRICE)
    assert second["status"] == "error" and Decimal(str(second["total_cost"])) == 0
    assert first["status"] == "success"
    assert Decimal(str(first["total_cost"])) == tokens + search


def test_a_request_for_a_tool_this_gateway_lacks_is_refused(
    fake_servers: dict[str, FakeUpstream], site: WebSite, tmp_path: Path
) -> None:
    gw = billing.start(tmp_path, billing.config(fake_servers["moon"]))  # no [tools.web_search]
    try:
        client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model=K25,
                messages=[{"role": "user", "content": "x"}],
                tools=[{"type": "openrouter:web_search"}],  # type: ignore[list-item]
            )
        assert refused.value.code == "tool_unavailable"
        assert "SearXNG" in refused.value.message
    finally:
        gw.stop()


# ---- the Responses API --------------------------------------------------------------------------------


def test_responses_web_search_call_items(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    _researcher(fakes, fetch=False)
    url = web.page("/kimi-k25")
    response = _openai(gateway).responses.create(
        model=K25,
        input="What is Kimi K2.5?",
        tools=[{"type": "web_search", "filters": {"allowed_domains": ["127.0.0.1"]}}],  # type: ignore[list-item]
    )
    kinds = [item.type for item in response.output]
    assert kinds == ["reasoning", "web_search_call", "message"]
    call = response.output[1]
    assert call.type == "web_search_call" and call.status == "completed"
    action = call.action.model_dump()
    assert action["type"] == "search" and action["query"] == "What is Kimi K2.5?"
    # The allowed domain keeps the loopback page and drops example.org.
    assert [s["url"] for s in action["sources"]] == [url]
    assert url in response.output_text
    message = response.output[2]
    assert message.type == "message"
    annotation = message.content[0].annotations[0]  # type: ignore[union-attr]
    assert annotation.type == "url_citation" and annotation.url == url  # type: ignore[union-attr]
    text = message.content[0].text  # type: ignore[union-attr]
    assert text[annotation.start_index : annotation.end_index] == url  # type: ignore[union-attr]
    # Continued: the model sees the search it made in the turn before, then the answer.
    fakes["moon"].requests.clear()
    fakes["moon"].agent = None
    _openai(gateway).responses.create(model=K25, previous_response_id=response.id, input="Thanks!")
    sent = _model_requests(fakes)[0]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "assistant", "user"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "web_search"
    assert json.loads(sent[2]["content"])["results"] == [{"url": url}]


def test_responses_web_search_streamed(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    _researcher(fakes, fetch=False)
    stream = _openai(gateway).responses.create(
        model=K25,
        input="Kimi K2.5?",
        tools=[{"type": "web_search"}],  # type: ignore[list-item]
        stream=True,
    )
    events = list(stream)
    kinds = [e.type for e in events]
    search = [k for k in kinds if k.startswith("response.web_search_call.")]
    assert search == [
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "response.web_search_call.completed",
    ]
    assert "response.output_text.annotation.added" in kinds
    final = events[-1]
    assert final.type == "response.completed"
    output = final.response.output
    assert [item.type for item in output] == ["reasoning", "message", "web_search_call", "message"]
    assert output[2].status == "completed"  # type: ignore[union-attr]
    assert web.page("/kimi-k25") in final.response.output_text


def test_search_backends_each_speak_their_api(web: WebSite) -> None:
    """Brave, Tavily and Exa, asked in their own shapes (keys in their own headers), read back into the
    same results; a backend's failure is a tool error, not the request's."""
    import asyncio
    import os

    import aiohttp

    from kimi_gateway.config import WebSearchConfig
    from kimi_gateway.tools.search import SearchFailed, backend_of

    os.environ["TEST_SEARCH_KEY"] = "k-123"
    shapes = {
        "brave": (web.page("/res/v1/web/search"), "x-subscription-token"),
        "tavily": (web.page("/tavily/search"), "authorization"),
        "exa": (web.page("/exa/search"), "x-api-key"),
    }

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            for name, (url, header) in shapes.items():
                config = WebSearchConfig(backend=name, base_url=url, api_key_env="TEST_SEARCH_KEY")  # type: ignore[arg-type]
                backend = backend_of(config)
                assert backend is not None
                found = await backend.search(session, "kimi", 5, (), ())
                assert [s.url for s in found] == [web.page("/kimi-k25"), "https://example.org/other"]
                assert (
                    found[0].title == "Kimi K2.5 release notes" and found[0].snippet == "A multimodal model."
                )
                sent = web.searches[-1]
                assert sent["backend"] == name and sent["query"] == "kimi"
                assert "k-123" in {k.lower(): v for k, v in sent["headers"].items()}[header]
            web.search_status = 429
            with pytest.raises(SearchFailed) as limited:
                await backend.search(session, "kimi", 5, (), ())
            assert limited.value.code == "too_many_requests"
        # No key, no backend (the request is then refused with a 400 naming the missing key).
        assert backend_of(WebSearchConfig(backend="brave", api_key_env="UNSET_SEARCH_KEY")) is None

    asyncio.run(run())


# ---- bounds: credit, disconnects ----------------------------------------------------------------------


def test_a_search_the_balance_cannot_pay_is_not_run(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    """$0.0101 pays the first model call, but not it and a $0.01 search and the next call's worst case:
    the loop ends before the search, with what the model said, and only the first call is charged."""
    gw, _ = gateway
    ops = billing.Operator(gw, _management_key(gw))
    key = ops.key_for("acct_poor")
    ops.recharge("acct_poor", "0.0101")
    _researcher(fakes, fetch=False)
    reply = _openai((gw, key)).chat.completions.create(
        model=K25,
        max_tokens=50,
        messages=[{"role": "user", "content": "Kimi?"}],
        tools=[{"type": "openrouter:web_search"}],  # type: ignore[list-item]
    )
    assert web.searches == []
    assert len(_model_requests(fakes)) == 1
    assert reply.choices[0].message.content == "Let me look that up."
    assert (reply.choices[0].finish_reason, reply.choices[0].model_extra) == (
        "length",
        {"native_finish_reason": "pause_turn"},
    )
    headers = {"Authorization": f"Bearer {key}"}
    record = httpx.get(gw.base_url + "/api/v1/generation", params={"id": reply.id}, headers=headers)
    assert Decimal(str(record.json()["data"]["total_cost"])) == Decimal(20 * 60 + 12 * 300) / Decimal(10**8)


def test_a_client_leaving_mid_search_stops_the_loop(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    gw, key = gateway
    _researcher(fakes, fetch=False)
    web.search_delay = 1.5  # under [tools] max_tool_seconds: the search would have ended well
    body = {
        "model": K25,
        "max_tokens": 200,
        "stream": True,
        "messages": [{"role": "user", "content": "Kimi?"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
    }
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    message_id = None
    with httpx.stream(
        "POST", gw.base_url + "/v1/messages", json=body, headers=headers, timeout=10
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and '"message_start"' in line:
                message_id = json.loads(line[6:])["message"]["id"]
            if line.startswith("data: ") and '"server_tool_use"' in line:
                break  # the search is under way: the client goes
    assert message_id is not None
    assert wait_until(lambda: len(web.searches) == 1)
    headers = {"Authorization": f"Bearer {key}"}

    def record() -> dict[str, Any] | None:
        found = httpx.get(gw.base_url + "/api/v1/generation", params={"id": message_id}, headers=headers)
        return found.json()["data"] if found.status_code == 200 else None

    settled = wait_until(record, timeout=10)
    assert settled["cancelled"] is True
    import time

    time.sleep(2.0)  # past the search's end: had the loop gone on, the model would be called again
    assert len(_model_requests(fakes)) == 1


# ---- Moonshot's $web_search builtin -------------------------------------------------------------------


BUILTIN: Any = {"type": "builtin_function", "function": {"name": "$web_search"}}


@pytest.fixture(scope="module")
def two_providers(
    fake_servers: dict[str, FakeUpstream], site: WebSite, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    from tests.upstreams import KEY_ENV

    other = f"""
[providers.orouter]
style = "openrouter"
name = "OpenRouter"
base_url = "{fake_servers["orouter"].base_url}"
api_key_env = "{KEY_ENV}"
[providers.orouter.models."{K25}"]
upstream = "moonshotai/kimi-k2.5"
pricing = {{ input = 0.60, output = 3.00 }}
"""
    gw = billing.start(
        tmp_path_factory.mktemp("builtin"),
        billing.config(fake_servers["moon"], extra=_tools_config(site) + other),
    )
    yield gw
    gw.stop()


def test_moonshot_web_search_goes_to_moonshot_untouched(
    two_providers: GatewayProcess, web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    """Routed to Moonshot, `$web_search` is Moonshot's: sent as the client wrote it, its call comes back to
    the client, which echoes it (Moonshot's documented loop); the gateway searches nothing."""
    from tests.fakes.upstream import Answer

    arguments = json.dumps({"search_result": {"search_id": "s-1"}, "usage": {"total_tokens": 12}})
    fakes["moon"].script(
        Answer(content="", tool_calls=[("$web_search", arguments)], finish="tool_calls"),
        Answer(content="Kimi K2.5 is Moonshot's model."),
    )
    client = openai.OpenAI(base_url=two_providers.base_url + "/v1", api_key="unused", max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "What is Kimi K2.5?"}]
    extra = {"provider": {"only": ["moon"]}}
    first = client.chat.completions.create(model=K25, messages=messages, tools=[BUILTIN], extra_body=extra)
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "$web_search"  # type: ignore[union-attr]
    sent = fakes["moon"].requests[0].body
    assert sent["tools"] == [BUILTIN]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "name": "$web_search", "content": call.function.arguments},  # type: ignore[union-attr]
    ]
    second = client.chat.completions.create(model=K25, messages=messages, tools=[BUILTIN], extra_body=extra)
    assert second.choices[0].message.content == "Kimi K2.5 is Moonshot's model."
    assert web.searches == []


def test_moonshot_web_search_elsewhere_is_the_gateways(
    two_providers: GatewayProcess, web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    """Routed to a provider that has no `$web_search`, the gateway searches itself: the client gets the
    answer (its Moonshot loop simply ends), never a builtin call."""
    fakes["orouter"].agent = Researcher(fetch=False)
    client = openai.OpenAI(base_url=two_providers.base_url + "/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model=K25,
        messages=[{"role": "user", "content": "What is Kimi K2.5?"}],
        tools=[BUILTIN],
        extra_body={"provider": {"only": ["orouter"]}},
    )
    assert reply.choices[0].finish_reason == "stop"
    assert web.page("/kimi-k25") in (reply.choices[0].message.content or "")
    assert [s["query"] for s in web.searches] == ["What is Kimi K2.5?"]
    offered = [t["function"]["name"] for t in fakes["orouter"].requests[0].body["tools"]]
    assert offered == ["web_search"]


def test_a_slow_search_ends_at_its_time_bound(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    _researcher(fakes, fetch=False)
    web.search_delay = 4.0  # over [tools] max_tool_seconds = 2
    import time

    started = time.monotonic()
    reply = _anthropic(gateway).messages.create(
        model=K25,
        max_tokens=200,
        messages=[{"role": "user", "content": "Kimi?"}],
        tools=[{"type": "web_search_20250305", "name": "web_search"}],
    )
    assert time.monotonic() - started < 3.9
    result = next(b for b in reply.content if b.type == "web_search_tool_result")
    assert not isinstance(result.content, list) and result.content.error_code == "unavailable"
    told = json.loads(_model_requests(fakes)[1]["messages"][-1]["content"])
    assert told["error"] == "unavailable" and "longer than 2 s" in told["message"]
    assert reply.usage.server_tool_use is not None and reply.usage.server_tool_use.web_search_requests == 1


def test_a_slow_tool_keeps_the_stream_alive(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    """A tool call that takes a while (a swarm's agents may take minutes) is no silence on the wire: the
    format's keep-alive goes out every [routing] keepalive_seconds until the result comes."""
    _researcher(fakes, fetch=False)
    web.search_delay = 1.6  # under max_tool_seconds, over three keep-alive intervals of 0.5 s
    gw, key = gateway
    body = {
        "model": K25,
        "max_tokens": 200,
        "stream": True,
        "messages": [{"role": "user", "content": "Kimi?"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
    }
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    with httpx.stream("POST", gw.base_url + "/v1/messages", json=body, headers=headers, timeout=30) as r:
        text = r.read().decode()
    between = text[text.index('"server_tool_use"') : text.index('"web_search_tool_result"')]
    assert between.count("event: ping") >= 2
    assert "event: message_stop" in text


def test_a_long_page_is_cut_to_the_result_bound(
    gateway: tuple[GatewayProcess, str], web: WebSite, fakes: dict[str, FakeUpstream]
) -> None:
    from tests.fakes.upstream import Answer

    url = web.page("/long")
    fakes["moon"].script(
        Answer(content="", tool_calls=[("web_fetch", json.dumps({"url": url}))], finish="tool_calls"),
        Answer(content="Read it."),
    )
    _openai(gateway).chat.completions.create(
        model=K25,
        messages=[{"role": "user", "content": "read it"}],
        tools=[{"type": "openrouter:web_fetch"}],  # type: ignore[list-item]
    )
    given = _model_requests(fakes)[1]["messages"][-1]["content"]
    assert len(given.encode()) <= 4096  # [tools] max_result_bytes
    page = json.loads(given)  # whole JSON, the text cut inside it
    assert page["truncated"] is True and page["content"].startswith("Paragraph 0")
