"""What time on a slice costs, and how a cost splits into subsidy and co-pay. Pure functions.

The rounding rule (one rule, applied everywhere):

- A session's *list cost* up to a moment is computed exactly (a rational number of cents) over
  the price list's effective-dated pieces, then rounded **down** to the cent.
- Its *subsidy* up to that moment is the scheme's rate times that list cost, rounded **down**
  to the cent (the scheme never pays more than its rate); the *co-pay* is the rest.
- A charge for a period is the difference of these running totals at its two ends.

So the parts of every charge sum to its list cost to the cent, and what a session is charged
does not depend on how often metering ran: ticking every second or once at the end charges the
same cents. Rates are basis points (7000 = 70%); the scheme's share of a list amount is
`slicehub.common.money.subsidy_of`.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

from slicehub.common.money import subsidy_of

MICROS_PER_HOUR = 3_600_000_000


@dataclass(frozen=True)
class PricePoint:
    effective_from: datetime
    cents_per_hour: int


class PriceSchedule:
    """The effective-dated list price of one slice type."""

    def __init__(self, points: Iterable[PricePoint]):
        self.points = sorted(points, key=lambda p: p.effective_from)
        self._starts = [p.effective_from for p in self.points]

    def price_at(self, moment: datetime) -> int | None:
        i = bisect.bisect_right(self._starts, moment) - 1
        return self.points[i].cents_per_hour if i >= 0 else None

    def pieces(self, start: datetime, end: datetime):
        """(piece_start, piece_end, cents_per_hour) covering [start, end); raises if unpriced."""
        if end <= start:
            return
        i = bisect.bisect_right(self._starts, start) - 1
        if i < 0:
            raise LookupError(f"no list price in effect at {start.isoformat()}")
        t = start
        while t < end:
            nxt = self._starts[i + 1] if i + 1 < len(self.points) else None
            piece_end = min(end, nxt) if nxt is not None else end
            yield t, piece_end, self.points[i].cents_per_hour
            t = piece_end
            i += 1

    def exact_cost(self, start: datetime, end: datetime) -> Fraction:
        """List cost of [start, end) in cents, exactly (piecewise over price changes)."""
        return Fraction(self._micro_cents(start, end), MICROS_PER_HOUR)

    def cost(self, start: datetime, end: datetime) -> int:
        """List cost of [start, end), rounded down to the cent (integer arithmetic: exact)."""
        return self._micro_cents(start, end) // MICROS_PER_HOUR

    def _micro_cents(self, start: datetime, end: datetime) -> int:
        """Cents x microseconds / hour: sum of price x duration, before the one division."""
        return sum(price * micros(b - a) for a, b, price in self.pieces(start, end))

    def end_for_budget(self, start: datetime, budget_cents: int, limit: datetime) -> datetime:
        """The latest end (whole seconds, ≤ limit) such that cost(start, end) ≤ budget_cents."""
        remaining = Fraction(budget_cents)
        t = start
        for a, b, price in self.pieces(start, limit):
            piece = Fraction(price) * Fraction(micros(b - a), MICROS_PER_HOUR)
            if piece <= remaining:
                remaining -= piece
                t = b
                continue
            if price == 0:  # pragma: no cover - a free piece is always within budget
                t = b
                continue
            seconds = int(remaining * 3600 / price)
            return a + timedelta(seconds=seconds)
        return t


def micros(delta: timedelta) -> int:
    """A length of time in whole microseconds (exact, unlike `total_seconds`)."""
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class Split:
    list_cents: int
    subsidy_cents: int
    copay_cents: int


def split_increment(prev_list: int, new_list: int, rate_bp: int, subsidy_room: int) -> Split:
    """The charge between two running list totals of one session.

    `subsidy_room` is what the session may still draw from the subsidy (its hold's subsidy part
    not yet charged). When the room runs out (a `full_price` session past the subsidy) the rest
    is co-pay: the parts still sum to the list cost.
    """
    if new_list < prev_list:
        raise ValueError("running list totals never decrease")
    list_cents = new_list - prev_list
    want = subsidy_of(new_list, rate_bp) - subsidy_of(prev_list, rate_bp)
    subsidy = max(0, min(want, subsidy_room))
    return Split(list_cents, subsidy, list_cents - subsidy)


class PriceBook:
    """Price rows (anything with id, slice_type, effective_from, cents_per_hour): the
    schedule of each slice type as it was known when row `known` was the newest, built once."""

    def __init__(self, rows):
        self._by_type: dict[str, list] = {}
        for r in sorted(rows, key=lambda r: r.id):
            self._by_type.setdefault(r.slice_type, []).append(r)
        self._ids = {t: [r.id for r in rs] for t, rs in self._by_type.items()}
        self._cache: dict[tuple[str, int], PriceSchedule] = {}

    def schedule(self, slice_type: str, known: int) -> PriceSchedule:
        rows = self._by_type.get(slice_type, [])
        n = bisect.bisect_right(self._ids.get(slice_type, []), known)
        key = (slice_type, n)
        if key not in self._cache:
            self._cache[key] = PriceSchedule(
                PricePoint(r.effective_from, r.cents_per_hour) for r in rows[:n]
            )
        return self._cache[key]
