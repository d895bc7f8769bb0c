"""The API description says what the API does: schemathesis generates requests for every operation in
/openapi.json, against a real gateway with keys and fake providers, and checks each answer: no 5xx, a
documented status and content type, and a body that matches its schema."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from kimi_gateway.testing import GatewayProcess
from tests.billing import Operator
from tests.fakes.upstream import FakeUpstream
from tests.upstreams import MODEL, start_upstream_gateway

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MANAGEMENT = ("/api/v1/keys", "/api/v1/credits/add")


@pytest.fixture(scope="module")
def keyed(
    fake_servers: dict[str, FakeUpstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, dict[str, str], dict[str, str]]]:
    gw = start_upstream_gateway(tmp_path_factory.mktemp("schemathesis"), fake_servers)
    ops = Operator(gw)
    inference = ops.key_for("acct_fuzz")
    ops.recharge("acct_fuzz", "1000")
    yield gw, ops.headers, {"Authorization": f"Bearer {inference}"}
    gw.stop()


def _operations() -> list[str]:
    """Every operation the document lists, as "METHOD /path" (pytest ids)."""
    from kimi_gateway.config import GatewayConfig
    from kimi_gateway.http.app import create_api

    with tempfile.TemporaryDirectory() as folder:
        doc = create_api(GatewayConfig(data_dir=Path(folder))).openapi()
    return [f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops]


@pytest.fixture(scope="module")
def api_schema(keyed: tuple[GatewayProcess, dict[str, str], dict[str, str]]) -> Any:
    return schemathesis.openapi.from_url(keyed[0].base_url + "/openapi.json")


@pytest.mark.parametrize("operation", _operations())
def test_every_operation_answers_as_documented(
    operation: str, api_schema: Any, keyed: tuple[GatewayProcess, dict[str, str], dict[str, str]]
) -> None:
    """Bounded: a few derandomized examples per operation, so a run costs seconds, not minutes."""
    _, management, inference = keyed
    method, path = operation.split(" ", 1)
    found = api_schema[path][method]

    @given(case=found.as_strategy())
    @settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        if isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = MODEL  # a model that exists, so generation requests get past routing
            case.body.pop("models", None)
        headers = management if case.path.startswith(MANAGEMENT) else inference
        case.call_and_validate(headers=headers, checks=CHECKS)

    check()
