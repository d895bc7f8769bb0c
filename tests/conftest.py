from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from kimi_gateway.testing import GatewayProcess, isolate_environment
from tests.fakes.upstream import FakeUpstream
from tests.upstreams import start_fakes, start_upstream_gateway


def pytest_configure(config: pytest.Config) -> None:
    """Whatever this machine holds (a key in ~/.local/share/kimi-gateway after following the README, a
    DATABASE_URL in the shell), the tests see none of it."""
    isolate_environment()


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


@pytest.fixture(scope="module")
def fake_servers() -> Iterator[dict[str, FakeUpstream]]:
    """One fake upstream per wire style, shared by a test module."""
    started = start_fakes()
    yield started
    for fake in started.values():
        fake.stop()


@pytest.fixture()
def fakes(fake_servers: dict[str, FakeUpstream]) -> dict[str, FakeUpstream]:
    """The module's fake upstreams, with scripts, recorded requests and caches cleared for this test."""
    for fake in fake_servers.values():
        fake.reset()
    return fake_servers


@pytest.fixture(scope="module")
def upstream_gateway(
    fake_servers: dict[str, FakeUpstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway wired to the module's fake upstreams, shared by the module's tests."""
    process = start_upstream_gateway(tmp_path_factory.mktemp("upstream"), fake_servers)
    yield process
    process.stop()
