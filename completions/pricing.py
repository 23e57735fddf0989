"""Cost of a request from a route's prices (USD per million tokens), to the nano-dollar."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

MILLION = Decimal(1_000_000)
NANO = Decimal("0.000000001")


def cost(prompt_tokens: int, completion_tokens: int, input_price: Decimal, output_price: Decimal) -> Decimal:
    """USD, rounded half-up to 1e-9."""
    raw = (prompt_tokens * input_price + completion_tokens * output_price) / MILLION
    return raw.quantize(NANO, rounding=ROUND_HALF_UP)


def cost_nanos(prompt_tokens: int, completion_tokens: int, input_price: Decimal, output_price: Decimal) -> int:
    """The same cost as an integer number of 1e-9 USD."""
    return int(cost(prompt_tokens, completion_tokens, input_price, output_price) * 1_000_000_000)
