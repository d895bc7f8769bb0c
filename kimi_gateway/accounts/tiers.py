"""Rate-limit tiers: an account's tier follows its cumulative recharge."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from kimi_gateway.storage import Database
from kimi_gateway.storage.models import Tier as TierRow


@dataclass(frozen=True, slots=True)
class Tier:
    tier: int
    min_recharge: float  # USD, cumulative
    concurrency: int
    rpm: int


# Kimi API's published table (platform.moonshot.ai/docs/pricing/limits), with tiers 1-3 and 5 as the
# gateway's issue fixed them. Tier 0 is the free tier every account starts in.
DEFAULT_TIERS: tuple[Tier, ...] = (
    Tier(0, 0.0, 1, 3),
    Tier(1, 10.0, 50, 200),
    Tier(2, 100.0, 100, 500),
    Tier(3, 500.0, 300, 2_000),
    Tier(4, 1_000.0, 400, 5_000),
    Tier(5, 3_000.0, 1_000, 10_000),
)


def tier_for(recharged_usd: float, tiers: Sequence[Tier]) -> Tier:
    """The highest tier whose threshold the account's cumulative recharge reaches."""
    reached = [t for t in tiers if recharged_usd >= t.min_recharge]
    return max(reached, key=lambda t: t.min_recharge) if reached else min(tiers, key=lambda t: t.min_recharge)


async def store_tiers(db: Database, tiers: Sequence[Tier]) -> None:
    """Keep the tiers table equal to the configured tiers, for anything reading the database directly."""
    try:
        async with db.session() as session, session.begin():
            await session.execute(delete(TierRow))
            session.add_all(
                TierRow(
                    tier=t.tier,
                    min_recharge=Decimal(str(t.min_recharge)),
                    concurrency=t.concurrency,
                    rpm=t.rpm,
                )
                for t in tiers
            )
    except IntegrityError:
        pass  # another replica starting at the same moment wrote the same table
