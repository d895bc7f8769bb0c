"""Helpers for the billing and limits tests: a keyed gateway in front of one fake Moonshot upstream."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai

from kimi_gateway.testing import GatewayProcess
from tests.fakes.upstream import FakeUpstream
from tests.upstreams import KEY, KEY_ENV

# Kimi K2.5's seed prices: $0.60 in, $0.15 cached, $3.00 out per million tokens.
K25 = "kimi-k2.5"
# Round prices for the boundary arithmetic: 1,000 and 2,000 nano-dollars a token.
THINKING = "kimi-k2-thinking"
NANO_IN, NANO_OUT = 1000, 2000


def tiers(*rows: tuple[int, float, int, int]) -> str:
    cells = ", ".join(
        f"{{ tier = {t}, min_recharge = {m}, concurrency = {c}, rpm = {r} }}" for t, m, c, r in rows
    )
    return f"tiers = [{cells}]"


def config(
    fake: FakeUpstream,
    tier_table: str = tiers((0, 0, 50, 1000)),
    flush_seconds: float = 0.1,
    extra: str = "",
    cache_seconds: float = 5.0,
) -> str:
    return f"""{extra}
[accounts]
{tier_table}
flush_seconds = {flush_seconds}
cache_seconds = {cache_seconds}

[providers.moon]
style = "moonshot"
name = "Moonshot AI"
base_url = "{fake.base_url}"
api_key_env = "{KEY_ENV}"
timeouts = {{ connect = 1.0, first_byte = 5.0, idle = 5.0 }}

[providers.moon.models."{K25}"]
pricing = {{ input = 0.60, cached_input = 0.15, output = 3.00 }}

[providers.moon.models."{THINKING}"]
pricing = {{ input = 1.0, output = 2.0 }}
"""


def start(workdir: Path, text: str) -> GatewayProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    return GatewayProcess(workdir, text, env={KEY_ENV: KEY})


class Operator:
    """The gateway's operator: a management key made while no key existed (the loopback bootstrap)."""

    def __init__(self, gw: GatewayProcess, key: str | None = None) -> None:
        self.gw = gw
        if key is None:
            made = httpx.post(gw.base_url + "/api/v1/keys", json={"name": "ops", "kind": "management"})
            assert made.status_code == 201, made.text
            key = made.json()["key"]
        self.key = key
        self.headers = {"Authorization": f"Bearer {key}"}

    def key_for(self, account: str, **fields: Any) -> str:
        made = httpx.post(
            self.gw.base_url + "/api/v1/keys",
            json={"name": account, "account_id": account, **fields},
            headers=self.headers,
        )
        assert made.status_code == 201, made.text
        return str(made.json()["key"])

    def recharge(self, account: str, amount: str, kind: str = "recharge") -> dict[str, Any]:
        added = httpx.post(
            self.gw.base_url + "/api/v1/credits/add",
            json={"account_id": account, "amount": amount, "kind": kind},
            headers=self.headers,
        )
        assert added.status_code == 200, added.text
        data: dict[str, Any] = added.json()["data"]
        return data


def sdk(gw: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.api, api_key=key, max_retries=0, timeout=30)


def chat(gw: GatewayProcess, key: str, **body: Any) -> httpx.Response:
    payload = {"model": K25, "messages": [{"role": "user", "content": "Hi"}], **body}
    return httpx.post(
        gw.api + "/chat/completions", json=payload, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def credits(gw: GatewayProcess, key: str) -> dict[str, float]:
    got = httpx.get(gw.base_url + "/api/v1/credits", headers={"Authorization": f"Bearer {key}"})
    assert got.status_code == 200, got.text
    data: dict[str, float] = got.json()["data"]
    return data


def generation(gw: GatewayProcess, key: str, generation_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """Records are written in batches: retry a brief 404, as OpenRouter's clients do."""
    deadline = time.monotonic() + timeout
    while True:
        got = httpx.get(
            gw.base_url + "/api/v1/generation",
            params={"id": generation_id},
            headers={"Authorization": f"Bearer {key}"},
        )
        if got.status_code == 200:
            data: dict[str, Any] = got.json()["data"]
            return data
        assert got.status_code == 404, got.text
        if time.monotonic() > deadline:
            raise AssertionError(f"generation {generation_id} never appeared")
        time.sleep(0.05)


def wait_for_usage(gw: GatewayProcess, key: str, expected: float, timeout: float = 10.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        data = credits(gw, key)
        if abs(data["total_usage"] - expected) < 1e-12 or time.monotonic() > deadline:
            return data
        time.sleep(0.05)
