"""What the scheme's HTML forms send, read into the workflow's inputs. Pure.

A form field arrives as text (`Form`: name -> list of values, as tornado parses a POST). This
module turns it into the types the verbs take (whole numbers, rates in basis points, cents,
dates, team members, compute lines) and refuses, with a `LedgerError` sentence, only what is
not of that type ("72.5" is a rate, "seventy" is not). Whether a value is allowed (a rate up to
the scheme's highest, a team member who is a hub user, a title of at most 200 characters) is
decided by `slicehub.quota.scheme.validate` when the verb runs, so the pages and the REST API
refuse the same input with the same sentence.

Blank rows are not rows: a team row with neither name nor e-mail, a compute line with neither
GPU-hours nor justification. Single-line fields are stripped of surrounding spaces; multi-line
ones (abstract, justifications, terms, reasons, narrative) are kept as typed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation

from slicehub.common.money import parse_cents

from ..errors import LedgerError
from .validate import ApplicationInput, ComputeLine, TeamMember

Form = Mapping[str, Sequence[str]]

APPLICATION_FIELDS = ("email", "organisation", "org_type", "title", "ai_area")


def one(form: Form, name: str, strip: bool = True) -> str:
    values = form.get(name) or [""]
    return values[0].strip() if strip else values[0]


def many(form: Form, name: str, strip: bool = True) -> list[str]:
    return [v.strip() if strip else v for v in form.get(name) or []]


def whole(what: str, text: str) -> int | None:
    """A whole number typed in a form ("1,200" too); None when blank."""
    text = text.replace(",", "").strip()
    if not text:
        return None
    if not re.fullmatch(r"[+-]?\d{1,12}", text):
        raise LedgerError(f"The {what} must be a whole number; {text[:40]!r} is not one.")
    return int(text)


def rate_bp(text: str) -> int | None:
    """A rate typed as a percentage ("70", "72.5", "70%") in basis points; None when blank."""
    text = text.strip().removesuffix("%").strip()
    if not text:
        return None
    try:
        percent = Decimal(text)
    except InvalidOperation:
        percent = None
    if percent is None or not percent.is_finite() or (percent * 100) % 1:
        raise LedgerError(
            f"The subsidy rate is a percentage such as 70 or 72.5; {text[:40]!r} is not one."
        )
    return int(percent * 100)


def percent_text(bp: int | None) -> str:
    """7000 -> "70", 7250 -> "72.5": a rate as the form shows it."""
    if bp is None:
        return ""
    return f"{Decimal(bp) / 100:f}".rstrip("0").rstrip(".") if bp % 100 else str(bp // 100)


def cents(what: str, text: str) -> int | None:
    """An amount typed in Hong Kong dollars ("1200", "HK$1,200.50") in cents; None when blank."""
    if not text.strip():
        return None
    try:
        return parse_cents(text)
    except ValueError:
        raise LedgerError(
            f"The {what} is an amount in HK$ such as 1200 or 1,200.50; {text.strip()[:40]!r} "
            "is not one."
        ) from None


def money_text(amount: int | None) -> str:
    """Cents as the form shows them: 120050 -> "1200.50"."""
    if amount is None:
        return ""
    return f"{amount // 100}.{amount % 100:02d}"


def a_date(what: str, text: str) -> date | None:
    """A date typed as YYYY-MM-DD (what a date input sends); None when blank."""
    text = text.strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise LedgerError(
            f"The {what} must be a date (YYYY-MM-DD); {text[:40]!r} is not one."
        ) from None


def team(form: Form) -> list[TeamMember]:
    """The team rows (member_username, member_email), blank rows dropped."""
    names, emails = many(form, "member_username"), many(form, "member_email")
    emails += [""] * (len(names) - len(emails))
    out = []
    for name, email in zip(names, emails, strict=False):
        if not name and not email:
            continue
        if not name:
            raise LedgerError(f"Give the hub user name of the team member {email[:100]!r}.")
        out.append(TeamMember(name, email))
    return out


def compute_lines(form: Form) -> list[ComputeLine]:
    """The compute lines (slice_type, gpu_hours, justification, in order), blank lines
    dropped."""
    types = many(form, "slice_type")
    hours = many(form, "gpu_hours")
    why = many(form, "justification", strip=False)
    hours += [""] * (len(types) - len(hours))
    why += [""] * (len(types) - len(why))
    out = []
    for slice_type, h, text in zip(types, hours, why, strict=False):
        if not h and not text.strip():
            continue
        n = whole(f"GPU-hours for {slice_type}", h)
        if n is None:
            raise LedgerError(f"Give the GPU-hours for {slice_type}, or clear its justification.")
        out.append(ComputeLine(slice_type, n, text))
    return out


def application(form: Form) -> ApplicationInput:
    """The application form's fields as the workflow's `ApplicationInput`."""
    return ApplicationInput(
        **{name: one(form, name) for name in APPLICATION_FIELDS},
        abstract=one(form, "abstract", strip=False),
        period_start=a_date("period's start", one(form, "period_start")),
        period_end=a_date("period's end", one(form, "period_end")),
        rate_bp=rate_bp(one(form, "rate")),
        members=team(form),
        requests=compute_lines(form),
    )


def names(text: str) -> list[str]:
    """Hub user names separated by commas, spaces or lines."""
    return [name for name in re.split(r"[\s,;]+", text) if name]


def scores(form: Form, keys: Sequence[str]) -> tuple[dict[str, int], dict[str, str]]:
    """A reviewer's scores and comments per criterion key (score-KEY, comment-KEY); a blank
    score is left out, so the verb names it as missing."""
    values, comments = {}, {}
    for key in keys:
        n = whole(f"score for {key}", one(form, f"score-{key}"))
        if n is not None:
            values[key] = n
        comments[key] = one(form, f"comment-{key}", strip=False)
    return values, comments


def decision(form: Form) -> dict:
    """The decision form's fields as `SchemeWorkflow.decide`'s keyword arguments; blank fields
    are left to the decision's defaults (what was asked, at today's prices)."""
    compute = {}
    for slice_type, h in zip(many(form, "slice_type"), many(form, "gpu_hours"), strict=False):
        n = whole(f"GPU-hours for {slice_type}", h)
        if n is not None:
            compute[slice_type] = n
    return {
        "reasons": one(form, "reasons", strip=False),
        "terms": one(form, "terms", strip=False),
        "amount_cents": cents("approved subsidy", one(form, "amount")),
        "rate_bp": rate_bp(one(form, "rate")),
        "compute": compute or None,
        "valid_from": a_date("validity's start", one(form, "valid_from")),
        "valid_until": a_date("validity's end", one(form, "valid_until")),
        "slug": one(form, "slug") or None,
    }


def change_request(form: Form) -> dict:
    """The change request form's fields as `SchemeWorkflow.request_change`'s keyword
    arguments (the kind decides which of them count)."""
    kind = one(form, "kind")
    return {
        "amount_cents": cents("top-up", one(form, "amount")) if kind == "top_up" else None,
        "valid_until": a_date("new end", one(form, "valid_until")) if kind == "extension" else None,
        "add": team(form) if kind == "members" else (),
        "remove": names(one(form, "remove")) if kind == "members" else (),
    }
