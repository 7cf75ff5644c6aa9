"""Monthly statements per project, the scheme report, and the other read-only views staff use.

Decides which charges belong to which month and day and how they add up per session and per
project. It only reads the ledger; it never changes it. How a statement is written out (CSV for
spreadsheets, a self-contained HTML page with a chart of daily spend for people) is
`slicehub.quota.statement_render`.

Months and days are the centre's: Hong Kong time (UTC+08:00, no daylight saving), so a
statement for "2026-11" covers 2026-11-01 00:00 to 2026-12-01 00:00 HKT. A charge is one
metering tick, a short period, and is not split: it belongs to the month and day of the end of
its period (its last instant, so a tick ending at midnight counts for the day before). A
reversal (time charged after a server had already stopped, given back) counts, negative, in the
month its period ends, like the charge it corrects.

Money is integer cents throughout; totals are sums of charges, so a statement's totals equal
the sum of the month's charges to the cent, and subsidy + co-pay = list cost on every line.

Idleness (`IdleTime`) is what sessions' rows recorded when they stopped (`slicehub.quota.idle`,
`Metering.close_session`): the idle stretch each was charged for at its end, parked or not, and
its list cost and subsidy (part of the charges, not added to them), and for a parked session
the subsidy of its hold it was not charged, returned to the project at the parking. It belongs
to the month in which the session stopped (its stop as a charge's end: after the month's first
instant, up to and including its last), so a session across the month's edge shows its idle
end once, in the month it ended.

Pre-warmed servers (`slicehub.quota.prewarm`, `PrewarmLine`): a session started for a course's
student before a class window is charged to the course's pre-warm payer (the course itself, or a
centre project) and belongs to the course through its class window. A statement lists, per
course, payer and outcome (claimed, wasted, or still waiting for its student), the month's
pre-warmed server time and its cost: those its project paid for (part of its totals; a centre
project's lines name each course) and those pre-warmed for it as a course but paid by another
project (on that project's statement, not in these totals). Their charges belong to months and
days by the same rule as every charge.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy import case, func, or_, select

from slicehub.common import clock

from .errors import LedgerError
from .ledger import Balance, Ledger
from .models import AuditEntry, Charge, Grant, Member, Price, Project, Scheme, Session
from .pricing import MICROS_PER_HOUR, micros
from .reader import rate_in_force
from .statement_prewarm import PrewarmLine, minutes_of, paid_elsewhere, prewarm_lines
from .store import find_project

CENTRE_TZ = timezone(timedelta(hours=8), "HKT")  # Hong Kong: no DST since 1979
PARKED = "parked"  # a session's stop reason when the culler parked it (slicehub.quota.idle)
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_CHUNK = 500  # ids per IN (...) query


@dataclass(frozen=True)
class Amounts:
    """List cost and its two parts, in cents; subsidy + co-pay == list on every instance."""

    list_cents: int = 0
    subsidy_cents: int = 0
    copay_cents: int = 0

    def __add__(self, other: Amounts) -> Amounts:
        return Amounts(
            self.list_cents + other.list_cents,
            self.subsidy_cents + other.subsidy_cents,
            self.copay_cents + other.copay_cents,
        )


@dataclass(frozen=True)
class IdleTime:
    """Idle time charged at sessions' ends and what parking gave back, in seconds and cents:
    `seconds` of slice time charged while idle, its list cost and subsidy (already part of the
    charges: "of which idle"), how many sessions were `parked`, and the subsidy their holds
    returned to their projects at the parking (held, never charged)."""

    seconds: int = 0
    list_cents: int = 0
    subsidy_cents: int = 0
    parked: int = 0
    returned_subsidy_cents: int = 0

    def __add__(self, other: IdleTime) -> IdleTime:
        return IdleTime(
            self.seconds + other.seconds,
            self.list_cents + other.list_cents,
            self.subsidy_cents + other.subsidy_cents,
            self.parked + other.parked,
            self.returned_subsidy_cents + other.returned_subsidy_cents,
        )

    @property
    def slice_hours(self) -> Decimal:
        return _hours(self.seconds * 1_000_000)

    def __bool__(self) -> bool:  # anything to show: idle time charged, or a parking
        return bool(self.seconds or self.parked)

    @classmethod
    def of_session(cls, s: Session) -> IdleTime:
        """What a stopped session's row recorded of its idle end (and its parking)."""
        parked = s.stop_reason == PARKED
        return cls(
            s.idle_seconds,
            s.idle_list_cents,
            s.idle_subsidy_cents,
            int(parked),
            s.hold_subsidy_cents - s.charged_subsidy_cents if parked else 0,
        )


