"""What the ledger refuses, and the checks of staff input that refuse it.

`LedgerError` is the one exception for a request the ledger will not carry out: its message is a
sentence a researcher or a member of staff understands, its `status` the HTTP status the API
answers with. The checks here (amounts, rates, date windows) are the ones every admin verb
applies before it writes; they decide what a value may be, not what the ledger does with it.
"""

from __future__ import annotations

from datetime import datetime

from slicehub.common.money import BASIS_POINTS, format_money

MAX_CENTS = 10**13  # HK$100 billion: a typo, not a grant


class LedgerError(ValueError):
    """A request the ledger refuses; `status` is the HTTP status an API answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def check_amount(what: str, cents, positive: bool = False) -> None:
    """A whole number of cents, at least zero (more than zero when `positive`), not absurd."""
    if isinstance(cents, bool) or not isinstance(cents, int):
        raise LedgerError(f"The {what} must be a whole number of cents.")
    if cents < 0 or (positive and cents == 0):
        raise LedgerError(f"The {what} must be {'more than' if positive else 'at least'} zero.")
    if cents > MAX_CENTS:
        raise LedgerError(f"The {what} of {format_money(cents)} is absurd; check the amount.")


def check_rate(rate_bp) -> None:
    """A subsidy rate in basis points, 0% to 100%."""
    if (
        isinstance(rate_bp, bool)
        or not isinstance(rate_bp, int)
        or not 0 <= rate_bp <= BASIS_POINTS
    ):
        raise LedgerError("The subsidy rate must be between 0% and 100%.")


def check_window(what: str, start: datetime, end: datetime) -> None:
    """Two aware moments, the end after the start."""
    if start.tzinfo is None or end.tzinfo is None:
        raise LedgerError(f"The {what} dates need a time zone.")
    if end <= start:
        raise LedgerError(f"The {what} ends before it starts ({start:%Y-%m-%d} to {end:%Y-%m-%d}).")
