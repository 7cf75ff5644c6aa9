"""The quota service's pages in the hub: "My usage" and, for staff, "Running sessions".

- `GET /services/quota/usage`: for each project the user belongs to, its balance (subsidy left,
  credit left, spent this month as list cost, subsidy and co-pay), its spend per day over the
  last 30 days as a chart (the statements' chart) with a table, and the user's own sessions.
- `GET /services/quota/staff` (`custom:quota:staff`; others get 403 with a sentence): every
  running session with its burn rate now (list price per hour and the co-pay part of it), what
  it has spent, and its activity and GPU signal at the culler's latest check (the service's
  `readings`, `slicehub.quota.idle_api.Seen`: what works now, how long it has been idle, when
  it is parked if a warning stands; "not read yet" before the first check, and "no GPU signal"
  with the reason where the slice's devices give none, never a number), then every project's
  balance.

Both are HTML for people, behind the hub's OAuth like the API (a browser that is not logged in
is sent to the hub's login and back). This module only reads the ledger. It decides what the
pages show and how money and time read: money through `format_money` (HK$, two decimals),
times as `<time datetime="…">… UTC</time>`, turned into the reader's own time zone by a few
lines of script on the page (the UTC text stays where scripts do not run). Days are the
centre's (Hong Kong time), as on the statements. A balance and a burn rate are shown as the
ledger enforces them now; the 30 days are summed in the database, one query per page.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from markupsafe import Markup
from sqlalchemy import case, func, select
from tornado import web

from slicehub.common import clock
from slicehub.common.money import format_money, subsidy_of

from .api import STAFF, QuotaHandler
from .idle_api import Seen
from .ledger import Ledger
from .models import Charge, Price, Project, Session
from .pricing import PriceBook
from .reader import LedgerReader, session_view
from .statement import CENTRE_TZ, PARKED, Amounts, DaySpend, month_bounds
from .statement_render import daily_chart, template_environment

DAYS_CHARTED = 30
STAFF_ROWS = 1000  # running sessions listed on the staff page; the totals count them all


# -- pure helpers -------------------------------------------------------------------------


def burn_rate(
    cents_per_hour: int | None, rate_bp: int, subsidy_room_cents: int, running: bool = True
) -> Amounts:
    """What a session costs per hour now: its list price, split into subsidy and co-pay at the
    scheme's rate. A session whose hold has no subsidy left to draw (policy `full_price`, past
    the subsidy) pays it all as co-pay; a queued session (not begun) costs nothing yet."""
    if not running or not cents_per_hour:
        return Amounts()
    subsidy = subsidy_of(cents_per_hour, rate_bp) if subsidy_room_cents > 0 else 0
    return Amounts(cents_per_hour, subsidy, cents_per_hour - subsidy)


def chart_days(now: datetime, n: int = DAYS_CHARTED) -> list[date]:
    """The last `n` days of the centre (Hong Kong time), today last."""
    today = now.astimezone(CENTRE_TZ).date()
    return [today - timedelta(days=n - 1 - i) for i in range(n)]


def day_end(day: date) -> datetime:
    """The first instant after `day` (the centre's midnight), as an aware datetime."""
    return datetime.combine(day + timedelta(days=1), time(), CENTRE_TZ)


def session_state(status: str, begun: bool) -> str:
    """What a session is doing, in words a user reads: running, queued or stopped."""
    if status == "active":
        return "running" if begun else "queued"
    return "stopped"


def time_tag(moment: datetime | str | None) -> Markup:
    """`<time datetime="2026-11-22T02:00:00Z">2026-11-22 02:00 UTC</time>`: UTC text that the
    page's script shows in the reader's zone. An ISO string (as the API views hold) is read."""
    if moment is None:
        return Markup("")
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    utc = moment.astimezone(UTC).replace(microsecond=0)
    return Markup('<time datetime="{}">{} UTC</time>').format(
        utc.strftime("%Y-%m-%dT%H:%M:%SZ"), utc.strftime("%Y-%m-%d %H:%M")
    )


def per_hour(cents: int) -> str:
    return f"{format_money(cents)}/h"


def idle_text(idle: timedelta) -> str:
    """12 min, 1 h 05 min, under a minute: how long a session has been idle, for people."""
    minutes = int(idle.total_seconds()) // 60
    if minutes < 1:
        return "under a minute"
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def activity_text(seen: Seen | None, view: dict) -> Markup:
    """What a running session is doing at the culler's latest check, a sentence for staff.
    Everything a server said (what works now) is escaped by `Markup.format`; only the times
    are markup (`time_tag`)."""
    if not view["begun"]:
        return Markup("queued: not running yet")
    if seen is None:
        return Markup("not read yet")
    if seen.busy:
        return Markup("working: {}").format("; ".join(seen.busy))
    idle = idle_text(seen.idle)
    if seen.opted_out:
        return Markup("idle {} (the project is exempt from parking)").format(idle)
    if seen.action == "park":
        return Markup("idle {}: being parked now").format(idle)
    warning = view.get("parking")
    if warning:
        return Markup("idle {} (parked at {} unless there is activity)").format(
            idle, time_tag(warning["park_at"])
        )
    return Markup("idle {}").format(idle)


def gpu_text(seen: Seen | None) -> str:
    """The GPU signal of a session's slice at the latest check: active or idle (with what the
    server said of it), or "no GPU signal" and why; never a number the devices did not give."""
    if seen is None:
        return "not read yet"
    detail = seen.gpu_detail.strip()
    if seen.gpu == "none":
        if detail.lower().startswith("no gpu signal"):
            return detail
        return f"no GPU signal: {detail}" if detail else "no GPU signal"
    return f"{seen.gpu}: {detail}" if detail else seen.gpu


def stopped_text(view: dict) -> str:
    """Why a user's session stopped, when it was parked: "parked after 30 min idle; HK$24.50
    returned" (the subsidy its hold had not used, back to the project at the parking)."""
    if view["status"] == "active" or view.get("stop_reason") != PARKED:
        return ""
    returned = view["hold_subsidy_cents"] - view["charged_subsidy_cents"]
    idle = idle_text(timedelta(seconds=view.get("idle_seconds") or 0))
    return f"parked after {idle} idle; {format_money(returned)} returned"


def total(amounts) -> Amounts:
    return sum(amounts, Amounts())


# -- queries (read-only) ------------------------------------------------------------------


def daily_spend(ledger: Ledger, slugs: list[str], days: list[date]) -> dict[str, list[DaySpend]]:
    """Spend per centre day of each project in `slugs`, for consecutive `days`, zero where
    nothing was spent. Each charge counts, whole, on the day of its period's end (as on the
    statements); the sums are made by the database in one pass over the range."""
    if not slugs or not days:
        return {}
    ends = [day_end(d) for d in days]
    start = ends[0] - timedelta(days=1)
    bucket = case(*((Charge.period_end <= e, i) for i, e in enumerate(ends))).label("bucket")
    inner = (
        select(Project.slug, bucket, Charge.list_cents, Charge.subsidy_cents, Charge.copay_cents)
        .join(Project, Project.id == Charge.project_id)
        .where(Project.slug.in_(slugs), Charge.period_end > start, Charge.period_end <= ends[-1])
        .subquery()
    )
    q = select(
        inner.c.slug,
        inner.c.bucket,
        func.sum(inner.c.list_cents),
        func.sum(inner.c.subsidy_cents),
        func.sum(inner.c.copay_cents),
    ).group_by(inner.c.slug, inner.c.bucket)
    spent: dict[tuple[str, int], Amounts] = {}
    with ledger.session() as db:
        for slug, i, lst, sub, cop in db.execute(q):
            spent[(slug, i)] = Amounts(int(lst), int(sub), int(cop))
    return {
        slug: [DaySpend(d, spent.get((slug, i), Amounts())) for i, d in enumerate(days)]
        for slug in slugs
    }


@dataclass(frozen=True)
class ProjectUsage:
    project: dict  # the API's project view: balances as the ledger enforces them now
    this_month: Amounts
    days: list[DaySpend]  # the last DAYS_CHARTED days
    chart: dict  # slicehub.quota.statement_render.daily_chart of `days`
    sessions: list[dict]  # the user's sessions in the project, newest first (API views)

    @property
    def days_total(self) -> Amounts:
        return total(d.amounts for d in self.days)


def usage(
    reader: LedgerReader, username: str, now: datetime, groups: Collection[str] = ()
) -> list[ProjectUsage]:
    """The "My usage" page of `username` (in hub `groups`): each of their projects (by member
    row or member group), its balance, this month's and the last 30 days' spend (the
    project's, all members), and their own sessions."""
    projects = reader.projects(username, now, None, groups)
    days = chart_days(now)
    month_start = month_bounds(f"{now.astimezone(CENTRE_TZ):%Y-%m}")[0].date()
    first = min(days[0], month_start)
    span = [first + timedelta(days=i) for i in range((days[-1] - first).days + 1)]
    spend = daily_spend(reader.ledger, [p["project"] for p in projects], span)
    sessions = reader.sessions(username, None)
    out = []
    for p in projects:
        series = spend.get(p["project"], [])
        charted = [d for d in series if d.day >= days[0]]
        out.append(
            ProjectUsage(
                project=p,
                this_month=total(d.amounts for d in series if d.day >= month_start),
                days=charted,
                chart=daily_chart(charted),
                sessions=[s for s in sessions if s["project"] == p["project"]],
            )
        )
    return out


@dataclass(frozen=True)
class RunningSession:
    view: dict  # the API's session view
    state: str
    burn: Amounts  # per hour, now
    seen: Seen | None = None  # the culler's latest reading (None: not read yet)

    @property
    def activity(self) -> Markup:
        return activity_text(self.seen, self.view)

    @property
    def gpu(self) -> str:
        return gpu_text(self.seen) if self.view["begun"] else ""

    @property
    def idle(self) -> bool:
        """Idle at the latest check (read, nothing working, idle for a minute or more)."""
        s = self.seen
        return s is not None and not s.busy and s.idle >= timedelta(minutes=1)

    @property
    def spent(self) -> Amounts:
        v = self.view
        return Amounts(
            v["charged_list_cents"], v["charged_subsidy_cents"], v["charged_copay_cents"]
        )


@dataclass(frozen=True)
class StaffView:
    running: list[RunningSession]  # the first STAFF_ROWS, oldest start first
    count: int  # every running session that matches the filter
    burn: Amounts  # theirs, per hour
    spent: Amounts
    projects: list[dict]  # every project, with its balance
    slice_types: list[str]  # for the filter
    filters: dict[str, str]
    idle: int = 0  # of the matching running sessions, idle at the latest check
    warned: int = 0  # … with a parking warning standing


def staff_view(
    reader: LedgerReader,
    now: datetime,
    project: str = "",
    slice_type: str = "",
    user: str = "",
    readings: Mapping[int, Seen] | None = None,
) -> StaffView:
    """The staff page: running sessions (optionally of one project, slice type or user) with
    their burn rate now, at the prices each session was held at, and their activity at the
    culler's latest check (`readings`: session id -> `Seen`), and every project's balance."""
    readings = readings or {}
    with reader.ledger.session() as db:
        q = (
            select(Session, Project.slug)
            .join(Project, Project.id == Session.project_id)
            .where(Session.status == "active")
        )
        if project:
            q = q.where(Project.slug == project)
        if slice_type:
            q = q.where(Session.slice_type == slice_type)
        if user:
            q = q.where(Session.username == user)
        rows = db.execute(q.order_by(Session.started_at, Session.id)).all()
        book = PriceBook(db.scalars(select(Price)).all())
        slice_types = sorted(db.scalars(select(Price.slice_type).distinct()).all())
        running = [
            RunningSession(
                session_view(s, slug),
                session_state(s.status, s.begun),
                burn_rate(
                    book.schedule(s.slice_type, s.prices_known).price_at(now),
                    s.rate_bp,
                    s.hold_subsidy_cents - s.charged_subsidy_cents,
                    s.begun,
                ),
                readings.get(s.id),
            )
            for s, slug in rows
        ]
    return StaffView(
        running=running[:STAFF_ROWS],
        count=len(running),
        burn=total(r.burn for r in running),
        spent=total(r.spent for r in running),
        projects=reader.projects(None, now),
        slice_types=slice_types,
        filters={"project": project, "slice_type": slice_type, "user": user},
        idle=sum(r.idle for r in running),
        warned=sum(1 for r in running if r.idle and r.view["parking"]),
    )


# -- rendering ----------------------------------------------------------------------------


@functools.cache
def environment():
    env = template_environment()  # the statements' environment: money, hkt and rate filters
    env.filters["time"] = time_tag
    env.filters["per_hour"] = per_hour
    env.globals["state"] = session_state
    env.globals["stopped_text"] = stopped_text
    return env


def render(template: str, **ns) -> str:
    return environment().get_template(template).render(**ns)


class PageHandler(QuotaHandler):
    """An HTML page of the service: errors are pages with a sentence too, not JSON. `root` is
    what the layout's links to the service's pages start with: "" for the pages at the
    service's top (relative links), the service's prefix for pages deeper down."""

    root = ""

    def page(self, template: str, **ns) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")  # balances and names: never cached
        self.finish(
            render(
                template,
                user=self.current_user["name"],
                is_staff=self.is_staff(),
                hub_home=self.hub_auth.hub_prefix + "home",
                root=self.root,
                **ns,
            )
        )

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message else None
        if message is None and status_code >= 500:
            message = "Something went wrong on our side; please try again in a minute."
        who = getattr(self, "_current_user", None) or {}  # never ask the hub again here
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(
            render(
                "page_error.html.j2",
                title=self._reason,
                message=message or self._reason,
                status=status_code,
                user=who.get("name"),
                is_staff=STAFF in who.get("scopes", ()),
                page="",
                hub_home=self.hub_auth.hub_prefix + "home",
                root=self.root,
            )
        )


class UsagePage(PageHandler):
    @web.authenticated
    async def get(self):
        username = self.username()
        groups = await self.groups_of(username)
        projects = await self.in_db(usage, self.reader, username, clock.utcnow(), groups)
        self.page("usage.html.j2", title="My usage", page="usage", projects=projects)


class StaffPage(PageHandler):
    @web.authenticated
    async def get(self):
        if not self.is_staff():
            raise web.HTTPError(
                403,
                "This page is for the centre's staff (the custom:quota:staff permission); "
                "your own projects and sessions are on My usage.",
            )
        filters = {
            key: self.get_argument(key, "").strip()[:100]
            for key in ("project", "slice_type", "user")
        }
        readings = dict(self.settings["readings"])  # a copy: the culler's posts change it
        view = await self.in_db(
            staff_view, self.reader, clock.utcnow(), *filters.values(), readings
        )
        self.page("staff.html.j2", title="Running sessions", page="staff", view=view)
