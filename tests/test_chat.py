"""Chat completions on the embedded model, through the official openai SDK."""

from __future__ import annotations

import httpx
import openai
import orjson

from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess

BRIEF = "Answer the question briefly."


def test_capital_of_france_is_deterministic_at_temperature_zero(client: openai.OpenAI) -> None:
    answers = []
    for _ in range(2):
        response = client.chat.completions.create(
            model=LOCAL_MODEL,
            messages=[
                {"role": "system", "content": BRIEF},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            temperature=0,
            max_tokens=30,
        )
        answers.append(response.choices[0].message.content)
        assert response.object == "chat.completion"
        assert response.id.startswith("chatcmpl-")
        assert response.model == LOCAL_MODEL
        assert response.choices[0].finish_reason == "stop"
        usage = response.usage
        assert usage is not None
        assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        assert usage.prompt_tokens_details is not None and usage.completion_tokens_details is not None
        assert usage.completion_tokens_details.reasoning_tokens == 0
    assert "Paris" in (answers[0] or "")
    assert answers[0] == answers[1]


def test_streaming_with_usage_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=[
            {"role": "system", "content": BRIEF},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        temperature=0,
        max_tokens=30,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_stream_wire_format_ends_with_done(gateway: GatewayProcess) -> None:
    body = {
        "model": LOCAL_MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 5,
        "stream": True,
    }
    with httpx.stream("POST", gateway.api + "/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    payloads = [orjson.loads(line[6:]) for line in events[:-1]]
    # Without include_usage there is no usage chunk, and every chunk has a choice.
    assert all(p["choices"] for p in payloads)
    assert payloads[-1]["choices"][0]["finish_reason"] == "length"


def test_max_tokens_gives_length(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_completion_tokens=7,
        temperature=0,
    )
    assert response.choices[0].finish_reason == "length"
    assert response.usage is not None and response.usage.completion_tokens == 7


def test_stop_sequence_is_not_returned(client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": BRIEF},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    full = client.chat.completions.create(model=LOCAL_MODEL, messages=messages, temperature=0, max_tokens=30)
    text = full.choices[0].message.content or ""
    assert "Paris" in text
    cut = client.chat.completions.create(
        model=LOCAL_MODEL, messages=messages, temperature=0, max_tokens=30, stop=["Paris"]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index("Paris")]


def test_seed_makes_sampling_repeatable(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        r = client.chat.completions.create(
            model=LOCAL_MODEL,
            messages=[{"role": "user", "content": "Tell me about cats."}],
            temperature=1.0,
            max_tokens=20,
            seed=seed,
        )
        return r.choices[0].message.content or ""

    assert sample(7) == sample(7)
    assert len({sample(s) for s in (1, 2, 3)}) > 1


def test_n_choices(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=[{"role": "user", "content": "Name a color."}],
        n=3,
        max_tokens=8,
        seed=11,
        temperature=1.0,
    )
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert all(c.message.content for c in response.choices)
    assert response.usage is not None
    # Usage counts every choice's tokens; the prompt once.
    assert 3 <= response.usage.completion_tokens <= 24


def test_n_choices_streamed(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=[{"role": "user", "content": "Name a color."}],
        n=2,
        max_tokens=6,
        stream=True,
    )
    finished = {c.choices[0].index for c in stream if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1}


def test_multi_turn_and_developer_role(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=[
            {"role": "developer", "content": BRIEF},
            {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Germany?"},
        ],
        temperature=0,
        max_tokens=20,
    )
    assert response.choices[0].message.content


def test_request_log_line_has_no_prompt_text(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    secret = "zebra-violet-4417"
    raw = client.chat.completions.with_raw_response.create(
        model=LOCAL_MODEL, messages=[{"role": "user", "content": f"Repeat {secret}"}], max_tokens=3
    )
    request_id = raw.headers["x-request-id"]
    record = gateway.request_record(request_id)
    assert record["status"] == 200
    assert record["model"] == LOCAL_MODEL
    assert record["completion_tokens"] == 3
    assert record["latency_ms"] > 0
    assert secret not in gateway.log_path.read_text()
