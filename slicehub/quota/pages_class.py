"""The instructor's class page in the hub: a course's roster live, each student's server in the
class window, the course's spend and its pre-warm cost, and "Stop all servers".

- `GET classes/<course>` (HTML) and `GET api/classes/<course>` (JSON: the same view as data,
  and the page's live part rendered, which the page's script fetches every few seconds; with
  scripts off the page is complete and a link reloads it): for the course's instructors and
  PIs (member rows with role "instructor" or "pi") and the centre's staff
  (`custom:quota:staff`); anyone else gets 403 with a sentence, whether the course exists or
  not.
- `POST classes/<course>` (the page's form, with the hub's XSRF token and a confirmation box):
  asks the hub to stop every running server of the course's students (`running_servers`: what
  the ledger holds active for a rostered student on the course, or pre-warmed for one of its
  class windows, whoever pays), a few at a time (`stop_servers`, an `asyncio.Semaphore` as
  jupyterhub-idle-culler bounds its calls). Each spawner then releases its session as at any
  stop. Audited as `class.stop-all` with the actor and the counts; the page then says what was
  asked, from that audit entry.

The class window shown (`focus_window`): the one in progress (from its pre-warm lead to its end);
else the latest that has started; else the next. What a student's server is doing in it
(`student_state`), and since when:

    claimed       their pre-warmed server was handed to them and their own session runs
                  (since the claim)
    running       their own session runs, without pre-warming (since its start)
    pre-warmed    a server started ahead for them runs, not claimed yet (since its start)
    stopped       they had a server in this window and none runs now (since the last stop)
    not started   nothing in this window

A student's spend is what their own sessions on the course were charged (list cost, subsidy and
co-pay), never the pre-warm time, which the course's pre-warm payer pays; the window's pre-warm
cost is its pre-warmed sessions' charges so far, claimed, wasted or waiting
(`statement_prewarm.prewarm_outcome`). This module reads the ledger, and writes only the audit
entry of a stop-all; what stops a server is the hub.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from markupsafe import Markup
from sqlalchemy import case, func, or_, select
from tornado import web

from slicehub.common import clock

from .api import QuotaHandler
from .errors import LedgerError
from .models import AuditEntry, Charge, ClassWindow, Member, Project, Session
from .pages import PageHandler, render
from .prewarm import PrewarmPolicy
from .pricing import micros
from .reader import LedgerReader
from .statement import CENTRE_TZ, Amounts, month_bounds
from .statement_prewarm import OUTCOMES, minutes_of, prewarm_outcome
from .states import prewarm_policies
from .store import audit, find_project

log = logging.getLogger("slicehub.quota")

TEACHERS = frozenset({"instructor", "pi"})  # member roles that see a course's class page
CLAIMED, RUNNING, PREWARMED, STOPPED, NOT_STARTED = (
    "claimed",
    "running",
    "pre-warmed",
    "stopped",
    "not started",
)
STATES = (PREWARMED, CLAIMED, RUNNING, STOPPED, NOT_STARTED)  # in the order the page counts
STOP_ALL = "class.stop-all"  # the audit action
STOP_CONCURRENCY = 10  # hub calls at once, as jupyterhub-idle-culler's default
REFRESH_SECONDS = 5  # how often the page's script asks for the live view
UPCOMING = 4  # class windows listed after the one shown
STOP_WORDS = {  # why a server stopped, where its stop reason alone does not say it
    "stopped": "",
    "unclaimed": "not claimed in time",
    "claim-refused": "claim refused",
    "parked": "parked when idle",
    "ended": "its time was up",
    "orphaned": "lost by the hub",
    "start-failed": "failed to start",
}
NO_HUB = (
    "This quota service runs without a hub to ask, so it cannot stop servers; nothing was stopped."
)
UNCONFIRMED = "Tick the box to confirm that every student's server of the course should stop."


# -- pure rules ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    id: int
    starts_at: datetime
    ends_at: datetime
    phase: str  # "in progress", "pre-warming", "ended" or "upcoming"


def window_phase(starts_at: datetime, ends_at: datetime, lead: timedelta, now: datetime) -> str:
    if ends_at <= now:
        return "ended"
    if starts_at <= now:
        return "in progress"
    return "pre-warming" if lead and starts_at - lead <= now else "upcoming"


def focus_window(
    windows: Sequence[ClassWindow], lead: timedelta, now: datetime
) -> ClassWindow | None:
    """The class window the page shows (see the module docstring); `windows` by start."""
    for w in windows:
        if w.starts_at - lead <= now < w.ends_at:
            return w
    started = [w for w in windows if w.starts_at <= now]
    if started:
        return started[-1]
    return windows[0] if windows else None


def student_state(
    prewarmed: Sequence[Session], own: Sequence[Session]
) -> tuple[str, datetime | None, str]:
    """(state, since, detail) of a student's server in a class window, from the sessions
    pre-warmed for them for it and their own sessions on the course in it, each by start."""
    handed = {s.handed_to for s in prewarmed if s.handed_to is not None}
    running = [s for s in own if s.status == "active"]
    claimed = [s for s in running if s.id in handed]
    if claimed:
        return CLAIMED, claimed[-1].started_at, ""
    if running:
        return RUNNING, running[-1].started_at, "" if running[-1].begun else "queued"
    waiting = [s for s in prewarmed if s.status == "active" and s.handed_to is None]
    if waiting:
        return PREWARMED, waiting[-1].started_at, ""
    ended = [s for s in (*prewarmed, *own) if s.stopped_at is not None]
    if ended:
        last = max(ended, key=lambda s: (s.stopped_at, s.id))
        return STOPPED, last.stopped_at, STOP_WORDS.get(last.stop_reason, last.stop_reason)
    return NOT_STARTED, None, ""


def metered_micros(s: Session) -> int:
    """The slice time a session has been charged for so far, in microseconds."""
    return max(micros(s.metered_until - s.started_at), 0) if s.begun else 0


# -- the view -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Student:
    username: str
    name: str  # as on the roster
    state: str
    since: datetime | None
    detail: str
    spent: Amounts  # their own sessions on the course, all time
    cap_left_cents: int | None  # None: no cap


@dataclass(frozen=True)
class PrewarmCost:
    servers: int = 0
    micros: int = 0
    amounts: Amounts = field(default_factory=Amounts)

    @property
    def minutes(self):
        return minutes_of(self.micros)


@dataclass(frozen=True)
class ClassView:
    course: dict  # the API's project view: the balance as the ledger enforces it now
    at: datetime
    window: Window | None  # the one shown
    upcoming: list[Window]
    students: list[Student]  # the roster's students, in roster order
    this_month: Amounts
    policy: PrewarmPolicy | None  # None: the course does not pre-warm
    prewarm: dict[str, PrewarmCost]  # of the window shown, by outcome
    last_stop: dict | None  # the latest stop-all: actor, at, asked, accepted, failed
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def spent(self) -> Amounts:
        return sum((s.spent for s in self.students), Amounts())

    @property
    def layout(self) -> str:
        """What the page's rows stand for: when it changes (another window, another roster),
        the page's script reloads the page instead of replacing its live part."""
        key = json.dumps([self.window and self.window.id, [s.username for s in self.students]])
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def class_role(ledger, course: str, username: str) -> str | None:
    """`username`'s role on `course`'s roster (None: no member row)."""
    with ledger.session() as db:
        return db.scalar(
            select(Member.role)
            .join(Project, Project.id == Member.project_id)
            .where(Project.slug == course, Member.username == username)
        )


