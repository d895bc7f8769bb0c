"""API keys: /api/v1/keys (management keys) and /api/v1/key (the calling key)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from kimi_gateway.accounts import history
from kimi_gateway.accounts.keys import KeyRecord
from kimi_gateway.errors import APIError
from kimi_gateway.http.body import parse_body
from kimi_gateway.http.replies import ORJSONResponse
from kimi_gateway.money import usd
from kimi_gateway.runtime import Gateway

router = APIRouter(tags=["keys"])


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["inference", "management"] = "inference"
    limit: Decimal | None = Field(default=None, ge=0)
    rate_limit_rpm: int | None = Field(default=None, ge=1)
    expires_at: datetime | None = None
    account_id: str | None = None


class PatchKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    disabled: bool | None = None
    limit: Decimal | None = Field(default=None, ge=0)
    rate_limit_rpm: int | None = Field(default=None, ge=1)


def _caller(request: Request) -> KeyRecord | None:
    key: KeyRecord | None = request.state.key
    return key


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def _owned(request: Request, hash_: str) -> KeyRecord:
    """A key the caller may manage: one of its own account (any key while no keys exist)."""
    record = await _gateway(request).keys.get(hash_)
    caller = _caller(request)
    if record is None or (caller is not None and record.account_id != caller.account_id):
        raise APIError(404, f"No key with hash '{hash_}'.", code="key_not_found")
    return record


@router.post("/api/v1/keys", summary="Create a key (the plaintext is returned only here)")
async def create_key(request: Request) -> Response:
    gateway = _gateway(request)
    body = await parse_body(request, CreateKey, gateway.config.server.max_body_bytes)
    caller = _caller(request)
    # Management keys are the operator's: they may open keys in any account (a new one is made on demand).
    account = body.account_id or (caller.account_id if caller is not None else None)
    key, record = await gateway.keys.create(
        name=body.name,
        kind=body.kind,
        account_id=account,
        credit_limit=body.limit,
        rpm=body.rate_limit_rpm,
        expires_at=body.expires_at,
    )
    return ORJSONResponse({"data": record.public(), "key": key}, status_code=201)


@router.get("/api/v1/keys", summary="List keys")
async def list_keys(request: Request) -> dict[str, Any]:
    caller = _caller(request)
    records = await _gateway(request).keys.list(caller.account_id if caller else None)
    return {"data": [r.public() for r in records]}


@router.get("/api/v1/keys/{hash_}", summary="Get a key")
async def get_key(hash_: str, request: Request) -> dict[str, Any]:
    return {"data": (await _owned(request, hash_)).public()}


@router.patch("/api/v1/keys/{hash_}", summary="Update a key")
async def patch_key(hash_: str, request: Request) -> dict[str, Any]:
    await _owned(request, hash_)
    gateway = _gateway(request)
    body = await parse_body(request, PatchKey, gateway.config.server.max_body_bytes)
    fields: dict[str, object] = {}
    if body.name is not None:
        fields["name"] = body.name
    if body.disabled is not None:
        fields["disabled"] = body.disabled
    if "limit" in body.model_fields_set:
        fields["credit_limit"] = body.limit
    if "rate_limit_rpm" in body.model_fields_set:
        fields["rpm"] = body.rate_limit_rpm
    record = await gateway.keys.update(hash_, **fields)
    assert record is not None
    return {"data": record.public()}


@router.delete("/api/v1/keys/{hash_}", summary="Delete (disable) a key")
async def delete_key(hash_: str, request: Request) -> dict[str, Any]:
    await _owned(request, hash_)
    # Disabled rather than removed: the ledger and generation records keep pointing at it.
    await _gateway(request).keys.set_disabled(hash_, True)
    return {"deleted": True}


@router.get("/api/v1/key", summary="The calling key")
async def current_key(request: Request) -> dict[str, Any]:
    caller = _caller(request)
    if caller is None:
        return {
            "data": {"label": None, "limit": None, "usage": 0, "is_management_key": False, "bootstrap": True}
        }
    gateway = _gateway(request)
    usage = usd(await gateway.accounts.ledger.key_usage(caller.hash))
    limit = float(caller.credit_limit) if caller.credit_limit is not None else None
    tier = await gateway.accounts.tier(caller.account_id)
    return {
        "data": {
            "label": caller.prefix,
            "name": caller.name,
            "limit": limit,
            "usage": usage,
            "limit_remaining": None if limit is None else max(0.0, limit - usage),
            "is_management_key": caller.kind == "management",
            "is_free_tier": tier.tier == 0,
            "tier": tier.tier,
            "rate_limit": {"requests": min(tier.rpm, caller.rpm or tier.rpm), "interval": "1m"},
            "concurrency": tier.concurrency,
            # Requests this key made in the last minute, against `rate_limit` (the console's gauge).
            "requests_last_minute": await history.last_minute(gateway.db, caller.account_id, caller.hash),
            "expires_at": caller.expires_at.isoformat() if caller.expires_at else None,
        }
    }
