"""Credits, pricing and rate limits on one instance (SQLite, in-process state), through real servers."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from kimi_gateway.routing.features import prompt_token_bound
from kimi_gateway.schema.chat import ChatCompletionRequest
from kimi_gateway.testing import GatewayProcess, wait_until
from tests.billing import (
    K25,
    NANO_IN,
    NANO_OUT,
    THINKING,
    Operator,
    chat,
    config,
    credits,
    generation,
    sdk,
    start,
    tiers,
    wait_for_usage,
)
from tests.fakes.upstream import Answer, FakeUpstream, Fault

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture()
def moon(fakes: dict[str, FakeUpstream]) -> FakeUpstream:
    return fakes["moon"]


@pytest.fixture()
def billed(tmp_path: Path, moon: FakeUpstream) -> Iterator[tuple[GatewayProcess, Operator]]:
    gw = start(tmp_path / "gw", config(moon))
    yield gw, Operator(gw)
    gw.stop()


def _usd(nano: int) -> float:
    return nano / 1e9


def test_cost_with_and_without_cached_tokens(
    billed: tuple[GatewayProcess, Operator], moon: FakeUpstream
) -> None:
    gw, ops = billed
    key = ops.key_for("acct_cost")
    ops.recharge("acct_cost", "5")
    moon.script(
        Answer(prompt_tokens=1000, completion_tokens=50),
        Answer(prompt_tokens=1000, cached_tokens=600, completion_tokens=50),
    )
    client = sdk(gw, key)
    plain = client.chat.completions.create(model=K25, messages=HI)  # type: ignore[arg-type]
    # 1,000 uncached at $0.60/M and 50 out at $3.00/M.
    assert plain.usage is not None and (plain.usage.model_extra or {})["cost"] == pytest.approx(
        _usd(1000 * 600 + 50 * 3000)
    )

    stream = client.chat.completions.create(
        model=K25,
        messages=HI,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
        # OpenRouter's app attribution; a browser's plain Referer is the fallback.
        extra_headers={
            "HTTP-Referer": "https://app.example/chat",
            "Referer": "https://other.example",
            "X-Title": "Demo",
        },
    )
    chunks = list(stream)
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 600
    # 400 uncached at $0.60/M, 600 cached at $0.15/M, 50 out at $3.00/M.
    cached_cost = _usd(400 * 600 + 600 * 150 + 50 * 3000)
    assert (usage.model_extra or {})["cost"] == pytest.approx(cached_cost)

    total = _usd(1000 * 600 + 50 * 3000) + cached_cost
    assert wait_for_usage(gw, key, total)["total_usage"] == pytest.approx(total, abs=1e-12)
    record = generation(gw, key, chunks[0].id)
    assert record["native_tokens_cached"] == 600 and record["native_tokens_prompt"] == 1000
    assert record["total_cost"] == pytest.approx(cached_cost) and record["streamed"] is True
    assert record["provider_name"] == "Moonshot AI" and record["model"] == K25
    assert record["status"] == "success" and record["finish_reason"] == "stop"
    assert record["latency"] > 0 and record["time_to_first_token"] is not None
    assert record["http_referer"] == "app.example/chat" and record["app_title"] == "Demo"  # normalized


def test_402_at_the_worst_case_boundary(billed: tuple[GatewayProcess, Operator]) -> None:
    gw, ops = billed
    key = ops.key_for("acct_edge")
    prompt = prompt_token_bound(ChatCompletionRequest.model_validate({"model": THINKING, "messages": HI}))
    # Exactly enough for the prompt and 100 output tokens at the dearest price.
    ops.recharge("acct_edge", str(Decimal(prompt * NANO_IN + 100 * NANO_OUT) / 10**9))

    over = chat(gw, key, model=THINKING, max_tokens=101)
    assert over.status_code == 402, over.text
    error = over.json()["error"]
    assert "You requested up to 101 tokens" in error["message"] and "can only afford 100" in error["message"]
    assert error["metadata"]["affordable_tokens"] == 100 and error["code"] == "insufficient_credits"
    assert credits(gw, key)["total_usage"] == 0  # refused before anything ran

    at = chat(gw, key, model=THINKING, max_tokens=100)
    assert at.status_code == 200, at.text
    # Settled at the real cost (the fake's 20 prompt and 12 completion tokens), not the hold.
    real = _usd(20 * NANO_IN + 12 * NANO_OUT)
    assert at.json()["usage"]["cost"] == pytest.approx(real)
    assert wait_for_usage(gw, key, real)["total_usage"] == pytest.approx(real)


def test_key_credit_limit(billed: tuple[GatewayProcess, Operator]) -> None:
    gw, ops = billed
    key = ops.key_for("acct_limit", limit=0.0001)  # 100,000 nano-dollars
    ops.recharge("acct_limit", "10")
    prompt = prompt_token_bound(ChatCompletionRequest.model_validate({"model": THINKING, "messages": HI}))
    affordable = (100_000 - prompt * NANO_IN) // NANO_OUT
    refused = chat(gw, key, model=THINKING, max_tokens=affordable + 1)
    assert refused.status_code == 402
    assert refused.json()["error"]["metadata"] == {
        "requested_max_tokens": affordable + 1,
        "affordable_tokens": affordable,
        "limited_by": "key",
    }
    assert chat(gw, key, model=THINKING, max_tokens=affordable).status_code == 200
    me = httpx.get(gw.base_url + "/api/v1/key", headers={"Authorization": f"Bearer {key}"}).json()["data"]
    assert me["limit"] == 0.0001


def test_failed_or_empty_requests_cost_nothing(
    billed: tuple[GatewayProcess, Operator], moon: FakeUpstream
) -> None:
    gw, ops = billed
    key = ops.key_for("acct_fail")
    ops.recharge("acct_fail", "1")
    moon.script(*[Fault("status", status=500)] * 3)
    failed = chat(gw, key)
    assert failed.status_code == 502
    moon.reset()
    moon.script(Answer(content="", prompt_tokens=30, completion_tokens=0))
    empty = chat(gw, key)
    assert empty.status_code == 200 and empty.json()["usage"]["prompt_tokens"] == 30
    paid = chat(gw, key)
    assert paid.status_code == 200
    expected = paid.json()["usage"]["cost"]
    assert wait_for_usage(gw, key, expected)["total_usage"] == pytest.approx(expected)
    assert generation(gw, key, empty.json()["id"])["total_cost"] == 0


def test_credits_vouchers_and_moonshot_balance(billed: tuple[GatewayProcess, Operator]) -> None:
    gw, ops = billed
    key = ops.key_for("acct_bal")
    ops.recharge("acct_bal", "2")
    ops.recharge("acct_bal", "0.5", kind="voucher")
    paid = chat(gw, key).json()["usage"]["cost"]
    data = wait_for_usage(gw, key, paid)
    assert data["total_credits"] == pytest.approx(2.5)
    client = httpx.Client(headers={"Authorization": f"Bearer {key}"})
    balance = client.get(gw.api + "/users/me/balance").json()
    assert balance["code"] == 0 and balance["status"] is True and balance["scode"] == "0x0"
    # Charges draw on the voucher first; the cash stays whole until the voucher is spent.
    assert balance["data"]["voucher_balance"] == pytest.approx(0.5 - paid)
    assert balance["data"]["cash_balance"] == pytest.approx(2.0)
    assert balance["data"]["available_balance"] == pytest.approx(2.5 - paid)
    # A Moonshot client reads it through the SDK's generic GET, with only base_url and key changed.
    through_sdk = sdk(gw, key).get("/users/me/balance", cast_to=object)
    assert through_sdk == balance


def test_rpm_429_headers_and_tier_promotion(tmp_path: Path, moon: FakeUpstream) -> None:
    gw = start(tmp_path / "gw", config(moon, tiers((0, 0, 10, 2), (1, 10, 10, 5))))
    try:
        ops = Operator(gw)
        key = ops.key_for("acct_rpm")
        ops.recharge("acct_rpm", "1")  # below tier 1's $10
        assert [chat(gw, key).status_code for _ in range(2)] == [200, 200]
        before = time.time() * 1000
        limited = chat(gw, key)
        assert limited.status_code == 429
        assert limited.json()["error"]["type"] == "rate_limit_reached_error"
        assert "max request: 2" in limited.json()["error"]["message"]
        headers = limited.headers
        assert headers["x-ratelimit-limit"] == "2" and headers["x-ratelimit-remaining"] == "0"
        reset = int(headers["x-ratelimit-reset"])
        assert before + 50_000 < reset <= before + 60_500  # when the oldest of the two leaves the window
        assert 1 <= int(headers["retry-after"]) <= 60

        promoted = ops.recharge("acct_rpm", "9")  # $10 in all: tier 1
        assert promoted["tier"] == 1
        me = httpx.get(gw.base_url + "/api/v1/key", headers={"Authorization": f"Bearer {key}"}).json()["data"]
        assert me["tier"] == 1 and me["rate_limit"]["requests"] == 5
        assert [chat(gw, key).status_code for _ in range(3)] == [200, 200, 200]
        assert chat(gw, key).status_code == 429
    finally:
        gw.stop()


def test_key_rpm(billed: tuple[GatewayProcess, Operator]) -> None:
    gw, ops = billed
    key = ops.key_for("acct_keyrpm", rate_limit_rpm=1)
    ops.recharge("acct_keyrpm", "1")
    assert chat(gw, key).status_code == 200
    limited = chat(gw, key)
    assert limited.status_code == 429 and limited.headers["x-ratelimit-limit"] == "1"
    other = ops.key_for("acct_keyrpm")  # same account, no key limit of its own
    assert chat(gw, other).status_code == 200


def test_concurrency_slot_is_released_on_finish_and_disconnect(tmp_path: Path, moon: FakeUpstream) -> None:
    gw = start(tmp_path / "gw", config(moon, tiers((0, 0, 1, 1000))))
    try:
        ops = Operator(gw)
        key = ops.key_for("acct_conc")
        ops.recharge("acct_conc", "1")
        moon.default = Answer(content="one two three four five six seven eight", chunk_delay=0.3)
        client = sdk(gw, key)
        stream = client.chat.completions.create(model=K25, messages=HI, stream=True)  # type: ignore[arg-type]
        next(iter(stream))
        busy = chat(gw, key)
        assert busy.status_code == 429
        assert "max concurrency: 1" in busy.json()["error"]["message"]
        assert busy.headers["x-ratelimit-limit"] == "1" and busy.headers["retry-after"] == "1"
        stream.close()  # the client goes away mid-stream: the slot must come back
        moon.default = Answer()
        deadline = time.monotonic() + 5
        while (status := chat(gw, key).status_code) == 429 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status == 200
        assert chat(gw, key).status_code == 200  # and a finished request gave its slot back too
    finally:
        gw.stop()


def _rows(db: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(query).fetchall()


def test_graceful_shutdown_writes_everything(tmp_path: Path, moon: FakeUpstream) -> None:
    workdir = tmp_path / "gw"
    gw = start(workdir, config(moon, flush_seconds=3600))  # nothing is written until shutdown
    ops = Operator(gw)
    key = ops.key_for("acct_stop")
    ops.recharge("acct_stop", "1")
    costs = [chat(gw, key).json()["usage"]["cost"] for _ in range(3)]
    gw.stop()
    db = workdir / "data" / "gateway.db"
    charges = _rows(
        db, "SELECT amount FROM ledger_entries WHERE kind = 'charge' AND account_id = 'acct_stop'"
    )
    assert sorted(float(a) for (a,) in charges) == pytest.approx(sorted(costs))
    assert _rows(db, "SELECT count(*) FROM generations WHERE account_id = 'acct_stop'") == [(3,)]
    assert not any((workdir / "data" / "journal").iterdir())  # a clean stop leaves no journal behind


def _stream_in_thread(gw: GatewayProcess, key: str, lines: list[tuple[float, str]]) -> threading.Thread:
    """A streamed chat read line by line, each line with when it arrived."""

    def read() -> None:
        body = {"model": K25, "messages": HI, "stream": True, "stream_options": {"include_usage": True}}
        headers = {"Authorization": f"Bearer {key}"}
        try:
            with httpx.stream(
                "POST", gw.api + "/chat/completions", json=body, headers=headers, timeout=60
            ) as r:
                for line in r.iter_lines():
                    if line:
                        lines.append((time.monotonic(), line))
        except httpx.HTTPError as exc:
            lines.append((time.monotonic(), f"failed: {exc!r}"))

    thread = threading.Thread(target=read)
    thread.start()
    assert wait_until(lambda: any('"content"' in line for _, line in lines), timeout=10)
    return thread


def _usage_cost(lines: list[tuple[float, str]]) -> float:
    import json

    for _, line in lines:
        if line.startswith("data: {") and '"usage"' in line:
            usage = json.loads(line[6:]).get("usage")
            if usage:
                return float(usage["cost"])
    raise AssertionError("no usage in the stream")


def test_sigterm_fails_readiness_first_and_lets_streams_finish(tmp_path: Path, moon: FakeUpstream) -> None:
    """SIGTERM mid-stream: /ready says "draining" while requests are still served (drain_seconds), then
    the listener closes, the stream in flight runs to its end, and every charge is written once."""
    workdir = tmp_path / "gw"
    extra = "[server]\ndrain_seconds = 1.5\nshutdown_seconds = 20\n"
    gw = start(workdir, config(moon, flush_seconds=3600, extra=extra))
    ops = Operator(gw)
    key = ops.key_for("acct_drain")
    ops.recharge("acct_drain", "1")
    assert httpx.get(gw.base_url + "/ready").json()["status"] == "ready"
    moon.default = Answer(content=" ".join(f"w{i}" for i in range(24)), chunk_delay=0.15)  # ~3.5 s
    lines: list[tuple[float, str]] = []
    thread = _stream_in_thread(gw, key, lines)
    gw.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    draining = httpx.get(gw.base_url + "/ready")
    assert (draining.status_code, draining.json()["status"]) == (503, "draining")
    moon.default = Answer()
    during = chat(gw, key)  # still served while draining
    assert during.status_code == 200
    # Then the listener closes: new connections are refused while the stream still runs.
    assert wait_until(lambda: _refused(gw), timeout=5)
    refused_at = time.monotonic()
    assert refused_at - signalled >= 1.4
    thread.join(30)
    assert lines[-1][1] == "data: [DONE]" and lines[-1][0] > refused_at  # it ran to its end, after
    assert gw.proc.wait(timeout=30) is not None
    costs = sorted([_usage_cost(lines), float(during.json()["usage"]["cost"])])
    db = workdir / "data" / "gateway.db"
    charges = _rows(
        db, "SELECT amount FROM ledger_entries WHERE kind = 'charge' AND account_id = 'acct_drain'"
    )
    assert sorted(float(a) for (a,) in charges) == pytest.approx(costs)
    assert _rows(db, "SELECT status FROM generations WHERE account_id = 'acct_drain'") == [("success",)] * 2


def test_a_stream_past_the_shutdown_deadline_ends_in_band(tmp_path: Path, moon: FakeUpstream) -> None:
    """A stream still running at `shutdown_seconds` ends with the format's own error event (not a cut
    connection), and is charged once, for what it delivered."""
    workdir = tmp_path / "gw"
    gw = start(workdir, config(moon, flush_seconds=3600, extra="[server]\nshutdown_seconds = 1\n"))
    ops = Operator(gw)
    key = ops.key_for("acct_deadline")
    ops.recharge("acct_deadline", "1")
    moon.default = Answer(content=" ".join(f"w{i}" for i in range(60)), chunk_delay=0.3)  # ~18 s
    lines: list[tuple[float, str]] = []
    thread = _stream_in_thread(gw, key, lines)
    started = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    thread.join(30)
    moon.default = Answer()
    assert time.monotonic() - started < 10
    text = "\n".join(line for _, line in lines)
    assert '"error":{"code":503,"message":"The server is shutting down' in text and "failed:" not in text
    assert gw.proc.wait(timeout=30) is not None
    db = workdir / "data" / "gateway.db"
    records = _rows(
        db, "SELECT status, cost, completion_tokens FROM generations WHERE account_id = 'acct_deadline'"
    )
    assert len(records) == 1
    _, cost, completion = records[0]
    charges = _rows(
        db, "SELECT amount FROM ledger_entries WHERE kind = 'charge' AND account_id = 'acct_deadline'"
    )
    assert 0 < int(completion) < 60  # what was delivered, not the whole answer
    assert [float(a) for (a,) in charges] == pytest.approx([float(cost)])


def _refused(gw: GatewayProcess) -> bool:
    try:
        httpx.get(gw.base_url + "/health", timeout=1)
    except httpx.ConnectError:
        return True
    return False


def test_kill_9_mid_stream_then_reconcile(tmp_path: Path, moon: FakeUpstream) -> None:
    workdir = tmp_path / "gw"
    gw = start(workdir, config(moon, flush_seconds=3600))
    ops = Operator(gw)
    key = ops.key_for("acct_crash")
    ops.recharge("acct_crash", "1")
    costs = [chat(gw, key).json()["usage"]["cost"] for _ in range(2)]  # settled, but only in the journal
    moon.default = Answer(content="a b c d e f g h i j k l", chunk_delay=0.5)
    client = sdk(gw, key)
    stream = client.chat.completions.create(model=K25, messages=HI, stream=True)  # type: ignore[arg-type]
    open_id = next(iter(stream)).id
    os.kill(gw.proc.pid, signal.SIGKILL)
    gw.proc.wait()
    stream.close()
    moon.default = Answer()

    for _ in range(2):  # the second restart must find nothing left to do, and count nothing twice
        gw = start(workdir, config(moon, flush_seconds=3600))
        ops = Operator(gw, ops.key)
        assert credits(gw, key)["total_usage"] == pytest.approx(sum(costs))
        record = generation(gw, key, open_id)
        assert record["status"] == "interrupted" and record["total_cost"] == 0
        balance = httpx.get(gw.api + "/users/me/balance", headers={"Authorization": f"Bearer {key}"}).json()
        assert balance["data"]["available_balance"] == pytest.approx(1 - sum(costs))
        gw.stop()
    db = workdir / "data" / "gateway.db"
    assert _rows(db, "SELECT count(*) FROM ledger_entries WHERE kind = 'charge'") == [(2,)]


CUT_ROUTES = {
    "chat": ("/v1/chat/completions", {"stream": True}, '"content":"'),
    "messages": ("/v1/messages", {"stream": True, "max_tokens": 100}, '"text_delta"'),
    "responses": ("/v1/responses", {"stream": True}, "response.output_text.delta"),
}


@pytest.mark.parametrize("route", sorted(CUT_ROUTES))
def test_a_stream_cut_before_its_usage_is_charged_for_what_was_sent(
    billed: tuple[GatewayProcess, Operator], moon: FakeUpstream, route: str
) -> None:
    """A client that reads most of an answer and leaves before the usage pays for what it got (on the
    previous code: $0, completion tokens 0)."""
    gw, ops = billed
    account = f"acct_cut_{route}"
    key = ops.key_for(account)
    ops.recharge(account, "5")
    text = " ".join(f"word{i}" for i in range(60))  # 419 characters, about 105 tokens
    moon.script(Answer(content=text, completion_tokens=120, prompt_tokens=400, chunk_delay=0.01))
    path, extra, marker = CUT_ROUTES[route]
    headers = {"Authorization": f"Bearer {key}"}
    body: dict[str, object] = {"model": K25, **extra}
    body["input" if route == "responses" else "messages"] = HI
    received = 0
    with httpx.stream("POST", gw.base_url + path, json=body, headers=headers, timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if marker in line:
                received += 1
                if received == 30:
                    break  # well into the answer, before its usage

    def listed() -> list[dict[str, object]]:
        got = httpx.get(gw.base_url + "/api/v1/generations", headers=headers, timeout=10)
        data: list[dict[str, object]] = got.json()["data"]
        return data

    rows = wait_until(listed)
    assert len(rows) == 1, rows
    record = generation(gw, key, str(rows[0]["id"]))
    assert record["status"] == "cancelled", record
    assert record["native_tokens_completion"] >= 30, record
    assert record["native_tokens_prompt"] > 0, record
    assert record["total_cost"] > 0, record
    balance = wait_for_usage(gw, key, record["total_cost"])
    assert balance["total_usage"] == pytest.approx(record["total_cost"])


def test_the_hold_covers_prompts_the_estimate_undercounts(tmp_path: Path, moon: FakeUpstream) -> None:
    """Emoji are a token or more each where four characters a token guessed a quarter: the hold is the
    prompt's byte bound, so concurrent and sequential requests never take the balance below zero (on the
    previous code: -$0.13 with 6 at once)."""
    from concurrent.futures import ThreadPoolExecutor

    from kimi_gateway.testing import LOCAL_MODEL

    priced = f'[models."{LOCAL_MODEL}"]\npricing = {{ input = 100.0, output = 100.0 }}\n'
    gw = start(tmp_path / "gw", config(moon, extra=priced))
    try:
        ops = Operator(gw)
        key = ops.key_for("acct_emoji")
        ops.recharge("acct_emoji", "0.10")
        # 90 emoji: the old estimate said 22 tokens ($0.003 held); SmolLM2 reads about 300 ($0.03 charged).
        body = {
            "model": LOCAL_MODEL,
            "messages": [{"role": "user", "content": "🙂🐱🚀" * 30}],
            "max_tokens": 8,
        }

        def ask(_: int) -> int:
            reply = httpx.post(
                gw.api + "/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
                timeout=300,
            )
            return reply.status_code

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(ask, range(6)))
        assert 200 in statuses and 402 in statuses, statuses
        for _ in range(6):
            if ask(0) == 402:
                break
        else:
            raise AssertionError("never refused")
        # Charges are written in batches: read until two readings a second apart agree.
        balance, previous = credits(gw, key), None
        while balance != previous:
            time.sleep(1)
            previous, balance = balance, credits(gw, key)
        assert balance["total_usage"] > 0
        assert balance["total_credits"] - balance["total_usage"] >= 0, balance
    finally:
        gw.stop()
