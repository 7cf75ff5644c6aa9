"""The hold rules: who may start what, what is held, and what an extension may add. Pure.

A hold prices the requested duration at list price, piecewise over price changes, and reserves
the subsidy part of it (and, for a `full_price` project whose subsidy is spent, credit for the
rest). It is refused, with a sentence in HK$, when the project cannot pay: outside its validity
window, a slice type it may not use, too many sessions, a member over their cap, a course
student outside a class window, or not enough subsidy (policy `stop`) / subsidy plus credit
(policy `full_price`). The session's end is fixed by the hold. An extension is funded the same
way, from where the session's hold ends.

Who is a member (`membership`): a user with a member row (its role and cap apply), or, when the
project names a member group, a user in that hub group, as a plain member with the project's
per-member cap. The user's groups come with each request (the spawner knows them); a row
always wins over the group, and a group member is decided exactly as a row member with the
same cap would be.

The decisions here work on plain data (`ProjectState`, one project as a batch of holds sees it,
moved along in memory as holds are accepted) and never touch the database: the ledger reads the
states and writes the outcome (`slicehub.quota.store`), in one transaction per batch, so 200
simultaneous starts are decided in a few milliseconds (`slicehub.quota.hold_queue` gathers them).

What this module does not decide: the list price itself (`slicehub.quota.pricing`), metering and
release (`slicehub.quota.metering`).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from slicehub.common.durations import duration_text, duration_words
from slicehub.common.money import format_money, subsidy_of

from .errors import LedgerError
from .prewarm import PrewarmPolicy, check_prewarm_hold

if TYPE_CHECKING:
    from .models import Project, Session
    from .pricing import PriceBook, PriceSchedule


@dataclass(frozen=True)
class HoldRequest:
    project: str
    username: str
    server_name: str
    slice_type: str
    duration: timedelta
    now: datetime
    deferred: bool = False  # metered from `Ledger.begin` (a batch job's start), not from now
    groups: frozenset[str] = frozenset()  # the user's hub groups, as the spawner knows them
    # a server pre-warmed for class window `prewarm_window` of course `project`, held on the
    # course's pre-warm payer (`slicehub.quota.prewarm`); None: the user's own session
    prewarm_window: int | None = None


ROW = "row"  # a membership from a member row; one from a group is "group:<its name>"


@dataclass(frozen=True)
class MemberRow:
    username: str
    role: str
    cap_cents: int | None
    via: str = ROW


def membership(
    row: MemberRow | None, username: str, member_group: str | None, groups: Collection[str]
) -> MemberRow | None:
    """`username`'s membership of a project: their member `row` when there is one (its role
    and cap win), else, when the project's `member_group` is among the user's `groups`, a plain
    member with no cap of their own (the project's member cap applies); None: not a member."""
    if row is not None:
        return row
    if member_group is not None and member_group in groups:
        return MemberRow(username, "member", None, f"group:{member_group}")
    return None


@dataclass(slots=True)
class HeldSession:
    """A session a hold has just opened: the row written, as plain data (a batch builds
    hundreds; ORM instances would cost more than the decisions)."""

    project_id: int
    username: str
    server_name: str
    slice_type: str
    rate_bp: int
    prices_known: int
    started_at: datetime
    end_at: datetime
    hold_list_cents: int
    hold_subsidy_cents: int
    hold_credit_cents: int
    metered_until: datetime
    charged_list_cents: int = 0
    charged_subsidy_cents: int = 0
    status: str = "active"
    stop_reason: str = ""
    begun: bool = True
    stopped_at: datetime | None = None
    extended: int = 0
    idle_since: datetime | None = None  # a new session has no reading yet (columns' defaults)
    idle_warned_at: datetime | None = None
    idle_park_at: datetime | None = None
    idle_seconds: int = 0
    prewarm_window_id: int | None = None  # a pre-warmed server's class window
    handed_to: int | None = None  # (a new session is handed to nobody)
    id: int = 0
    via: str = ROW  # how the user was a member (`MemberRow.via`); not a column: audited


@dataclass
class ProjectState:
    """One locked project as a batch sees it, moved along in memory as holds are accepted."""

    row: Project
    rate_bp: int
    grants: list[tuple[datetime, datetime, int]]  # (valid_from, valid_until, amount)
    known: int = 0  # the newest price row when it was read
    running: int = 0
    subsidy_held: int = 0  # by active sessions, not yet charged
    subsidy_charged: int = 0
    copay_charged: int = 0
    credit_used: int = 0
    members: dict[str, MemberRow] = field(default_factory=dict)
    member_used: dict[str, int] = field(default_factory=dict)  # subsidy charged + held
    windows: list[tuple[datetime, datetime]] = field(default_factory=list)
    window_ids: dict[int, tuple[datetime, datetime]] = field(default_factory=dict)
    prewarm: PrewarmPolicy | None = None  # a course that pre-warms its servers

    def __post_init__(self):
        self.allowed = json.loads(self.row.allowed_slice_types)

    def grants_at(self, now: datetime) -> int:
        return sum(amount for start, end, amount in self.grants if start <= now < end)

    def subsidy_left(self, now: datetime) -> int:
        return self.grants_at(now) - self.subsidy_charged - self.subsidy_held

    def credit_left(self) -> int:
        return self.row.credit_limit_cents - self.credit_used

    def member(self, username: str, groups: Collection[str]) -> MemberRow | None:
        """`username`'s membership (`membership`), given their hub `groups`."""
        return membership(self.members.get(username), username, self.row.member_group, groups)


def decide(
    r: HoldRequest,
    p: ProjectState | None,
    book: PriceBook,
    known: int,
    busy: set,
    course: ProjectState | None = None,
) -> HeldSession:
    """Accept request `r` against project state `p` (None: no such project), at the prices
    known when price row `known` was the newest, or refuse it (`LedgerError`). An accepted
    hold moves `p` and `busy` (the (user, server name) pairs with an active session) along.

    A pre-warm request (`r.prewarm_window`) is decided against its `course`'s roster, window
    and pre-warming (`slicehub.quota.prewarm.check_prewarm_hold`) and held on `p`, the course's
    pre-warm payer, with no member cap: the student it waits for pays nothing for it."""
    if r.duration <= timedelta(0):
        raise LedgerError("A session must last longer than zero.")
    now = r.now
    member: MemberRow | None = None
    if r.prewarm_window is not None:
        if course is None:
            raise LedgerError(f"There is no project {r.project!r}.", 404)
        row = course.members.get(r.username)
        end = check_prewarm_hold(
            course.prewarm,
            course.window_ids.get(r.prewarm_window),
            course.row.slug,
            None if row is None else row.role,
            r.username,
            r.slice_type,
            now,
        )
        if p is None:
            raise LedgerError(f"The pre-warm payer of course {r.project} is gone.", 409)
    else:
        if p is None:
            raise LedgerError(f"There is no project {r.project!r}.", 404)
        member = p.member(r.username, r.groups)
        if member is None:
            raise LedgerError(f"{r.username} is not a member of project {r.project}.", 403)
        end = now + r.duration
    row, slug = p.row, p.row.slug
    if not row.valid_from <= now < row.valid_until:
        raise LedgerError(
            f"Project {slug} is valid from {row.valid_from:%Y-%m-%d} to "
            f"{row.valid_until:%Y-%m-%d}; it cannot start sessions now.",
            403,
        )
    allowed = p.allowed
    if "*" not in allowed and r.slice_type not in allowed:
        raise LedgerError(
            f"Project {slug} may not use {r.slice_type}; it may use {', '.join(allowed)}.",
            403,
        )
    if member is not None and row.is_course and member.role == "student":
        end = _inside_class_window(p, now, end)
    if p.running >= row.max_concurrent_sessions:
        raise LedgerError(
            f"Project {slug} already runs {p.running} sessions, its limit; stop one or try later.",
            409,
        )
    if (r.username, r.server_name) in busy:
        raise LedgerError(f"{r.username} already has an active session for this server.", 409)
    try:
        hold_list = book.schedule(r.slice_type, known).cost(now, end)
    except LookupError:
        raise LedgerError(
            f"{r.slice_type} has no list price yet; ask the centre's staff.", 409
        ) from None
    need = subsidy_of(hold_list, p.rate_bp)
    hold_subsidy, hold_credit = _fund(p, now, need, r.slice_type, end - now, hold_list)
    if member is not None:
        _draw_from_cap(p, member, hold_subsidy, r.slice_type, end - now)
    p.running += 1
    p.subsidy_held += hold_subsidy
    p.credit_used += hold_credit
    busy.add((r.username, r.server_name))
    return HeldSession(
        project_id=row.id,
        username=r.username,
        server_name=r.server_name,
        slice_type=r.slice_type,
        rate_bp=p.rate_bp,
        prices_known=known,
        started_at=now,
        end_at=end,
        hold_list_cents=hold_list,
        hold_subsidy_cents=hold_subsidy,
        hold_credit_cents=hold_credit,
        metered_until=now,
        begun=not r.deferred,
        prewarm_window_id=r.prewarm_window,
        via=ROW if member is None else member.via,
    )


def _draw_from_cap(p: ProjectState, member: MemberRow, subsidy: int, slice_type, duration) -> None:
    """Count `subsidy` against the member's cap (their own, else the project's per-member one),
    or refuse with what is left of it."""
    cap = member.cap_cents if member.cap_cents is not None else p.row.member_cap_cents
    if cap is None:
        return
    used = p.member_used.get(member.username, 0)
    if used + subsidy > cap:
        left = format_money(max(cap - used, 0))
        raise LedgerError(
            f"{member.username} has {left} left of a {format_money(cap)} cap in {p.row.slug}; "
            f"a {slice_type} slice for {duration_text(duration)} needs {format_money(subsidy)}.",
            402,
        )
    p.member_used[member.username] = used + subsidy


MIN_EXTENSION = timedelta(minutes=1)
MAX_EXTENSION = timedelta(hours=24)


def extend(
    s: Session,
    p: ProjectState,
    extra: timedelta,
    now: datetime,
    schedule: PriceSchedule,
    groups: Collection[str] = (),
) -> MemberRow:
    """Hold `extra` more time for the active session `s` of the locked project `p`, priced
    from where its hold ends at the prices it was held at, funded like a hold (subsidy, then
    credit for a `full_price` project; the member's cap; a student's class window). Moves the
    session's end and its hold, and returns the membership that allowed it (the session's user
    is still a member: by row, or through `groups`, their hub groups now); raises LedgerError
    (nothing changed) when it cannot be paid."""
    if not MIN_EXTENSION <= extra <= MAX_EXTENSION:
        raise LedgerError(
            f"An extension is from {duration_words(_minutes(MIN_EXTENSION))} to "
            f"{duration_words(_minutes(MAX_EXTENSION))}."
        )
    if s.status != "active" or s.end_at <= now:
        raise LedgerError("This session has ended; start a new one instead.", 409)
    if not s.begun:
        raise LedgerError(
            "This session has not started yet (it waits in the queue); extend it once it runs.",
            409,
        )
    row = p.row
    if not row.valid_from <= now < row.valid_until:
        raise LedgerError(
            f"Project {row.slug} is valid until {row.valid_until:%Y-%m-%d}; it cannot extend "
            "sessions now.",
            403,
        )
    member = p.member(s.username, groups)
    if member is None:
        raise LedgerError(f"{s.username} is no longer a member of project {row.slug}.", 403)
    new_end = s.end_at + extra
    if row.is_course and member.role == "student":
        window_end = _inside_class_window(p, now, new_end)
        if window_end < new_end:
            raise LedgerError(
                f"The class window of course {row.slug} ends at {window_end:%H:%M} UTC; a "
                "session cannot run past it.",
                403,
            )
    new_list = max(s.hold_list_cents, schedule.cost(s.started_at, new_end))
    extra_list = new_list - s.hold_list_cents
    need = subsidy_of(new_list, s.rate_bp) - subsidy_of(s.hold_list_cents, s.rate_bp)
    subsidy, credit = _fund(p, now, need, s.slice_type, extra, extra_list)
    _draw_from_cap(p, member, subsidy, s.slice_type, extra)
    s.hold_list_cents = new_list
    s.hold_subsidy_cents += subsidy
    s.hold_credit_cents += credit
    s.end_at = new_end
    s.extended += 1
    return member


def _fund(p: ProjectState, now, need: int, slice_type, duration, hold_list) -> tuple[int, int]:
    """(subsidy, credit) that pay a hold needing `need` of subsidy, or a refusal."""
    left = p.subsidy_left(now)
    if need <= left:
        return need, 0
    slug, subsidy = p.row.slug, format_money(max(left, 0))
    wanted = f"a {slice_type} slice for {duration_text(duration)} needs {format_money(need)}"
    at_list = f"{format_money(hold_list)} at list price"
    if p.row.policy == "full_price":
        covered = max(left, 0)
        extra = need - covered  # paid at full price instead of by the subsidy
        if extra <= p.credit_left():
            return covered, extra
        credit = format_money(max(p.credit_left(), 0))
        raise LedgerError(
            f"Project {slug} has {subsidy} of subsidy and {credit} of credit left; "
            f"{wanted} ({at_list}).",
            402,
        )
    raise LedgerError(
        f"Project {slug} has {subsidy} of subsidy left; {wanted} of subsidy ({at_list}).", 402
    )


def _inside_class_window(p: ProjectState, now: datetime, end: datetime) -> datetime:
    for start, stop in p.windows:
        if start <= now < stop:
            return min(end, stop)  # a class session ends with its class
    upcoming = [start for start, _ in p.windows if start > now]
    when = (
        f" The next class window opens {upcoming[0]:%Y-%m-%d %H:%M} UTC."
        if upcoming
        else " No further class window is scheduled."
    )
    raise LedgerError(f"Course {p.row.slug} is outside its class windows now.{when}", 403)


def credit_taken(s) -> int:
    """Credit a stopped session actually used: the subsidy its list cost would have drawn at
    the scheme's rate, less what the subsidy did pay."""
    return max(0, subsidy_of(s.charged_list_cents, s.rate_bp) - s.charged_subsidy_cents)


def _minutes(length: timedelta) -> int:
    return int(length.total_seconds() // 60)
