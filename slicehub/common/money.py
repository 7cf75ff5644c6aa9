"""Money: an integer number of cents of the site's currency (HKD), never a float.

One parser (`parse_cents`) for what people and site files write, one formatter (`format_money`)
for what people read.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

CURRENCY_SYMBOLS = {"HKD": "HK$"}


def parse_cents(value: str | int | Decimal) -> int:
    """ "38.00", "38", 38, Decimal("38.5") -> cents. Raises ValueError for anything else:
    floats (inexact), more than two decimals, negative amounts, non-numbers."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(
            f'{value!r} is a floating-point number; write money as a string such as "38.00"'
        )
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str):
        text = value.strip().removeprefix("HK$").replace(",", "").strip()
        try:
            amount = Decimal(text)
        except InvalidOperation:
            raise ValueError(f'{value!r} is not an amount of money (e.g. "38.00")') from None
    else:
        raise ValueError(f'{value!r} is not an amount of money (e.g. "38.00")')
    if not amount.is_finite():
        raise ValueError(f"{value!r} is not a finite amount")
    if amount < 0:
        raise ValueError(f"{value!r} is negative")
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"{value!r} has more than two decimals")
    return int(cents)


def format_money(cents: int, currency: str = "HKD") -> str:
    """12345 -> "HK$123.45"; -500 -> "-HK$5.00"."""
    if not isinstance(cents, int) or isinstance(cents, bool):
        raise TypeError(f"money is an int of cents, not {type(cents).__name__}")
    symbol = CURRENCY_SYMBOLS.get(currency, currency + " ")
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{symbol}{whole:,}.{part:02d}"
