"""What a batch of holds, an extension or a balance reads: the projects' states, set-wise.

`load_states` reads everything the hold rules (`slicehub.quota.hold`) need about a set of
projects in a fixed number of statements, however many projects and requests a batch carries:
the projects (locked, in id order, when a batch will write; with them the member group each
names and the subsidy rate in force: the project's own, else its scheme's), their active
sessions' sums, grants in force, the member rows asked about and what capped members drew (a
group member under the project's member cap too; never what a server pre-warmed for them
cost), a course's class windows and its pre-warming.
`PriceCache` keeps the price rows and reads them again only when a new one has been written.

It decides nothing and writes nothing; a project's balance is its closed totals plus its active
sessions, so no query here reads the (long) history of charges.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta

from sqlalchemy import ARRAY, Integer, String, any_, bindparam, case, func, select, tuple_

from .hold import MemberRow, ProjectState
from .models import ClassPrewarm, ClassWindow, Grant, Member, Price, Project, Scheme, Session
from .prewarm import PrewarmPolicy
from .pricing import PriceBook


def load_states(
    db,
    slugs,
    now: datetime,
    lock: bool,
    is_sqlite: bool,
    members=(),
    groups: Mapping[str, Collection[str]] | None = None,
):
    """The state of projects `slugs` (locked when `lock`), keyed by slug; the memberships read
    are the (slug, username) pairs in `members`, with what each has drawn when a cap applies.
    `groups` (username -> their hub groups) says who may be a member through a project's
    member group without a row: what they drew is read as well, in the same statement."""
    conn = db.connection()  # Core rows throughout: the ORM's per-statement cost adds up here
    pt, t = Project.__table__, Session.__table__
    q = (
        select(
            pt,
            # the project's own rate (its decision's), else its scheme's: one column more
            func.coalesce(pt.c.subsidy_rate_bp, Scheme.subsidy_rate_bp).label("rate_in_force"),
            select(func.coalesce(func.max(Price.id), 0)).scalar_subquery().label("known"),
        )
        .join(Scheme, Scheme.id == pt.c.scheme_id)
        .where(_in(conn, pt.c.slug, sorted(slugs), String))
        .order_by(pt.c.id)
    )
    if lock and not is_sqlite:
        q = q.with_for_update(of=pt)
    states = {
        r.slug: ProjectState(r, r.rate_in_force, [], known=r.known) for r in conn.execute(q).all()
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
        _load_members(conn, by_id, pairs, groups or {})
    courses = [pid for pid, s in by_id.items() if s.row.is_course]
    if courses:
        for wid, pid, start, end in conn.execute(
            select(
                ClassWindow.id, ClassWindow.project_id, ClassWindow.starts_at, ClassWindow.ends_at
            )
            .where(_in(conn, ClassWindow.project_id, courses, Integer))
            .order_by(ClassWindow.starts_at)
        ):
            by_id[pid].windows.append((start, end))
            by_id[pid].window_ids[wid] = (start, end)
        for pid, policy in prewarm_policies(conn, courses).items():
            by_id[pid].prewarm = policy
    return states


def prewarm_policies(conn, course_ids: list[int]) -> dict[int, PrewarmPolicy]:
    """The pre-warming of the courses `course_ids` that pre-warm, by course id."""
    cp, payer = ClassPrewarm.__table__.c, Project.__table__.alias("payer")
    rows = conn.execute(
        select(cp, payer.c.slug)
        .join(payer, payer.c.id == cp.paid_by_id)
        .where(_in(conn, cp.project_id, course_ids, Integer))
    ).all()
    return {
        r.project_id: PrewarmPolicy(
            timedelta(minutes=r.lead_minutes),
            timedelta(minutes=r.claim_minutes),
            r.slice_type,
            r.seats,
            r.slug,
        )
        for r in rows
    }


def prewarm_payers(db, course_slugs: Collection[str]) -> dict[str, str]:
    """course slug -> the slug of the project paying for its pre-warmed servers (the courses
    among `course_slugs` that pre-warm)."""
    course, payer = Project.__table__.alias("course"), Project.__table__.alias("payer")
    cp = ClassPrewarm.__table__
    rows = db.connection().execute(
        select(course.c.slug, payer.c.slug)
        .join(cp, cp.c.project_id == course.c.id)
        .join(payer, payer.c.id == cp.c.paid_by_id)
        .where(course.c.slug.in_(sorted(course_slugs)))
    )
    return dict(rows.all())


def _load_members(
    conn,
    by_id: dict[int, ProjectState],
    pairs: list[tuple[int, str]],
    groups: Mapping[str, Collection[str]],
):
    """The memberships asked about (exact pairs, plain rows), and what capped members drew:
    by row, or (no row) through the project's member group under its member cap."""
    m = Member.__table__.c
    capped = []
    for pid, username, role, cap in conn.execute(
        select(m.project_id, m.username, m.role, m.cap_cents).where(_pair_in(conn, m, pairs))
    ):
        state = by_id[pid]
        state.members[username] = MemberRow(username, role, cap)
        if cap is not None or state.row.member_cap_cents is not None:
            capped.append((pid, username))
    for pid, username in pairs:
        state = by_id[pid]
        if username in state.members or state.row.member_cap_cents is None:
            continue
        if state.member(username, groups.get(username, ())) is not None:
            capped.append((pid, username))
    if not capped:
        return
    t = Session.__table__
    drawn = case((t.c.status == "active", t.c.hold_subsidy_cents), else_=t.c.charged_subsidy_cents)
    for pid, username, used in conn.execute(
        select(t.c.project_id, t.c.username, func.sum(drawn))
        # a pre-warmed server waiting for its student is the course's, never the student's
        .where(_pair_in(conn, t.c, capped), t.c.prewarm_window_id.is_(None))
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


def busy_servers(db, users: list[str]) -> set[tuple[str, str]]:
    """(user, server name) of every active session of `users`."""
    t, conn = Session.__table__, db.connection()
    return set(
        conn.execute(
            select(t.c.username, t.c.server_name).where(
                t.c.status == "active", _in(conn, t.c.username, users, String)
            )
        ).all()
    )


class PriceCache:
    """Every price row, read again only when a new one has been written (ids only grow), and
    the schedules built from them, per slice type and newest row known. Shared by the quota
    service's threads: the book and the row it knows are kept (and replaced) as one pair."""

    def __init__(self):
        self._cached: tuple[int, PriceBook | None] = (-1, None)

    def book(self, db, known: int | None = None) -> PriceBook:
        """The book of every price row up to `known` (None: read the newest id first)."""
        if known is None:
            known = newest_price(db)
        cached_known, book = self._cached
        if known != cached_known:
            prices = Price.__table__
            rows = db.connection().execute(select(prices).where(prices.c.id <= known)).all()
            book = PriceBook(rows)
            self._cached = (known, book)
        return book
