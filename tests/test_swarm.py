"""Agent Swarm through the API (core/swarm.py): a scripted fake Kimi plays the orchestrator (it asks for
three agents) and the sub-agents (each searches the fake search backend and answers; one meets a provider
that fails), through the official SDKs and plain HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kimi_gateway.testing import GatewayProcess, wait_until
from tests import billing
from tests.billing import K25
from tests.fakes.upstream import FakeUpstream
from tests.fakes.web import Swarmer, WebSite


@pytest.fixture(scope="module")
def site() -> Iterator[WebSite]:
    web = WebSite()
    yield web
    web.stop()


def _config(site: WebSite) -> str:
    return f"""
[media]
allow_hosts = ["{site.host}"]

[tools.web_search]
backend = "searxng"
base_url = "{site.base_url}"
price_per_call = 0.01

[agents]
max_depth = 2
rate_limit_wait_seconds = 1
"""


@pytest.fixture(scope="module")
def gateway(
    fake_servers: dict[str, FakeUpstream], site: WebSite, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, billing.Operator]]:
    gw = billing.start(
        tmp_path_factory.mktemp("swarm"), billing.config(fake_servers["moon"], extra=_config(site))
    )
    yield gw, billing.Operator(gw)
    gw.stop()


@pytest.fixture()
def swarmer(fakes: dict[str, FakeUpstream], site: WebSite) -> Swarmer:
    site.reset()
    model = Swarmer()
    fakes["moon"].agent = model  # type: ignore[assignment]
    return model


def _account(gateway: tuple[GatewayProcess, billing.Operator], name: str, dollars: str = "5") -> str:
    _, ops = gateway
    key = ops.key_for(name)
    ops.recharge(name, dollars)
    return key


def _swarm(gw: GatewayProcess, key: str, **extra: Any) -> httpx.Response:
    """A swarm run through plain HTTP (chat completions), answered in full."""
    body = {
        "model": K25 + ":swarm",
        "messages": [{"role": "user", "content": "Compare."}],
        "max_tokens": 100,
        **extra,
    }
    reply = httpx.post(
        gw.base_url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    return reply


def _run(gw: GatewayProcess, key: str, run_id: str) -> dict[str, Any]:
    found = httpx.get(
        gw.base_url + f"/api/v1/agents/runs/{run_id}", headers={"Authorization": f"Bearer {key}"}
    )
    assert found.status_code == 200, found.text
    data: dict[str, Any] = found.json()["data"]
    return data


def _generation(gw: GatewayProcess, key: str, generation_id: str) -> dict[str, Any]:
    """A record, once written: records are written after the response has gone out."""

    def get() -> httpx.Response:
        return httpx.get(
            gw.base_url + "/api/v1/generation",
            params={"id": generation_id},
            headers={"Authorization": f"Bearer {key}"},
        )

    found = wait_until(lambda: (r := get()).status_code == 200 and r)
    assert found, generation_id
    data: dict[str, Any] = found.json()["data"]
    return data


def test_a_swarm_run_through_the_openai_sdk(
    gateway: tuple[GatewayProcess, billing.Operator], swarmer: Swarmer
) -> None:
    gw, _ = gateway
    key = _account(gateway, "acct_swarm")
    client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=key, max_retries=0, timeout=60)
    raw = client.chat.completions.with_raw_response.create(
        model=K25 + ":swarm",  # a plain client: no code of its own
        messages=[{"role": "user", "content": "Compare alpha, beta and gamma."}],
        max_tokens=200,
    )
    reply = raw.parse()
    run_id = raw.headers["x-agent-run-id"]
    assert reply.model_extra is not None and reply.model_extra["agent_run_id"] == run_id
    assert (
        reply.choices[0].message.content == "Swarm summary. alpha: completed; beta: completed; gamma: failed"
    )
    assert reply.choices[0].finish_reason == "stop"

    tree = _run(gw, key, run_id)
    assert tree["status"] == "completed" and tree["request_id"] == reply.id
    assert tree["orchestrator"]["steps"] == 2 and tree["orchestrator"]["tool_calls"] == 1
    agents = {a["name"]: a for a in tree["agents"]}
    assert [a["name"] for a in tree["agents"]] == ["alpha", "beta", "gamma"]
    assert [agents[n]["status"] for n in ("alpha", "beta", "gamma")] == ["completed", "completed", "failed"]
    assert agents["alpha"]["steps"] == 2 and agents["alpha"]["tool_calls"] == 1  # a search, then its answer
    assert "Findings on Find out about alpha" in agents["alpha"]["answer"]
    assert agents["gamma"]["error"] and agents["gamma"]["steps"] == 0
    # The agents ran at once: their time spans overlap.
    spans = [(agents[n]["started_at"], agents[n]["ended_at"]) for n in ("alpha", "beta", "gamma")]
    assert max(start for start, _ in spans) < min(end for _, end in spans)

    # Every model call is a record of the request, and the response's cost is their sum, as charged.
    ids = tree["orchestrator"]["generations"] + [g for a in tree["agents"] for g in a["generations"]]
    assert len(ids) == 2 + 2 + 2 and len(set(ids)) == len(ids)
    records = [_generation(gw, key, i) for i in ids]
    assert {r["request_id"] for r in records} == {reply.id}
    total = sum(Decimal(str(r["total_cost"])) for r in records)
    assert reply.usage is not None and reply.usage.model_extra is not None
    assert Decimal(str(reply.usage.model_extra["cost"])) == total
    assert Decimal(str(tree["cost"])) == total
    assert sum(r["server_tool_calls"] for r in records) == 3  # create_agents and two searches

    # The account's activity (and so the model page's figures, read from the same rollups) counts every
    # agent's tokens: 6 model calls.
    def activity_tokens() -> int:
        rows = httpx.get(gw.base_url + "/api/v1/activity", headers={"Authorization": f"Bearer {key}"}).json()
        return sum(r["prompt_tokens"] for r in rows["data"])

    assert reply.usage.prompt_tokens == 6 * 20
    assert wait_until(lambda: activity_tokens() == reply.usage.prompt_tokens)
    credits = httpx.get(gw.base_url + "/api/v1/credits", headers={"Authorization": f"Bearer {key}"})
    assert wait_until(
        lambda: (
            abs(
                float(
                    httpx.get(
                        gw.base_url + "/api/v1/credits", headers={"Authorization": f"Bearer {key}"}
                    ).json()["data"]["total_usage"]
                )
                - float(total)
            )
            < 1e-9
        )
    ), credits.text


def test_a_swarm_run_streamed_shows_the_agents(
    gateway: tuple[GatewayProcess, billing.Operator], swarmer: Swarmer
) -> None:
    gw, _ = gateway
    key = _account(gateway, "acct_swarm_stream")
    body = {
        "model": K25,
        "agent": {"mode": "swarm", "max_agents": 3},
        "messages": [{"role": "user", "content": "Compare them."}],
        "stream": True,
        "max_tokens": 200,
    }
    headers = {"Authorization": f"Bearer {key}"}
    events: list[dict[str, Any]] = []
    with httpx.stream(
        "POST", gw.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as r:
        run_id = r.headers["x-agent-run-id"]
        for line in r.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
    activity = [
        e["choices"][0]["delta"]["server_tool"]
        for e in events
        if e["choices"] and "server_tool" in e["choices"][0]["delta"]
    ]
    assert [a["status"] for a in activity if a["name"] == "create_agents"] == ["running", "done"]
    done = next(a for a in activity if a["name"] == "create_agents" and a["status"] == "done")
    assert done["run_id"] == run_id
    assert [(a["name"], a["status"]) for a in done["agents"]] == [
        ("alpha", "completed"),
        ("beta", "completed"),
        ("gamma", "failed"),
    ]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text.startswith("Swarm summary.")
    assert _run(gw, key, run_id)["status"] == "completed"


def test_max_cost_stops_the_run_and_says_so(
    gateway: tuple[GatewayProcess, billing.Operator], swarmer: Swarmer
) -> None:
    """A budget the orchestrator's first call fits in, and no more: the agents are not run, and the run
    ends with what was produced, saying why."""
    gw, _ = gateway
    key = _account(gateway, "acct_swarm_cost")
    headers = {"Authorization": f"Bearer {key}"}
    body = {
        "model": K25,
        "agent": {"mode": "swarm", "max_cost": 0.001},  # K2.5, 200 tokens out: $0.0006 a call at most
        "messages": [{"role": "user", "content": "Compare them."}],
        "max_tokens": 200,
    }
    reply = httpx.post(gw.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert reply.status_code == 200, reply.text
    run = _run(gw, key, reply.json()["agent_run_id"])
    assert run["status"] == "stopped" and "max_cost" in (run["stop_reason"] or "")
    assert Decimal(str(reply.json()["usage"]["cost"])) <= Decimal("0.001")
    assert all(a["status"] == "stopped" for a in run["agents"])
    assert swarmer.agent_calls == 0


def test_a_tier_0_account_cannot_fan_out(
    fake_servers: dict[str, FakeUpstream], site: WebSite, swarmer: Swarmer, tmp_path: Path
) -> None:
    """One request at a time (tier 0's concurrency): the orchestrator's request holds it, so every
    sub-agent's call is refused by the account's limits, and reported as such."""
    config = billing.config(fake_servers["moon"], tier_table=billing.tiers((0, 0, 1, 3)), extra=_config(site))
    gw = billing.start(tmp_path / "gw", config)
    try:
        ops = billing.Operator(gw)
        key = ops.key_for("acct_tier0")
        ops.recharge("acct_tier0", "1")
        run = _run(gw, key, _swarm(gw, key).json()["agent_run_id"])
        assert [a["status"] for a in run["agents"]] == ["failed"] * 3
        assert all(
            "concurrency" in (a["error"] or "") or "per minute" in (a["error"] or "") for a in run["agents"]
        )
        assert swarmer.agent_calls == 0
    finally:
        gw.stop()


def test_a_client_leaving_stops_every_agent(
    gateway: tuple[GatewayProcess, billing.Operator], swarmer: Swarmer, fakes: dict[str, FakeUpstream]
) -> None:
    gw, _ = gateway
    key = _account(gateway, "acct_swarm_gone")
    swarmer.delay = 3.0  # the agents' answers are slow to start
    body = {"model": K25 + ":swarm", "messages": [{"role": "user", "content": "Go."}], "stream": True}

    def leave() -> None:
        with httpx.stream(
            "POST",
            gw.base_url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        ) as r:
            for line in r.iter_lines():
                if '"create_agents"' in line:
                    return  # the agents are starting: leave

    thread = threading.Thread(target=leave)
    thread.start()
    thread.join(30)
    assert wait_until(lambda: swarmer.agent_calls >= 2, timeout=10)
    assert fakes["moon"].wait_for_disconnects(2, timeout=10)  # the agents' calls under way were dropped
    calls = len(fakes["moon"].requests)
    time.sleep(4)
    assert len(fakes["moon"].requests) == calls  # and nothing more was asked


@pytest.mark.parametrize("stream", [False, True])
def test_a_swarm_run_through_the_anthropic_sdk(
    gateway: tuple[GatewayProcess, billing.Operator], swarmer: Swarmer, stream: bool
) -> None:
    import anthropic

    gw, _ = gateway
    key = _account(gateway, f"acct_swarm_anthropic_{int(stream)}")
    client = anthropic.Anthropic(base_url=gw.base_url, api_key=key, max_retries=0)
    asked: dict[str, Any] = {
        "model": K25 + ":swarm",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "Compare alpha, beta and gamma."}],
    }
    if stream:
        with client.messages.stream(**asked) as streamed:
            reply = streamed.get_final_message()
    else:
        reply = client.messages.create(**asked)
    kinds = [block.type for block in reply.content]
    # The orchestrator's thinking, its create_agents call, the agents' reports (as thinking), its answer.
    assert kinds == ["thinking", "server_tool_use", "thinking", "text"], kinds
    call, reports, answer = reply.content[1], reply.content[2], reply.content[3]
    assert call.type == "server_tool_use" and call.name == "create_agents"
    assert [t["name"] for t in call.input["tasks"]] == ["alpha", "beta", "gamma"]  # type: ignore[index]
    assert reports.type == "thinking" and "Agent gamma: failed" in reports.thinking
    assert answer.type == "text" and answer.text.startswith("Swarm summary.")
    assert reply.stop_reason == "end_turn"
    if not stream:
        assert reply.model_extra is not None and reply.model_extra["agent_run_id"].startswith("run_")


@pytest.mark.parametrize("stream", [False, True])
def test_a_swarm_run_through_the_responses_api(
    gateway: tuple[GatewayProcess, billing.Operator], swarmer: Swarmer, stream: bool
) -> None:
    gw, _ = gateway
    key = _account(gateway, f"acct_swarm_responses_{int(stream)}")
    client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=key, max_retries=0, timeout=60)
    if stream:
        events = list(
            client.responses.create(
                model=K25, input="Compare them.", stream=True, extra_body={"agent": {"mode": "swarm"}}
            )
        )
        kinds = [e.type for e in events]
        assert "response.mcp_call.completed" in kinds
        response = events[-1].response  # type: ignore[union-attr]
    else:
        response = client.responses.create(model=K25 + ":swarm", input="Compare them.")
    items = [item.type for item in response.output]
    assert "mcp_call" in items and items[-1] == "message", items
    call = next(item for item in response.output if item.type == "mcp_call")
    assert call.server_label == "swarm" and call.name == "create_agents"
    reports = json.loads(call.output or "{}")["agents"]
    assert [(r["name"], r["status"]) for r in reports] == [
        ("alpha", "completed"),
        ("beta", "completed"),
        ("gamma", "failed"),
    ]
    assert response.output_text.startswith("Swarm summary.")
    assert response.model_extra is not None and response.model_extra["agent_run_id"].startswith("run_")


def test_the_readme_example_runs_as_written(
    gateway: tuple[GatewayProcess, billing.Operator], swarmer: Swarmer
) -> None:
    """The README's Swarm example, with only its base URL and key replaced."""
    gw, _ = gateway
    key = _account(gateway, "acct_swarm_readme")
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Swarm") :]
    code = section[section.index("```python\n") + 10 :]
    code = code[: code.index("```")]
    code = code.replace("http://127.0.0.1:8000/v1", gw.base_url + "/v1").replace("sk-kg-...", key)
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["reply"].choices[0].message.content.startswith("Swarm summary.")
    assert _run(gw, key, scope["run_id"])["status"] == "completed"


def test_a_run_is_readable_from_either_replica(
    fake_servers: dict[str, FakeUpstream], site: WebSite, swarmer: Swarmer, tmp_path: Path
) -> None:
    """Two replicas on one PostgreSQL and Redis: a run made on one is readable from the other once it
    ends (stored), and never by another account."""
    import secrets

    from tests.services import clear_redis, drop_postgres_database, fresh_postgres_database, redis_url

    redis_at, database = redis_url(), fresh_postgres_database()
    prefix = f"kgtest:{secrets.token_hex(4)}:"
    shared = f'database_url = "{database}"\nredis_url = "{redis_at}"\nredis_prefix = "{prefix}"\n'
    text = billing.config(fake_servers["moon"], extra=shared + _config(site))
    replicas: list[GatewayProcess] = []
    try:
        replicas = [billing.start(tmp_path / name, text) for name in ("a", "b")]
        a, b = replicas
        ops = billing.Operator(a)
        key, other = ops.key_for("acct_replicas"), ops.key_for("acct_other")
        ops.recharge("acct_replicas", "5")
        run_id = _swarm(a, key).json()["agent_run_id"]
        url = b.base_url + f"/api/v1/agents/runs/{run_id}"
        assert wait_until(
            lambda: httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        )
        tree = httpx.get(url, headers={"Authorization": f"Bearer {key}"}).json()["data"]
        assert tree["status"] == "completed" and len(tree["agents"]) == 3
        assert tree == _run(a, key, run_id)  # the same tree on both
        assert httpx.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 404
    finally:
        for gw in replicas:
            gw.stop()
        clear_redis(prefix)
        drop_postgres_database(database)


def test_the_embedded_model_runs_a_swarm_to_a_clean_end(tmp_path: Path) -> None:
    """The plumbing with the small local model: whatever it makes of the tool, the run ends cleanly, its
    tree says how, and its response is well formed."""
    from kimi_gateway.testing import LOCAL_MODEL

    gw = GatewayProcess(tmp_path)
    try:
        body = {
            "model": LOCAL_MODEL + ":swarm",
            "messages": [
                {"role": "user", "content": "Split this into two tasks: name a fruit, name a color."}
            ],
            "max_tokens": 64,
            "agent": {"mode": "swarm", "max_agents": 2, "max_steps": 3, "agent_max_steps": 2},
        }
        reply = httpx.post(gw.base_url + "/v1/chat/completions", json=body, timeout=300)
        assert reply.status_code == 200, reply.text
        data = reply.json()
        assert data["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls")
        tree = httpx.get(gw.base_url + f"/api/v1/agents/runs/{data['agent_run_id']}").json()["data"]
        assert tree["status"] in ("completed", "stopped")
        assert len(tree["agents"]) <= 2
    finally:
        gw.stop()


def test_the_run_streams_its_tree_while_it_runs(
    gateway: tuple[GatewayProcess, billing.Operator], swarmer: Swarmer
) -> None:
    gw, _ = gateway
    key = _account(gateway, "acct_swarm_watch")
    swarmer.delay = 0.8
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": K25 + ":swarm", "messages": [{"role": "user", "content": "Go."}], "stream": True}
    trees: list[dict[str, Any]] = []
    with httpx.stream(
        "POST", gw.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as r:
        run_id = r.headers["x-agent-run-id"]

        def watch() -> None:
            url = gw.base_url + f"/api/v1/agents/runs/{run_id}/events"
            with httpx.stream("GET", url, headers=headers, timeout=60) as events:
                assert events.status_code == 200
                trees.extend(
                    json.loads(line[6:]) for line in events.iter_lines() if line.startswith("data: ")
                )

        watcher = threading.Thread(target=watch)
        watcher.start()
        for _line in r.iter_lines():
            pass
    watcher.join(30)
    assert trees[0]["status"] == "running" and trees[-1]["status"] == "completed"
    assert any(a["status"] == "running" for tree in trees for a in tree["agents"])
    assert [a["status"] for a in trees[-1]["agents"]] == ["completed", "completed", "failed"]
    # Another account's key does not see the run.
    other = _account(gateway, "acct_swarm_watch_other")
    url = gw.base_url + f"/api/v1/agents/runs/{run_id}/events"
    assert httpx.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 404


def test_a_depth_limit_of_two_lets_agents_create_agents(
    gateway: tuple[GatewayProcess, billing.Operator], swarmer: Swarmer
) -> None:
    """With `max_depth: 2` (within the operator's), each agent the orchestrator creates may create its own:
    the tree says who created whom, and its cost is each node's own, summing to the response's."""
    gw, _ = gateway
    key = _account(gateway, "acct_swarm_deep")
    reply = _swarm(gw, key, agent={"mode": "swarm", "max_depth": 2, "max_agents": 16}, max_tokens=200)
    tree = _run(gw, key, reply.json()["agent_run_id"])
    top = [a for a in tree["agents"] if a["depth"] == 1]
    below = [a for a in tree["agents"] if a["depth"] == 2]
    assert [a["name"] for a in top] == ["alpha", "beta", "gamma"] and {a["parent"] for a in top} == {
        "orchestrator"
    }
    assert len(below) == 9 and {a["parent"] for a in below} == {"alpha", "beta", "gamma"}
    assert sorted(a["status"] for a in below) == ["completed"] * 6 + ["failed"] * 3
    assert reply.json()["choices"][0]["message"]["content"] == (
        "Swarm summary. alpha: completed; beta: completed; gamma: completed"
    )
    ids = tree["orchestrator"]["generations"] + [g for a in tree["agents"] for g in a["generations"]]
    records = {i: _generation(gw, key, i) for i in ids}
    total = sum(Decimal(str(r["total_cost"])) for r in records.values())
    assert Decimal(str(reply.json()["usage"]["cost"])) == total == Decimal(str(tree["cost"]))
    # The default depth (1): the agents are not offered create_agents.
    assert all(a["depth"] == 1 for a in _run(gw, key, _swarm_once(gw, key))["agents"])


def _swarm_once(gw: GatewayProcess, key: str) -> str:
    return str(_swarm(gw, key, max_tokens=200).json()["agent_run_id"])


def test_agents_one_after_another_share_one_budget(
    fake_servers: dict[str, FakeUpstream], site: WebSite, fakes: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    """Four agents run one at a time (max_parallel 1) under a $0.035 max_cost, each search costing $0.01:
    what the finished agents spent stays counted for the later ones (a loop that ended keeps its share of
    the budget), so the fourth cannot pay for its search and stops; the run never costs more."""
    from tests.upstreams import KEY, KEY_ENV

    site.reset()
    fakes["moon"].agent = Swarmer(tasks=("a", "b", "c", "d"))  # type: ignore[assignment]
    config = billing.config(fake_servers["moon"], extra=_config(site))
    gw = GatewayProcess(tmp_path, config, env={KEY_ENV: KEY, "KIMI_GATEWAY_AGENTS__MAX_PARALLEL": "1"})
    try:
        ops = billing.Operator(gw)
        key = ops.key_for("acct_budget")
        ops.recharge("acct_budget", "5")
        reply = _swarm(gw, key, agent={"mode": "swarm", "max_cost": 0.035}, max_tokens=200)
        tree = _run(gw, key, reply.json()["agent_run_id"])
        assert [a["status"] for a in tree["agents"]] == ["completed", "completed", "completed", "stopped"]
        assert "max_cost" in (tree["agents"][3]["error"] or "")
        assert Decimal(str(reply.json()["usage"]["cost"])) <= Decimal("0.035")
        assert len(site.searches) == 3
    finally:
        gw.stop()
