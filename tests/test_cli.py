"""The kimi-gateway command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kimi_gateway", *args], capture_output=True, text=True, timeout=timeout
    )


def test_models_command_lists_catalog_and_availability() -> None:
    result = _cli("models")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[0] == "MODEL"
    local = next(line for line in lines if line.startswith(LOCAL_MODEL))
    assert local.split()[-1] == "local"
    k25 = next(line for line in lines if line.startswith("kimi-k2.5 "))
    assert "unavailable" in k25 and "0.60" in k25 and "0.15" in k25 and "3.00" in k25


def test_chat_command_streams_an_answer(gateway: GatewayProcess) -> None:
    result = _cli(
        "chat",
        "What is the capital of France?",
        "--system",
        "Answer the question briefly.",
        "--temperature",
        "0",
        "--max-tokens",
        "30",
        "--base-url",
        gateway.api,
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_chat_command_starts_an_in_process_gateway_when_none_runs() -> None:
    # No --base-url and nothing on the configured port: the command serves itself.
    result = _cli("chat", "Say hello", "--max-tokens", "5", "--base-url", "")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    # A terminal user sees the answer: no log lines, and no traceback at exit.
    assert '{"ts"' not in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]


def test_chat_command_reports_errors() -> None:
    result = _cli("chat", "hi", "--model", "kimi-k2.5", "--base-url", "")
    assert result.returncode == 1
    assert "503" in result.stderr


def test_several_workers_without_redis_are_refused_once_keys_exist(tmp_path: Path) -> None:
    """Each worker would hold credit and count limits on its own (a $0.01 account spent $0.012 on two)."""
    config = tmp_path / "gateway.toml"
    config.write_text('data_dir = "data"\n')
    serve = [sys.executable, "-m", "kimi_gateway", "serve", "--config", str(config), "--workers", "2"]
    made = subprocess.run(
        [sys.executable, "-m", "kimi_gateway", "keys", "create", "--name", "one", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    refused = subprocess.run([*serve, "--port", "1"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "without Redis" in refused.stderr, refused.stderr