def _course(db, slug: str) -> Project:
    p = find_project(db, slug)
    if not p.is_course:
        raise LedgerError(f"{slug} is not a course; class pages are for courses.", 404)
    return p


def class_view(reader: LedgerReader, slug: str, now: datetime) -> ClassView:
    """The class page of course `slug` at `now` (see the module docstring)."""
    ledger = reader.ledger
    with ledger.session() as db:
        p = _course(db, slug)
        policy = prewarm_policies(db.connection(), [p.id]).get(p.id)
        lead = policy.lead if policy else timedelta()
        windows = db.scalars(
            select(ClassWindow)
            .where(ClassWindow.project_id == p.id)
            .order_by(ClassWindow.starts_at, ClassWindow.id)
        ).all()
        roster = db.execute(
            select(Member.username, Member.name, Member.cap_cents)
            .where(Member.project_id == p.id, Member.role == "student")
            .order_by(Member.id)
        ).all()
        w = focus_window(windows, lead, now)
        prewarmed, own = _window_sessions(db, p, w, lead) if w else ({}, {})
        spent = _spent(db, p)
        month = month_bounds(f"{now.astimezone(CENTRE_TZ):%Y-%m}")[0].astimezone(UTC)
        this_month = Amounts(
            *(
                int(v)
                for v in db.execute(
                    select(
                        func.coalesce(func.sum(Charge.list_cents), 0),
                        func.coalesce(func.sum(Charge.subsidy_cents), 0),
                        func.coalesce(func.sum(Charge.copay_cents), 0),
                    ).where(Charge.project_id == p.id, Charge.period_end > month)
                ).one()
            )
        )
        last_stop = db.scalar(
            select(AuditEntry)
            .where(AuditEntry.action == STOP_ALL, AuditEntry.subject == slug)
            .order_by(AuditEntry.id.desc())
            .limit(1)
        )
        cost = _prewarm_cost(prewarmed)
        cap = p.member_cap_cents
    students = []
    for username, name, own_cap in roster:
        state, since, detail = student_state(prewarmed.get(username, []), own.get(username, []))
        amounts, held = spent.get(username, (Amounts(), 0))
        limit = own_cap if own_cap is not None else cap
        left = None if limit is None else max(limit - amounts.subsidy_cents - held, 0)
        students.append(Student(username, name, state, since, detail, amounts, left))
    after = [x for x in windows if x.starts_at > now and x is not w][:UPCOMING]
    return ClassView(
        course=reader.projects(None, now, slug)[0],
        at=now,
        window=w and Window(w.id, w.starts_at, w.ends_at, window_phase(*_span(w), lead, now)),
        upcoming=[Window(x.id, *_span(x), window_phase(*_span(x), lead, now)) for x in after],
        students=students,
        this_month=this_month,
        policy=policy,
        prewarm=cost,
        last_stop=_stop_of(last_stop),
        counts={s: sum(1 for x in students if x.state == s) for s in STATES},
    )


