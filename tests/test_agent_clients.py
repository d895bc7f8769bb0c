"""The two most used coding agents, as a developer points them at the gateway (changing only the base URL
and the key), with their default settings: Claude Code (`claude -p`, Anthropic Messages) and Codex CLI
(`codex exec`, Responses). A scripted upstream plays Kimi K2.5 with thinking on and calls the client's own
tools (tests/fakes/agent.py): the file it asks for must be written, the shell command must have run, and
the final answer must come back. Both are pinned in tests/agents/package-lock.json; nothing they do leaves
the machine (telemetry and updates off, the upstream a loopback fake)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kimi_gateway.testing import GatewayProcess
from tests import billing
from tests.fakes.agent import FINAL, CodingTask
from tests.fakes.upstream import FakeUpstream
from tests.fakes.web import ClaudeCodeSearch, Researcher, WebSite
from tests.services import require

AGENTS_DIR = Path(__file__).parent / "agents"
BIN = AGENTS_DIR / "node_modules" / ".bin"


@pytest.fixture(scope="module")
def installed() -> Path:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        require("Node.js", "node and npm are needed to run Claude Code and Codex")
    if not (BIN / "claude").exists() or not (BIN / "codex").exists():
        # The versions the lock file pins, from the npm registry: the suite's own install step.
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=AGENTS_DIR,
            check=True,
            capture_output=True,
            timeout=600,
        )
    return BIN


@pytest.fixture(scope="module")
def keyed(
    fake_servers: dict[str, FakeUpstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, str]]:
    gw = billing.start(tmp_path_factory.mktemp("agents"), billing.config(fake_servers["moon"]))
    ops = billing.Operator(gw)
    key = ops.key_for("acct_agents")
    ops.recharge("acct_agents", "5")
    yield gw, key
    gw.stop()


def _task(fakes: dict[str, FakeUpstream], work: Path, relative: bool) -> CodingTask:
    where = Path() if relative else work
    task = CodingTask(str(where / "hello.txt"), "hello from kimi", str(where / "count.txt"))
    fakes["moon"].agent = task
    return task


def _check_work(work: Path) -> None:
    assert (work / "hello.txt").read_text() == "hello from kimi"  # the model's Write / shell step
    assert (work / "count.txt").read_text().strip() == "15"  # its second step read the file back


def _codex(
    installed: Path, gw: GatewayProcess, key: str, home: Path, work: Path, prompt: str
) -> subprocess.CompletedProcess[str]:
    """`codex exec` with a model provider pointed at the gateway, as Codex's documentation describes
    custom providers."""
    (home / "config.toml").write_text(
        f'model = "{billing.K25}"\n'
        'model_provider = "kimi"\n'
        "[model_providers.kimi]\n"
        'name = "kimi-gateway"\n'
        f'base_url = "{gw.api}"\n'
        'env_key = "KIMI_GATEWAY_KEY"\n'
        'wire_api = "responses"\n'
    )
    env = {**_quiet_env(home), "CODEX_HOME": str(home), "KIMI_GATEWAY_KEY": key}
    return subprocess.run(
        [
            str(installed / "codex"),
            "exec",
            "--json",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",  # the test's own folder; no sandbox in CI
            prompt,
        ],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _quiet_env(home: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "OPENAI_", "CODEX_"))},
        "HOME": str(home),
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }


def test_claude_code_runs_a_tool_loop(
    installed: Path, keyed: tuple[GatewayProcess, str], fakes: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    gw, key = keyed
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    _task(fakes, work, relative=False)
    env = {**_quiet_env(home), "ANTHROPIC_BASE_URL": gw.base_url, "ANTHROPIC_API_KEY": key}
    run = subprocess.run(
        [
            str(installed / "claude"),
            "-p",
            "Write 'hello from kimi' to hello.txt, then count its bytes into count.txt.",
            "--model",
            billing.K25,
            "--output-format",
            "stream-json",
            "--verbose",
            "--allowedTools",
            "Write,Bash",  # as a user allows them (root may not skip permissions)
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    result = events[-1]
    assert result["type"] == "result" and result["subtype"] == "success", result
    assert result["result"] == FINAL
    tools = [
        block["name"]
        for event in events
        if event["type"] == "assistant"
        for block in event["message"]["content"]
        if block["type"] == "tool_use"
    ]
    assert tools == ["Write", "Bash"]
    _check_work(work)
    # Kimi K2.5 thinks: each replayed tool-call turn went upstream with its reasoning.
    turns = [r.body["messages"] for r in fakes["moon"].requests if r.body.get("tools")]
    replayed = [m for m in turns[-1] if m["role"] == "assistant" and m.get("tool_calls")]
    assert [m["reasoning_content"] for m in replayed] == ["Step 1: call Write.", "Step 2: call Bash."]


def test_codex_runs_a_tool_loop(
    installed: Path, keyed: tuple[GatewayProcess, str], fakes: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    gw, key = keyed
    work, home = tmp_path / "work", tmp_path / "codex"
    work.mkdir()
    home.mkdir()
    _task(fakes, work, relative=True)
    run = _codex(
        installed,
        gw,
        key,
        home,
        work,
        "Write 'hello from kimi' to hello.txt, then count its bytes into count.txt.",
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    items = [e["item"] for e in events if e["type"] == "item.completed"]
    commands = [i for i in items if i["type"] == "command_execution"]
    assert len(commands) == 2 and all(c["exit_code"] == 0 for c in commands), commands
    assert items[-1] == {**items[-1], "type": "agent_message", "text": FINAL}
    assert events[-1]["type"] == "turn.completed"
    _check_work(work)
    # Codex sends its tools grouped by namespace and a web_search tool: flattened, and left out.
    sent = fakes["moon"].requests[-1].body
    names = [t["function"]["name"] for t in sent["tools"]]
    assert "exec_command" in names and all(" " not in n for n in names)


def test_claude_code_web_search(
    installed: Path,
    fake_servers: dict[str, FakeUpstream],
    fakes: dict[str, FakeUpstream],
    tmp_path: Path,
) -> None:
    """Claude Code's WebSearch is Anthropic's server-side web search, asked for in a request of its own
    (`web_search_20250305`): the gateway runs it (a fake SearXNG on loopback stands in for the web), and
    Claude Code reads the results back and answers with their links."""
    site = WebSite()
    gw = billing.start(
        tmp_path / "gw",
        billing.config(
            fake_servers["moon"],
            extra=f'[tools.web_search]\nbackend = "searxng"\nbase_url = "{site.base_url}"\n',
        ),
    )
    try:
        ops = billing.Operator(gw)
        key = ops.key_for("acct_search")
        ops.recharge("acct_search", "5")
        fakes["moon"].agent = ClaudeCodeSearch("Kimi K2.5 release notes")
        work, home = tmp_path / "work", tmp_path / "home"
        work.mkdir()
        home.mkdir()
        env = {**_quiet_env(home), "ANTHROPIC_BASE_URL": gw.base_url, "ANTHROPIC_API_KEY": key}
        run = subprocess.run(
            [
                str(installed / "claude"),
                "-p",
                "Search the web for the Kimi K2.5 release notes and give me the link.",
                "--model",
                billing.K25,
                "--output-format",
                "stream-json",
                "--verbose",
                "--allowedTools",
                "WebSearch",
            ],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        result = events[-1]
        assert result["type"] == "result" and result["subtype"] == "success", result
        # The search ran on the backend, with the query Claude Code's WebSearch made of the model's call.
        assert site.searches and "Kimi K2.5 release notes" in site.searches[0]["query"]
        # Claude Code's own search request asked for Anthropic's server tool, and got its blocks back.
        searched = [r.body for r in fakes["moon"].requests if "web_search" in _tool_names(r.body)]
        assert searched, "the gateway offered the model its web_search function"
        assert result["result"].startswith("Here is what I found:")
        assert site.page("/kimi-k25") in result["result"]
    finally:
        gw.stop()
        site.stop()


def _tool_names(body: dict[str, Any]) -> set[str]:
    return {t["function"]["name"] for t in body.get("tools") or ()}


def test_codex_web_search(
    installed: Path,
    fake_servers: dict[str, FakeUpstream],
    fakes: dict[str, FakeUpstream],
    tmp_path: Path,
) -> None:
    """Codex's default `web_search` tool, run by the gateway where a search backend is set up: the model
    searches, Codex sees the search happen, and the answer carries the link."""
    site = WebSite()
    gw = billing.start(
        tmp_path / "gw",
        billing.config(
            fake_servers["moon"],
            extra=f'[tools.web_search]\nbackend = "searxng"\nbase_url = "{site.base_url}"\n',
        ),
    )
    try:
        ops = billing.Operator(gw)
        key = ops.key_for("acct_codex_search")
        ops.recharge("acct_codex_search", "5")
        fakes["moon"].agent = Researcher(fetch=False)
        work, home = tmp_path / "work", tmp_path / "codex"
        work.mkdir()
        home.mkdir()
        run = _codex(installed, gw, key, home, work, "Search the web for the Kimi K2.5 release notes.")
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        items = [e["item"] for e in events if e["type"] == "item.completed"]
        assert len(site.searches) == 1
        # The gateway offered the model its own web_search function in place of Codex's hosted tool.
        offered = _tool_names(fakes["moon"].requests[0].body)
        assert "web_search" in offered
        assert items[-1]["type"] == "agent_message" and site.page("/kimi-k25") in items[-1]["text"]
        assert events[-1]["type"] == "turn.completed"
    finally:
        gw.stop()
        site.stop()
