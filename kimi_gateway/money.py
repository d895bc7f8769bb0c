"""Money: exact integer nano-dollars, and their conversions. Below accounts and stats, which both count it.

Sums of many charges stay exact in integers, where floats would drift; USD floats are for display only.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

NANO = 10**9  # nano-dollars in a dollar


def usd(nano: int) -> float:
    """Nano-dollars as USD, for display."""
    return nano / NANO


def nano(amount: Decimal | float | str) -> int:
    """A USD amount as nano-dollars, rounded half up."""
    return int((Decimal(str(amount)) * NANO).to_integral_value(ROUND_HALF_UP))