def _stop_of(entry: AuditEntry | None) -> dict | None:
    """A stop-all's audit entry as the page says it: actor, at, asked, accepted, failed."""
    if entry is None:
        return None
    return {"actor": entry.actor, "at": entry.at, **json.loads(entry.detail)}


def _span(w: ClassWindow) -> tuple[datetime, datetime]:
    return w.starts_at, w.ends_at


def _window_sessions(db, p: Project, w: ClassWindow, lead: timedelta):
    """By user: the sessions pre-warmed for window `w` (any payer), and the users' own
    sessions on course `p` that ran in it (from its pre-warm lead to its end); by start."""
    prewarmed: dict[str, list[Session]] = {}
    own: dict[str, list[Session]] = {}
    for s in db.scalars(
        select(Session).where(Session.prewarm_window_id == w.id).order_by(Session.started_at)
    ):
        prewarmed.setdefault(s.username, []).append(s)
    for s in db.scalars(
        select(Session)
        .where(
            Session.project_id == p.id,
            Session.prewarm_window_id.is_(None),
            Session.started_at < w.ends_at,
            or_(Session.stopped_at.is_(None), Session.stopped_at > w.starts_at - lead),
        )
        .order_by(Session.started_at)
    ):
        own.setdefault(s.username, []).append(s)
    return prewarmed, own


