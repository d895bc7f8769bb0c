"""The legacy completions API (POST /v1/completions) through the official `openai` SDK: the embedded engine
reads the prompt without its chat template; upstream it goes to the providers that serve `/completions`
(vLLM, SGLang, OpenRouter, OpenAI-style hosts), never to Moonshot's API, which has none."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess
from tests.fakes.upstream import Answer, FakeUpstream
from tests.upstreams import MODEL

PROMPT = "The capital of France is"


@pytest.fixture()
def local(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.api, api_key="unused", max_retries=0, timeout=120)


def test_the_embedded_engine_continues_the_prompt_as_written(local: openai.OpenAI) -> None:
    done = local.completions.create(model=LOCAL_MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    assert done.object == "text_completion" and done.id.startswith("cmpl-")
    choice = done.choices[0]
    assert choice.text and choice.finish_reason in ("length", "stop")
    assert done.usage is not None and done.usage.completion_tokens <= 8
    # No chat template: the prompt is fewer tokens than the same text as a chat message.
    chat = local.chat.completions.create(
        model=LOCAL_MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=1
    )
    assert chat.usage is not None and done.usage.prompt_tokens < chat.usage.prompt_tokens - 5
    echoed = local.completions.create(
        model=LOCAL_MODEL, prompt=PROMPT, max_tokens=8, temperature=0, echo=True
    )
    assert echoed.choices[0].text == PROMPT + choice.text  # greedy: the same continuation
    # The default is OpenAI's: 16 tokens.
    default = local.completions.create(model=LOCAL_MODEL, prompt="Once upon a time", temperature=0)
    assert default.usage is not None and default.usage.completion_tokens <= 16


def test_streamed_completions_end_with_usage_and_done(gateway: GatewayProcess, local: openai.OpenAI) -> None:
    pieces, finish, usage = [], None, None
    stream = local.completions.create(
        model=LOCAL_MODEL,
        prompt=PROMPT,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        assert chunk.object == "text_completion"
        for choice in chunk.choices:
            pieces.append(choice.text)
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    whole = local.completions.create(model=LOCAL_MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    assert "".join(pieces) == whole.choices[0].text and finish in ("length", "stop")
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    raw = httpx.post(
        gateway.api + "/completions",
        json={"model": LOCAL_MODEL, "prompt": PROMPT, "max_tokens": 4, "stream": True},
        timeout=60,
    )
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_upstream_completions_go_to_providers_that_serve_them(
    upstream_gateway: GatewayProcess, fakes: dict[str, FakeUpstream]
) -> None:
    client = openai.OpenAI(base_url=upstream_gateway.api, api_key="unused", max_retries=0, timeout=30)
    fakes["vllm"].script(Answer(content=" Paris.", prompt_tokens=6, completion_tokens=3))
    done = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=5, extra_body={"provider": {"only": ["vllm"]}}
    )
    assert done.choices[0].text == " Paris." and done.usage is not None and done.usage.prompt_tokens == 6
    sent = fakes["vllm"].requests[-1]
    assert sent.path == "/v1/completions"
    assert sent.body["prompt"] == PROMPT and "messages" not in sent.body and sent.body["max_tokens"] == 5
    # Moonshot's chat rules (temperature within [0, 1] for K2) are not the completions API's.
    fakes["vllm"].script(Answer(content=" Paris."))
    hot = httpx.post(
        upstream_gateway.api + "/completions",
        json={"model": MODEL, "prompt": PROMPT, "temperature": 1.5, "provider": {"only": ["vllm"]}},
        timeout=30,
    )
    assert hot.status_code == 200 and "x-gateway-adapted" not in hot.headers
    assert fakes["vllm"].requests[-1].body["temperature"] == 1.5
    # Streamed, through OpenRouter's completions endpoint.
    fakes["orouter"].script(Answer(content=" Paris, of course."))
    stream = client.completions.create(
        model=MODEL, prompt=PROMPT, stream=True, extra_body={"provider": {"only": ["orouter"]}}
    )
    assert "".join(c.choices[0].text for c in stream if c.choices) == " Paris, of course."
    assert fakes["orouter"].requests[-1].path.endswith("/completions")
    # Moonshot's API has no completions endpoint: not routed there, and said so.
    refused = httpx.post(
        upstream_gateway.api + "/completions",
        json={"model": MODEL, "prompt": PROMPT, "provider": {"only": ["moon"]}},
        timeout=30,
    )
    assert refused.status_code in (400, 404) and "completions API" in refused.json()["error"]["message"]
    assert not any(r.path.endswith("/v1/completions") for r in fakes["moon"].requests)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logprobs": 2}, "logprobs"),
        ({"suffix": "!"}, "suffix"),
        ({"best_of": 3}, "best_of"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"max_tokens": True}, "max_tokens"),
    ],
)
def test_what_no_backend_gives_is_refused_clearly(
    upstream_gateway: GatewayProcess, extra: dict[str, object], param: str
) -> None:
    body = {"model": MODEL, "prompt": PROMPT, **extra}
    refused = httpx.post(upstream_gateway.api + "/completions", json=body, timeout=30)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == param, json.dumps(refused.json())


def test_a_chat_request_cannot_set_the_raw_prompt(upstream_gateway: GatewayProcess) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "raw_prompt": "x"}
    refused = httpx.post(upstream_gateway.api + "/chat/completions", json=body, timeout=30)
    assert refused.status_code == 400 and "raw_prompt" in refused.json()["error"]["message"]
