"""Money: an integer number of cents of the site's currency (HKD), never a float.

One parser (`parse_cents`) for what people and site files write, one formatter (`format_money`)
for what people read. Rates are basis points (7000 = 70%); the scheme's share of a list amount
is `subsidy_of`, rounded down (the scheme never pays more than its rate).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

CURRENCY_SYMBOLS = {"HKD": "HK$"}
BASIS_POINTS = 10_000  # a rate of 7000 basis points is 70%


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


def subsidy_of(list_cents: int, rate_bp: int) -> int:
    """The scheme's share of a list amount: rate times list, rounded down to the cent."""
    if not 0 <= rate_bp <= BASIS_POINTS:
        raise ValueError(f"subsidy rate {rate_bp} bp is outside 0..{BASIS_POINTS}")
    return list_cents * rate_bp // BASIS_POINTS
