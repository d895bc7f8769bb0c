"""The engine's bounded queue, and client disconnects stopping generation."""

from __future__ import annotations

import json
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
    # One sequence at a time, one more waiting: a third request is refused.
    gateway: GatewayProcess = start_gateway(
        "[engine]\nparallel = 1\nmax_queue = 1\nretry_after_seconds = 2\n"
    )
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


# ---- requests that once killed or hung the engine (issue #26): each is refused with a 400, and the engine
# process serving every tenant stays the same process.

HOSTILE_SCHEMAS = {
    "a billion characters": {"type": "object", "properties": {"s": {"type": "string", "minLength": 10**9}}},
    "5,000 long enum values": {"enum": [f"value number {i} " + "x" * 40 for i in range(5000)]},
    "nested optional repetition": {"type": "string", "pattern": "((a?){30}){30}"},
    "ambiguous alternatives": {"type": "string", "pattern": "(a|a|aa)*b" * 4},
}


def _engine_pid(gateway: GatewayProcess) -> int | None:
    pid: int | None = httpx.get(gateway.base_url + "/ready").json()["local_models"][LOCAL_MODEL]["pid"]
    return pid


def _ask(gateway: GatewayProcess, **body: Any) -> httpx.Response:
    payload = {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "Hi"}], **body}
    return httpx.post(gateway.api + "/chat/completions", json=payload, timeout=60)


@pytest.mark.parametrize("name", sorted(HOSTILE_SCHEMAS))
def test_costly_schemas_are_refused_before_the_engine(gateway: GatewayProcess, name: str) -> None:
    assert _ask(gateway, max_tokens=2).status_code == 200
    pid = _engine_pid(gateway)
    schema = HOSTILE_SCHEMAS[name]
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    started = time.monotonic()
    refused = _ask(gateway, response_format=fmt, max_tokens=50)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "invalid_json_schema"
    assert time.monotonic() - started < 10  # refused, not worked on (it took minutes, or never ended)
    assert _engine_pid(gateway) == pid
    assert _ask(gateway, max_tokens=2).status_code == 200


@pytest.mark.parametrize(
    "fmt",
    [
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "one", "schema": {"const": 1}}},
    ],
)
def test_ignore_eos_with_constrained_output_is_refused(gateway: GatewayProcess, fmt: dict[str, Any]) -> None:
    assert _ask(gateway, max_tokens=2).status_code == 200
    pid = _engine_pid(gateway)
    refused = _ask(gateway, response_format=fmt, ignore_eos=True, max_tokens=300)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "ignore_eos"
    assert _engine_pid(gateway) == pid


def test_counts_are_validated(gateway: GatewayProcess) -> None:
    refused = _ask(gateway, max_tokens=True)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "max_tokens", refused.text
    refused = _ask(gateway, n=128, max_tokens=2)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "n", refused.text
    refused = _ask(gateway, n=True)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "n", refused.text


def test_several_choices_stream_and_are_recorded(gateway: GatewayProcess) -> None:
    body = {
        "max_tokens": 4,
        "n": 2,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    payload = {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "Hi"}], **body}
    indexes: set[int] = set()
    usage: dict[str, Any] | None = None
    with httpx.stream("POST", gateway.api + "/chat/completions", json=payload, timeout=60) as r:
        assert r.status_code == 200
        request_id = r.headers["x-request-id"]
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                for choice in chunk["choices"]:
                    if choice["delta"].get("content"):
                        indexes.add(choice["index"])
                usage = chunk.get("usage") or usage
    assert indexes == {0, 1}
    assert usage is not None and usage["completion_tokens"] == 8
    assert _generation_record(gateway, request_id)["completion_tokens"] == 8


def test_a_huge_count_is_refused_without_tokenizing(gateway: GatewayProcess) -> None:
    assert _ask(gateway, max_tokens=2).status_code == 200
    pid = _engine_pid(gateway)
    text = "🙂" * 2_000_000  # 8 MB: far more than the context could hold, whatever the tokenizer
    body = {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": text}]}
    started = time.monotonic()
    counted = httpx.post(gateway.base_url + "/v1/messages/count_tokens", json=body, timeout=60)
    assert counted.status_code == 400, counted.text[:300]
    assert time.monotonic() - started < 10  # tokenizing it took 15-22 s
    assert _engine_pid(gateway) == pid