@dataclass(frozen=True)
class StatementRow:
    """One session's charges within the month, and its idle end if it stopped in the month."""

    session_id: int
    username: str
    slice_type: str
    started_at: datetime
    stopped_at: datetime | None  # None: still running
    micros: int  # slice time charged in the month, microseconds (reversals subtracted)
    amounts: Amounts
    stop_reason: str = ""  # "parked", "stopped", …; "" while running
    idle: IdleTime = IdleTime()  # zero unless it stopped in the month
    prewarm_course: str = ""  # a pre-warmed server's course ("" for every other session)
    prewarm: str = ""  # … and its outcome (`statement_prewarm.prewarm_outcome`)

    @property
    def slice_hours(self) -> Decimal:
        return _hours(self.micros)

    @property
    def minutes(self) -> Decimal:
        return minutes_of(self.micros)


@dataclass(frozen=True)
class DaySpend:
    day: date
    amounts: Amounts


@dataclass(frozen=True)
class ProjectHeader:
    slug: str
    name: str
    organisation: str
    pi: str
    scheme: str
    rate_bp: int
    is_course: bool


@dataclass(frozen=True)
class MonthlyStatement:
    project: ProjectHeader
    month: str  # "2026-11"
    starts: datetime  # the month's first instant, HKT
    ends: datetime  # the next month's first instant, HKT
    rows: list[StatementRow]
    days: list[DaySpend]  # every day of the month, in order, zero where nothing was spent
    total: Amounts
    total_micros: int
    charges: int  # how many charge rows the statement sums
    generated_at: datetime
    idle: IdleTime = IdleTime()  # of the sessions that stopped in the month
    # pre-warmed servers paid by this project, or pre-warmed for it as a course (`PrewarmLine`)
    prewarm: tuple[PrewarmLine, ...] = ()

    @property
    def total_slice_hours(self) -> Decimal:
        return _hours(self.total_micros)

    def prewarm_total(self, outcome: str, paid_here: bool | None = None) -> PrewarmLine:
        """The pre-warm lines with `outcome` added up: all of them, or (`paid_here`) only
        those this project paid for (True) or another project paid for (False)."""
        lines = [
            x
            for x in self.prewarm
            if x.outcome == outcome
            and (paid_here is None or (x.paid_by == self.project.slug) == paid_here)
        ]
        return PrewarmLine(
            "",
            "",
            outcome,
            sum(x.servers for x in lines),
            sum(x.micros for x in lines),
            sum((x.amounts for x in lines), Amounts()),
        )


@dataclass(frozen=True)
class ProjectLine:
    slug: str
    name: str
    organisation: str
    pi: str
    is_course: bool
    grants_awarded_cents: int  # every grant, expired or not
    balance: Balance  # as the ledger enforces it now (grants in force, held, left)
    charged: Amounts  # everything charged, all time
    idle: IdleTime = IdleTime()  # every stopped session's idle end and parking, all time

    @property
    def subsidy_disbursed_cents(self) -> int:
        return self.charged.subsidy_cents


@dataclass(frozen=True)
class SchemeReport:
    name: str
    rate_bp: int
    fund_cents: int
    lines: list[ProjectLine]
    generated_at: datetime
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def grants_awarded_cents(self) -> int:
        return sum(p.grants_awarded_cents for p in self.lines)

    @property
    def fund_unawarded_cents(self) -> int:
        return self.fund_cents - self.grants_awarded_cents

    @property
    def idle(self) -> IdleTime:
        return sum((p.idle for p in self.lines), IdleTime())


