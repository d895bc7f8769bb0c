"""Swarm runs (core/swarm.py): GET /api/v1/agents/runs/{id} gives a run's tree (agents, their tasks,
status, steps, tool calls, tokens, cost, timings); .../events streams it, a tree each time it changes,
until the run ends. A run is its account's: another account's is not found."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from kimi_gateway.accounts.keys import KeyRecord
from kimi_gateway.core.swarm import watch
from kimi_gateway.errors import APIError
from kimi_gateway.http.replies import FastSSEResponse
from kimi_gateway.http.sse import sse_line
from kimi_gateway.runtime import Gateway

router = APIRouter(tags=["agents"])


def _not_found(run_id: str) -> APIError:
    return APIError(404, f"No agent run found with id '{run_id}'.", code="not_found")


def _account(request: Request) -> str | None:
    key: KeyRecord | None = request.state.key
    return key.account_id if key is not None else None


@router.get("/api/v1/agents/runs/{run_id}", summary="A swarm run's tree of agents")
async def agent_run(run_id: str, request: Request) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    tree = await gateway.runs.lookup(run_id[:80], _account(request))
    if tree is None:
        raise _not_found(run_id)
    return {"data": tree}


@router.get("/api/v1/agents/runs/{run_id}/events", summary="A swarm run's tree, each time it changes")
async def agent_run_events(run_id: str, request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    account = _account(request)
    run = gateway.runs.get(run_id[:80])
    if run is None or run.account_id != account:
        stored = await gateway.runs.lookup(run_id[:80], account)  # ended, or on another replica: once
        if stored is None:
            raise _not_found(run_id)

        async def once() -> AsyncIterator[bytes]:
            yield sse_line(stored)

        return FastSSEResponse(once(), {"Cache-Control": "no-cache"})

    async def trees() -> AsyncIterator[bytes]:
        async for tree in watch(run):
            yield sse_line(tree)

    return FastSSEResponse(trees(), {"Cache-Control": "no-cache"})
