"""What a valid application, score, decision text or scheme configuration is. Pure.

Every free-text field has a length limit and refuses control characters (multi-line fields keep
line breaks and tabs); HTML and formula text are stored as typed, since escaping is the pages'
job and neutralising formulas the exports'. A draft may be incomplete but never invalid: each
field it has is checked here, and `check_complete` says, at submission, what is still missing.
Each refusal is a `LedgerError` with a sentence, raised before anything is written.

What the limits are is decided here; who may change what, and when, is the workflow's
(`slicehub.quota.scheme.workflow`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from slicehub.common.names import SLICE_TYPE_NAME, USERNAME

from ..errors import LedgerError
from ..roster import EMAIL

ORG_TYPES = ("university", "research_institute", "company")
MAX_TITLE, MAX_ABSTRACT, MAX_AI_AREA, MAX_ORGANISATION = 200, 5000, 100, 200
MAX_JUSTIFICATION, MAX_COMMENT, MAX_TERMS, MAX_NARRATIVE = 2000, 2000, 5000, 10000
MAX_EMAIL = 254
MIN_GPU_HOURS, MAX_GPU_HOURS = 1, 100_000
MAX_MEMBERS, MAX_REQUESTS = 50, 20
MAX_PERIOD = timedelta(days=5 * 366)
MAX_SCORE = 10

# C0 controls, DEL and C1 controls; a multi-line field keeps \t, \n and \r
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class TeamMember:
    username: str
    email: str = ""


@dataclass(frozen=True)
class ComputeLine:
    """A compute request for one slice type: GPU-hours, and why (model size, data set,
    precision, training or inference, schedule)."""

    slice_type: str
    gpu_hours: int
    justification: str = ""


@dataclass(frozen=True)
class ApplicationInput:
    """The fields of an application as its applicant fills them in; a draft may leave any
    empty. `rate_bp` None: the scheme's standard rate."""

    email: str = ""
    organisation: str = ""
    org_type: str = ""
    title: str = ""
    abstract: str = ""
    ai_area: str = ""
    period_start: date | datetime | None = None
    period_end: date | datetime | None = None
    rate_bp: int | None = None
    members: Sequence[TeamMember] = field(default_factory=tuple)
    requests: Sequence[ComputeLine] = field(default_factory=tuple)


def check_text(what: str, value, limit: int, multiline: bool = False) -> str:
    """`value` as stored: a string of at most `limit` characters without control characters."""
    if not isinstance(value, str):
        raise LedgerError(f"The {what} must be text.")
    if len(value) > limit:
        raise LedgerError(
            f"The {what} is {len(value):,} characters long; at most {limit:,} are allowed."
        )
    if (_CONTROL_MULTILINE if multiline else _CONTROL).search(value):
        raise LedgerError(f"The {what} contains control characters; remove them.")
    return value


def check_email(what: str, value: str, required: bool = False) -> str:
    check_text(what, value, MAX_EMAIL)
    if (value or required) and not EMAIL.match(value):
        raise LedgerError(f"The {what} {value[:100]!r} is not an e-mail address.")
    return value


def check_username(what: str, value) -> str:
    if not isinstance(value, str) or not USERNAME.fullmatch(value):
        raise LedgerError(f"The {what} {str(value)[:100]!r} is not a hub user name.")
    return value


def day(what: str, value: date | datetime | None) -> datetime | None:
    """A date as the UTC midnight it starts at; an aware datetime must be one."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise LedgerError(f"The {what} needs a time zone.")
        value = value.astimezone(UTC)
        if value.timetz().replace(tzinfo=None) != time(0):
            raise LedgerError(f"The {what} must be a date (midnight UTC).")
        return value
    if isinstance(value, date):
        return datetime.combine(value, time(0), UTC)
    raise LedgerError(f"The {what} must be a date.")


def check_rate_bp(rate_bp, max_rate_bp: int) -> int:
    """A requested or decided rate: more than 0%, at most the scheme's highest rate."""
    if isinstance(rate_bp, bool) or not isinstance(rate_bp, int) or not 0 < rate_bp <= max_rate_bp:
        raise LedgerError(
            f"The subsidy rate must be more than 0% and at most {max_rate_bp / 100:g}%."
        )
    return rate_bp


def check_gpu_hours(slice_type: str, hours) -> int:
    if isinstance(hours, bool) or not isinstance(hours, int):
        raise LedgerError(f"The GPU-hours for {slice_type} must be a whole number.")
    if not MIN_GPU_HOURS <= hours <= MAX_GPU_HOURS:
        raise LedgerError(
            f"The GPU-hours for {slice_type} must be from {MIN_GPU_HOURS} to {MAX_GPU_HOURS:,}."
        )
    return hours