# -- months -------------------------------------------------------------------------------


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """ "2026-11" -> (2026-11-01 00:00 HKT, 2026-12-01 00:00 HKT). Raises LedgerError."""
    m = _MONTH.match(month.strip()) if isinstance(month, str) else None
    if not m or not 1 <= int(m.group(2)) <= 12 or not 2000 <= int(m.group(1)) <= 2999:
        raise LedgerError(f"{month!r} is not a month; write it as YYYY-MM, e.g. 2026-11.")
    year, mon = int(m.group(1)), int(m.group(2))
    starts = datetime(year, mon, 1, tzinfo=CENTRE_TZ)
    ends = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=CENTRE_TZ)
    return starts, ends


def _day_of(period_end: datetime) -> date:
    """The centre's day holding a period's last instant."""
    return (period_end - timedelta(microseconds=1)).astimezone(CENTRE_TZ).date()


def _hours(length_micros: int) -> Decimal:
    return (Decimal(length_micros) / MICROS_PER_HOUR).quantize(Decimal("0.0001"), ROUND_HALF_EVEN)


# -- the monthly statement ----------------------------------------------------------------


def monthly_statement(
    ledger: Ledger, project: str, month: str, now: datetime | None = None
) -> MonthlyStatement:
    """The statement of `project` for `month` ("YYYY-MM", Hong Kong time).

    Each charge is attributed, whole, to the month and day of its period's end (see the module
    docstring); a session that runs across midnight at the month's end appears in both months,
    each with its own part. Rows are per session, ordered by start.
    """
    starts, ends = month_bounds(month)
    with ledger.session() as db:
        p = find_project(db, project)
        scheme = db.get(Scheme, p.scheme_id)
        per_session: dict[int, list] = defaultdict(lambda: [0, Amounts()])
        per_day: dict[date, Amounts] = defaultdict(Amounts)
        total, total_micros, n = Amounts(), 0, 0
        for sid, pend, length, amounts in _charges(db, Charge.project_id == p.id, starts, ends):
            acc = per_session[sid]
            acc[0] += length
            acc[1] = acc[1] + amounts
            per_day[_day_of(pend)] += amounts
            total += amounts
            total_micros += length
            n += 1
        sessions = _load_sessions(db, per_session)
        prewarm, marks = _prewarm(db, p, starts, ends, per_session, sessions)
        idle = {}  # the month's idle ends, even of a session none of whose charges is in it
        for s in db.scalars(_idle_ends(p.id, starts, ends)):
            sessions.setdefault(s.id, s)
            per_session.setdefault(s.id, [0, Amounts()])
            idle[s.id] = IdleTime.of_session(s)
        header = _header(p, scheme)
    rows = sorted(
        (
            StatementRow(
                sid,
                sessions[sid].username,
                sessions[sid].slice_type,
                sessions[sid].started_at,
                sessions[sid].stopped_at,
                length,
                amounts,
                sessions[sid].stop_reason if sessions[sid].status == "stopped" else "",
                idle.get(sid, IdleTime()),
                *marks.get(sid, ("", "")),
            )
            for sid, (length, amounts) in per_session.items()
        ),
        key=lambda r: (r.started_at, r.session_id),
    )
    days = []
    d = starts.date()
    while d < ends.date():
        days.append(DaySpend(d, per_day.get(d, Amounts())))
        d += timedelta(days=1)
    return MonthlyStatement(
        project=header,
        month=f"{starts:%Y-%m}",
        starts=starts,
        ends=ends,
        rows=rows,
        days=days,
        total=total,
        total_micros=total_micros,
        charges=n,
        generated_at=now or clock.utcnow(),
        idle=sum(idle.values(), IdleTime()),
        prewarm=prewarm,
    )


def _charges(db, which, starts: datetime, ends: datetime):
    """(session id, period end, slice time in microseconds, amounts) of every charge matching
    `which` that belongs to the month (starts, ends]; a reversal's time counts negative."""
    q = (
        select(
            Charge.session_id,
            Charge.period_start,
            Charge.period_end,
            Charge.list_cents,
            Charge.subsidy_cents,
            Charge.copay_cents,
            Charge.kind,
        )
        .where(
            which,
            Charge.period_end > starts.astimezone(UTC),
            Charge.period_end <= ends.astimezone(UTC),
        )
        .order_by(Charge.id)
        .execution_options(yield_per=5000)
    )
    for sid, pstart, pend, lst, sub, cop, kind in db.execute(q):
        length = micros(pend - pstart) * (-1 if kind == "reversal" else 1)
        yield sid, pend, length, Amounts(lst, sub, cop)


