from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from kimi_gateway.testing import GatewayProcess


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path_factory.mktemp("gateway"))
    yield process
    process.stop()


@pytest.fixture(scope="session")
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.api, api_key="test-key", max_retries=0, timeout=120)


@pytest.fixture()
def start_gateway(tmp_path: Path) -> Iterator[type[GatewayProcess]]:
    """Start an extra gateway with its own config, stopped at the end of the test."""
    started: list[GatewayProcess] = []

    def start(config: str = "") -> GatewayProcess:
        process = GatewayProcess(tmp_path, config)
        started.append(process)
        return process

    yield start  # type: ignore[misc]
    for process in started:
        process.stop()
