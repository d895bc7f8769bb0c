"""Credits: /api/v1/credits (OpenRouter's shape), recharges, and Moonshot's /v1/users/me/balance."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from kimi_gateway.accounts.keys import KeyRecord
from kimi_gateway.accounts.ledger import Totals, UnknownAccount
from kimi_gateway.errors import APIError
from kimi_gateway.http.body import parse_body
from kimi_gateway.money import usd
from kimi_gateway.runtime import Gateway

router = APIRouter(tags=["credits"])


class AddCredits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Decimal = Field(gt=0, max_digits=18, decimal_places=9)
    account_id: str | None = None  # the calling key's account when unset
    kind: Literal["recharge", "voucher"] = "recharge"
    note: str = Field(default="", max_length=500)


async def _totals(request: Request) -> Totals:
    key: KeyRecord | None = request.state.key
    if key is None:
        return Totals()  # bootstrap: no keys, so no accounts
    gateway: Gateway = request.app.state.gateway
    return await gateway.accounts.ledger.totals(key.account_id)


@router.get("/api/v1/credits", summary="Total credits and total usage of the calling key's account")
async def credits(request: Request) -> dict[str, Any]:
    totals = await _totals(request)
    return {
        "data": {
            "total_credits": usd(totals.recharged + totals.vouchers),
            "total_usage": usd(totals.charged),
        }
    }


@router.post("/api/v1/credits/add", summary="Recharge an account (management keys)")
async def add_credits(request: Request) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    body = await parse_body(request, AddCredits, 64 * 1024)
    key: KeyRecord | None = request.state.key
    account = body.account_id or (key.account_id if key else None)
    if account is None:
        raise APIError(
            400,
            "Name the account to recharge in 'account_id'.",
            param="account_id",
            code="missing_required_parameter",
        )
    try:
        entry = await gateway.accounts.credit(account, body.amount, body.kind, body.note)
    except UnknownAccount:
        raise APIError(404, f"No account '{account}'.", code="account_not_found") from None
    totals = await gateway.accounts.ledger.totals(account)
    tier = await gateway.accounts.tier(account)
    return {
        "data": {
            "id": entry,
            "account_id": account,
            "balance": usd(totals.balance),
            "total_credits": usd(totals.recharged + totals.vouchers),
            "tier": tier.tier,
        }
    }


@router.get("/v1/users/me/balance", summary="Balance, in the Kimi API's shape")
async def balance(request: Request) -> dict[str, Any]:
    totals = await _totals(request)
    return {
        "code": 0,
        "data": {
            "available_balance": usd(totals.balance),
            "voucher_balance": usd(totals.voucher_balance),
            "cash_balance": usd(totals.cash_balance),
        },
        "scode": "0x0",
        "status": True,
    }
