"""The embedded engine under real clients: several requests served at once (a short one answered while a
long prompt is read; two users decoding together), a cancelled prompt stops within a step wherever the
request ended (disconnect before headers, before the first token, mid-stream, an SDK's timeout, the queue's
deadline, a shutdown), and nothing stays in flight afterwards.

Each long prompt is new text (random words), so no cache shortens it: reading one takes tens of seconds on
a 2-core machine.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess, wait_until

WORDS = ["harbor", "lantern", "quartz", "meadow", "copper", "violet", "summit", "ember", "willow", "falcon"]
_seeds = iter(range(10**6))


def long_prompt(words: int = 4000) -> str:
    """About `words` tokens of text no earlier request has sent."""
    rng = random.Random(next(_seeds) + time.time_ns())
    return " ".join(rng.choice(WORDS) for _ in range(words))


def long_request(**extra: Any) -> dict[str, Any]:
    return {
        "model": LOCAL_MODEL,
        "messages": [{"role": "user", "content": long_prompt() + "\nWhich word comes first?"}],
        "max_tokens": 5,
        **extra,
    }


SHORT = {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 10}


def engine_state(gw: GatewayProcess) -> dict[str, Any]:
    state: dict[str, Any] = httpx.get(gw.base_url + "/ready", timeout=10).json()["local_models"][LOCAL_MODEL]
    return state


def assert_settles(gw: GatewayProcess) -> None:
    """Nothing in flight, a short request answered, and no traceback in the log."""
    assert wait_until(lambda: engine_state(gw)["inflight"] == 0, timeout=20), engine_state(gw)
    reply = httpx.post(gw.api + "/chat/completions", json=SHORT, timeout=30)
    assert reply.status_code == 200, reply.text
    assert "Traceback" not in gw.log_path.read_text()


def generations(gw: GatewayProcess) -> list[dict[str, Any]]:
    return [r for r in gw.log_records() if r.get("msg") == "generation"]


def wait_reading(gw: GatewayProcess, inflight: int = 1) -> None:
    """Until the engine holds `inflight` jobs (the long prompt is being read)."""
    assert wait_until(lambda: engine_state(gw)["inflight"] >= inflight, timeout=20)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Any:
    process = GatewayProcess(tmp_path_factory.mktemp("sched"))
    yield process
    process.stop()


def test_disconnect_before_the_first_token_stops_prompt_reading(gw: GatewayProcess) -> None:
    before = len(generations(gw))
    with httpx.stream("POST", gw.api + "/chat/completions", json=long_request(stream=True), timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith(": PROCESSING"):
                break  # headers and a keep-alive came; no token yet: the prompt is being read
    assert_settles(gw)
    cut = generations(gw)[before]
    assert cut["finish_reasons"] == ["cancelled"] and cut["completion_tokens"] == 0, cut
    assert cut["prompt_tokens"] > 3000


def test_disconnect_before_headers_stops_prompt_reading(gw: GatewayProcess) -> None:
    before = len(generations(gw))
    # Non-streaming: the client gives up while the gateway has sent nothing at all.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.api + "/chat/completions", json=long_request(), timeout=httpx.Timeout(10, read=3))
    assert_settles(gw)
    assert generations(gw)[before]["finish_reasons"] == ["cancelled"]


def test_sdk_timeouts_three_times_then_served(gw: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gw.api, api_key="unused", timeout=5, max_retries=0)
    for _ in range(3):
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(**long_request())
    patient = openai.OpenAI(base_url=gw.api, api_key="unused", timeout=60, max_retries=0)
    reply = patient.chat.completions.create(**SHORT)  # type: ignore[call-overload]
    assert reply.choices[0].message.content
    assert_settles(gw)


def test_mid_stream_disconnect_stops_generation(gw: GatewayProcess) -> None:
    body = {**SHORT, "max_tokens": 2000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", gw.api + "/chat/completions", json=body, timeout=60) as r:
        received = 0
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                received += 1
                if received == 5:
                    break
        request_id = r.headers["x-request-id"]
    assert_settles(gw)
    record = next(g for g in generations(gw) if g["request_id"] == request_id)
    assert record["finish_reasons"] == ["cancelled"] and record["completion_tokens"] < 500


def test_short_request_answered_while_a_long_prompt_is_read(gw: GatewayProcess) -> None:
    """The order of events, not a time: the short request finishes before the long prompt's first output."""
    events: list[tuple[str, float]] = []

    def long_one() -> None:
        body = long_request(stream=True)
        with httpx.stream("POST", gw.api + "/chat/completions", json=body, timeout=600) as r:
            for line in r.iter_lines():
                # The first chunk goes out with the first output (before it, only keep-alive comments),
                # whatever that output is (a token, or the end).
                if line.startswith("data: "):
                    events.append(("long first output", time.monotonic()))
                    break

    thread = threading.Thread(target=long_one)
    thread.start()
    wait_reading(gw)
    time.sleep(1.0)  # well into the prompt
    sent = time.monotonic()
    reply = httpx.post(gw.api + "/chat/completions", json=SHORT, timeout=600)
    events.append(("short answered", time.monotonic()))
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
    thread.join(600)
    assert [name for name, _ in sorted(events, key=lambda e: e[1])] == ["short answered", "long first output"]
    print(f"short request during a long prompt: {events[0][1] - sent:.2f} s")  # the figure: bench.engine
    assert_settles(gw)


