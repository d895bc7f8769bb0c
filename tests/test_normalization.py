"""One normalized response, whichever provider dialect served it; requests mapped to each dialect."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from kimi_gateway.testing import GatewayProcess
from tests.fakes.upstream import Answer, FakeUpstream, _pieces
from tests.upstreams import MODEL

STYLES = ["moon", "orouter", "tog", "vllm", "sglang", "vllmparsed"]
ANSWER = Answer(
    reasoning="The user wants weather; I should call the tool.",
    content="Let me check.",
    tool_calls=[("get_weather", '{"city": "Paris"}'), ("get_time", '{"tz": "Europe/Paris"}')],
    finish="tool_calls",
    prompt_tokens=31,
    completion_tokens=17,
    cached_tokens=8,
)
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
QUESTION = [{"role": "user", "content": "Weather and time in Paris?"}]
LEAKS = ("<think>", "</think>", "◁", "▷", "<|tool", "|>")


@pytest.fixture(scope="module")
def gw(upstream_gateway: GatewayProcess) -> GatewayProcess:
    return upstream_gateway


def _post(gw: GatewayProcess, provider: str, **extra: Any) -> dict[str, Any]:
    body = {"model": MODEL, "messages": QUESTION, "tools": TOOLS, "provider": {"only": [provider]}, **extra}
    response = httpx.post(gw.api + "/chat/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def _normalized(body: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on the provider: not ids, timestamps, its name, its prices or native values."""
    body = json.loads(json.dumps(body))
    for key in ("id", "created", "provider"):
        body.pop(key, None)
    body["usage"].pop("cost", None)
    for choice in body["choices"]:
        choice.pop("native_finish_reason", None)
    return body


def _accumulate(gw: GatewayProcess, provider: str) -> dict[str, Any]:
    """A streamed response folded back into one message."""
    client = openai.OpenAI(base_url=gw.api, api_key="x", max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"provider": {"only": [provider]}},
    )
    content, reasoning, details = "", "", ""
    calls: dict[int, dict[str, str]] = {}
    finish, usage = None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage.model_dump(exclude_none=True)
            usage.pop("cost", None)  # priced by whichever provider served
        for choice in chunk.choices:
            delta = choice.delta
            content += delta.content or ""
            extra = delta.model_extra or {}
            reasoning += extra.get("reasoning") or ""
            assert (extra.get("reasoning_content") or "") == (extra.get("reasoning") or "")
            details += "".join(d["text"] for d in extra.get("reasoning_details") or [])
            for call in delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += call.id or ""
                slot["name"] += (call.function and call.function.name) or ""
                slot["arguments"] += (call.function and call.function.arguments) or ""
            finish = choice.finish_reason or finish
    assert details == reasoning
    return {"content": content, "reasoning": reasoning, "calls": calls, "finish": finish, "usage": usage}


