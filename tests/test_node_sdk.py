"""The official `openai` Node SDK (tests/node, pinned by its package-lock.json) against a real gateway:
chat, streaming, tools, json_schema, files, typed errors and the Responses API, run by `node`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess
from tests.fakes.agent import ToolCaller
from tests.fakes.upstream import FakeUpstream
from tests.services import require

NODE_DIR = Path(__file__).parent / "node"


def _node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        require("Node.js", "node and npm are needed to run the Node SDK checks")
    if not all((NODE_DIR / "node_modules" / name).is_dir() for name in ("openai", "ai", "@ai-sdk/openai")):
        # The SDK at the version the lock file pins, from the npm registry: the suite's own install step.
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, capture_output=True, timeout=300
        )
    return node


def test_node_sdk_against_the_embedded_model(gateway: GatewayProcess) -> None:
    node = _node()
    run = subprocess.run(
        [node, "sdk_check.mjs", gateway.api, LOCAL_MODEL],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(results) == {"chat", "stream", "tools", "json_schema", "files", "errors", "responses"}
    assert results["errors"] == "typed" and isinstance(results["json_schema"], dict)


def test_ai_sdk_with_each_provider_s_defaults(
    upstream_gateway: GatewayProcess, fakes: dict[str, FakeUpstream]
) -> None:
    """The AI SDK through each of its providers (OpenAI's Responses by default and its chat, Anthropic's
    Messages, the openai-compatible one), on Kimi K2.5 with thinking on: a tool loop (generateText with
    stopWhen), streamText and generateObject. Each provider speaks another of the gateway's APIs, and
    replays the model's reasoning its own way (or not at all, as the chat provider)."""
    node = _node()
    fakes["moon"].agent = ToolCaller()
    run = subprocess.run(
        [node, "ai_sdk_check.mjs", upstream_gateway.base_url, "kimi-k2.5"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(results) == {"openai-responses", "openai-chat", "anthropic", "openai-compatible"}
    for name, got in results.items():
        assert got["tools"] == {"text": "It is sunny in Paris.", "steps": 2, "calls": ["Paris"]}, name
        assert got["stream"] == "It is sunny in Paris.", name
        assert got["object"]["city"] == "Paris" and got["object"]["celsius"] > 20, name
