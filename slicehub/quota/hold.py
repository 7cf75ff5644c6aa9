"""Hold decisions, made for a batch of requests at once: who may start what, and what is held.

A hold prices the requested duration at list price, piecewise over price changes, and reserves
the subsidy part of it (and, for a `full_price` project whose subsidy is spent, credit for the
rest). It is refused, with a sentence in HK$, when the project cannot pay: outside its validity
window, a slice type it may not use, too many sessions, a member over their cap, a course
student outside a class window, or not enough subsidy (policy `stop`) / subsidy plus credit
(policy `full_price`). The session's end is fixed by the hold.

`open_sessions` decides a whole batch in one transaction with a fixed number of statements,
however many requests it carries: the projects involved are locked (in id order, so two
batches never deadlock), their state is read with a handful of set-wise queries, every request
is decided in memory in the order it arrived (each decision sees the ones before it), and the
accepted sessions and their audit entries are written with one multi-row insert each. This is
what lets the quota service answer 200 simultaneous starts in a few milliseconds each
(`slicehub.quota.hold_queue` gathers them); a lone request is a batch of one.

What this module does not decide: the list price itself (`slicehub.quota.pricing`), metering and
release (`slicehub.quota.ledger`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import (
    ARRAY,
    Integer,
    String,
    any_,
    bindparam,
    case,
    func,
    insert,
    select,
    text,
    tuple_,
)

from slicehub.common.money import format_money

from . import ledger_db
from .models import ClassWindow, Grant, Member, Price, Project, Scheme, Session
from .pricing import PriceBook, subsidy_of


class LedgerError(ValueError):
    """A request the ledger refuses; `status` is the HTTP status an API answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HoldRequest:
    project: str
    username: str
    server_name: str
    slice_type: str
    duration: timedelta
    now: datetime
    deferred: bool = False  # metered from `Ledger.begin` (a batch job's start), not from now


@dataclass(frozen=True)
class MemberRow:
    username: str
    role: str
    cap_cents: int | None


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
    id: int = 0


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

    def __post_init__(self):
        self.allowed = json.loads(self.row.allowed_slice_types)

    def grants_at(self, now: datetime) -> int:
        return sum(amount for start, end, amount in self.grants if start <= now < end)

    def subsidy_left(self, now: datetime) -> int:
        return self.grants_at(now) - self.subsidy_charged - self.subsidy_held

    def credit_left(self) -> int:
        return self.row.credit_limit_cents - self.credit_used


def money(cents: int) -> str:
    return format_money(cents)


def hours(delta: timedelta) -> str:
    minutes = round(delta.total_seconds() / 60)
    if minutes % 60 == 0:
        return f"{minutes // 60} h"
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def credit_taken_sql(t):
    """SQL for the credit a session used: the subsidy its list cost would have drawn at its
    rate, less what the subsidy did pay, never below zero (`_credit_taken` in SQL)."""
    would = t.c.charged_list_cents * t.c.rate_bp / 10_000
    return case((would > t.c.charged_subsidy_cents, would - t.c.charged_subsidy_cents), else_=0)