def check_draft(
    a: ApplicationInput,
    applicant: str,
    max_rate_bp: int,
    priced: Collection[str],
    known_users: Callable[[list[str]], set[str]],
) -> tuple[datetime | None, datetime | None]:
    """Refuse anything invalid in `a`, the fields of `applicant`'s draft; `priced`: the slice
    types with a list price now; `known_users` says which of some names are hub users. Returns
    the period as UTC midnights."""
    check_email("contact e-mail", a.email)
    check_text("organisation", a.organisation, MAX_ORGANISATION)
    if a.org_type and a.org_type not in ORG_TYPES:
        raise LedgerError(
            f"The organisation type {a.org_type[:40]!r} is unknown: use one of "
            f"{', '.join(ORG_TYPES)}."
        )
    check_text("title", a.title, MAX_TITLE)
    check_text("abstract", a.abstract, MAX_ABSTRACT, multiline=True)
    check_text("AI area", a.ai_area, MAX_AI_AREA)
    start, end = day("period's start", a.period_start), day("period's end", a.period_end)
    if start is not None and end is not None:
        if end <= start:
            raise LedgerError(
                f"The period ends before it starts ({start:%Y-%m-%d} to {end:%Y-%m-%d})."
            )
        if end - start > MAX_PERIOD:
            raise LedgerError("The period may last at most five years.")
    if a.rate_bp is not None:
        check_rate_bp(a.rate_bp, max_rate_bp)
    _check_members(a.members, applicant, known_users)
    _check_requests(a.requests, priced)
    return start, end


def _check_members(members, applicant: str, known_users) -> None:
    if len(members) > MAX_MEMBERS:
        raise LedgerError(f"A team may list at most {MAX_MEMBERS} members.")
    seen = set()
    for m in members:
        check_username("team member", m.username)
        check_email(f"e-mail of {m.username}", m.email)
        if m.username == applicant:
            raise LedgerError(f"{applicant} is the applicant (the PI); list only the others.")
        if m.username in seen:
            raise LedgerError(f"{m.username} is listed twice in the team.")
        seen.add(m.username)
    names = sorted(seen | {applicant})
    unknown = sorted(set(names) - set(known_users(names)))
    if unknown:
        raise LedgerError(
            f"Not a hub user: {', '.join(unknown)}; each team member must have signed in to "
            "the hub once."
        )


def _check_requests(requests, priced: Collection[str]) -> None:
    if len(requests) > MAX_REQUESTS:
        raise LedgerError(f"An application may request at most {MAX_REQUESTS} slice types.")
    seen = set()
    for r in requests:
        if not isinstance(r.slice_type, str) or not SLICE_TYPE_NAME.fullmatch(r.slice_type):
            raise LedgerError(f"{str(r.slice_type)[:64]!r} is not a slice type name.")
        if r.slice_type not in priced:
            raise LedgerError(
                f"{r.slice_type} has no list price; request a slice type the centre sells."
            )
        if r.slice_type in seen:
            raise LedgerError(f"{r.slice_type} is requested twice; give it one line.")
        seen.add(r.slice_type)
        check_gpu_hours(r.slice_type, r.gpu_hours)
        check_text(f"justification for {r.slice_type}", r.justification, MAX_JUSTIFICATION, True)


def check_complete(app, requests) -> None:
    """Refuse to submit application `app` (a row) with compute `requests` (rows) while a field
    it needs is empty, naming every one that is."""
    missing = [
        name
        for name, value in (
            ("contact e-mail", app.email),
            ("organisation", app.organisation),
            ("organisation type", app.org_type),
            ("title", app.title),
            ("abstract", app.abstract.strip()),
            ("AI area", app.ai_area),
            ("period's start", app.period_start),
            ("period's end", app.period_end),
        )
        if not value
    ]
    if not requests:
        missing.append("a compute request")
    missing += [
        f"justification for {r.slice_type}" for r in requests if not r.justification.strip()
    ]
    if missing:
        raise LedgerError(f"The application is not complete: it lacks {', '.join(missing)}.")


def check_criteria(criteria) -> str:
    """A scheme's criteria as stored (JSON): a list of {"key", "title", "weight"}, keys unique
    (letters, digits, '_', '-'), titles ≤200 characters, whole weights summing to 100."""
    if not isinstance(criteria, list) or not criteria:
        raise LedgerError("List the scheme's criteria, each with a key, a title and a weight.")
    keys = set()
    for c in criteria:
        if not isinstance(c, dict) or set(c) != {"key", "title", "weight"}:
            raise LedgerError('Each criterion has exactly "key", "title" and "weight".')
        key, weight = c["key"], c["weight"]
        if not isinstance(key, str) or not re.fullmatch(r"[a-z0-9_-]{1,64}", key):
            raise LedgerError(f"{str(key)[:64]!r} is not a criterion key (a-z, 0-9, '_', '-').")
        if key in keys:
            raise LedgerError(f"The criterion {key} is listed twice.")
        keys.add(key)
        check_text(f"title of criterion {key}", c["title"], 200)
        if isinstance(weight, bool) or not isinstance(weight, int) or weight <= 0:
            raise LedgerError(f"The weight of criterion {key} must be a whole number above 0.")
    total = sum(c["weight"] for c in criteria)
    if total != 100:
        raise LedgerError(f"The criteria's weights sum to {total}; they must sum to 100.")
    return json.dumps(criteria)
