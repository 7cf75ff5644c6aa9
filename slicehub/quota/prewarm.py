"""Pre-warming a class: the rules. Pure.

A course that pre-warms has servers started for its students `lead` before each class window, on
the course's slice type, so that a student pressing Start inside the window finds a running
server. Who the server belongs to was the design question (docs/classes.md): it is started under
the rostered student's own hub account and Unix account, never from a shared pool, so it is only
ever reachable by that student (JupyterHub's own `access:servers!server=<student>/`), it runs
in their home, and nothing has to be handed from one identity to another.

Money: a pre-warmed server's session is held on the course's pre-warm payer (the course itself,
or a project of the centre's), marked with its class window; it never counts against the
student's cap. When the student first reaches their server inside the window, they *claim* it:
the pre-warmed session is released at that second ("claimed", charged to the payer to the cent)
and the student's own session opens from that second, on the course, by the ordinary hold rules
(their cap, the class window's end). A server nobody claims by `claim` minutes into the window
is stopped ("unclaimed"): what it cost is the waste the course statement reports.

A window's phases, with lead L and claim C (`phase`):

    before       now < start - L                 nothing yet
    warming      start - L <= now < start        servers are started; a claim waits for start
    claimable    start <= now < start + C        servers are started and claimed
    closing      start + C <= now < end          unclaimed servers are stopped; no new ones
    over         end <= now

What this module does not decide: the ordinary hold rules (`slicehub.quota.hold`), which server
starts when (the classroom service, `slicehub.classroom`), and how the ledger writes it
(`slicehub.quota.prewarm_ledger`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from slicehub.common.names import SLICE_TYPE_NAME

from .errors import LedgerError

MAX_LEAD_MINUTES = 120
MAX_CLAIM_MINUTES = 240
DEFAULT_CLAIM_MINUTES = 15
MAX_SEATS = 10_000

BEFORE, WARMING, CLAIMABLE, CLOSING, OVER = "before", "warming", "claimable", "closing", "over"

CLAIMED = "claimed"  # the stop reason of a pre-warmed session handed to its student
UNCLAIMED = "unclaimed"  # ... of one stopped because nobody claimed it in time


@dataclass(frozen=True)
class PrewarmPolicy:
    """A course's pre-warming, as the rules see it."""

    lead: timedelta
    claim: timedelta
    slice_type: str
    seats: int | None  # None: every student on the roster
    paid_by: str  # the slug of the project that pays for pre-warmed time

    def phase(self, start: datetime, end: datetime, now: datetime) -> str:
        if now < start - self.lead:
            return BEFORE
        if now < start:
            return WARMING
        if now < min(start + self.claim, end):
            return CLAIMABLE
        return CLOSING if now < end else OVER


def check_policy(
    lead_minutes, claim_minutes, seats, slice_type, allowed: list[str], course: str
) -> None:
    """Refuse a pre-warm setting that cannot work, with a sentence (`LedgerError`)."""
    for what, value, high in (
        ("lead", lead_minutes, MAX_LEAD_MINUTES),
        ("claim time", claim_minutes, MAX_CLAIM_MINUTES),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise LedgerError(f"The pre-warm {what} is from 1 to {high} minutes, not {value!r}.")
    if seats is not None and (
        isinstance(seats, bool) or not isinstance(seats, int) or not 1 <= seats <= MAX_SEATS
    ):
        raise LedgerError(f"Pre-warmed seats are from 1 to {MAX_SEATS}, not {seats!r}.")
    if not isinstance(slice_type, str) or not SLICE_TYPE_NAME.fullmatch(slice_type):
        raise LedgerError(f"{str(slice_type)[:80]!r} is not a slice type name.")
    if "*" not in allowed and slice_type not in allowed:
        raise LedgerError(
            f"Course {course} may not use {slice_type}; it may use {', '.join(allowed)}."
        )


def course_slice_type(allowed: list[str], course: str) -> str:
    """The slice type a course's servers are pre-warmed on when none is named: its only one."""
    if len(allowed) == 1 and allowed[0] != "*":
        return allowed[0]
    raise LedgerError(
        f"Course {course} may use {', '.join(allowed)}; name the slice type to pre-warm "
        "(--slice-type)."
    )


def check_prewarm_hold(
    policy: PrewarmPolicy | None,
    window: tuple[datetime, datetime] | None,
    course: str,
    role: str | None,
    username: str,
    slice_type: str,
    now: datetime,
) -> datetime:
    """May a server be pre-warmed now for `username` (their `role` on the course's roster, None:
    not on it) in class `window`? The pre-warmed session's end (the window's end), or the
    refusal."""
    if policy is None:
        raise LedgerError(f"Course {course} does not pre-warm its servers.", 409)
    if window is None:
        raise LedgerError(f"Course {course} has no such class window.", 404)
    if role != "student":
        raise LedgerError(
            f"{username} is not a student on the roster of {course}; only they are pre-warmed.",
            403,
        )
    if slice_type != policy.slice_type:
        raise LedgerError(
            f"Course {course} pre-warms {policy.slice_type} slices, not {slice_type}.", 409
        )
    start, end = window
    phase = policy.phase(start, end, now)
    if phase not in (WARMING, CLAIMABLE):
        opens = start - policy.lead
        raise LedgerError(
            f"Servers of course {course} are pre-warmed from {opens:%Y-%m-%d %H:%M} UTC "
            f"to {min(start + policy.claim, end):%H:%M} UTC for this class window.",
            409,
        )
    return end


def check_claim(
    window: tuple[datetime, datetime] | None,
    policy: PrewarmPolicy | None,
    status: str,
    handed_to: int | None,
    now: datetime,
) -> None:
    """May the pre-warmed session be claimed now? Refusals say why; one that only has to wait
    for the window to open is a 425 (Too Early) whose sentence names the time."""
    if handed_to is not None:
        raise LedgerError("This server has been claimed already.", 409)
    if status != "active":
        raise LedgerError("This pre-warmed server has been stopped.", 409)
    if window is None or policy is None:
        raise LedgerError("This server's class window is gone.", 409)
    start, end = window
    if now < start:
        raise LedgerError(f"Your class starts at {start:%H:%M} UTC; the server is yours then.", 425)
    if now >= end:
        raise LedgerError("This class window has ended.", 409)