def load_states(db, slugs, now: datetime, lock: bool, is_sqlite: bool, members=()):
    """The state of projects `slugs` (locked when `lock`), keyed by slug; the memberships read
    are the (slug, username) pairs in `members`, with what each has drawn when a cap applies."""
    conn = db.connection()  # Core rows throughout: the ORM's per-statement cost adds up here
    pt, t = Project.__table__, Session.__table__
    q = (
        select(
            pt,
            Scheme.subsidy_rate_bp,
            select(func.coalesce(func.max(Price.id), 0)).scalar_subquery().label("known"),
        )
        .join(Scheme, Scheme.id == pt.c.scheme_id)
        .where(_in(conn, pt.c.slug, sorted(slugs), String))
        .order_by(pt.c.id)
    )
    if lock and not is_sqlite:
        q = q.with_for_update(of=pt)
    states = {
        r.slug: ProjectState(r, r.subsidy_rate_bp, [], known=r.known) for r in conn.execute(q).all()
    }
    if not states:
        return states
    by_id = {s.row.id: s for s in states.values()}
    ids = list(by_id)
    # The active sessions are read by a statement of their own, after the lock: PostgreSQL
    # evaluates a statement against the snapshot taken when it began, so sums computed in the
    # locking statement would miss the sessions of a hold that held the lock while it waited
    # (the 200-concurrent-starts test caught exactly that: 50 held where 10 were affordable).
    for pid, running, held, charged, copay, credit in conn.execute(
        select(
            t.c.project_id,
            func.count(),
            func.sum(t.c.hold_subsidy_cents - t.c.charged_subsidy_cents),
            func.sum(t.c.charged_subsidy_cents),
            func.sum(t.c.charged_list_cents - t.c.charged_subsidy_cents),
            func.sum(t.c.hold_credit_cents),
        )
        .where(_in(conn, t.c.project_id, ids, Integer), t.c.status == "active")
        .group_by(t.c.project_id)
    ):
        s = by_id[pid]
        s.running, s.subsidy_held, s.credit_used = running, int(held), int(credit)
        s.subsidy_charged, s.copay_charged = int(charged), int(copay)
    for pid, start, end, amount in conn.execute(
        select(Grant.project_id, Grant.valid_from, Grant.valid_until, Grant.amount_cents).where(
            _in(conn, Grant.project_id, ids, Integer), Grant.valid_until > now
        )
    ):
        by_id[pid].grants.append((start, end, amount))
    for s in states.values():
        s.subsidy_charged += s.row.closed_subsidy_cents
        s.copay_charged += s.row.closed_copay_cents
        s.credit_used += s.row.closed_credit_cents
    pairs = sorted({(states[slug].row.id, user) for slug, user in members if slug in states})
    if pairs:
        _load_members(conn, by_id, pairs)
    courses = [pid for pid, s in by_id.items() if s.row.is_course]
    if courses:
        for pid, start, end in conn.execute(
            select(ClassWindow.project_id, ClassWindow.starts_at, ClassWindow.ends_at)
            .where(_in(conn, ClassWindow.project_id, courses, Integer))
            .order_by(ClassWindow.starts_at)
        ):
            by_id[pid].windows.append((start, end))
    return states


def _load_members(conn, by_id: dict[int, ProjectState], pairs: list[tuple[int, str]]):
    """The memberships asked about (exact pairs, plain rows), and what capped members drew."""
    m = Member.__table__.c
    capped = []
    for pid, username, role, cap in conn.execute(
        select(m.project_id, m.username, m.role, m.cap_cents).where(_pair_in(conn, m, pairs))
    ):
        state = by_id[pid]
        state.members[username] = MemberRow(username, role, cap)
        if cap is not None or state.row.member_cap_cents is not None:
            capped.append((pid, username))
    if not capped:
        return
    t = Session.__table__
    drawn = case((t.c.status == "active", t.c.hold_subsidy_cents), else_=t.c.charged_subsidy_cents)
    for pid, username, used in conn.execute(
        select(t.c.project_id, t.c.username, func.sum(drawn))
        .where(_pair_in(conn, t.c, capped))
        .group_by(t.c.project_id, t.c.username)
    ):
        by_id[pid].member_used[username] = int(used)


def newest_price(db) -> int:
    """The id of the newest price row (0: none); a hold records it as the prices it knew."""
    return db.connection().scalar(select(func.coalesce(func.max(Price.id), 0)))


def _in(conn, column, values: list, type_):
    """column IN values. On PostgreSQL as `= ANY(array)`: one bound parameter, so the statement
    stays in SQLAlchemy's compiled cache (an IN list is rendered anew for every call, which
    cost a batch of 200 holds about 2 ms) and PostgreSQL plans it the same way."""
    if conn.dialect.name != "postgresql":
        return column.in_(values)
    return column == any_(bindparam(None, values, type_=ARRAY(type_)))


def _pair_in(conn, c, pairs: list[tuple[int, str]]):
    """(project_id, username) IN pairs. PostgreSQL plans a long row-value IN list as a filter
    over every row; matching against two unnested arrays uses the indexes instead."""
    if conn.dialect.name != "postgresql":
        return tuple_(c.project_id, c.username).in_(pairs)
    wanted = select(
        func.unnest(bindparam("pair_pids", [p for p, _ in pairs], type_=ARRAY(Integer))),
        func.unnest(bindparam("pair_users", [u for _, u in pairs], type_=ARRAY(String))),
    )
    return tuple_(c.project_id, c.username).in_(wanted)