def test_parity_non_streaming(gw: GatewayProcess, fakes: dict[str, FakeUpstream]) -> None:
    bodies = {}
    for name in STYLES:
        fakes[name].script(ANSWER)
        bodies[name] = _post(gw, name)
    reference = _normalized(bodies["moon"])
    for name in STYLES:
        assert _normalized(bodies[name]) == reference, name
    message = reference["choices"][0]["message"]
    assert message["content"] == "Let me check."
    assert message["reasoning"] == ANSWER.reasoning
    assert message["reasoning_content"] == ANSWER.reasoning
    assert message["reasoning_details"] == [
        {"type": "reasoning.text", "text": ANSWER.reasoning, "format": "unknown", "index": 0}
    ]
    assert [c["id"] for c in message["tool_calls"]] == ["functions.get_weather:0", "functions.get_time:1"]
    assert [json.loads(c["function"]["arguments"]) for c in message["tool_calls"]] == [
        {"city": "Paris"},
        {"tz": "Europe/Paris"},
    ]
    assert reference["choices"][0]["finish_reason"] == "tool_calls"
    usage = reference["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (31, 17, 48)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 8
    assert {bodies[n]["provider"] for n in STYLES} == {
        "Moonshot AI",
        "OpenRouter",
        "Together",
        "Self-hosted vLLM",
        "Self-hosted SGLang",
        "vLLM with parsers",
    }


def test_parity_streaming(gw: GatewayProcess, fakes: dict[str, FakeUpstream]) -> None:
    folded = {}
    for name in STYLES:
        fakes[name].script(ANSWER)
        folded[name] = _accumulate(gw, name)
    for name in STYLES:
        assert folded[name] == folded["moon"], name
    result = folded["moon"]
    assert result["content"] == "Let me check." and result["reasoning"] == ANSWER.reasoning
    assert result["finish"] == "tool_calls"
    assert [c["name"] for c in result["calls"].values()] == ["get_weather", "get_time"]
    assert result["usage"]["prompt_tokens_details"]["cached_tokens"] == 8
    assert not any(marker in result["content"] + result["reasoning"] for marker in LEAKS)


def test_streaming_and_non_streaming_agree(gw: GatewayProcess, fakes: dict[str, FakeUpstream]) -> None:
    fakes["vllm"].script(ANSWER)
    whole = _post(gw, "vllm")["choices"][0]["message"]
    fakes["vllm"].script(ANSWER)
    streamed = _accumulate(gw, "vllm")
    assert streamed["content"] == whole["content"] and streamed["reasoning"] == whole["reasoning"]
    assert [c["arguments"] for c in streamed["calls"].values()] == [
        c["function"]["arguments"] for c in whole["tool_calls"]
    ]


def _content_chunks(gw: GatewayProcess, provider: str) -> list[str]:
    client = openai.OpenAI(base_url=gw.api, api_key="x", max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        extra_body={"provider": {"only": [provider]}},
    )
    return [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]


def test_text_read_together_goes_out_together(gw: GatewayProcess, fakes: dict[str, FakeUpstream]) -> None:
    text = "Text that a fast upstream flushed in one write, so the gateway reads it at once."
    fakes["tog"].script(Answer(content=text, burst=True))
    assert _content_chunks(gw, "tog") == [text]  # one chunk, not one per upstream event
    # Text that arrives over time is passed on as it arrives: nothing is held back to merge.
    fakes["tog"].script(Answer(content=text, chunk_delay=0.02))
    paced = _content_chunks(gw, "tog")
    assert "".join(paced) == text and len(paced) == len(_pieces(text))


def test_kimi_vl_think_markers(gw: GatewayProcess, fakes: dict[str, FakeUpstream]) -> None:
    fakes["vllm"].script(Answer(reasoning="Looking at the chart.", content="Sales rose.", vl_markers=True))
    body = {"model": "kimi-vl-a3b-thinking", "messages": QUESTION, "provider": {"only": ["vllm"]}}
    message = httpx.post(gw.api + "/chat/completions", json=body, timeout=30).json()["choices"][0]["message"]
    assert message["reasoning"] == "Looking at the chart."
    assert message["content"] == "Sales rose."


def test_reasoning_excluded(gw: GatewayProcess, fakes: dict[str, FakeUpstream]) -> None:
    fakes["vllm"].script(ANSWER)
    message = _post(gw, "vllm", reasoning={"exclude": True})["choices"][0]["message"]
    assert "reasoning" not in message and message["content"] == "Let me check."


def test_reasoning_switch_in_each_providers_form(gw: GatewayProcess, fakes: dict[str, FakeUpstream]) -> None:
    sent = {}
    for name in ("moon", "orouter", "vllm", "sglang"):
        _post(gw, name, reasoning={"enabled": False})
        sent[name] = fakes[name].requests[-1].body
    assert sent["moon"]["thinking"] == {"type": "disabled"}
    assert sent["orouter"]["reasoning"] == {"enabled": False}
    assert sent["vllm"]["chat_template_kwargs"] == {"thinking": False}
    assert sent["sglang"]["chat_template_kwargs"] == {"thinking": False}
    for body in sent.values():
        assert "include_reasoning" not in body and "provider" not in body
    _post(gw, "orouter", reasoning_effort="high")
    assert fakes["orouter"].requests[-1].body["reasoning"] == {"effort": "high"}
    _post(gw, "moon", include_reasoning=True, reasoning={"effort": "low"})
    assert fakes["moon"].requests[-1].body["thinking"] == {"type": "enabled"}


def test_replayed_reasoning_in_each_providers_form(
    gw: GatewayProcess, fakes: dict[str, FakeUpstream]
) -> None:
    history = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "I need the weather tool.",
            "tool_calls": [
                {
                    "id": "functions.get_weather:0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "sunny"},
    ]
    expected_field = {
        "moon": "reasoning_content",
        "orouter": "reasoning",
        "vllm": "reasoning",
        "sglang": "reasoning_content",
    }
    for name, field in expected_field.items():
        _post(gw, name, messages=history)
        assistant = fakes[name].requests[-1].body["messages"][1]
        assert assistant[field] == "I need the weather tool.", name
        others = {"reasoning", "reasoning_content"} - {field}
        assert not others & set(assistant), name
        assert assistant["tool_calls"][0]["id"] == "functions.get_weather:0"  # replayed unchanged
    details = [{"type": "reasoning.encrypted", "data": "opaque", "format": "anthropic-claude-v1", "index": 0}]
    history[1] = {**history[1], "reasoning_details": details}
    _post(gw, "orouter", messages=history)
    assert fakes["orouter"].requests[-1].body["messages"][1]["reasoning_details"] == details


def test_temperature_clamped_to_provider_range(gw: GatewayProcess, fakes: dict[str, FakeUpstream]) -> None:
    # Kimi-VL has no temperature rule of its own, so the value reaches the adapter, which clamps it.
    _post(gw, "moon", model="kimi-vl-a3b-thinking", temperature=1.7)
    assert fakes["moon"].requests[-1].body["temperature"] == 1.0  # Moonshot takes [0, 1]
    _post(gw, "orouter", temperature=0.7)
    assert fakes["orouter"].requests[-1].body["temperature"] == 0.7


def test_omitted_sampling_parameters_stay_omitted(gw: GatewayProcess, fakes: dict[str, FakeUpstream]) -> None:
    _post(gw, "orouter")
    body = fakes["orouter"].requests[-1].body
    for name in ("temperature", "top_p", "n", "stop", "seed"):
        assert name not in body
    # max_tokens is the exception: the catalog's default, at least 16,000 for a thinking model.
    assert body["max_tokens"] == 16000
    assert body["stream_options"] == {"include_usage": True}
