"""One core under three wire formats: the same upstream answer gives the same content, usage and cost in
chat completions, Anthropic Messages and Responses, streamed or not; limits and records are the same; and
OpenRouter's `:nitro` / `:floor` variants route the same in all three."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from kimi_gateway.testing import GatewayProcess
from tests import billing
from tests.fakes.upstream import Answer, FakeUpstream
from tests.upstreams import MODEL

MOON = {"provider": {"only": ["moon"]}}
TOOL_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
ANSWERS = {
    "text": Answer(
        reasoning="Weighing it.",
        content="Sunny in Paris.",
        prompt_tokens=40,
        cached_tokens=10,
        completion_tokens=9,
    ),
    "tool": Answer(
        reasoning="I need data.",
        content="",
        tool_calls=[("get_weather", '{"city": "Paris"}')],
        finish="tool_calls",
        prompt_tokens=40,
        completion_tokens=9,
    ),
}


def _same_answer(
    reasoning: str, text: str, calls: list[tuple[str, dict[str, Any]]], usage: tuple[int, int, int]
) -> dict[str, Any]:
    return {"reasoning": reasoning, "text": text, "calls": calls, "usage": usage}


def _chat(client: openai.OpenAI, stream: bool) -> dict[str, Any]:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": TOOL_SCHEMA}}]
    messages = [{"role": "user", "content": "Weather?"}]
    if not stream:
        reply = client.chat.completions.create(model=MODEL, messages=messages, tools=tools, extra_body=MOON)  # type: ignore[arg-type]
        message = reply.choices[0].message
        calls = [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]  # type: ignore[union-attr]
        u = reply.usage
        assert u is not None and u.prompt_tokens_details is not None
        return _same_answer(
            getattr(message, "reasoning_content", ""),
            message.content or "",
            calls,
            (u.prompt_tokens, u.prompt_tokens_details.cached_tokens or 0, u.completion_tokens),
        )
    reasoning, text, args, names = "", "", {}, {}
    usage = (0, 0, 0)
    for chunk in client.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=tools,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=MOON,  # type: ignore[arg-type]
    ):
        if chunk.usage is not None and not chunk.choices:
            d = chunk.usage.prompt_tokens_details
            usage = (
                chunk.usage.prompt_tokens,
                d.cached_tokens or 0 if d else 0,
                chunk.usage.completion_tokens,
            )
        for choice in chunk.choices:
            delta = choice.delta
            reasoning += getattr(delta, "reasoning_content", None) or ""
            text += delta.content or ""
            for call in delta.tool_calls or []:
                args[call.index] = args.get(call.index, "") + (call.function.arguments or "")  # type: ignore[union-attr]
                if call.function and call.function.name:
                    names[call.index] = call.function.name
    calls = [(names[i], json.loads(args[i])) for i in sorted(args)]
    return _same_answer(reasoning, text, calls, usage)


def _messages(client: anthropic.Anthropic, stream: bool) -> dict[str, Any]:
    kwargs: Any = {
        "model": MODEL,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Weather?"}],
        "tools": [{"name": "get_weather", "input_schema": TOOL_SCHEMA}],
        "extra_body": MOON,
    }
    if stream:
        with client.messages.stream(**kwargs) as s:
            message = s.get_final_message()
    else:
        message = client.messages.create(**kwargs)
    reasoning = "".join(b.thinking for b in message.content if b.type == "thinking")
    text = "".join(b.text for b in message.content if b.type == "text")
    calls = [(b.name, b.input) for b in message.content if b.type == "tool_use"]
    u = message.usage
    cached = u.cache_read_input_tokens or 0
    return _same_answer(reasoning, text, calls, (u.input_tokens + cached, cached, u.output_tokens))  # type: ignore[arg-type]


def _responses(client: openai.OpenAI, stream: bool) -> dict[str, Any]:
    kwargs: Any = {
        "model": MODEL,
        "input": "Weather?",
        "store": False,
        "extra_body": MOON,
        "tools": [{"type": "function", "name": "get_weather", "parameters": TOOL_SCHEMA, "strict": False}],
    }
    if stream:
        with client.responses.stream(**kwargs) as s:
            response = s.get_final_response()
    else:
        response = client.responses.create(**kwargs)
    reasoning = "".join(s.text for item in response.output if item.type == "reasoning" for s in item.summary)
    calls = [
        (item.name, json.loads(item.arguments)) for item in response.output if item.type == "function_call"
    ]
    u = response.usage
    assert u is not None
    return _same_answer(
        reasoning,
        response.output_text,
        calls,
        (u.input_tokens, u.input_tokens_details.cached_tokens, u.output_tokens),
    )


@pytest.mark.parametrize("answer", sorted(ANSWERS))
def test_same_answer_in_every_format(
    upstream_gateway: GatewayProcess, fakes: dict[str, FakeUpstream], answer: str
) -> None:
    gw = upstream_gateway
    oa = openai.OpenAI(base_url=gw.api, api_key="unused", max_retries=0, timeout=30)
    an = anthropic.Anthropic(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=30)
    seen = {}
    for name, call in (
        ("chat", lambda s: _chat(oa, s)),
        ("messages", lambda s: _messages(an, s)),
        ("responses", lambda s: _responses(oa, s)),
    ):
        for stream in (False, True):
            fakes["moon"].script(ANSWERS[answer])
            seen[(name, stream)] = call(stream)
    first = seen[("chat", False)]
    assert first["reasoning"] and first["usage"][0] == 40
    assert (first["text"] != "") == (answer == "text") and bool(first["calls"]) == (answer == "tool")
    for key, got in seen.items():
        assert got == first, key


def _provider_counts(
    gw: GatewayProcess, fakes: dict[str, FakeUpstream], send: Any, n: int = 6
) -> dict[str, int]:
    for fake in fakes.values():
        fake.requests.clear()
    for _ in range(n):
        send()
    return {name: len(fake.requests) for name, fake in fakes.items() if fake.requests}


def test_floor_variant_takes_the_cheapest_in_every_format(
    upstream_gateway: GatewayProcess, fakes: dict[str, FakeUpstream]
) -> None:
    gw = upstream_gateway
    oa = openai.OpenAI(base_url=gw.api, api_key="unused", max_retries=0, timeout=30)
    an = anthropic.Anthropic(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=30)
    cheap = {"provider": {"only": ["moon", "vllm", "tog"]}}  # vllm is the cheapest of these
    ask = [{"role": "user", "content": "Hi"}]
    senders = [
        lambda: oa.chat.completions.create(model=MODEL + ":floor", messages=ask, extra_body=cheap),  # type: ignore[arg-type]
        lambda: an.messages.create(model=MODEL + ":floor", max_tokens=10, messages=ask, extra_body=cheap),  # type: ignore[arg-type]
        lambda: oa.responses.create(model=MODEL + ":floor", input="Hi", store=False, extra_body=cheap),
    ]
    for send in senders:
        assert _provider_counts(gw, fakes, send) == {"vllm": 6}
    reply = oa.chat.completions.create(model=MODEL + ":nitro", messages=ask, extra_body=cheap)  # type: ignore[arg-type]
    assert reply.model == MODEL  # the variant is a routing choice, not another model
    missing = httpx.post(gw.api + "/chat/completions", json={"model": "no-such:floor", "messages": ask})
    assert missing.status_code == 404


def test_limits_credits_and_records_are_the_same_in_every_format(
    tmp_path: Path, fakes: dict[str, FakeUpstream]
) -> None:
    gw = billing.start(tmp_path / "gw", billing.config(fakes["moon"]))
    try:
        ops = billing.Operator(gw)
        key = ops.key_for("acme")
        # No credit yet: each format refuses with 402, in its own shape.
        broke = openai.OpenAI(base_url=gw.api, api_key=key, max_retries=0)
        with pytest.raises(openai.APIStatusError) as chat_refused:
            broke.chat.completions.create(
                model=billing.THINKING, messages=[{"role": "user", "content": "Hi"}]
            )
        assert chat_refused.value.status_code == 402
        claude = anthropic.Anthropic(base_url=gw.base_url, api_key=key, max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as messages_refused:
            claude.messages.create(
                model=billing.THINKING, max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
            )
        assert messages_refused.value.status_code == 402
        assert messages_refused.value.body["error"]["type"] == "billing_error"  # type: ignore[index]
        with pytest.raises(openai.APIStatusError) as responses_refused:
            broke.responses.create(model=billing.THINKING, input="Hi")
        assert responses_refused.value.status_code == 402
        # A bad key: Anthropic's authentication error, by either of its headers.
        for bad in (
            anthropic.Anthropic(base_url=gw.base_url, api_key="sk-kg-wrong", max_retries=0),
            anthropic.Anthropic(base_url=gw.base_url, auth_token="sk-kg-wrong", max_retries=0),
        ):
            with pytest.raises(anthropic.AuthenticationError):
                bad.messages.create(
                    model=billing.THINKING, max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
                )

        ops.recharge("acme", "1")
        fakes["moon"].script(*[Answer(prompt_tokens=100, completion_tokens=50)] * 3)
        ids = [
            broke.chat.completions.create(
                model=billing.THINKING, messages=[{"role": "user", "content": "Hi"}]
            ).id,
            claude.messages.create(
                model=billing.THINKING, max_tokens=60, messages=[{"role": "user", "content": "Hi"}]
            ).id,
            broke.responses.create(model=billing.THINKING, input="Hi", max_output_tokens=60).id,
        ]
        records = [billing.generation(gw, key, i) for i in ids]
        # $1 and $2 per million tokens: 100 x 1,000 + 50 x 2,000 nano-dollars each.
        assert [r["total_cost"] for r in records] == [0.0002] * 3
        assert all(r["tokens_prompt"] == 100 and r["tokens_completion"] == 50 for r in records)
        assert billing.wait_for_usage(gw, key, 0.0006)["total_usage"] == pytest.approx(0.0006, abs=1e-12)
    finally:
        gw.stop()


def test_a_citation_needs_the_whole_url() -> None:
    """Anthropic's citations cite a source the answer names by its URL, whole: not a page under it."""
    from kimi_gateway.http.formats.anthropic_events import _names

    assert _names("see https://a.example/x.", "https://a.example/x")
    assert _names("(https://a.example)", "https://a.example")
    assert not _names("see https://a.example/x", "https://a.example")
    assert not _names("https://a.example?q=1", "https://a.example")
