"""What staff type at the `slicehub admin` command line, read and checked: amounts of HK$,
times and dates, rates, slice types, user and group names, months, output files.

Decides what such text may look like and turns it into ledger values (cents, aware datetimes,
basis points), refusing what cannot be meant (a negative amount, a time without a zone, an
ambiguous rate) with one sentence (`CliError`). The ledger decides every rule about money; this
module only makes sure it is asked something meaningful. The formats are listed for people in
`slicehub.quota.cli.FORMATS`.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

from slicehub.common import clock
from slicehub.common.money import BASIS_POINTS, format_money, parse_cents
from slicehub.common.names import GROUP_NAME, SLICE_TYPE_NAME

from . import statement
from .errors import MAX_CENTS, LedgerError
from .roster import normalise_username
from .statement import CENTRE_TZ
from .statement_render import hkt

MAX_PRICE_CENTS = 100_000_00  # HK$100,000 per slice-hour: far above any list price
WINDOW_EXAMPLE = "2026-11-24T09:00+08:00/2026-11-24T12:00+08:00"
_MONEY_TEXT = re.compile(r"^(HK\$\s*)?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?$")


class CliError(ValueError):
    """A command refused before the ledger sees it."""


def parse_money(text: str, what: str = "amount", limit: int = MAX_CENTS) -> int:
    """ "50,000.00" -> 5000000 cents; negative, inexact, malformed or absurd -> CliError."""
    t = text.strip()
    if t.startswith("-"):
        raise CliError(f"The {what} {t} is negative; amounts are zero or more.")
    if not _MONEY_TEXT.match(t):
        raise CliError(f"The {what} {t!r} is not an amount of HK$; write it like 50000.00.")
    try:
        cents = parse_cents(t)
    except ValueError as e:
        raise CliError(f"The {what} is wrong: {e}.") from None
    if cents > limit:
        raise CliError(
            f"The {what} of {format_money(cents)} is absurd (more than {format_money(limit)})."
        )
    return cents


def parse_rate(text: str) -> int:
    """ "70%" or "0.7" -> 7000 basis points."""
    t = text.strip()
    percent = t.endswith("%")
    try:
        value = Decimal(t.removesuffix("%").strip())
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite():
        raise CliError(f"The rate {t!r} is not a rate; write it like 70% or 0.7.")
    if not percent and value > 1:
        raise CliError(f"The rate {t!r} is ambiguous; write {t}% or {value / 100}.")
    bp = value * BASIS_POINTS / (100 if percent else 1)
    if not 0 <= bp <= BASIS_POINTS:
        raise CliError(f"The rate {t!r} is outside 0% to 100%.")
    if bp != bp.to_integral_value():
        raise CliError(f"The rate {t!r} is finer than 0.01%.")
    return int(bp)


def parse_when(text: str, *, end: bool = False, now: datetime | None = None) -> datetime:
    """An ISO 8601 time with an offset, or a plain date in Hong Kong time (see FORMATS)."""
    t = text.strip()
    if t == "now":
        return now or clock.utcnow()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", t):
        try:
            d = date.fromisoformat(t)
        except ValueError:
            raise CliError(f"{t!r} is not a date.") from None
        moment = datetime(d.year, d.month, d.day, tzinfo=CENTRE_TZ)
        moment = moment + timedelta(days=1) if end else moment
    else:
        try:
            moment = datetime.fromisoformat(t)
        except ValueError:
            raise CliError(
                f"{t!r} is not a time; write it like 2026-11-24T09:00+08:00 or 2026-11-24."
            ) from None
        if moment.tzinfo is None:
            raise CliError(f"{t!r} has no UTC offset; write it like {t}+08:00 for Hong Kong.")
    if not 2000 <= moment.year <= 2100:
        raise CliError(f"{t!r} is not a year the ledger expects; check the date.")
    return moment


def parse_period(start: str, until: str, what: str) -> tuple[datetime, datetime]:
    a, b = parse_when(start), parse_when(until, end=True)
    if b <= a:
        raise CliError(f"The {what} ends before it starts ({hkt(a)} to {hkt(b)} HKT).")
    return a, b


def parse_window(text: str) -> tuple[datetime, datetime]:
    """ "2026-11-24T09:00+08:00/2026-11-24T12:00+08:00" -> (start, end)."""
    parts = text.split("/")
    if len(parts) != 2:
        raise CliError(f"The window {text!r} is not START/END, e.g. {WINDOW_EXAMPLE}.")
    return parse_period(parts[0], parts[1], f"class window {text!r}")


def parse_types(text: str) -> list[str]:
    types = [t.strip() for t in text.split(",") if t.strip()]
    if not types:
        raise CliError("List the slice types the project may use, or '*' for all.")
    if "*" in types:
        if len(types) > 1:
            raise CliError("Give either '*' (every slice type) or a list of types, not both.")
        return types
    for t in types:
        if not SLICE_TYPE_NAME.fullmatch(t):
            raise CliError(f"{t!r} is not a slice type name, e.g. h100.1g.10gb.")
    if len(set(types)) != len(types):
        raise CliError(f"A slice type is listed twice in {text!r}.")
    return types


def parse_text(text: str, what: str, limit: int, empty: bool = False) -> str:
    t = text.strip()
    if not t and not empty:
        raise CliError(f"The {what} is empty.")
    if len(t) > limit:
        raise CliError(f"The {what} is longer than {limit} characters.")
    if any(ord(c) < 32 for c in t):
        raise CliError(f"The {what} contains control characters.")
    return t


def parse_month(text: str) -> str:
    try:
        starts, _ = statement.month_bounds(text)
    except LedgerError as e:
        raise CliError(str(e)) from None
    return f"{starts:%Y-%m}"


def parse_out(text: str) -> Path:
    out = Path(text)
    folder = out.resolve().parent
    if not folder.is_dir():
        raise CliError(f"Cannot write {out}: the folder {folder} does not exist.")
    if out.is_dir():
        raise CliError(f"Cannot write {out}: it is a folder.")
    return out


def parse_username(text: str) -> str:
    try:
        return normalise_username(text)
    except ValueError as e:
        raise CliError(str(e)[:1].upper() + str(e)[1:] + ".") from None


def parse_group(text: str) -> str:
    """A hub group's name, as the hub names it (case matters)."""
    t = text.strip()
    if not GROUP_NAME.fullmatch(t):
        raise CliError(
            f"{t[:100]!r} is not a group name: use letters, digits, '.', '_' and '-', at most "
            "100 characters, as the hub names the group."
        )
    return t


def parse_slice_type(text: str) -> str:
    t = text.strip()
    if not SLICE_TYPE_NAME.fullmatch(t):
        raise CliError(f"{t!r} is not a slice type name, e.g. h100.1g.10gb.")
    return t


def parse_limit(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise CliError(f"{text!r} is not a whole number.") from None
    if not 1 <= n <= 10_000:
        raise CliError("The limit must be from 1 to 10000.")
    return n


def parse_minutes(text: str, what: str) -> int:
    """ "15" or "15 min" -> 15: a project's idle window or warning lead, 1 to 1,440 minutes."""
    m = re.fullmatch(r"(\d{1,6})\s*(min)?", text.strip())
    if m is None:
        raise CliError(
            f"The {what} {text.strip()[:40]!r} is not a whole number of minutes, e.g. 15."
        )
    n = int(m.group(1))
    if not 1 <= n <= 1440:
        raise CliError(f"The {what} must be from 1 to 1,440 minutes (a day), not {n}.")
    return n
