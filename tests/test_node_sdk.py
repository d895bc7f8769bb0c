"""The official `openai` Node SDK (tests/node, pinned by its package-lock.json) against a real gateway:
chat, streaming, tools, json_schema, files, typed errors and the Responses API, run by `node`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess
from tests.services import require

NODE_DIR = Path(__file__).parent / "node"


def _node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        require("Node.js", "node and npm are needed to run the Node SDK checks")
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
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
