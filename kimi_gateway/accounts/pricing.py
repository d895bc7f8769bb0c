"""What a request costs: exact integer nano-dollars, from token counts and an endpoint's prices.

Prices are USD per million tokens, so one token at price P costs P x 1,000 nano-dollars; integers keep sums
exact across thousands of charges, where floats would drift.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from kimi_gateway.catalog import Pricing

_PER_TOKEN = Decimal(1000)  # nano-dollars per token for a price of $1 per million


@lru_cache(maxsize=1024)  # a catalog has a handful of prices; each request asks for several
def nano_per_token(price_per_million: float) -> Decimal:
    """One token's price in nano-dollars, exactly."""
    return Decimal(str(price_per_million)) * _PER_TOKEN


@lru_cache(maxsize=1024)
def _pico_per_token(price_per_million: float) -> int | None:
    """One token's price in pico-dollars when that is whole (any price with up to six decimals)."""
    pico = Decimal(str(price_per_million)) * 10**6
    return int(pico) if pico == pico.to_integral_value() else None


def _nano(*terms: tuple[int, float]) -> int:
    """Sum of tokens x price (USD per million), in nano-dollars rounded half up."""
    pico = 0
    for tokens, price in terms:
        rate = _pico_per_token(price)
        if rate is None:
            break
        pico += tokens * rate
    else:
        # Integer arithmetic: the same result as the Decimal sum below, at a fraction of its cost.
        return (pico + 500) // 1000 if pico >= 0 else -((-pico + 500) // 1000)
    total = sum((tokens * nano_per_token(price) for tokens, price in terms), Decimal(0))
    return int(total.to_integral_value(ROUND_HALF_UP))


def cost_nano(pricing: Pricing, prompt: int, cached: int, completion: int) -> int:
    """Uncached prompt at the input price, cached prompt at the cached-input price, output (reasoning
    included) at the output price."""
    cached = min(max(cached, 0), prompt)
    return _nano((prompt - cached, pricing.input), (cached, pricing.cached), (completion, pricing.output))


def worst_case_nano(prices: Iterable[Pricing], prompt: int, max_tokens: int) -> int:
    """The most the request can cost: nothing cached, every output token used, at the dearest candidate."""
    return max((_nano((prompt, p.input), (max_tokens, p.output)) for p in prices), default=0)


def affordable_tokens(prices: Iterable[Pricing], prompt: int, available: int) -> int:
    """How many output tokens `available` nano-dollars pay for after the prompt, at the dearest candidate."""
    prices = list(prices)
    input_price = max((nano_per_token(p.input) for p in prices), default=Decimal(0))
    output_price = max((nano_per_token(p.output) for p in prices), default=Decimal(0))
    left = Decimal(available) - prompt * input_price
    if left <= 0:
        return 0
    if output_price == 0:
        return 2**31
    return int(left / output_price)
