"""A repeated prompt prefix reuses the KV state, and usage says how much."""

from __future__ import annotations

import random

import openai

from kimi_gateway.testing import LOCAL_MODEL


def _document(seed: int) -> str:
    rng = random.Random(seed)
    words = [
        "harbor",
        "lantern",
        "quartz",
        "meadow",
        "copper",
        "violet",
        "summit",
        "ember",
        "willow",
        "falcon",
    ]
    return " ".join(rng.choice(words) for _ in range(600))


def test_shared_prefix_is_reported_as_cached(client: openai.OpenAI) -> None:
    system = "You summarise documents.\n\n" + _document(1)

    def ask(question: str) -> openai.types.CompletionUsage:
        response = client.chat.completions.create(
            model=LOCAL_MODEL,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
            max_tokens=4,
            temperature=0,
        )
        assert response.usage is not None
        return response.usage

    first = ask("Which word comes first?")
    second = ask("How many words are there?")
    assert first.prompt_tokens_details is not None and second.prompt_tokens_details is not None
    cached = second.prompt_tokens_details.cached_tokens or 0
    # The system prompt (several hundred tokens) is shared; only the question differs.
    assert cached >= first.prompt_tokens - 20
    assert cached < second.prompt_tokens
    assert (first.prompt_tokens_details.cached_tokens or 0) < cached


def test_different_prefix_is_not_cached(client: openai.OpenAI) -> None:
    usages = []
    for seed in (2, 3):
        response = client.chat.completions.create(
            model=LOCAL_MODEL,
            messages=[
                {"role": "system", "content": _document(seed)},
                {"role": "user", "content": "Summarise."},
            ],
            max_tokens=2,
        )
        assert response.usage is not None and response.usage.prompt_tokens_details is not None
        usages.append(response.usage)
    # Only the chat template's opening tokens can match between two unrelated documents.
    assert (usages[1].prompt_tokens_details.cached_tokens or 0) < 10  # type: ignore[union-attr]
