"""Prometheus /metrics: request, token, cost and overhead figures that add up across `serve --workers 2`,
parsed with prometheus_client's own parser; and the X-Gateway-Overhead-Ms header."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kimi_gateway.testing import GatewayProcess, wait_until
from tests.fakes.upstream import Answer, FakeUpstream, Fault
from tests.upstreams import KEY, KEY_ENV, MODEL, gateway_config

MOON = {"provider": {"only": ["moon"]}}


def _scrape(gw: GatewayProcess) -> dict[str, list[Any]]:
    got = httpx.get(gw.base_url + "/metrics", timeout=30)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/plain")
    families: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(got.text):
        families[family.name] = family.samples
    return families


def _sum(samples: list[Any], name: str, **labels: str) -> float:
    return sum(
        s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture()
def two_workers(fake_servers: dict[str, FakeUpstream], tmp_path: Path) -> Any:
    gw = GatewayProcess(tmp_path, gateway_config(fake_servers), env={KEY_ENV: KEY}, args=["--workers", "2"])
    gw.wait_for_workers(2)  # the second may still be loading the embedded model
    yield gw
    gw.stop()


def test_metrics_add_up_across_two_workers(
    two_workers: GatewayProcess, fakes: dict[str, FakeUpstream]
) -> None:
    gw = two_workers
    fakes["moon"].default = Answer(prompt_tokens=40, completion_tokens=10, cached_tokens=5, first_delay=0.3)
    fakes["moon"].script(Fault("status", status=500))  # one failed attempt, then the others answer

    async def burst() -> list[httpx.Response]:
        # At once, on fresh connections, with slow answers: both workers take some.
        limits = httpx.Limits(max_connections=24, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            return await asyncio.gather(
                *(
                    http.post(
                        gw.api + "/chat/completions",
                        json={
                            "model": MODEL,
                            "messages": [{"role": "user", "content": f"Hi {i}"}],
                            "stream": i % 2 == 1,
                            **MOON,
                        },
                    )
                    for i in range(24)
                )
            )

    replies = asyncio.run(burst())
    assert sorted(r.status_code for r in replies) in ([200] * 24, [200] * 23 + [502])
    sent = len(replies)
    # The workers share one listening socket, and the first to wake may accept every connection of a burst
    # (it happened in CI): more bursts, every one answered, until both have served and written counters.
    snapshots = gw.workdir / "data" / "metrics"
    for _ in range(10):
        if wait_until(lambda: len(list(snapshots.glob("*.json"))) == 2, timeout=2.5):
            break
        more = asyncio.run(burst())
        assert [r.status_code for r in more] == [200] * 24
        sent += len(more)
    deadline = time.monotonic() + 10
    while True:
        families = _scrape(gw)
        requests = _sum(
            families["kimi_gateway_requests"], "kimi_gateway_requests_total", route="/v1/chat/completions"
        )
        if requests == sent or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert requests == sent  # every worker's requests, in one scrape
    ok = _sum(families["kimi_gateway_requests"], "kimi_gateway_requests_total", status="200")
    assert ok == sent - 1
    tokens = families["kimi_gateway_tokens"]
    assert _sum(tokens, "kimi_gateway_tokens_total", kind="prompt") == (sent - 1) * 40
    assert _sum(tokens, "kimi_gateway_tokens_total", kind="cached") == (sent - 1) * 5
    assert (
        _sum(families["kimi_gateway_upstream_errors"], "kimi_gateway_upstream_errors_total", provider="moon")
        == 1
    )
    duration = families["kimi_gateway_request_duration_seconds"]
    assert _sum(duration, "kimi_gateway_request_duration_seconds_count") == sent
    overhead = families["kimi_gateway_overhead_seconds"]
    # Every non-streamed success has one; a stream, when its first events came before its status line.
    assert _sum(overhead, "kimi_gateway_overhead_seconds_count") >= 11
    assert (
        _sum(families["kimi_gateway_accounting_batch_size"], "kimi_gateway_accounting_batch_size_count") == 0
    )  # no keys: nothing accounted
    # Both workers took requests: each wrote its counters, and one scrape added both files up.
    assert len(list(snapshots.glob("*.json"))) == 2


def test_overhead_header_and_metrics_off(
    upstream_gateway: GatewayProcess, fakes: dict[str, FakeUpstream], start_gateway: Any
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **MOON}
    plain = httpx.post(upstream_gateway.api + "/chat/completions", json=body, timeout=30)
    assert 0 <= float(plain.headers["x-gateway-overhead-ms"]) < 1000
    with httpx.stream(
        "POST", upstream_gateway.api + "/chat/completions", json={**body, "stream": True}, timeout=30
    ) as streamed:
        assert 0 <= float(streamed.headers["x-gateway-overhead-ms"]) < 1000
        streamed.read()
    families = _scrape(upstream_gateway)
    assert (
        _sum(
            families["kimi_gateway_time_to_first_token_seconds"],
            "kimi_gateway_time_to_first_token_seconds_count",
        )
        >= 1
    )
    off = start_gateway("[server]\nmetrics = false\n")
    assert httpx.get(off.base_url + "/metrics").status_code == 404


def _outside_address() -> str | None:
    """This machine's address on a non-loopback interface, if it has one."""
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        address: str = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