class PriceCache:
    """Every price row, read again only when a new one has been written (ids only grow), and
    the schedules built from them, per slice type and newest row known."""

    def __init__(self):
        self.known = -1
        self._book = None

    def book(self, db, known: int | None = None) -> PriceBook:
        """The book of every price row up to `known` (None: read the newest id first)."""
        if known is None:
            known = newest_price(db)
        if known != self.known:
            prices = Price.__table__
            rows = db.connection().execute(select(prices).where(prices.c.id <= known)).all()
            self._book = PriceBook(rows)
            self.known = known
        return self._book


def open_sessions(db, requests: list[HoldRequest], prices: PriceCache, is_sqlite: bool):
    """Decide `requests` in order inside transaction `db`; write the accepted ones.

    Returns, for each request, its new `HeldSession` (with its id) or the `LedgerError` that
    refused it. Nothing is written for a refused request.
    """
    now = min(r.now for r in requests)  # grants still valid then are read; each request
    states = load_states(  # then counts those valid at its own moment
        db,
        {r.project for r in requests},
        now,
        True,
        is_sqlite,
        {(r.project, r.username) for r in requests},
    )
    known = next(iter(states.values())).known if states else newest_price(db)
    book = prices.book(db, known)
    t, conn = Session.__table__, db.connection()
    users = sorted({r.username for r in requests})
    busy = set(
        conn.execute(
            select(t.c.username, t.c.server_name).where(
                t.c.status == "active", _in(conn, t.c.username, users, String)
            )
        ).all()
    )
    outcomes: list[HeldSession | LedgerError] = []
    for r in requests:
        try:
            session = _decide(r, states.get(r.project), book, known, busy)
        except LedgerError as e:
            outcomes.append(e)
        else:
            outcomes.append(session)
    accepted = [s for s in outcomes if isinstance(s, HeldSession)]
    if accepted:
        _write(db, accepted, is_sqlite)
    return outcomes


def _decide(r: HoldRequest, p: ProjectState | None, book, known: int, busy: set) -> HeldSession:
    if r.duration <= timedelta(0):
        raise LedgerError("A session must last longer than zero.")
    if p is None:
        raise LedgerError(f"There is no project {r.project!r}.", 404)
    row, now = p.row, r.now
    member = p.members.get(r.username)
    if member is None:
        raise LedgerError(f"{r.username} is not a member of project {r.project}.", 403)
    if not row.valid_from <= now < row.valid_until:
        raise LedgerError(
            f"Project {r.project} is valid from {row.valid_from:%Y-%m-%d} to "
            f"{row.valid_until:%Y-%m-%d}; it cannot start sessions now.",
            403,
        )
    allowed = p.allowed
    if "*" not in allowed and r.slice_type not in allowed:
        raise LedgerError(
            f"Project {r.project} may not use {r.slice_type}; it may use {', '.join(allowed)}.",
            403,
        )
    end = now + r.duration
    if row.is_course and member.role == "student":
        end = _inside_class_window(p, now, end)
    if p.running >= row.max_concurrent_sessions:
        raise LedgerError(
            f"Project {r.project} already runs {p.running} sessions, its limit; "
            "stop one or try later.",
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
    )


def _draw_from_cap(p: ProjectState, member: MemberRow, subsidy: int, slice_type, duration) -> None:
    """Count `subsidy` against the member's cap (their own, else the project's per-member one),
    or refuse with what is left of it."""
    cap = member.cap_cents if member.cap_cents is not None else p.row.member_cap_cents
    if cap is None:
        return
    used = p.member_used.get(member.username, 0)
    if used + subsidy > cap:
        raise LedgerError(
            f"{member.username} has {money(max(cap - used, 0))} left of a {money(cap)} cap "
            f"in {p.row.slug}; a {slice_type} slice for {hours(duration)} needs "
            f"{money(subsidy)}.",
            402,
        )
    p.member_used[member.username] = used + subsidy


