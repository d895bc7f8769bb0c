"""The embedded engine in its own process: started by the first local request (or at start-up with
`preload`), stopped after `idle_seconds`, and killed with SIGKILL mid-stream and between requests without
the gateway noticing more than the requests it was serving. Disconnect cancellation through the process
boundary: tests/test_engine_limits.py."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess, wait_until
from tests.fakes.upstream import FakeUpstream
from tests.upstreams import KEY, KEY_ENV, MODEL, gateway_config

HELLO = [{"role": "user", "content": "Say hello."}]
LONG = {
    "model": LOCAL_MODEL,
    "messages": [{"role": "user", "content": "Count upwards from one, forever."}],
    "max_tokens": 3000,
    "ignore_eos": True,
}


def _engine(gw: GatewayProcess) -> dict[str, Any]:
    got = httpx.get(gw.base_url + "/ready")
    assert got.status_code == 200, got.text
    engine: dict[str, Any] = got.json()["local_models"][LOCAL_MODEL]
    return engine


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _wait(check: Any, timeout: float = 30.0) -> Any:
    return wait_until(check, timeout, 0.05)


def _local(gw: GatewayProcess) -> str:
    client = openai.OpenAI(base_url=gw.api, api_key="unused", max_retries=0, timeout=120)
    reply = client.chat.completions.create(model=LOCAL_MODEL, messages=HELLO, max_tokens=8)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    return reply.choices[0].message.content


@pytest.fixture(scope="module")
def gw(fake_servers: dict[str, FakeUpstream], tmp_path_factory: pytest.TempPathFactory) -> Any:
    process = GatewayProcess(
        tmp_path_factory.mktemp("engine"), gateway_config(fake_servers), env={KEY_ENV: KEY}
    )
    yield process
    process.stop()


def test_lazy_start_on_the_first_local_request(gw: GatewayProcess) -> None:
    # Ready at once, for upstream models; the local model is offered but not loaded.
    assert _engine(gw)["state"] == "stopped"
    assert _children(gw.proc.pid) == []
    models = {m["id"]: m for m in httpx.get(gw.api + "/models").json()["data"]}
    assert models[LOCAL_MODEL]["available"] is True and models[LOCAL_MODEL]["engine"] == "stopped"
    assert "engine" not in models[MODEL]  # upstream models have no engine process
    assert "libllama" not in _maps(gw.proc.pid)  # the gateway never loads llama.cpp
    upstream = httpx.post(gw.api + "/chat/completions", json={"model": MODEL, "messages": HELLO})
    assert upstream.status_code == 200 and _engine(gw)["state"] == "stopped"
    _local(gw)
    engine = _engine(gw)
    assert engine["state"] == "running" and engine["pid"] in _children(gw.proc.pid)
    assert "libllama" in _maps(engine["pid"]) and "libllama" not in _maps(gw.proc.pid)
    assert httpx.get(gw.api + f"/models/{LOCAL_MODEL}").json()["engine"] == "running"


def test_kill_between_requests_restarts_on_the_next(gw: GatewayProcess) -> None:
    _local(gw)
    first = _engine(gw)["pid"]
    os.kill(first, signal.SIGKILL)
    assert _wait(lambda: _engine(gw)["state"] == "failed")
    assert not _wait(lambda: not _alive(first)) or not _alive(first)  # reaped, no zombie left behind
    _local(gw)
    second = _engine(gw)["pid"]
    assert second != first and _engine(gw)["state"] == "running"


def test_kill_mid_stream_ends_that_stream_and_nothing_else(gw: GatewayProcess) -> None:
    _local(gw)
    pid = _engine(gw)["pid"]
    received, error = 0, None
    with httpx.stream("POST", gw.api + "/chat/completions", json={**LONG, "stream": True}, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and '"error"' in line:
                error = line
            elif line.startswith("data: ") and '"content"' in line:
                received += 1
                if received == 5:
                    os.kill(pid, signal.SIGKILL)
    # The stream ended with an error chunk (OpenRouter's mid-stream shape), not a silent cut.
    assert error is not None and "engine process" in error, error
    # Upstream models were served throughout; the next local request starts a new engine.
    assert (
        httpx.post(gw.api + "/chat/completions", json={"model": MODEL, "messages": HELLO}).status_code == 200
    )
    _local(gw)
    assert _engine(gw)["pid"] not in (None, pid)


def test_kill_before_the_first_byte_answers_503(gw: GatewayProcess) -> None:
    _local(gw)
    pid = _engine(gw)["pid"]
    # A non-streamed request: the gateway holds its answer until the end, so the kill lands before any
    # byte was sent; the client gets a 503 in OpenAI's shape (retryable), not a hang or a 500.
    os.kill(pid, signal.SIGSTOP)  # hold the engine so the request is surely in flight when it dies
    try:
        with httpx.Client(timeout=60) as client:
            import threading

            result: dict[str, httpx.Response] = {}
            thread = threading.Thread(
                target=lambda: result.setdefault("r", client.post(gw.api + "/chat/completions", json=LONG))
            )
            thread.start()
            assert _wait(lambda: _engine(gw)["inflight"] == 1, 10)
            os.kill(pid, signal.SIGKILL)
            thread.join(60)
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    response = result["r"]
    assert response.status_code == 503, response.text
    assert "engine process" in response.json()["error"]["message"]
    assert _engine(gw)["inflight"] == 0


def test_preload_and_idle_stop(fake_servers: dict[str, FakeUpstream], tmp_path: Path) -> None:
    config = "[engine]\npreload = true\nidle_seconds = 1\n" + gateway_config(fake_servers)
    gw = GatewayProcess(tmp_path, config, env={KEY_ENV: KEY})
    try:
        engine = _engine(gw)
        assert engine["state"] == "running" and engine["pid"] in _children(gw.proc.pid)  # started with it
        _local(gw)
        pid = _engine(gw)["pid"]
        # Idle for a second: the process stops, and its memory with it.
        assert _wait(lambda: _engine(gw)["state"] == "stopped", 15)
        assert _wait(lambda: not _alive(pid), 15)
        assert _children(gw.proc.pid) == []
        _local(gw)  # and the next request brings it back
        assert _engine(gw)["state"] == "running"
    finally:
        gw.stop()


def test_the_engine_exits_when_the_gateway_is_killed(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, "")
    try:
        _local(gw)
        engine = _engine(gw)["pid"]
        os.kill(gw.proc.pid, signal.SIGKILL)
        gw.proc.wait()
        # It reads the end of its socket and exits: no orphan keeps the model's memory.
        assert _wait(lambda: not _alive(engine), 15), "the engine outlived its gateway"
    finally:
        gw.stop()


def test_a_model_that_cannot_load_is_refused_at_once_until_the_next_try(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)  # a header and nothing llama.cpp can load
    config = f'[models."broken"]\nname = "Broken"\ncontext_length = 2048\nlocal = {{ gguf = "{broken}" }}\n'
    gw = GatewayProcess(tmp_path, config)
    try:
        body = {"model": "broken", "messages": HELLO}
        first = httpx.post(gw.api + "/chat/completions", json=body, timeout=120)
        assert first.status_code == 503 and "broken" in first.json()["error"]["message"], first.text
        assert str(tmp_path) not in first.text  # where the file is stays in the operator's log
        # Refused at once now, with when to come back, rather than each request starting a process.
        started = time.monotonic()
        second = httpx.post(gw.api + "/chat/completions", json=body, timeout=120)
        assert second.status_code == 503 and 1 <= int(second.headers["retry-after"]) <= 5
        assert time.monotonic() - started < 1.0
        attempts = [r for r in gw.log_records() if r.get("msg") == "engine process started"]
        assert attempts == [] and _children(gw.proc.pid) == []
        # The gateway itself serves on, and says which engine failed.
        ready = httpx.get(gw.base_url + "/ready").json()
        assert ready["local_models"]["broken"]["state"] == "failed"
        other = {"model": LOCAL_MODEL, "messages": HELLO, "max_tokens": 4}
        served = httpx.post(gw.api + "/chat/completions", json=other, timeout=120)
        assert served.status_code == 200, served.text
    finally:
        gw.stop()


def test_requests_at_the_idle_boundary_are_all_served(tmp_path: Path) -> None:
    """A request arriving while an idle engine is being stopped waits for it to go, then starts a new one:
    never two processes at once, never a request lost to the switch."""
    gw = GatewayProcess(tmp_path, "[engine]\nidle_seconds = 0.3\n")
    try:
        statuses, peak = [], 0
        for i in range(12):
            reply = httpx.post(
                gw.api + "/chat/completions",
                json={"model": LOCAL_MODEL, "messages": HELLO, "max_tokens": 2},
                timeout=120,
            )
            statuses.append(reply.status_code)
            peak = max(peak, len(_children(gw.proc.pid)))
            time.sleep(0.25 + 0.01 * i)  # walks across the moment the engine is stopped
        assert statuses == [200] * 12, statuses
        assert peak <= 1
        stops = [r for r in gw.log_records() if r.get("msg") == "engine process stopped after idling"]
        assert stops, "the engine never idled out: the test did not cross the boundary"
    finally:
        gw.stop()