def _spent(db, p: Project) -> dict[str, tuple[Amounts, int]]:
    """By user: what their own sessions on `p` were charged, and the subsidy their active
    ones still hold (for the cap, as `Ledger.member_draw` counts it); one grouped query."""
    s = Session
    active_hold = case((s.status == "active", s.hold_subsidy_cents - s.charged_subsidy_cents))
    rows = db.execute(
        select(
            s.username,
            func.sum(s.charged_list_cents),
            func.sum(s.charged_subsidy_cents),
            func.coalesce(func.sum(active_hold), 0),
        )
        .where(s.project_id == p.id, s.prewarm_window_id.is_(None))
        .group_by(s.username)
    )
    return {
        user: (Amounts(int(lst), int(sub), int(lst) - int(sub)), int(held))
        for user, lst, sub, held in rows
    }


def _prewarm_cost(prewarmed: dict[str, list[Session]]) -> dict[str, PrewarmCost]:
    cost = {outcome: PrewarmCost() for outcome in OUTCOMES}
    for sessions in prewarmed.values():
        for s in sessions:
            outcome = prewarm_outcome(s.status, s.stop_reason, s.handed_to)
            c = cost[outcome]
            list_cents, subsidy = s.charged_list_cents, s.charged_subsidy_cents
            cost[outcome] = PrewarmCost(
                c.servers + 1,
                c.micros + metered_micros(s),
                c.amounts + Amounts(list_cents, subsidy, list_cents - subsidy),
            )
    return cost


def running_servers(ledger, slug: str) -> list[tuple[str, str]]:
    """(user, server name) of every server of `slug`'s rostered students that the ledger holds
    active: on the course, or pre-warmed for one of its class windows (whoever pays)."""
    with ledger.session() as db:
        p = _course(db, slug)
        students = select(Member.username).where(
            Member.project_id == p.id, Member.role == "student"
        )
        windows = select(ClassWindow.id).where(ClassWindow.project_id == p.id)
        rows = db.execute(
            select(Session.username, Session.server_name)
            .where(
                Session.status == "active",
                Session.username.in_(students),
                or_(Session.project_id == p.id, Session.prewarm_window_id.in_(windows)),
            )
            .distinct()
            .order_by(Session.username, Session.server_name)
        ).all()
        return [(user, name) for user, name in rows]


async def stop_servers(
    hub, servers: Sequence[tuple[str, str]], concurrency: int = STOP_CONCURRENCY
) -> list[tuple[str, str]]:
    """Ask `hub` to stop each of `servers`, `concurrency` at a time; those it did not accept
    (an answer other than stopped or not running, or no answer)."""
    gate = asyncio.Semaphore(concurrency)

    async def stop(user: str, name: str) -> bool:
        async with gate:
            try:
                return await hub.stop_server(user, name)
            except Exception:
                log.exception("Could not ask the hub to stop %s's server %r", user, name)
                return False

    done = await asyncio.gather(*(stop(user, name) for user, name in servers))
    return [server for server, ok in zip(servers, done, strict=True) if not ok]


def record_stop_all(ledger, actor: str, course: str, now: datetime, asked, failed) -> None:
    """The audit entry of a stop-all: who, which course, how many were asked and accepted."""
    with ledger.session.begin() as db:
        audit(
            db,
            now,
            actor,
            STOP_ALL,
            course,
            asked=len(asked),
            accepted=len(asked) - len(failed),
            failed=[f"{user}/{name}" for user, name in failed[:50]],
        )


