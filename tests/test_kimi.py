"""Kimi API fidelity: a client written for Moonshot's API works unchanged against the gateway."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kimi_gateway.selfhost import presets, render
from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess
from tests.fakes.upstream import Answer, FakeUpstream
from tests.upstreams import MODEL

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]


@pytest.fixture(scope="module")
def gw(upstream_gateway: GatewayProcess) -> GatewayProcess:
    return upstream_gateway


@pytest.fixture()
def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.api, api_key="x", max_retries=0, timeout=30)


MOON = {"provider": {"only": ["moon"]}}
# Moonshot's own 400s: what the gateway otherwise adapts (catalog/rules.py), a strict request refuses.
STRICT = {"provider": {"only": ["moon"], "require_parameters": True}}


def _error(gw: GatewayProcess, body: dict[str, Any], status: int = 400) -> dict[str, Any]:
    response = httpx.post(gw.api + "/chat/completions", json=body, timeout=30)
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


# ---- a Moonshot-style client flow ------------------------------------------------------------------------


def test_moonshot_style_tool_loop_with_reasoning(
    client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["moon"].script(
        Answer(
            reasoning="I should look the weather up.",
            content="",
            tool_calls=[("get_weather", '{"city": "Paris"}')],
            finish="tool_calls",
        ),
        Answer(reasoning="It is sunny.", content="It is sunny in Paris."),
    )
    first = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[WEATHER],
        extra_body=MOON,  # type: ignore[list-item]
    )
    message = first.choices[0].message
    assert getattr(message, "reasoning_content") == "I should look the weather up."  # noqa: B009
    call = (message.tool_calls or [])[0]
    assert call.id == "functions.get_weather:0"  # Kimi's native id, kept
    history = [
        *ASK,
        message.model_dump(exclude_none=True),  # carries reasoning_content, as Moonshot's docs ask
        {"role": "tool", "tool_call_id": call.id, "name": "get_weather", "content": '{"sky": "sunny"}'},
    ]
    second = client.chat.completions.create(
        model=MODEL,
        messages=history,
        tools=[WEATHER],
        extra_body=MOON,  # type: ignore[arg-type]
    )
    assert second.choices[0].message.content == "It is sunny in Paris."
    replayed = fakes["moon"].requests[-1].body["messages"][1]
    assert replayed["reasoning_content"] == "I should look the weather up."
    assert replayed["tool_calls"][0]["id"] == "functions.get_weather:0"


def test_thinking_switch_through_extra_body(client: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    client.chat.completions.create(
        model="kimi-k2.5",
        messages=ASK,
        extra_body={"thinking": {"type": "disabled"}, **MOON},  # type: ignore[arg-type]
    )
    sent = fakes["moon"].requests[-1].body
    assert sent["thinking"] == {"type": "disabled"}
    assert sent["temperature"] == 0.6 and sent["top_p"] == 0.95  # K2.5's fixed values, thinking off
    client.chat.completions.create(model="kimi-k2.5", messages=ASK, extra_body=MOON)  # type: ignore[arg-type]
    sent = fakes["moon"].requests[-1].body
    assert "thinking" not in sent  # the model's default (on) is left to it
    assert sent["temperature"] == 1.0


def test_streamed_reasoning_content_and_usage_in_final_choice(
    gw: GatewayProcess, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["moon"].script(Answer(reasoning="Thinking...", content="Hi!", cached_tokens=6))
    body = {
        "model": MODEL,
        "messages": ASK,
        "stream": True,
        "stream_options": {"include_usage": True},
        **MOON,
    }
    with httpx.stream("POST", gw.api + "/chat/completions", json=body, timeout=30) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    reasoning = "".join(
        c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"]
    )
    assert reasoning == "Thinking..."
    final = next(c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"])
    assert final["choices"][0]["usage"]["cached_tokens"] == 6  # Moonshot's place, in the final choice
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 6


def test_usage_carries_both_cached_token_fields(
    client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["moon"].script(Answer(cached_tokens=9))
    usage = client.chat.completions.create(model=MODEL, messages=ASK, extra_body=MOON).usage  # type: ignore[arg-type]
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 9
    assert (usage.model_extra or {})["cached_tokens"] == 9


# ---- request semantics, with Moonshot's messages ----------------------------------------------------------


def test_tool_choice_with_thinking(gw: GatewayProcess) -> None:
    body = {"model": MODEL, "messages": ASK, "tools": [WEATHER], "tool_choice": "required", **STRICT}
    assert _error(gw, body)["message"] == "tool_choice 'required' is incompatible with thinking enabled"
    body["tool_choice"] = {"type": "function", "function": {"name": "get_weather"}}
    assert _error(gw, body)["message"] == "tool_choice 'specified' is incompatible with thinking enabled"
    # With thinking off (K2.5 allows it), a forced tool is fine.
    body.update(model="kimi-k2.5", thinking={"type": "disabled"}, **MOON)
    assert httpx.post(gw.api + "/chat/completions", json=body, timeout=30).status_code == 200


def _tool_history(**reasoning: Any) -> list[dict[str, Any]]:
    return [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "functions.get_weather:0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
            **reasoning,
        },
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "sunny"},
    ]


def test_reasoning_missing_from_tool_call_history(gw: GatewayProcess, fakes: dict[str, FakeUpstream]) -> None:
    body = {"model": MODEL, "messages": _tool_history(), **STRICT}
    assert _error(gw, body)["message"] == (
        "thinking is enabled but reasoning_content is missing in assistant tool call message at index 1"
    )
    # Sent under OpenRouter's names, it is carried over into Moonshot's field.
    for extra in (
        {"reasoning": "need weather"},
        {"reasoning_details": [{"type": "reasoning.text", "text": "need weather"}]},
    ):
        body = {"model": MODEL, "messages": _tool_history(**extra), **MOON}
        assert httpx.post(gw.api + "/chat/completions", json=body, timeout=30).status_code == 200
        assert fakes["moon"].requests[-1].body["messages"][1]["reasoning_content"] == "need weather"
    # Thinking off: no reasoning needed.
    body = {"model": "kimi-k2.5", "messages": _tool_history(), "thinking": {"type": "disabled"}, **MOON}
    assert httpx.post(gw.api + "/chat/completions", json=body, timeout=30).status_code == 200


@pytest.mark.parametrize(
    ("model", "extra", "message", "param"),
    [
        (
            "kimi-k2.5",
            {"temperature": 0.7},
            "invalid temperature: only 1 is allowed for this model",
            "temperature",
        ),
        (
            "kimi-k2.5",
            {"temperature": 1.0, "thinking": {"type": "disabled"}},
            "invalid temperature: only 0.6 is allowed for this model",
            "temperature",
        ),
        ("kimi-k2.5", {"top_p": 0.5}, "invalid top_p: only 0.95 is allowed for this model", "top_p"),
        ("kimi-k2.5", {"n": 2}, "invalid n: 2, must be between 1 and 1", "n"),
        (MODEL, {"temperature": 1.5}, "invalid temperature: 1.5, must be within [0, 1]", "temperature"),
        (MODEL, {"n": 6, "temperature": 1}, "invalid n: 6, must be between 1 and 5", "n"),
        (
            MODEL,
            {"n": 2, "temperature": 0},
            "invalid n: when temperature is close to 0, n must be 1 (the samples would be identical)",
            "n",
        ),
        (
            MODEL,
            {"stop": ["a", "b", "c", "d", "e", "f"]},
            "invalid stop: at most 5 stop sequences are allowed",
            "stop",
        ),
        (MODEL, {"stop": ["x" * 33]}, "invalid stop: stop[0] is longer than 32 bytes", "stop[0]"),
    ],
)
def test_family_sampling_rules(
    gw: GatewayProcess, model: str, extra: dict[str, Any], message: str, param: str
) -> None:
    error = _error(gw, {"model": model, "messages": ASK, **extra, **STRICT})
    assert (error["message"], error["param"]) == (message, param)


def _post(gw: GatewayProcess, body: dict[str, Any]) -> httpx.Response:
    response = httpx.post(gw.api + "/chat/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_a_client_dropped_is_restored(
    gw: GatewayProcess, fakes: dict[str, FakeUpstream], stream: bool
) -> None:
    # The AI SDK's openai chat provider, openai-agents' chat models, LlamaIndex: each replays the tool-call
    # turn without its reasoning, and Kimi with thinking on refuses that. The gateway served the turn.
    fakes["moon"].script(
        Answer(
            reasoning=f"I should look it up ({stream}).",
            content="",
            tool_calls=[("get_weather", '{"city": "Lyon", "days": 1}')],
            finish="tool_calls",
        ),
        Answer(content="Sunny."),
    )
    first = {"model": "kimi-k2.5", "messages": ASK, "tools": [WEATHER], "stream": stream, **MOON}
    answer = _post(gw, first)
    if stream:
        chunks = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: {")]
        call_id = next(
            c["choices"][0]["delta"]["tool_calls"][0]["id"]
            for c in chunks
            if c["choices"] and c["choices"][0]["delta"].get("tool_calls")
        )
    else:
        call_id = answer.json()["choices"][0]["message"]["tool_calls"][0]["id"]
    replay = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    # As a client re-encodes them: other spacing, other key order.
                    "function": {"name": "get_weather", "arguments": '{"days":1,"city":"Lyon"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "sunny"},
    ]
    second = _post(gw, {"model": "kimi-k2.5", "messages": replay, "tools": [WEATHER], **MOON})
    assert second.headers["x-gateway-adapted"] == "reasoning_restored"
    sent = fakes["moon"].requests[-1].body
    assert sent["messages"][1]["reasoning_content"] == f"I should look it up ({stream})."
    assert sent.get("thinking") != {"type": "disabled"}


def test_kimi_rules_are_adapted_and_named(gw: GatewayProcess, fakes: dict[str, FakeUpstream]) -> None:
    # A turn the gateway never served: thinking off where the model allows it, else empty reasoning.
    history = _tool_history()
    history[1]["tool_calls"][0]["function"]["arguments"] = '{"city": "Atlantis"}'
    unknown = {"model": "kimi-k2.5", "messages": history, "tools": [WEATHER], **MOON}
    assert _post(gw, unknown).headers["x-gateway-adapted"] == "thinking_off:reasoning_missing"
    sent = fakes["moon"].requests[-1].body
    assert sent["thinking"] == {"type": "disabled"} and sent["temperature"] == 0.6
    always = {**unknown, "model": MODEL}
    assert _post(gw, always).headers["x-gateway-adapted"] == "reasoning_empty"
    assert fakes["moon"].requests[-1].body["messages"][1]["reasoning_content"] == ""
    # A forced tool (instructor TOOLS, structured output by tool): thinking off.
    forced = {"model": "kimi-k2.5", "messages": ASK, "tools": [WEATHER], "tool_choice": "required", **MOON}
    assert _post(gw, forced).headers["x-gateway-adapted"] == "thinking_off:tool_choice"
    assert fakes["moon"].requests[-1].body["thinking"] == {"type": "disabled"}
    # A temperature the model does not take (LlamaIndex OpenAILike sends 0.1): the model's.
    cold = {"model": "kimi-k2.5", "messages": ASK, "temperature": 0.1, **MOON}
    served = _post(gw, cold)
    assert served.headers["x-gateway-adapted"] == "temperature:1"
    assert fakes["moon"].requests[-1].body["temperature"] == 1
    # The request's log line names the adaptation; a refused one's says why it was refused.
    assert gw.request_record(served.headers["x-request-id"])["adapted"] == "temperature:1"
    refused = httpx.post(gw.api + "/chat/completions", json={**cold, **STRICT}, timeout=30)
    record = gw.request_record(refused.headers["x-request-id"])
    assert record["status"] == 400 and record["model"] == "kimi-k2.5"
    assert record["error"] == "invalid temperature: only 1 is allowed for this model"
    assert record["error_code"] == refused.json()["error"]["code"] == "invalid_value"
    # Nothing adapted, no header.
    assert "x-gateway-adapted" not in _post(gw, {"model": "kimi-k2.5", "messages": ASK, **MOON}).headers


def test_rules_within_bounds_pass(client: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        temperature=0.3,
        n=1,
        stop=["x" * 32],
        extra_body=MOON,  # type: ignore[arg-type]
    )
    assert fakes["moon"].requests[-1].body["temperature"] == 0.3


def _tool(name: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters or {"type": "object"}}}


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        ([_tool(f"tool_{i}") for i in range(129)], "tools"),
        ([_tool("has.dot")], "tools[0].function.name"),
        ([_tool("x" * 65)], "tools[0].function.name"),
        ([_tool("weather"), _tool("weather")], "tools[1].function.name"),
        ([_tool("fine"), _tool("rooted", {"type": "string"})], "tools[1].function.parameters.type"),
    ],
)
def test_tool_schema_checks(gw: GatewayProcess, tools: list[dict[str, Any]], param: str) -> None:
    # Checked before routing, for every model, the embedded one included.
    error = _error(gw, {"model": LOCAL_MODEL, "messages": ASK, "tools": tools})
    assert error["param"] == param and error["code"] == "invalid_value"


def test_short_tool_names_follow_each_model_s_rule(gw: GatewayProcess) -> None:
    # OpenAI allows a one-character name; Moonshot's API wants three or more, for its models only.
    error = _error(gw, {"model": MODEL, "messages": ASK, "tools": [_tool("ok_tool"), _tool("ab")]})
    assert error["param"] == "tools[1].function.name" and error["code"] == "invalid_value"
    body = {"model": LOCAL_MODEL, "messages": ASK, "tools": [_tool("a")], "max_tokens": 8}
    assert httpx.post(gw.api + "/chat/completions", json=body, timeout=60).status_code == 200


def test_required_tool_choice_needs_tools(gw: GatewayProcess) -> None:
    error = _error(gw, {"model": LOCAL_MODEL, "messages": ASK, "tool_choice": "required"})
    assert error["param"] == "tool_choice" and error["code"] == "invalid_value"


def test_a_tool_without_parameters_is_called_with_empty_arguments(client: openai.OpenAI) -> None:
    tool = {"type": "function", "function": {"name": "get_time", "description": "The current time."}}
    reply = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=[{"role": "user", "content": "What time is it?"}],
        tools=[tool],  # type: ignore[list-item]
        tool_choice="required",
        temperature=0,
    )
    calls = reply.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_time"
    assert json.loads(calls[0].function.arguments) == {}


def test_default_max_tokens_from_the_catalog(client: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    client.chat.completions.create(model="kimi-k2-turbo-preview", messages=ASK, extra_body=MOON)  # type: ignore[arg-type]
    assert fakes["moon"].requests[-1].body["max_tokens"] == 1024
    client.chat.completions.create(model=MODEL, messages=ASK, extra_body=MOON)  # type: ignore[arg-type]
    assert (
        fakes["moon"].requests[-1].body["max_tokens"] == 16000
    )  # thinking models: reasoning cannot starve the answer
    client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=50, extra_body=MOON)  # type: ignore[arg-type]
    assert fakes["moon"].requests[-1].body["max_tokens"] == 50


# ---- Partial Mode -----------------------------------------------------------------------------------------


def test_partial_mode_on_the_embedded_engine(client: openai.OpenAI) -> None:
    prefix = "The capital of France is"
    response = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=[
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": prefix, "partial": True},  # type: ignore[misc]
        ],
        temperature=0,
        max_tokens=10,
    )
    content = response.choices[0].message.content or ""
    assert not content.startswith(prefix)  # continued, not repeated
    assert "Paris" in prefix + content


def test_partial_mode_in_each_providers_form(gw: GatewayProcess, fakes: dict[str, FakeUpstream]) -> None:
    messages = [*ASK, {"role": "assistant", "content": "Well,", "partial": True}]
    for name in ("moon", "vllm", "orouter"):
        body = {"model": MODEL, "messages": messages, "provider": {"only": [name]}}
        assert httpx.post(gw.api + "/chat/completions", json=body, timeout=30).status_code == 200
    assert fakes["moon"].requests[-1].body["messages"][-1]["partial"] is True
    vllm = fakes["vllm"].requests[-1].body
    assert vllm["continue_final_message"] is True and vllm["add_generation_prompt"] is False
    assert "partial" not in vllm["messages"][-1]
    orouter = fakes["orouter"].requests[-1].body["messages"][-1]
    assert orouter == {"role": "assistant", "content": "Well,"}  # assistant prefill


def test_partial_mode_misuse(gw: GatewayProcess) -> None:
    early = [{"role": "assistant", "content": "x", "partial": True}, *ASK]
    assert _error(gw, {"model": MODEL, "messages": early})["param"] == "messages[0].partial"
    late = [*ASK, {"role": "assistant", "content": "{", "partial": True}]
    body = {"model": MODEL, "messages": late, "response_format": {"type": "json_object"}}
    assert _error(gw, body)["param"] == "response_format"


# ---- estimate-token-count ---------------------------------------------------------------------------------


def test_estimate_token_count_uses_the_local_tokenizer(gw: GatewayProcess, client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Count my tokens, please."},
    ]
    response = httpx.post(
        gw.api + "/tokenizers/estimate-token-count", json={"model": LOCAL_MODEL, "messages": messages}
    )
    assert response.status_code == 200
    assert response.headers["x-token-count-method"] == "tokenizer"
    total = response.json()["data"]["total_tokens"]
    usage = client.chat.completions.create(model=LOCAL_MODEL, messages=messages, max_tokens=1).usage  # type: ignore[arg-type]
    assert usage is not None and total == usage.prompt_tokens  # exactly what the model is fed


def test_token_counts_include_the_tools_the_model_reads(gw: GatewayProcess, client: openai.OpenAI) -> None:
    # The tools' schemas go into the local model's prompt: before, a count with 64 KB of tools equalled
    # the count without them (3,087 both), while the header said the count was exact.
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]

    def count(**extra: Any) -> int:
        body = {"model": LOCAL_MODEL, "messages": messages, **extra}
        response = httpx.post(gw.api + "/tokenizers/estimate-token-count", json=body)
        assert response.status_code == 200 and response.headers["x-token-count-method"] == "tokenizer"
        return int(response.json()["data"]["total_tokens"])

    bare, with_tools = count(), count(tools=[WEATHER])
    assert with_tools > bare + 20
    served = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=messages,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        max_tokens=1,
    ).usage
    assert served is not None
    assert with_tools == served.prompt_tokens  # exactly what the model was fed
    anthropic_count = httpx.post(
        gw.base_url + "/v1/messages/count_tokens",
        json={
            "model": LOCAL_MODEL,
            "messages": messages,
            "tools": [{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}],  # type: ignore[index]
        },
    )
    assert anthropic_count.json()["input_tokens"] > bare + 20


def test_estimate_token_count_elsewhere_is_an_estimate(gw: GatewayProcess) -> None:
    def count(content: Any) -> int:
        body = {"model": "kimi-k2.5", "messages": [{"role": "user", "content": content}]}
        response = httpx.post(gw.api + "/tokenizers/estimate-token-count", json=body)
        assert response.status_code == 200 and response.headers["x-token-count-method"] == "estimate"
        return int(response.json()["data"]["total_tokens"])

    short, long = count("hello"), count("hello " * 400)
    assert long > short + 400
    image = {"type": "image_url", "image_url": {"url": "https://example.com/chart.png"}}
    assert count([{"type": "text", "text": "hello"}, image]) >= short + 1024
    error = httpx.post(gw.api + "/tokenizers/estimate-token-count", json={"model": "nope", "messages": ASK})
    assert error.status_code == 404


# ---- prefix-cache stickiness -----------------------------------------------------------------------------

EQUAL = ("s1", "s2", "s3", "s4")


def _sticky_config(fakes: dict[str, FakeUpstream], sticky_seconds: float) -> str:
    lines = ["[routing]", f"sticky_seconds = {sticky_seconds}"]
    for name in EQUAL:
        lines += [
            f"[providers.{name}]",
            'style = "openai"',
            f'base_url = "{fakes[name].base_url}"',
            'api_key_env = "FAKE_UPSTREAM_KEY"',
            f'[providers.{name}.models."{MODEL}"]',
            "pricing = { input = 1.0, cached_input = 0.25, output = 2.0 }",
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def equal_fakes() -> Iterator[dict[str, FakeUpstream]]:
    started = {name: FakeUpstream("openai", api_key="test-upstream-key", display=name) for name in EQUAL}
    for fake in started.values():
        fake.prefix_cache = True
    yield started
    for fake in started.values():
        fake.stop()


def _conversations(
    gateway: GatewayProcess, count: int, turns: int, explicit: bool
) -> tuple[float, list[list[str]]]:
    client = openai.OpenAI(base_url=gateway.api, api_key="x", max_retries=0)
    hits = total = 0
    served: list[list[str]] = []
    for c in range(count):
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": f"You are assistant number {c}."},
            {"role": "user", "content": f"Conversation {c} begins."},
        ]
        providers = []
        for t in range(turns):
            extra = {"session_id": f"conv-{c}"} if explicit else {}
            response = client.chat.completions.create(model=MODEL, messages=messages, extra_body=extra)  # type: ignore[arg-type]
            usage = response.usage
            assert usage is not None and usage.prompt_tokens_details is not None
            hits += (usage.prompt_tokens_details.cached_tokens or 0) > 0
            total += 1
            providers.append(getattr(response, "provider", ""))
            messages += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": f"turn {t}"}]
        served.append(providers)
    return hits / total, served


def test_stickiness_raises_the_cache_hit_share(equal_fakes: dict[str, FakeUpstream], tmp_path: Path) -> None:
    env = {"FAKE_UPSTREAM_KEY": "test-upstream-key"}
    (tmp_path / "off").mkdir()
    off = GatewayProcess(tmp_path / "off", _sticky_config(equal_fakes, 0), env)
    try:
        share_off, _ = _conversations(off, count=6, turns=8, explicit=True)
    finally:
        off.stop()
    for fake in equal_fakes.values():
        fake.reset()
        fake.prefix_cache = True
    (tmp_path / "on").mkdir()
    on = GatewayProcess(tmp_path / "on", _sticky_config(equal_fakes, 600), env)
    try:
        share_on, served = _conversations(on, count=6, turns=8, explicit=True)
        # With a session id, a conversation sticks from its first success: one provider throughout.
        assert all(len(set(p)) == 1 for p in served), served
        assert share_on == pytest.approx(7 / 8)
        for fake in equal_fakes.values():
            fake.reset()
            fake.prefix_cache = True
        # Without one, it sticks once a cache hit shows where the prefix lives, and stays there.
        _, served = _conversations(on, count=4, turns=10, explicit=False)
        for providers in served:
            settled = next(i for i in range(1, len(providers)) if providers[i] in providers[:i])
            assert len(set(providers[settled:])) == 1, providers
        stats = httpx.get(on.base_url + f"/api/v1/models/{MODEL}/endpoints").json()["data"]["endpoints"]
        sticky = [e["sticky"] for e in stats]
        assert sum(s["requests"] for s in sticky) > 0 and sum(s["cache_hits"] for s in sticky) > 0
    finally:
        on.stop()
    assert share_off < 0.75 < share_on


def test_stickiness_stops_with_provider_order(equal_fakes: dict[str, FakeUpstream], tmp_path: Path) -> None:
    for fake in equal_fakes.values():
        fake.reset()
        fake.prefix_cache = True
    on = GatewayProcess(
        tmp_path, _sticky_config(equal_fakes, 600), {"FAKE_UPSTREAM_KEY": "test-upstream-key"}
    )
    try:
        client = openai.OpenAI(base_url=on.api, api_key="x", max_retries=0)
        messages = [{"role": "user", "content": "hello"}]
        client.chat.completions.create(
            model=MODEL, messages=messages, extra_body={"session_id": "k", "provider": {"order": ["s1"]}}
        )  # type: ignore[arg-type]
        response = client.chat.completions.create(
            model=MODEL,
            messages=messages,
            extra_body={"session_id": "k", "provider": {"order": ["s3"]}},  # type: ignore[arg-type]
        )
        assert getattr(response, "provider", "") == "s3"
    finally:
        on.stop()


# ---- self-hosting presets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
@pytest.mark.parametrize(
    "model",
    [
        "kimi-k2-thinking",
        "kimi-k2.5",
        "kimi-k2-turbo-preview",
        "kimi-linear-48b-a3b-instruct",
        "kimi-vl-a3b-thinking",
        "kimi-vl-a3b-instruct",
    ],
)
def test_selfhost_presets(engine: str, model: str) -> None:
    text = render(engine, model)
    command, _, config = text.partition("# Then add this to the gateway's config file:")
    assert "--trust-remote-code" in command
    assert f"--served-model-name {model}" in command
    if model.startswith("kimi-k2"):
        assert "--tool-call-parser kimi_k2" in command
    if model in {"kimi-k2-thinking", "kimi-k2.5"}:
        assert "--reasoning-parser kimi_k2" in command
    if model.startswith("kimi-vl") and engine == "vllm":
        assert "--limit-mm-per-prompt" in command
    if model == "kimi-linear-48b-a3b-instruct":
        assert "1048576" in command
    entry = tomllib.loads(config)
    provider = entry["providers"][f"selfhosted-{engine}"]
    assert provider["style"] == engine and provider["base_url"] == "http://127.0.0.1:8000/v1"
    assert model in provider["models"]
    # vLLM has no ◁think▷ parser, so for Kimi-VL Thinking the gateway parses the raw output itself.
    assert provider["server_parsers"] is not (engine == "vllm" and model == "kimi-vl-a3b-thinking")
    assert set(presets()[engine]) >= {model}


def test_selfhost_cli(tmp_path: Path) -> None:
    import subprocess
    import sys

    ok = subprocess.run(
        [sys.executable, "-m", "kimi_gateway", "selfhost", "vllm", "kimi-k2-thinking"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0 and ok.stdout.startswith("# kimi-k2-thinking on vllm")
    bad = subprocess.run(
        [sys.executable, "-m", "kimi_gateway", "selfhost", "vllm", "gpt-9"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "no vllm preset" in bad.stderr


def test_anthropic_cache_control_names_the_conversation_for_stickiness(
    equal_fakes: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    """A Messages request whose system prompt carries `cache_control` sticks to one provider from its
    first answer, as a named conversation does; without the marker it does not until a cache hit."""
    import anthropic

    for fake in equal_fakes.values():
        fake.reset()
        fake.prefix_cache = True
    on = GatewayProcess(
        tmp_path, _sticky_config(equal_fakes, 600), {"FAKE_UPSTREAM_KEY": "test-upstream-key"}
    )
    try:
        claude = anthropic.Anthropic(base_url=on.base_url, api_key="x", max_retries=0)
        for c in range(6):
            system = [{"type": "text", "text": f"You are agent {c}.", "cache_control": {"type": "ephemeral"}}]
            messages: list[dict[str, Any]] = [{"role": "user", "content": f"Task {c}."}]
            for t in range(5):
                claude.messages.create(model=MODEL, max_tokens=20, system=system, messages=messages)  # type: ignore[arg-type]
                messages += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": f"step {t}"}]
        for c in range(6):
            serving = {
                name
                for name, fake in equal_fakes.items()
                for received in fake.requests
                if received.body["messages"][0]["content"] == f"You are agent {c}."
            }
            assert len(serving) == 1, (c, serving)  # one provider for the whole conversation
    finally:
        on.stop()