def test_metrics_from_outside_loopback_need_a_management_key(
    tmp_path: Path, fakes: dict[str, FakeUpstream]
) -> None:
    from tests.billing import Operator, config, start

    address = _outside_address()
    if address is None:
        pytest.skip("this machine has no non-loopback interface to call from")
    text = config(fakes["moon"])
    gw = start(tmp_path / "gw", text)
    ops = Operator(gw)
    inference = ops.key_for("acct_metrics")
    gw.stop()
    # Keys exist now, so the gateway may listen beyond loopback.
    gw = start(tmp_path / "gw", '[server]\nhost = "0.0.0.0"\n' + text)
    try:
        outside = f"http://{address}:{gw.port}/metrics"
        assert httpx.get(outside, timeout=10).status_code == 401
        refused = httpx.get(outside, headers={"Authorization": f"Bearer {inference}"}, timeout=10)
        assert refused.status_code == 403
        allowed = httpx.get(outside, headers=ops.headers, timeout=10)
        assert allowed.status_code == 200 and "kimi_gateway_requests" in allowed.text
        assert httpx.get(gw.base_url + "/metrics", timeout=10).status_code == 200  # loopback: no key needed
    finally:
        gw.stop()


def test_requests_through_a_proxy_are_not_trusted_as_local(
    tmp_path: Path, fakes: dict[str, FakeUpstream]
) -> None:
    """Behind a reverse proxy on the same machine every client looks like loopback: /metrics was public
    and a keyless gateway served anyone. A forwarded request is not local."""
    from tests.billing import Operator, config, start

    relayed = {"X-Forwarded-For": "203.0.113.9"}
    gw = start(tmp_path / "gw", config(fakes["moon"]))
    try:
        hi = {"model": "kimi-k2.5", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
        keyless = httpx.post(gw.api + "/chat/completions", json=hi, headers=relayed, timeout=30)
        assert keyless.status_code == 401 and "keys create" in keyless.json()["error"]["message"]
        ops = Operator(gw)
        assert httpx.get(gw.base_url + "/metrics", timeout=10).status_code == 200  # on this machine
        for header in (
            {"X-Forwarded-For": "203.0.113.9"},
            {"X-Real-IP": "203.0.113.9"},
            {"Forwarded": "for=x"},
        ):
            assert httpx.get(gw.base_url + "/metrics", headers=header, timeout=10).status_code == 401
        allowed = httpx.get(gw.base_url + "/metrics", headers={**relayed, **ops.headers}, timeout=10)
        assert allowed.status_code == 200
    finally:
        gw.stop()


def test_unknown_models_do_not_become_labels(upstream_gateway: GatewayProcess) -> None:
    for i in range(5):
        body = {"model": f"made-up-model-{i}", "messages": [{"role": "user", "content": "Hi"}]}
        assert httpx.post(upstream_gateway.api + "/chat/completions", json=body).status_code == 404
    text = httpx.get(upstream_gateway.base_url + "/metrics").text
    assert "made-up-model" not in text
    requests = _scrape(upstream_gateway)["kimi_gateway_requests"]
    assert _sum(requests, "kimi_gateway_requests_total", status="404", model="") >= 5