def test_two_users_decode_at_once(gw: GatewayProcess) -> None:
    """Two generations started together both produce tokens before either ends (one batch serves both)."""
    arrivals: dict[int, list[float]] = {0: [], 1: []}

    def user(k: int) -> None:
        body = {**SHORT, "max_tokens": 300, "ignore_eos": True, "temperature": 0, "stream": True}
        with httpx.stream("POST", gw.api + "/chat/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: {") and '"content":"' in line:
                    arrivals[k].append(time.monotonic())

    threads = [threading.Thread(target=user, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert arrivals[0] and arrivals[1]
    assert arrivals[0][0] < arrivals[1][-1] and arrivals[1][0] < arrivals[0][-1], "served one after the other"
    assert_settles(gw)


def test_a_request_that_cannot_start_in_time_gets_503(start_gateway: Any) -> None:
    gw: GatewayProcess = start_gateway(
        "[engine]\nparallel = 1\nqueue_timeout_seconds = 2\nretry_after_seconds = 3\n"
    )
    holder = {**SHORT, "max_tokens": 3000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", gw.api + "/chat/completions", json=holder, timeout=120) as running:
        lines = running.iter_lines()
        while '"content"' not in next(lines):
            pass  # the only slot is generating
        refused = httpx.post(gw.api + "/chat/completions", json=SHORT, timeout=30)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "3"
        assert refused.json()["error"]["code"] == "server_overloaded"
        ask = {"model": LOCAL_MODEL, "max_tokens": 5, "messages": SHORT["messages"]}
        overloaded = httpx.post(gw.base_url + "/v1/messages", json=ask, timeout=30)
        assert overloaded.status_code == 529, overloaded.text
        assert overloaded.json()["error"]["type"] == "overloaded_error"
    assert_settles(gw)


def test_shutdown_while_a_prompt_is_read(start_gateway: Any, tmp_path: Path) -> None:
    gw: GatewayProcess = start_gateway()
    failures: list[BaseException] = []

    def long_one() -> None:
        try:
            httpx.post(gw.api + "/chat/completions", json=long_request(), timeout=120)
        except httpx.HTTPError as exc:
            failures.append(exc)

    thread = threading.Thread(target=long_one)
    thread.start()
    wait_reading(gw)
    engine_pid = engine_state(gw)["pid"]
    started = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    gw.proc.wait(timeout=60)
    stopped = time.monotonic() - started
    thread.join(60)
    assert not Path(f"/proc/{engine_pid}").exists() or "Z" in Path(f"/proc/{engine_pid}/stat").read_text()
    assert "Traceback" not in gw.log_path.read_text()
    print(f"shut down {stopped:.1f} s into a long prompt")


def test_the_readme_examples_end_as_the_readme_says(gw: GatewayProcess) -> None:
    """The README's first two examples, as written there: the capital of France, and a streamed answer about
    cats that ends by itself (with SmolLM2's sampling defaults; before them it repeated a sentence until
    the context was full, 50 s)."""
    client = openai.OpenAI(base_url=gw.api, api_key="local", max_retries=0, timeout=120)
    reply = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=[
            {"role": "system", "content": "Answer the question briefly."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        temperature=0,
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    finish, text, usage = None, "", None
    for chunk in client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=[{"role": "user", "content": "Tell me about cats."}],
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    # It ends by itself (3 of 3 runs here: 334-469 tokens); sampled, a 135M model may still loop, and
    # then stops at the card's max_tokens (1,024) rather than at the end of the context.
    assert finish in ("stop", "length") and "cat" in text.lower()
    assert usage is not None and usage.completion_tokens <= 1024, usage


def test_a_stuck_step_ends_the_engine_and_crashes_do_not_open_the_circuit(start_gateway: Any) -> None:
    """The watchdog: a step running past `step_timeout_seconds` is taken as stuck inside llama.cpp and
    the engine process ends (here steps are made long on purpose, 1,024 tokens, against a 1.5 s limit). The
    requests on it get 503; three such deaths in a row do not open the local provider's circuit (they
    did: every tenant then got 503 `circuit open` for 30 s), and the next request starts a new engine."""
    gw: GatewayProcess = start_gateway("[engine]\nprefill_chunk = 512\nstep_timeout_seconds = 1.5\n")
    assert httpx.post(gw.api + "/chat/completions", json=SHORT, timeout=60).status_code == 200
    pids = []
    for _ in range(3):
        pids.append(engine_state(gw)["pid"])
        ended = httpx.post(gw.api + "/chat/completions", json=long_request(), timeout=120)
        assert ended.status_code == 503, ended.text
        assert "stopped while serving" in ended.json()["error"]["message"]
        assert httpx.post(gw.api + "/chat/completions", json=SHORT, timeout=60).status_code == 200
    assert len(set(pids)) == 3  # a new engine each time
    assert "ran past" in gw.log_path.read_text()


def test_requests_that_outgrow_the_cache_are_preempted_and_finish(start_gateway: Any) -> None:
    """A cache of 1,024 tokens, two requests that need about 620 each: the younger gives its cells back and
    reads its tokens again once the older is done (not turn by turn: they would evict each other at every
    token); both finish, whole. (On the first version of the scheduler this never ended.)"""
    gw: GatewayProcess = start_gateway("[engine]\nmax_context = 1024\nkv_cells = 1024\n")
    results: dict[int, dict[str, Any]] = {}

    def one(k: int) -> None:
        body = {
            "model": LOCAL_MODEL,
            "messages": [{"role": "user", "content": long_prompt(250)}],
            "max_tokens": 320,
            "ignore_eos": True,
            "temperature": 0,
        }
        results[k] = httpx.post(gw.api + "/chat/completions", json=body, timeout=300).json()

    threads = [threading.Thread(target=one, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for reply in results.values():
        assert reply["usage"]["completion_tokens"] == 320, reply
        assert reply["choices"][0]["finish_reason"] == "length"
    assert any(r.get("msg") == "preempted" for r in gw.log_records())
    assert_settles(gw)