def view_json(v: ClassView, html: str) -> dict:
    """The JSON of `GET api/classes/<course>`: the view as data, and its live part as HTML."""
    cents = ("list_cents", "subsidy_cents", "copay_cents")

    def money(a: Amounts) -> dict:
        return {k: getattr(a, k) for k in cents}

    def window(w: Window | None) -> dict | None:
        if w is None:
            return None
        return {
            "id": w.id,
            "starts_at": w.starts_at.isoformat(),
            "ends_at": w.ends_at.isoformat(),
            "phase": w.phase,
        }

    return {
        "course": v.course["project"],
        "at": v.at.isoformat(),
        "layout": v.layout,
        "window": window(v.window),
        "upcoming": [window(w) for w in v.upcoming],
        "counts": v.counts,
        "students": [
            {
                "user": s.username,
                "name": s.name,
                "state": s.state,
                "since": s.since.isoformat() if s.since else None,
                "detail": s.detail,
                "spent": money(s.spent),
                "cap_left_cents": s.cap_left_cents,
            }
            for s in v.students
        ],
        "balance": v.course,
        "this_month": money(v.this_month),
        "prewarm": {
            "paid_by": v.policy.paid_by if v.policy else None,
            **{
                k: {"servers": c.servers, "minutes": str(c.minutes), **money(c.amounts)}
                for k, c in v.prewarm.items()
            },
        },
        "html": html,
    }


# -- handlers -----------------------------------------------------------------------------


async def check_teacher(handler: QuotaHandler, course: str) -> None:
    """Staff, or an instructor or PI of `course`; anyone else 403 (an unknown course too)."""
    if handler.is_staff():
        return
    role = await handler.in_db(class_role, handler.ledger, course, handler.username())
    if role not in TEACHERS:
        raise web.HTTPError(
            403,
            f"The class page of {course} is for its instructors and the centre's staff; your "
            "own projects and sessions are on My usage.",
        )


def live_html(v: ClassView) -> str:
    return render("_class_live.html.j2", v=v)


class ClassPage(PageHandler):
    """`classes/<course>`: the page (GET) and its "Stop all servers" form (POST)."""

    def initialize(self, root: str) -> None:
        self.root = root

    @web.authenticated
    async def get(self, course):
        await check_teacher(self, course)
        await self.show(course)

    async def show(self, course: str, status: int = 200, error: str = "") -> None:
        v = await self.in_db(class_view, self.reader, course, clock.utcnow())
        self.set_status(status)
        self.page(
            "class.html.j2",
            title=f"Class {course}",
            page="class",
            v=v,
            error=error,
            done=self.get_query_argument("done", "") == "stopped" and v.last_stop,
            has_hub=self.settings.get("hub") is not None,
            api_url=f"{self.root}api/classes/{course}",
            every=REFRESH_SECONDS,
            xsrf_input=Markup(self.xsrf_form_html()),  # tornado escapes the token
        )

    @web.authenticated
    async def post(self, course):
        await check_teacher(self, course)
        hub = self.settings.get("hub")
        if hub is None:
            return await self.show(course, 503, NO_HUB)
        if self.get_body_argument("confirm", "") != "yes":
            return await self.show(course, 400, UNCONFIRMED)
        servers = await self.in_db(running_servers, self.ledger, course)
        failed = await stop_servers(hub, servers)
        actor = self.current_user["name"]
        await self.in_db(
            record_stop_all, self.ledger, actor, course, clock.utcnow(), servers, failed
        )
        log.info(
            "%s asked the hub to stop %d servers of course %s (%d not accepted)",
            actor,
            len(servers),
            course,
            len(failed),
        )
        self.redirect(f"{self.root}classes/{course}?done=stopped", status=303)


class ClassApi(QuotaHandler):
    """`api/classes/<course>`: the class page's view as JSON, for its script."""

    @web.authenticated
    async def get(self, course):
        await check_teacher(self, course)
        v = await self.in_db(class_view, self.reader, course, clock.utcnow())
        self.set_header("Cache-Control", "no-store")
        self.write_json(view_json(v, live_html(v)))


def class_routes(route) -> list:
    """The class page's routes, each path made absolute by `route` (the service's prefix)."""
    course = r"([a-z0-9][a-z0-9-]{0,62})"
    return [
        (route(f"classes/{course}"), ClassPage, {"root": route("")}),
        (route(f"api/classes/{course}"), ClassApi),
    ]
