"""Routing with fallbacks, driven through the openai SDK against fake upstream providers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from kimi_gateway.testing import GatewayProcess
from tests.fakes.upstream import Answer, FakeUpstream, Fault
from tests.upstreams import MODEL, start_upstream_gateway

HI = [{"role": "user", "content": "Say hello."}]


@pytest.fixture()
def gw(fakes: dict[str, FakeUpstream], tmp_path: Path) -> Iterator[GatewayProcess]:
    # A fresh gateway per test: breakers, cool-downs and stats start clean.
    process = start_upstream_gateway(tmp_path, fakes)
    yield process
    process.stop()


@pytest.fixture()
def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.api, api_key="x", max_retries=0, timeout=30)


def ask(client: openai.OpenAI, stream: bool = False, **extra: Any) -> tuple[str, str | None, str]:
    """(content, provider, model) of one request, streamed or not."""
    kwargs: dict[str, Any] = {"model": MODEL, "messages": HI, **extra}
    if stream:
        content, provider, model = "", None, ""
        for chunk in client.chat.completions.create(stream=True, **kwargs):
            provider = getattr(chunk, "provider", provider)
            model = chunk.model
            if chunk.choices:
                content += chunk.choices[0].delta.content or ""
        return content, provider, model
    response = client.chat.completions.create(**kwargs)
    return response.choices[0].message.content or "", getattr(response, "provider", None), response.model


def order(*names: str, **more: Any) -> dict[str, Any]:
    return {"extra_body": {"provider": {"order": list(names), **more}}}


def test_request_reaches_upstream_in_its_form(client: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    content, provider, model = ask(client, **order("orouter"))
    assert content == "Hello from the fake."
    assert provider == "OpenRouter" and model == MODEL
    received = fakes["orouter"].requests[-1]
    assert received.headers["authorization"] == "Bearer test-upstream-key"
    assert received.body["model"] == "moonshotai/kimi-k2-thinking"
    assert received.body["stream"] is True
    assert "provider" not in received.body  # routing preferences are ours, not the upstream's


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", 500),
        Fault("status", 503),
        Fault("status", 429, "Rate limit reached", retry_after=2),
        Fault("hang"),
        Fault("reset"),
        Fault("empty"),
        Fault("malformed"),
        Fault("processing"),
        Answer(cut_after=0),
    ],
    ids=[
        "500",
        "503",
        "429",
        "hang",
        "reset",
        "empty",
        "malformed",
        "comments-only",
        "cut-before-first-event",
    ],
)
def test_failover_before_first_byte(
    client: openai.OpenAI, fakes: dict[str, FakeUpstream], fault: Any, stream: bool
) -> None:
    fakes["moon"].script(fault)
    content, provider, _ = ask(client, stream, **order("moon", "orouter"))
    assert content == "Hello from the fake."
    assert provider == "OpenRouter"
    assert len(fakes["moon"].requests) == 1 and len(fakes["orouter"].requests) == 1


def test_non_streaming_client_fails_over_even_mid_stream(
    client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    # Nothing has reached a non-streaming client yet, so a stream cut half-way can still go elsewhere.
    fakes["moon"].script(Answer(content="partial answer that never finishes", cut_after=4))
    content, provider, _ = ask(client, **order("moon", "orouter"))
    assert (content, provider) == ("Hello from the fake.", "OpenRouter")


def test_429_retry_after_cools_the_provider_down(
    client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["moon"].script(Fault("status", 429, retry_after=1.5))
    assert ask(client, **order("moon", "orouter"))[1] == "OpenRouter"
    assert ask(client, **order("moon", "orouter"))[1] == "OpenRouter"
    assert len(fakes["moon"].requests) == 1  # skipped while cooling down
    time.sleep(1.6)
    assert ask(client, **order("moon", "orouter"))[1] == "Moonshot AI"


def test_a_cooling_provider_is_still_tried_when_every_other_one_failed(
    client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    """The cool-down keeps the crowd off a provider that said 429; a request whose every other provider
    then fails still gets its chance there (before: 502, with the cooling provider never asked)."""
    fakes["moon"].script(Fault("status", 429, retry_after=30))
    assert ask(client, **order("moon", "orouter"))[1] == "OpenRouter"  # Moonshot cools down for 30 s
    assert ask(client, **order("moon", "orouter"))[1] == "OpenRouter"
    assert len(fakes["moon"].requests) == 1  # passed over while the other serves
    fakes["orouter"].script(Fault("status", 500, "down"))
    only_these = order("moon", "orouter", allow_fallbacks=False)
    assert ask(client, **only_these)[1] == "Moonshot AI"  # the last resort served it
    assert len(fakes["moon"].requests) == 2


def test_allow_fallbacks_false_returns_the_upstream_error(
    gw: GatewayProcess, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["moon"].script(Fault("status", 500, "model crashed"))
    body = {"model": MODEL, "messages": HI, "provider": {"order": ["moon"], "allow_fallbacks": False}}
    response = httpx.post(gw.api + "/chat/completions", json=body, timeout=30)
    assert response.status_code == 502
    error = response.json()["error"]
    assert "model crashed" in error["message"]
    assert error["metadata"]["provider_name"] == "Moonshot AI"
    assert fakes["orouter"].requests == []


def test_comments_do_not_hold_off_the_first_byte_timeout(
    gw: GatewayProcess, fakes: dict[str, FakeUpstream]
) -> None:
    # Keep-alive comments every 0.2 s keep the idle limit (1.5 s) from tripping; the first event is due
    # 1.5 s after sending all the same.
    fakes["moon"].script(Fault("processing"))
    body = {"model": MODEL, "messages": HI, "provider": {"order": ["moon"], "allow_fallbacks": False}}
    started = time.monotonic()
    response = httpx.post(gw.api + "/chat/completions", json=body, timeout=30)
    assert response.status_code == 504, response.text
    assert "no response within 1.5s" in response.json()["error"]["message"]
    assert 1.4 < time.monotonic() - started < 5


def test_only_and_ignore(client: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    for _ in range(4):
        assert ask(client, extra_body={"provider": {"only": ["tog"]}})[1] == "Together"
    for _ in range(4):
        provider = ask(
            client, extra_body={"provider": {"ignore": ["vllm", "sglang", "vllmparsed", "orouter"]}}
        )[1]
        assert provider in {"Moonshot AI", "Together"}
    assert fakes["vllm"].requests == [] and fakes["orouter"].requests == []


def test_only_with_nothing_left_is_404(gw: GatewayProcess) -> None:
    body = {"model": MODEL, "messages": HI, "provider": {"only": ["nobody"]}}
    response = httpx.post(gw.api + "/chat/completions", json=body)
    assert response.status_code == 404 and response.json()["error"]["code"] == "no_endpoints"


def test_sort_by_price(client: openai.OpenAI) -> None:
    prefs = {"sort": "price", "only": ["moon", "orouter", "tog"]}
    assert ask(client, extra_body={"provider": prefs})[1] == "OpenRouter"
    prefs = {"sort": {"by": "price"}, "only": ["moon", "tog"]}
    assert ask(client, extra_body={"provider": prefs})[1] == "Moonshot AI"


def test_sort_by_latency_and_throughput(client: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    only = ["moon", "orouter"]
    # Moonshot answers late (latency) but streams fast; OpenRouter answers at once but streams slowly.
    fakes["moon"].default = Answer(first_delay=0.4)
    fakes["orouter"].default = Answer(content="slow " * 8, chunk_delay=0.05)
    for name in only:
        for _ in range(2):
            ask(client, **order(name))
    assert ask(client, extra_body={"provider": {"sort": "latency", "only": only}})[1] == "OpenRouter"
    assert ask(client, extra_body={"provider": {"sort": "throughput", "only": only}})[1] == "Moonshot AI"


def test_max_price_is_a_hard_filter(gw: GatewayProcess, client: openai.OpenAI) -> None:
    prefs = {"only": ["moon", "orouter", "tog"], "max_price": {"prompt": 0.55, "completion": 5}}
    for _ in range(3):
        assert ask(client, extra_body={"provider": prefs})[1] == "OpenRouter"
    body = {
        "model": MODEL,
        "messages": HI,
        "provider": {"only": ["moon", "tog"], "max_price": {"prompt": 0.1}},
    }
    response = httpx.post(gw.api + "/chat/completions", json=body)
    assert response.status_code == 404 and "max_price" in response.json()["error"]["message"]


def test_unsupported_parameters_dropped_or_required(
    client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    # Together's entry does not list `seed`: it is left out of its request.
    ask(client, seed=7, **order("tog", "moon"))
    assert "seed" not in fakes["tog"].requests[-1].body
    # With require_parameters, Together is skipped instead.
    provider = ask(client, seed=7, **order("tog", "moon", require_parameters=True))[1]
    assert provider == "Moonshot AI"
    assert len(fakes["tog"].requests) == 1
    assert fakes["moon"].requests[-1].body["seed"] == 7


def test_feature_support_filters_softly(
    gw: GatewayProcess, client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    fmt = {"type": "json_object"}
    # Only Together is allowed and it lacks response_format: the feature is dropped, the model kept.
    ask(client, response_format=fmt, extra_body={"provider": {"only": ["tog"]}})
    assert "response_format" not in fakes["tog"].requests[-1].body
    # When some endpoint has it, only those serve.
    assert (
        ask(client, response_format=fmt, extra_body={"provider": {"only": ["tog", "moon"]}})[1]
        == "Moonshot AI"
    )
    body = {
        "model": MODEL,
        "messages": HI,
        "response_format": fmt,
        "provider": {"only": ["tog"], "require_parameters": True},
    }
    response = httpx.post(gw.api + "/chat/completions", json=body)
    assert response.status_code == 404
    assert "structured output" in response.json()["error"]["message"]


def test_image_input_needs_an_image_endpoint(gw: GatewayProcess) -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    body = {"model": MODEL, "messages": [{"role": "user", "content": [image]}]}
    response = httpx.post(gw.api + "/chat/completions", json=body)
    assert response.status_code == 404 and "image input" in response.json()["error"]["message"]


def test_models_fallback(client: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    fakes["moon"].script(Fault("status", 500))  # kimi-k2.5's only endpoint fails
    response = client.chat.completions.create(
        model="kimi-k2.5",
        messages=HI,
        extra_body={"models": [MODEL], "provider": {"order": ["moon", "orouter"]}},
    )
    assert response.model == MODEL  # the model that served
    assert getattr(response, "provider", None) == "Moonshot AI"
    assert fakes["moon"].requests[0].body["model"] == "kimi-k2.5"
    assert fakes["moon"].requests[1].body["model"] == MODEL


def test_context_length_filters_endpoints(gw: GatewayProcess, client: openai.OpenAI) -> None:
    long = [{"role": "user", "content": "word " * 3000}]  # ~3,750 estimated tokens; Together has 2,000
    response = client.chat.completions.create(
        model=MODEL, messages=long, extra_body={"provider": {"order": ["tog", "moon"]}}
    )
    assert getattr(response, "provider", None) == "Moonshot AI"
    body = {"model": MODEL, "messages": long, "provider": {"only": ["tog"]}}
    response = httpx.post(gw.api + "/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert "2000" in response.json()["error"]["message"]


def test_circuit_breaker_opens_and_closes(client: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    fakes["moon"].script(Fault("status", 500), Fault("status", 502))
    for _ in range(2):
        assert ask(client, **order("moon", "orouter"))[1] == "OpenRouter"
    # Two failures in a row opened Moonshot's circuit: it is not contacted now.
    for _ in range(3):
        assert ask(client, **order("moon", "orouter"))[1] == "OpenRouter"
    assert len(fakes["moon"].requests) == 2
    time.sleep(1.1)  # the cool-down passes: one probe goes through, succeeds, and closes the circuit
    assert ask(client, **order("moon", "orouter"))[1] == "Moonshot AI"
    assert ask(client, **order("moon", "orouter"))[1] == "Moonshot AI"
    assert len(fakes["moon"].requests) == 4


def test_failed_probe_reopens_the_circuit(client: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    fakes["moon"].script(Fault("status", 500), Fault("status", 500), Fault("status", 500))
    for _ in range(2):
        ask(client, **order("moon", "orouter"))
    time.sleep(1.1)
    assert ask(client, **order("moon", "orouter"))[1] == "OpenRouter"  # the probe failed
    assert ask(client, **order("moon", "orouter"))[1] == "OpenRouter"  # open again: not contacted
    assert len(fakes["moon"].requests) == 3


@pytest.mark.parametrize("how", ["cut", "error-chunk"])
def test_mid_stream_failure_ends_with_an_error_chunk(
    gw: GatewayProcess, client: openai.OpenAI, fakes: dict[str, FakeUpstream], how: str
) -> None:
    name = "moon" if how == "cut" else "orouter"
    answer = Answer(content="a long answer in many pieces", cut_after=5 if how == "cut" else None)
    if how == "error-chunk":
        answer.error_after = 5
    fakes[name].script(answer)
    body = {"model": MODEL, "messages": HI, "stream": True, "provider": {"order": [name, "vllm"]}}
    with httpx.stream("POST", gw.api + "/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    last = orjson.loads(lines[-2][6:])
    assert last["choices"][0]["finish_reason"] == "error"
    assert last["error"]["metadata"]["provider_name"] in {"Moonshot AI", "OpenRouter"}
    contents = [orjson.loads(line[6:])["choices"][0]["delta"].get("content") for line in lines[1:-2]]
    assert any(contents)  # some content had reached the client: no failover after that
    assert fakes["vllm"].requests == []

    # The SDK surfaces the in-band error as an exception, after the content it had.
    fakes[name].script(answer)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model=MODEL, messages=HI, stream=True, **order(name, "vllm")):
            pass


def test_keepalive_comments_while_waiting_for_first_byte(
    gw: GatewayProcess, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["moon"].script(Answer(first_delay=1.2))
    body = {"model": MODEL, "messages": HI, "stream": True, "provider": {"order": ["moon"]}}
    with httpx.stream("POST", gw.api + "/chat/completions", json=body, timeout=30) as response:
        lines = [line for line in response.iter_lines() if line]
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    comments = [line for line in lines[:first_data] if line.startswith(":")]
    assert len(comments) >= 2 and all(c == ": PROCESSING" for c in comments)
    assert lines[-1] == "data: [DONE]"


def test_keepalive_then_failover_still_serves(gw: GatewayProcess, fakes: dict[str, FakeUpstream]) -> None:
    # Moonshot hangs past its first-byte timeout (1.5 s) while comments flow; OpenRouter then serves.
    fakes["moon"].script(Fault("hang"))
    client = openai.OpenAI(base_url=gw.api, api_key="x", max_retries=0)
    content, provider, _ = ask(client, True, **order("moon", "orouter"))
    assert (content, provider) == ("Hello from the fake.", "OpenRouter")


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_cancels_the_upstream(
    gw: GatewayProcess, fakes: dict[str, FakeUpstream], stream: bool
) -> None:
    fakes["moon"].script(Answer(content="word " * 200, chunk_delay=0.1))
    body = {"model": MODEL, "messages": HI, "stream": stream, "provider": {"order": ["moon"]}}
    if stream:
        _leave_after(gw, body, 4)
    else:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(gw.api + "/chat/completions", json=body, timeout=httpx.Timeout(5.0, read=0.8))
    assert fakes["moon"].wait_for_disconnects(1), "the upstream request was not cancelled"


def _leave_after(gw: GatewayProcess, body: dict[str, Any], events: int) -> None:
    """Stream `body` and go away after `events` data events, as a client that closes the tab does."""
    with httpx.stream("POST", gw.api + "/chat/completions", json=body, timeout=30) as response:
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data: ")
            if seen == events:
                break


def test_every_provider_failing(gw: GatewayProcess, fakes: dict[str, FakeUpstream]) -> None:
    fakes["moon"].script(Fault("status", 500, "boom"))
    fakes["orouter"].script(Fault("status", 502, "bang"))
    body = {"model": MODEL, "messages": HI, "provider": {"only": ["moon", "orouter"]}}
    response = httpx.post(gw.api + "/chat/completions", json=body, timeout=30)
    assert response.status_code == 502
    attempts = response.json()["error"]["metadata"]["attempts"]
    assert {(a["provider"], a["status"]) for a in attempts} == {("moon", 500), ("orouter", 502)}
    assert all(a["message"] for a in attempts)

    fakes["moon"].script(Fault("hang"))
    fakes["orouter"].script(Fault("reset"))
    response = httpx.post(gw.api + "/chat/completions", json=body, timeout=30)
    assert response.status_code == 503

    fakes["moon"].script(Fault("status", 429, retry_after=3))
    fakes["orouter"].script(Fault("status", 429, retry_after=5))
    body["provider"] = {"only": ["tog", "vllm"]}
    fakes["tog"].script(Fault("status", 429, retry_after=3))
    fakes["vllm"].script(Fault("status", 429, retry_after=5))
    response = httpx.post(gw.api + "/chat/completions", json=body, timeout=30)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"


def test_default_order_prefers_cheap_and_healthy(
    client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    only = {"only": ["moon", "orouter", "tog"]}
    served = [ask(client, extra_body={"provider": only})[1] for _ in range(60)]
    # Weights 1/price²: OpenRouter (2.5) 49%, Moonshot (3.1) 32%, Together (4.0) 19%. The bounds below sit
    # more than four standard deviations from the expected counts, so chance alone does not fail them.
    counts = {name: served.count(name) for name in ("OpenRouter", "Moonshot AI", "Together")}
    assert counts["OpenRouter"] > counts["Together"]
    assert counts["OpenRouter"] + counts["Moonshot AI"] >= 36
    assert counts["Together"] >= 1  # drawn, not excluded
    # A provider that just failed goes to the back of the line.
    fakes["orouter"].script(Fault("status", 500))
    ask(client, **order("orouter", "moon"))
    served = [ask(client, extra_body={"provider": {"only": ["moon", "orouter"]}})[1] for _ in range(10)]
    assert served.count("Moonshot AI") == 10


def test_endpoint_statistics(
    gw: GatewayProcess, client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["moon"].script(Fault("status", 500))
    for _ in range(4):
        ask(client, **order("moon", "orouter"))
    data = httpx.get(gw.base_url + f"/api/v1/models/{MODEL}/endpoints").json()["data"]
    assert data["id"] == MODEL
    by_tag = {e["tag"]: e for e in data["endpoints"]}
    assert set(by_tag) >= {"moon", "orouter", "tog", "vllm", "sglang"}
    moon, orouter = by_tag["moon"], by_tag["orouter"]
    assert moon["uptime_last_5m"] == 75.0  # 3 of 4
    assert orouter["uptime_last_30m"] == 100.0
    assert moon["latency_last_30m"]["p50"] > 0
    assert moon["quantization"] == "int4"
    assert by_tag["sglang"]["uptime_last_1d"] is None  # no data yet
    assert moon["pricing"]["prompt"] == "0.0000006"


def test_client_mistakes_do_not_open_the_circuit_or_lower_uptime(
    gw: GatewayProcess, client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    # One tenant's malformed requests, refused upstream as the client's own mistakes.
    fakes["moon"].script(*(Fault("status", status, "bad request") for status in (400, 422, 404)))
    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as refused:
            ask(client, **order("moon", allow_fallbacks=False))
        assert refused.value.status_code in (400, 404, 422)
    # Moonshot still serves everyone: its circuit did not open.
    assert ask(client, **order("moon", "orouter"))[1] == "Moonshot AI"
    data = httpx.get(gw.base_url + f"/api/v1/models/{MODEL}/endpoints").json()["data"]
    moon = next(e for e in data["endpoints"] if e["tag"] == "moon")
    assert moon["uptime_last_5m"] == 100.0


def test_a_cancelled_probe_does_not_wedge_the_breaker(
    gw: GatewayProcess, client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["moon"].script(Fault("status", 500), Fault("status", 500))
    for _ in range(2):
        assert ask(client, **order("moon", "orouter"))[1] == "OpenRouter"  # the circuit opens
    time.sleep(1.1)
    # The half-open probe: a stream whose client goes away after a few chunks, with no verdict.
    fakes["moon"].script(Answer(content="word " * 200, chunk_delay=0.05))
    body = {"model": MODEL, "messages": HI, "stream": True, "provider": {"order": ["moon", "orouter"]}}
    _leave_after(gw, body, 3)
    assert fakes["moon"].wait_for_disconnects(1)
    # The probe was released: the next request may probe Moonshot again, and closes the circuit.
    assert ask(client, **order("moon", "orouter"))[1] == "Moonshot AI"
    assert ask(client, **order("moon", "orouter"))[1] == "Moonshot AI"