MAX_EXTENSION = timedelta(hours=24)


def extend(s: Session, p: ProjectState, extra: timedelta, now: datetime, schedule) -> None:
    """Hold `extra` more time for the active session `s` of the locked project `p`, priced
    from where its hold ends at the prices it was held at, funded like a hold (subsidy, then
    credit for a `full_price` project; the member's cap; a student's class window). Moves the
    session's end and its hold; raises LedgerError (nothing changed) when it cannot be paid."""
    if not timedelta(minutes=1) <= extra <= MAX_EXTENSION:
        raise LedgerError("An extension is from 1 minute to 24 hours.")
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
    member = p.members.get(s.username)
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


def _fund(p: ProjectState, now, need: int, slice_type, duration, hold_list) -> tuple[int, int]:
    """(subsidy, credit) that pay a hold needing `need` of subsidy, or a refusal."""
    left = p.subsidy_left(now)
    if need <= left:
        return need, 0
    slug = p.row.slug
    if p.row.policy == "full_price":
        covered = max(left, 0)
        extra = need - covered  # paid at full price instead of by the subsidy
        if extra <= p.credit_left():
            return covered, extra
        raise LedgerError(
            f"Project {slug} has {money(max(left, 0))} of subsidy and "
            f"{money(max(p.credit_left(), 0))} of credit left; a {slice_type} slice "
            f"for {hours(duration)} needs {money(need)} ({money(hold_list)} at list price).",
            402,
        )
    raise LedgerError(
        f"Project {slug} has {money(max(left, 0))} of subsidy left; a {slice_type} slice "
        f"for {hours(duration)} needs {money(need)} of subsidy ({money(hold_list)} at list "
        "price).",
        402,
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


# the columns a hold writes, with their PostgreSQL types for the binary COPY
_SESSION_COLUMNS = {
    "id": "int4",
    "project_id": "int4",
    "username": "text",
    "server_name": "text",
    "slice_type": "text",
    "rate_bp": "int4",
    "prices_known": "int4",
    "started_at": "timestamptz",
    "end_at": "timestamptz",
    "hold_list_cents": "int8",
    "hold_subsidy_cents": "int8",
    "hold_credit_cents": "int8",
    "metered_until": "timestamptz",
    "charged_list_cents": "int8",
    "charged_subsidy_cents": "int8",
    "status": "text",
    "stop_reason": "text",
    "begun": "bool",
}


def _write(db, sessions: list[HeldSession], is_sqlite: bool) -> None:
    """Insert the sessions and learn their ids. On PostgreSQL: the ids drawn from the table's
    sequence in one statement, then one binary COPY, whatever the batch's size (a multi-row
    INSERT of a few hundred rows costs several times more, most of it in the driver).

    A hold writes no audit entry: its session row is the record (who, when, which slice,
    what was held), and the audit log stays the log of staff changes and releases."""
    conn = db.connection()
    if is_sqlite:
        t = Session.__table__
        rows = [{c: getattr(s, c) for c in _SESSION_COLUMNS if c != "id"} for s in sessions]
        ids = conn.execute(insert(t).returning(t.c.id, sort_by_parameter_order=True), rows)
        for s, (sid,) in zip(sessions, ids.all(), strict=True):
            s.id = sid
        return
    ids = conn.execute(_NEW_SESSION_IDS, {"n": len(sessions)}).scalars().all()
    for s, sid in zip(sessions, ids, strict=True):
        s.id = sid
    with conn.connection.driver_connection.cursor() as cur:
        rows = ([getattr(s, c) for c in _SESSION_COLUMNS] for s in sessions)
        ledger_db.copy_rows(cur, "sessions", _SESSION_COLUMNS, rows)


# the sequence is looked up once per statement, in FROM: called per row in the select list,
# pg_get_serial_sequence took two thirds of a millisecond of a batch of 200
_NEW_SESSION_IDS = text(
    "SELECT nextval(seq) FROM CAST(pg_get_serial_sequence('sessions', 'id') AS regclass) AS seq,"
    " generate_series(1, :n)"
)