def _load_sessions(db, ids) -> dict[int, Session]:
    sessions, ids = {}, list(ids)
    for i in range(0, len(ids), _CHUNK):
        for s in db.scalars(select(Session).where(Session.id.in_(ids[i : i + _CHUNK]))):
            sessions[s.id] = s
    return sessions


def _prewarm(db, p: Project, starts, ends, own: dict, sessions: dict):
    """`statement_prewarm.prewarm_lines` of `p`'s own charged sessions (`own`: id -> [micros,
    amounts]; `sessions`: their rows) and of the servers pre-warmed for it as a course that
    another project paid for."""
    theirs: dict[int, list] = defaultdict(lambda: [0, Amounts()])
    for sid, _, length, amounts in _charges(db, paid_elsewhere(p.id), starts, ends):
        acc = theirs[sid]
        acc[0] += length
        acc[1] = acc[1] + amounts
    warm = {sid: s for sid, s in sessions.items() if s.prewarm_window_id is not None}
    warm.update(_load_sessions(db, theirs))
    return prewarm_lines(db, p.slug, {**own, **theirs}, warm)


def _idle_ends(project_id: int, starts: datetime, ends: datetime):
    """The project's sessions that stopped in (starts, ends] charged for idle time or parked."""
    return select(Session).where(
        Session.project_id == project_id,
        Session.status == "stopped",
        Session.stopped_at > starts.astimezone(UTC),
        Session.stopped_at <= ends.astimezone(UTC),
        or_(Session.idle_seconds > 0, Session.stop_reason == PARKED),
    )


def idle_per_project(db, scheme_id: int) -> dict[int, IdleTime]:
    """Every stopped session's idle end and parking, summed per project of the scheme (all
    time): project id -> `IdleTime`."""
    parked = Session.stop_reason == PARKED
    q = (
        select(
            Session.project_id,
            func.sum(Session.idle_seconds),
            func.sum(Session.idle_list_cents),
            func.sum(Session.idle_subsidy_cents),
            func.count().filter(parked),
            func.sum(
                case((parked, Session.hold_subsidy_cents - Session.charged_subsidy_cents), else_=0)
            ),
        )
        .join(Project, Project.id == Session.project_id)
        .where(Project.scheme_id == scheme_id, Session.status == "stopped")
        .group_by(Session.project_id)
    )
    return {pid: IdleTime(*(int(v or 0) for v in values)) for pid, *values in db.execute(q).all()}


# -- the scheme report --------------------------------------------------------------------


