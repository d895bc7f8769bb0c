"""The engine's bounded queue, and client disconnects stopping generation."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess

LONG = {
    "model": LOCAL_MODEL,
    "messages": [{"role": "user", "content": "Count upwards from one, forever."}],
    "max_tokens": 3000,
    "ignore_eos": True,  # vLLM's extension: nothing ends this generation but max_tokens or a disconnect
}


def _generation_record(gateway: GatewayProcess, request_id: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in gateway.log_records():
            if record.get("msg") == "generation" and record.get("request_id") == request_id:
                return record
        time.sleep(0.05)
    raise AssertionError(f"no generation record for {request_id}")


def _wait_idle(gateway: GatewayProcess, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = httpx.get(gateway.base_url + "/ready").json()["local_models"]
        if models[LOCAL_MODEL]["inflight"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError("the engine is still busy")


def test_stream_disconnect_stops_generation(gateway: GatewayProcess) -> None:
    received = 0
    with httpx.stream(
        "POST", gateway.api + "/chat/completions", json={**LONG, "stream": True}, timeout=60
    ) as r:
        request_id = r.headers["x-request-id"]
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                received += 1
                if received == 5:
                    break
    # Leaving the block closed the connection mid-stream.
    record = _generation_record(gateway, request_id)
    assert record["finish_reasons"] == ["cancelled"]
    assert record["completion_tokens"] < 100, record
    assert gateway.request_record(request_id)["status"] == 499
    _wait_idle(gateway)


def test_non_streaming_disconnect_stops_generation(gateway: GatewayProcess) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gateway.api + "/chat/completions", json=LONG, timeout=httpx.Timeout(10.0, read=1.5))
    # The request id is only in the log: find the cancelled generation that started most recently.
    deadline = time.monotonic() + 15
    cancelled: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not cancelled:
        cancelled = [
            r
            for r in gateway.log_records()
            if r.get("msg") == "generation"
            and r.get("prompt_tokens")
            and r["finish_reasons"] == ["cancelled"]
        ]
        time.sleep(0.05)
    assert cancelled, "the generation was not cancelled"
    assert cancelled[-1]["completion_tokens"] < 1000
    _wait_idle(gateway)


def test_full_queue_answers_503_with_retry_after_at_once(start_gateway: Any) -> None:
    gateway: GatewayProcess = start_gateway("[engine]\nmax_queue = 1\nretry_after_seconds = 2\n")
    url = gateway.api + "/chat/completions"
    with httpx.Client(timeout=60) as a, httpx.Client(timeout=60) as b:  # noqa: SIM117 - the order is the test
        with a.stream("POST", url, json={**LONG, "stream": True}) as running:
            assert running.status_code == 200
            lines = running.iter_lines()
            while '"content"' not in next(lines):
                pass  # the first job is generating
            with b.stream("POST", url, json={**LONG, "stream": True}) as queued:
                assert queued.status_code == 200  # accepted, waiting its turn
                started = time.monotonic()
                rejected = httpx.post(url, json=LONG, timeout=10)
                elapsed = time.monotonic() - started
                assert rejected.status_code == 503
                assert rejected.headers["retry-after"] == "2"
                assert rejected.json()["error"]["code"] == "server_overloaded"
                # Refused straight away rather than queued behind a 3000-token generation.
                assert elapsed < 5
                # In Anthropic's format, its overload: 529, which the anthropic SDK retries.
                ask = {"model": LOCAL_MODEL, "max_tokens": 5, "messages": LONG["messages"]}
                overloaded = httpx.post(gateway.base_url + "/v1/messages", json=ask, timeout=10)
                assert overloaded.status_code == 529 and overloaded.headers["retry-after"] == "2"
                assert overloaded.json()["error"]["type"] == "overloaded_error"
    _wait_idle(gateway)
    # Once the queue drains the model serves again.
    ok = httpx.post(url, json={**LONG, "max_tokens": 3, "ignore_eos": False}, timeout=60)
    assert ok.status_code == 200