def scheme_report(ledger: Ledger, scheme: str, now: datetime | None = None) -> SchemeReport:
    """Per project of `scheme`: grants awarded, subsidy disbursed (charged), co-pay, and what
    is held and left now, as the ledger enforces it."""
    now = now or clock.utcnow()
    with ledger.session() as db:
        sch = db.scalar(select(Scheme).where(Scheme.name == scheme))
        if sch is None:
            raise LedgerError(f"There is no scheme {scheme!r}.", 404)
        projects = db.scalars(
            select(Project).where(Project.scheme_id == sch.id).order_by(Project.slug)
        ).all()
        awarded = dict(
            db.execute(
                select(Grant.project_id, func.sum(Grant.amount_cents))
                .join(Project, Project.id == Grant.project_id)
                .where(Project.scheme_id == sch.id)
                .group_by(Grant.project_id)
            ).all()
        )
        charged = {
            pid: Amounts(int(lst), int(sub), int(cop))
            for pid, lst, sub, cop in db.execute(
                select(
                    Charge.project_id,
                    func.sum(Charge.list_cents),
                    func.sum(Charge.subsidy_cents),
                    func.sum(Charge.copay_cents),
                )
                .join(Project, Project.id == Charge.project_id)
                .where(Project.scheme_id == sch.id)
                .group_by(Charge.project_id)
            ).all()
        }
        idle = idle_per_project(db, sch.id)
        name, rate, fund = sch.name, sch.subsidy_rate_bp, sch.fund_cents
    lines = [
        ProjectLine(
            slug=p.slug,
            name=p.name,
            organisation=p.organisation,
            pi=p.pi,
            is_course=p.is_course,
            grants_awarded_cents=int(awarded.get(p.id, 0)),
            balance=ledger.balance(p.slug, now),
            charged=charged.get(p.id, Amounts()),
            idle=idle.get(p.id, IdleTime()),
        )
        for p in projects
    ]
    totals = {
        "grants_awarded": sum(x.grants_awarded_cents for x in lines),
        "grants_in_force": sum(x.balance.grants_cents for x in lines),
        "list_charged": sum(x.charged.list_cents for x in lines),
        "subsidy_disbursed": sum(x.charged.subsidy_cents for x in lines),
        "copay": sum(x.charged.copay_cents for x in lines),
        "subsidy_held": sum(x.balance.subsidy_held_cents for x in lines),
        "subsidy_left": sum(x.balance.subsidy_left_cents for x in lines),
        "idle_list": sum(x.idle.list_cents for x in lines),
        "idle_subsidy": sum(x.idle.subsidy_cents for x in lines),
        "parking_returned": sum(x.idle.returned_subsidy_cents for x in lines),
    }
    return SchemeReport(name, rate, fund, lines, now, totals)


# -- read-only views for the CLI ----------------------------------------------------------


def scheme_names(ledger: Ledger) -> list[str]:
    with ledger.session() as db:
        return list(db.scalars(select(Scheme.name).order_by(Scheme.name)).all())


def priced_slice_types(ledger: Ledger) -> set[str]:
    """Slice types with at least one list price (in force or scheduled)."""
    with ledger.session() as db:
        return set(db.scalars(select(Price.slice_type).distinct()).all())


def project_overview(ledger: Ledger, project: str | None = None) -> list[tuple[Project, Scheme]]:
    """Every project (or one) with its scheme, ordered by slug. Raises LedgerError (404)."""
    with ledger.session() as db:
        q = select(Project, Scheme).join(Scheme, Scheme.id == Project.scheme_id)
        if project is not None:
            find_project(db, project)
            q = q.where(Project.slug == project)
        return [tuple(r) for r in db.execute(q.order_by(Project.slug)).all()]


def project_members(ledger: Ledger, project: str) -> dict[str, str]:
    """username -> role for `project`. Raises LedgerError (404)."""
    with ledger.session() as db:
        p = find_project(db, project)
        return dict(
            db.execute(select(Member.username, Member.role).where(Member.project_id == p.id)).all()
        )


@dataclass(frozen=True)
class MemberUsage:
    project: str
    username: str
    role: str
    cap_cents: int | None  # the member's own cap, else the project's member cap; None: no cap
    charged_subsidy_cents: int
    held_subsidy_cents: int

    @property
    def used_cents(self) -> int:
        return self.charged_subsidy_cents + self.held_subsidy_cents


def member_usage(ledger: Ledger, project: str, username: str) -> MemberUsage:
    """What `username` has drawn from `project`'s subsidy (charged and held) against the cap
    the ledger applies to them. Raises LedgerError (404) for an unknown project or member."""
    with ledger.session() as db:
        p = find_project(db, project)
        m = db.scalar(select(Member).where(Member.project_id == p.id, Member.username == username))
        if m is None:
            raise LedgerError(f"{username} is not a member of project {project}.", 404)
        charged, held = Ledger.member_draw(db, p, username)
        cap = m.cap_cents if m.cap_cents is not None else p.member_cap_cents
        return MemberUsage(p.slug, username, m.role, cap, charged, held)


def recent_audit(ledger: Ledger, limit: int = 20) -> list[AuditEntry]:
    """The newest `limit` audit entries, newest first."""
    with ledger.session() as db:
        return list(
            db.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)).all()
        )


def _header(p: Project, scheme: Scheme) -> ProjectHeader:
    return ProjectHeader(
        p.slug, p.name, p.organisation, p.pi, scheme.name, rate_in_force(p, scheme), p.is_course
    )
