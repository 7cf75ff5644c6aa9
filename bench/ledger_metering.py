"""One metering tick of the subsidy ledger for 20,000 running sessions, on SQLite and PostgreSQL.

What it measures. `slicehub.quota.ledger.Ledger.meter(now)` (the shipped code, default engine
settings) on a ledger with 300 projects and 20,000 active sessions:

1. tick 1 at T0 + 60 s: every session's first charge (sessions started T0 .. T0 + 29 s);
2. tick 2 at T0 + 90 s: every session's second charge;
3. tick 3 at T0 + 90 s again: a repeated tick, which must charge nothing.

Wall time of the `meter` call alone, per tick; median of --runs runs, each on a fresh copy of
the same ledger. The goal: every shipped tick < 1 s, on each database.

The shipped writes differ by database (`slicehub.quota.store.apply_charges`): on SQLite one
executemany UPDATE of the sessions, conditional on the `metered_until` each was read with, and one
executemany INSERT of the charges; on PostgreSQL (`apply_charges_postgresql`) the update rows go
by binary COPY into a temporary table joined by one UPDATE, and the charges by binary COPY. One
named baseline, measured in the same runs on PostgreSQL only: "baseline: the generic
executemany writes", the shipped `meter` with `apply_charges_postgresql` replaced, inside this file
only (`executemany_writes_baseline`), by SQLite's writes. On SQLite those writes are the shipped
ones, so there is no baseline to run there.

Setup (not timed), once per database through the Ledger's own API: a scheme (70%), prices for
six slice types, two of which change inside the sessions' window (h100.1g.10gb at T0 + 45 s,
inside tick 1; h100.3g.40gb at T0 + 75 s, inside tick 2: those sessions are charged
piecewise), 300 projects with grants (every tenth on policy `full_price` with a small grant and
a credit line, so their later holds are partly on credit), 20 members each, and 20,000 holds
made with `open_sessions` in time order, in batches of 500. That ledger is the template; each
run gets a copy (SQLite: the backup API; PostgreSQL: `CREATE DATABASE ... TEMPLATE`).

Checked after every run, shipped and baseline alike: tick 1 and tick 2 each charged every
session, tick 3 wrote nothing; each session's charges sum to its running totals and tile
[start, T0 + 90 s); subsidy + co-pay = list for every charge; no project's subsidy charged
exceeds its grants; a sample of sessions against list costs recomputed here from the price
table with integer arithmetic (independent of `slicehub.quota.pricing`); on PostgreSQL, the ticks
updated each session row twice; and every run on every database wrote the same charges (one
digest).

Also (not the headline): a cProfile of tick 1 with the statements the driver was sent, shipped
and baseline; the share of the session updates PostgreSQL made HOT; and holds
(`open_session`) on the ledger with every session running.

    .venv/bin/python bench/ledger_metering.py [--sessions 20000] [--projects 300] [--runs 3]
        [--databases sqlite,postgresql] [--write]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import hashlib
import os
import platform
import pstats
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from unittest import mock

from _common import check, cpu_model, load_average, memory, publish, usable_cores
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import make_url

from slicehub.common.money import subsidy_of
from slicehub.quota.hold import HoldRequest
from slicehub.quota.ledger import Ledger
from slicehub.quota.models import Charge, Grant, SessionWarning
from slicehub.quota.models import Session as LedgerSession
from slicehub.quota.store import apply_charges_executemany

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import pg  # noqa: E402  (tests/pg.py: the project's PostgreSQL helper)

RESULTS = REPO / "bench" / "results" / "ledger_metering.md"
GOAL_S = 1.0
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday morning
SETUP_AT = T0 - timedelta(hours=1)  # when staff set everything up
RATE_BP = 7000
START_SPREAD_S = 30  # session i starts at T0 + (i % 30) s
TICKS = (("tick 1", 60), ("tick 2", 90), ("tick 3 (repeat)", 90))  # seconds after T0
# slice type -> (cents per hour from SETUP_AT, weight in the session mix)
SLICE_TYPES = {
    "h100.1g.10gb": (550, 30),
    "h100.2g.20gb": (1100, 15),
    "h100.3g.40gb": (1650, 25),
    "h100.7g.80gb": (3850, 15),
    "h100x1": (3850, 10),
    "cpu": (80, 5),
}
# price changes inside the sessions' window: (slice type, seconds after T0, new cents per hour)
PRICE_CHANGES = (("h100.1g.10gb", 45, 600), ("h100.3g.40gb", 75, 1800))
MEMBERS_PER_PROJECT = 20
SHORT_SHARE = 0.02  # sessions held for 10 min: their end-10min warning is due at tick 1
STOP_GRANT_CENTS = 2_000_000  # HK$20,000: a `stop` project affords all its sessions
FULL_PRICE_GRANT_CENTS = 50_000  # HK$500: a `full_price` project runs onto credit
CREDIT_LIMIT_CENTS = 10_000_000
SPOT_CHECKS = 40


# -- the ledger under test ------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """One hold the setup makes."""

    project: str
    username: str
    server_name: str
    slice_type: str
    start: datetime
    duration: timedelta


def project_slug(k: int) -> str:
    return f"proj-{k:03d}"


def is_full_price(k: int) -> bool:
    return k % 10 == 9


def make_plans(n_sessions: int, n_projects: int, seed: int) -> list[Plan]:
    rng = random.Random(seed)
    types = list(SLICE_TYPES)
    weights = [w for _p, w in SLICE_TYPES.values()]
    plans = []
    for i in range(n_sessions):
        k = i % n_projects
        member = (i // n_projects) % MEMBERS_PER_PROJECT
        server = i // (n_projects * MEMBERS_PER_PROJECT)
        if rng.random() < SHORT_SHARE:
            duration = timedelta(minutes=10)
        else:
            duration = timedelta(hours=rng.randint(1, 8))
        plans.append(
            Plan(
                project_slug(k),
                f"u{k:03d}-{member:02d}",
                f"nb{server}",
                rng.choices(types, weights)[0],
                T0 + timedelta(seconds=i % START_SPREAD_S),
                duration,
            )
        )
    plans.sort(key=lambda p: p.start)  # holds are made in time order
    return plans


def build_ledger(url: str, plans: list[Plan], n_projects: int) -> float:
    """Everything through the Ledger's API; returns the seconds it took."""
    t0 = time.perf_counter()
    ledger = Ledger(url)
    ledger.upgrade()
    ledger.add_scheme("staff", "bench-scheme", RATE_BP, 10**12, SETUP_AT)
    for name, (cents, _w) in SLICE_TYPES.items():
        ledger.set_price("staff", name, cents, SETUP_AT, SETUP_AT)
    for name, at_s, cents in PRICE_CHANGES:
        ledger.set_price("staff", name, cents, T0 + timedelta(seconds=at_s), SETUP_AT)
    until = SETUP_AT + timedelta(days=90)
    for k in range(n_projects):
        slug = project_slug(k)
        full = is_full_price(k)
        ledger.add_project(
            "staff",
            slug,
            scheme="bench-scheme",
            name=f"Project {k}",
            organisation="bench",
            pi=f"u{k:03d}-00",
            valid_from=SETUP_AT,
            valid_until=until,
            allowed_slice_types=["*"],
            max_concurrent_sessions=1000,
            policy="full_price" if full else "stop",
            credit_limit_cents=CREDIT_LIMIT_CENTS if full else 0,
            now=SETUP_AT,
        )
        grant = FULL_PRICE_GRANT_CENTS if full else STOP_GRANT_CENTS
        ledger.add_grant("staff", slug, grant, SETUP_AT, until, SETUP_AT)
        for m in range(MEMBERS_PER_PROJECT):
            ledger.add_member("staff", slug, f"u{k:03d}-{m:02d}", SETUP_AT)
    requests = [
        HoldRequest(p.project, p.username, p.server_name, p.slice_type, p.duration, p.start)
        for p in plans
    ]
    for i in range(0, len(requests), 500):  # in time order, in batches as the service holds
        outcomes = ledger.open_sessions(requests[i : i + 500])
        refused = [o for o in outcomes if isinstance(o, Exception)]
        check(not refused, f"setup: {len(refused)} holds refused: {refused[:1]}")
    ledger.dispose()
    return time.perf_counter() - t0


# -- databases: a template built once, a fresh copy per run ------------------------------------


class Database:
    """One kind of database: where the template lives and how to copy it."""

    name = ""

    def template_url(self) -> str: ...
    def copy(self) -> str: ...
    def discard(self, url: str) -> None: ...
    def close(self) -> None: ...
    def describe(self, url: str) -> str: ...


class SqliteDatabase(Database):
    name = "SQLite"

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="ledger-bench-")
        self.template = Path(self.dir.name) / "template.sqlite"
        self.n = 0

    def template_url(self) -> str:
        return f"sqlite:///{self.template}"

    def copy(self) -> str:
        self.n += 1
        target = Path(self.dir.name) / f"run{self.n}.sqlite"
        src = sqlite3.connect(self.template)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        return f"sqlite:///{target}"

    def discard(self, url: str) -> None:
        path = Path(make_url(url).database)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        self.dir.cleanup()

    def describe(self, url: str) -> str:
        return (
            f"SQLite {sqlite3.sqlite_version} (a file in a temp dir, WAL, synchronous=FULL "
            "default, `BEGIN IMMEDIATE` per transaction as slicehub/quota/store.py sets)"
        )


class PostgresDatabase(Database):
    name = "PostgreSQL"

    def __init__(self) -> None:
        self.template = pg.fresh_database("bench_ledger_template")
        self.copies: list[str] = []

    def template_url(self) -> str:
        return self.template

    def copy(self) -> str:
        import psycopg
        from psycopg import sql

        base = make_url(pg.ensure_postgres())
        name = pg.database_name("bench_ledger_run")
        create = sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
            sql.Identifier(name),
            sql.Identifier(make_url(self.template).database),
            sql.Identifier(base.username or "slicehub"),
        )
        with psycopg.connect(**pg._conninfo(base), autocommit=True) as conn:
            conn.execute(create)
        url = base.set(database=name).render_as_string(hide_password=False)
        self.copies.append(url)
        return url

    def discard(self, url: str) -> None:
        pg.drop_database(url)

    def close(self) -> None:
        self.discard(self.template)

    def describe(self, url: str) -> str:
        ledger = Ledger(url)
        try:
            with ledger.engine.connect() as conn:
                version = conn.scalar(text("SHOW server_version"))
                settings = {
                    k: conn.scalar(text(f"SHOW {k}"))
                    for k in ("shared_buffers", "synchronous_commit", "fsync")
                }
                options = conn.scalar(
                    text("SELECT reloptions FROM pg_class WHERE relname = 'sessions'")
                )
        finally:
            ledger.dispose()
        shown = ", ".join(f"{k}={v}" for k, v in settings.items())
        table = ", ".join(options or ["default storage options"])
        return (
            f"PostgreSQL {version} on this machine over TCP to 127.0.0.1 ({shown}); "
            f"table `sessions`: {table} (migration 0002)"
        )


# -- the baseline: generic executemany writes on PostgreSQL (NOT the shipped writes) ----------


BASELINE = "baseline: the generic executemany writes"


def executemany_writes_baseline() -> AbstractContextManager:
    """BASELINE, not shipped: while inside, the shipped `Ledger.meter` writes through
    `slicehub.quota.store.apply_charges_executemany` (what SQLite's ticks send) instead
    of `apply_charges_postgresql` (everything else in the tick, the locks and the rowcount check
    included, is the shipped code)."""
    return mock.patch("slicehub.quota.store.apply_charges_postgresql", apply_charges_executemany)


@dataclass(frozen=True)
class Code:
    """What a run measures: the shipped code, or the shipped code inside a patch."""

    label: str
    patch: Callable[[], AbstractContextManager]


SHIPPED = Code("shipped `Ledger.meter`", nullcontext)
BASELINE_CODE = Code(BASELINE, executemany_writes_baseline)


# -- one run --------------------------------------------------------------------------------


@dataclass
class TickResult:
    label: str
    wall_s: float
    charged: int  # MeterResult.charges: sessions charged = session rows updated
    charges_rows: int
    warnings_rows: int

    @property
    def rows(self) -> int:
        return self.charges_rows + self.charged + self.warnings_rows


@dataclass
class RunResult:
    ticks: list[TickResult]
    digest: str
    checks: list[str] = field(default_factory=list)
    hot: tuple[int, int] | None = None  # PostgreSQL: (session row updates, of which HOT)


def counts(ledger: Ledger) -> tuple[int, int]:
    with ledger.engine.connect() as conn:
        return (
            conn.scalar(select(func.count()).select_from(Charge)),
            conn.scalar(select(func.count()).select_from(SessionWarning)),
        )


def warm(ledger: Ledger) -> None:
    """Untimed: a connection in the pool, the sessions table read once, statements compiled."""
    with ledger.engine.connect() as conn:
        conn.execute(select(LedgerSession)).all()
    ledger.meter(T0)  # nothing to charge yet: every session's metered_until is >= T0


def session_updates(ledger: Ledger) -> tuple[int, int]:
    """PostgreSQL: (updates of `sessions` rows in this database, of which HOT: no index
    touched). The copy is a new database, so its counters start at zero."""
    with ledger.engine.connect() as conn:
        # the ticks' backend flushes its pending counters when it next goes idle (PG 15+)
        conn.execute(text("SELECT pg_stat_force_next_flush()"))
        conn.commit()
        row = conn.execute(
            text(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                "WHERE relname = 'sessions'"
            )
        ).one()
    return int(row[0]), int(row[1])


def run_once(url: str, code: Code, plans: list[Plan]) -> RunResult:
    ledger = Ledger(url)
    try:
        with code.patch():
            warm(ledger)
            ticks = []
            for label, at_s in TICKS:
                now = T0 + timedelta(seconds=at_s)
                before = counts(ledger)
                t0 = time.perf_counter()
                result = ledger.meter(now)
                wall = time.perf_counter() - t0
                after = counts(ledger)
                ticks.append(
                    TickResult(
                        label,
                        wall,
                        result.charges,
                        after[0] - before[0],
                        after[1] - before[1],
                    )
                )
        checks = verify(ledger, ticks, plans)
        hot = None
        if not ledger._is_sqlite:
            hot = session_updates(ledger)
            moved = sum(t.charged for t in ticks)
            check(hot[0] == moved, f"{hot[0]} session row updates, {moved} sessions charged")
        return RunResult(ticks, charges_digest(ledger), checks, hot)
    finally:
        ledger.dispose()


# -- verification ---------------------------------------------------------------------------


def expected_list_cents(slice_type: str, start: datetime, until: datetime) -> int:
    """List cost of [start, until), whole seconds, from this file's price table: the exact
    sum of price x seconds / 3600, rounded down (independent of slicehub.quota.pricing)."""
    points = [(SETUP_AT, SLICE_TYPES[slice_type][0])]
    points += [(T0 + timedelta(seconds=s), c) for t, s, c in PRICE_CHANGES if t == slice_type]
    numerator = 0  # cents x seconds
    for i, (frm, cents) in enumerate(points):
        to = points[i + 1][0] if i + 1 < len(points) else until
        a, b = max(frm, start), min(to, until)
        if b > a:
            numerator += cents * int((b - a).total_seconds())
    return numerator // 3600


def verify(ledger: Ledger, ticks: list[TickResult], plans: list[Plan]) -> list[str]:
    n = len(plans)
    t1, t2, t3 = ticks
    check(t1.charged == n and t1.charges_rows == n, f"tick 1 charged {t1.charged} of {n}")
    check(t2.charged == n and t2.charges_rows == n, f"tick 2 charged {t2.charged} of {n}")
    check(t3.charged == 0 and t3.rows == 0, f"the repeated tick wrote {t3.rows} rows")
    short = sum(p.duration < timedelta(minutes=15) for p in plans)
    check(t1.warnings_rows == short, f"tick 1 warned {t1.warnings_rows}, expected {short}")
    end = T0 + timedelta(seconds=TICKS[-1][1])
    with ledger.session() as db:
        per_session = (
            select(
                Charge.session_id,
                func.sum(Charge.list_cents).label("list"),
                func.sum(Charge.subsidy_cents).label("subsidy"),
                func.count().label("n"),
                func.min(Charge.period_start).label("first"),
                func.max(Charge.period_end).label("last"),
            )
            .group_by(Charge.session_id)
            .subquery()
        )
        bad_totals = db.scalar(
            select(func.count())
            .select_from(LedgerSession)
            .join(per_session, per_session.c.session_id == LedgerSession.id)
            .where(
                (per_session.c.list != LedgerSession.charged_list_cents)
                | (per_session.c.subsidy != LedgerSession.charged_subsidy_cents)
                | (per_session.c.n != 2)
                | (per_session.c.first != LedgerSession.started_at)
                | (per_session.c.last != LedgerSession.metered_until)
            )
        )
        check(bad_totals == 0, f"{bad_totals} sessions' charges do not match their totals")
        bad_split = db.scalar(
            select(func.count())
            .select_from(Charge)
            .where(Charge.subsidy_cents + Charge.copay_cents != Charge.list_cents)
        )
        check(bad_split == 0, f"{bad_split} charges where subsidy + co-pay != list")
        gaps = db.scalar(
            select(func.count())
            .select_from(Charge)
            .where(Charge.period_start == T0 + timedelta(seconds=TICKS[0][1]))
        )
        check(gaps == n, f"{gaps} second charges start where the first ended, of {n}")
        grants = dict(
            db.execute(
                select(Grant.project_id, func.sum(Grant.amount_cents)).group_by(Grant.project_id)
            ).all()
        )
        spent = db.execute(
            select(Charge.project_id, func.sum(Charge.subsidy_cents)).group_by(Charge.project_id)
        ).all()
        over = [pid for pid, s in spent if s > grants[pid]]
        check(not over, f"projects {over} charged more subsidy than their grants")
        sample = random.Random(7).sample(range(1, n + 1), min(SPOT_CHECKS, n))
        on_credit = 0
        for sid in sample:
            s = db.get(LedgerSession, sid)
            want = expected_list_cents(s.slice_type, s.started_at, min(end, s.end_at))
            check(s.charged_list_cents == want, f"session {sid}: {s.charged_list_cents} != {want}")
            if s.hold_credit_cents == 0:
                check(
                    s.charged_subsidy_cents == subsidy_of(want, RATE_BP),
                    f"session {sid}: subsidy {s.charged_subsidy_cents}",
                )
            else:
                on_credit += 1
                check(
                    s.charged_subsidy_cents <= min(subsidy_of(want, RATE_BP), s.hold_subsidy_cents),
                    f"session {sid}: subsidy {s.charged_subsidy_cents} past its hold",
                )
        piecewise = db.scalar(
            select(func.count())
            .select_from(LedgerSession)
            .where(LedgerSession.slice_type.in_([t for t, _s, _c in PRICE_CHANGES]))
        )
        credit = db.scalar(
            select(func.count())
            .select_from(LedgerSession)
            .where(LedgerSession.hold_credit_cents > 0)
        )
    return [
        f"ticks 1 and 2 each charged all {n:,} sessions and tick 3 wrote 0 rows",
        f"{n:,} sessions: charges sum to the session's running totals and tile "
        f"[start, T0 + {TICKS[-1][1]} s) in 2 periods",
        "every charge: subsidy + co-pay = list; no project's subsidy over its grants",
        f"{len(sample)} sampled sessions ({on_credit} partly on credit) match list costs "
        "recomputed here with integer arithmetic",
        f"{piecewise:,} sessions charged piecewise over a price change; {credit:,} held "
        "partly on credit (`full_price` projects)",
    ]


def charges_digest(ledger: Ledger) -> str:
    h = hashlib.sha256()
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            select(
                Charge.session_id,
                Charge.period_start,
                Charge.period_end,
                Charge.list_cents,
                Charge.subsidy_cents,
                Charge.copay_cents,
                Charge.kind,
            ).order_by(Charge.session_id, Charge.period_start)
        )
        for row in rows:
            h.update(repr(tuple(row)).encode())
    return h.hexdigest()[:16]


# -- profile of tick 1 -----------------------------------------------------------------------

PROFILED = (  # (label, file the function is in, function)
    (
        "`_next_charge`: every charge computed in Python",
        "slicehub/quota/metering.py",
        "_next_charge",
    ),
    ("of which `PriceSchedule.cost` (integer list cost)", "slicehub/quota/pricing.py", "cost"),
    ("`apply_charges`: the writes (UPDATE, charges)", "slicehub/quota/store.py", "apply_charges"),
    ("`_warn_all`: warnings due, read and inserted", "slicehub/quota/metering.py", "_warn_all"),
)
REST = "the rest: reading the sessions and prices, the overdue query, commit"


def _cumulative(stats: dict, file: str, name: str) -> float:
    return max(
        (v[3] for (f, _line, fn), v in stats.items() if f.endswith(file) and fn == name),
        default=0.0,
    )


@contextmanager
def driver_statements(ledger: Ledger) -> Iterator[dict[str, list[int]]]:
    """The statements the driver is sent, by first words and how: [times, executemany rows].
    On SQLite everything goes through SQLAlchemy; on PostgreSQL the shipped writes use the
    psycopg connection directly, so psycopg's cursor is watched instead."""
    sent: dict[str, list[int]] = {}

    def note(statement, how: str, rows: int) -> None:
        words = " ".join(str(statement).split()[:3])
        key = "`;` (the pool's pre-ping)" if words == ";" else f"`{words} ...` ({how})"
        times, total = sent.get(key, (0, 0))
        sent[key] = [times + 1, total + rows]

    if ledger._is_sqlite:

        def on_execute(_conn, _cursor, statement, params, _context, executemany):
            # the ORM's inserts with RETURNING come here flagged executemany, one row each
            if executemany and isinstance(params, list):
                note(statement, "executemany", len(params))
            else:
                note(statement, "one statement", 0)

        event.listen(ledger.engine, "before_cursor_execute", on_execute)
        try:
            yield sent
        finally:
            event.remove(ledger.engine, "before_cursor_execute", on_execute)
        return

    import psycopg

    cursor = psycopg.Cursor
    execute, executemany, copy = cursor.execute, cursor.executemany, cursor.copy

    def counted_execute(self, query, params=None, **kw):
        note(query, "one statement", 0)
        return execute(self, query, params, **kw)

    def counted_executemany(self, query, params_seq, **kw):
        params_seq = list(params_seq)
        note(query, "executemany", len(params_seq))
        return executemany(self, query, params_seq, **kw)

    def counted_copy(self, statement, params=None, **kw):
        note(statement, "binary COPY", 0)
        return copy(self, statement, params, **kw)

    with (
        mock.patch.object(cursor, "execute", counted_execute),
        mock.patch.object(cursor, "executemany", counted_executemany),
        mock.patch.object(cursor, "copy", counted_copy),
    ):
        yield sent


@dataclass
class Profile:
    code: str
    total_s: float  # `Ledger.meter`, cumulative, under the profiler
    parts: list[tuple[str, float]]
    statements: dict[str, list[int]]  # key -> [times sent, executemany rows]


def profile_tick(url: str, code: Code) -> Profile:
    """cProfile of tick 1 on a fresh copy, and the statements the driver is sent."""
    ledger = Ledger(url)
    try:
        with code.patch():
            warm(ledger)
            with driver_statements(ledger) as statements:
                prof = cProfile.Profile()
                prof.enable()
                ledger.meter(T0 + timedelta(seconds=TICKS[0][1]))
                prof.disable()
    finally:
        ledger.dispose()
    stats = pstats.Stats(prof).stats
    total = _cumulative(stats, "slicehub/quota/metering.py", "meter")
    parts = [(label, _cumulative(stats, file, name)) for label, file, name in PROFILED]
    outside = total - sum(s for label, s in parts if not label.startswith("of which"))
    return Profile(code.label, total, [*parts, (REST, outside)], dict(statements))


# -- holds beside 20,000 running sessions ----------------------------------------------------

HOLDS_AT_SCALE = 60
ACTIVE_CHECK = (
    "SELECT id FROM sessions WHERE username = 'u001-01' AND server_name = 'nb0'"
    " AND status = 'active'"
)


def holds_at_scale(url: str, n_projects: int) -> tuple[list[float], str]:
    """Shipped `open_session`, one at a time, on the ledger with every session running; and
    how the database finds a user's active session for a server (a check in every hold)."""
    ledger = Ledger(url)
    rng = random.Random(11)
    samples = []
    try:
        warm(ledger)
        for i in range(HOLDS_AT_SCALE):
            k = rng.randrange(n_projects)
            t0 = time.perf_counter()
            ledger.open_session(
                project_slug(k),
                f"u{k:03d}-{rng.randrange(MEMBERS_PER_PROJECT):02d}",
                f"extra{i}",
                "cpu",
                timedelta(hours=1),
                T0 + timedelta(seconds=100),
            )
            samples.append(time.perf_counter() - t0)
        with ledger.engine.connect() as conn:
            prefix = "EXPLAIN QUERY PLAN " if ledger._is_sqlite else "EXPLAIN "
            rows = conn.exec_driver_sql(prefix + ACTIVE_CHECK).all()
            plan = " / ".join(str(r[-1]).split("  (cost")[0].strip() for r in rows[:2])
    finally:
        ledger.dispose()
    return samples, plan


# -- report ---------------------------------------------------------------------------------


@dataclass
class DatabaseResult:
    name: str
    description: str
    setup_s: float
    runs: dict[str, list[RunResult]]  # code label -> runs; the shipped code first
    profiles: list[Profile]
    holds: list[float] = field(default_factory=list)
    active_plan: str = ""

    @property
    def shipped(self) -> list[RunResult]:
        return self.runs[SHIPPED.label]

    @property
    def baseline(self) -> list[RunResult]:
        return self.runs.get(BASELINE, [])

    def median(self, label: str, tick: int) -> float:
        return statistics.median(r.ticks[tick].wall_s for r in self.runs[label])

    def profiled(self, label: str, part: str) -> float:
        (p,) = [p for p in self.profiles if p.code == label]
        return dict(p.parts)[part]


LOAD = [load_average()]


def machine_info() -> str:
    return (
        f"{cpu_model()}, {usable_cores()} usable cores ({os.cpu_count()} online), "
        f"{memory()} memory, {platform.platform()}, Python {platform.python_version()}, "
        f"SQLAlchemy {metadata.version('sqlalchemy')}, psycopg {metadata.version('psycopg')}"
    )


def seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def tick_rows(db: DatabaseResult, label: str) -> list[str]:
    out = []
    for i, (tick_label, at_s) in enumerate(TICKS):
        runs = db.runs[label]
        walls = [r.ticks[i].wall_s for r in runs]
        med = db.median(label, i)
        t = runs[0].ticks[i]
        if label != SHIPPED.label:
            goal, ratio = "(not shipped)", ""
        else:
            goal = "met" if med < GOAL_S else f"**not met** ({med / GOAL_S:.1f}x the goal)"
            ratio = f"{med / db.median(BASELINE, i):.2f}" if db.baseline else "no baseline"
        out.append(
            f"| {db.name} | {label} | {tick_label} | T0 + {at_s} s | {t.charged:,} | "
            f"{t.rows:,} ({t.charges_rows:,} + {t.charged:,} + {t.warnings_rows:,}) | "
            f"**{med:.3f}** | {seconds(walls)} | {ratio} | {goal} |"
        )
    return out


def verdict(results: list[DatabaseResult], load: str) -> str:
    worst = max(
        ((r.median(SHIPPED.label, i), r.name, TICKS[i][0]) for r in results for i in range(3)),
    )
    med, name, tick = worst
    if med < GOAL_S:
        return (
            f"**Goal met**: every shipped tick's median is under {GOAL_S:g} s on "
            f"{' and '.join(r.name for r in results)} (slowest: {name} {tick}, {med:.3f} s); "
            f"{load}."
        )
    return (
        f"**Goal not met**: the shipped {name} {tick} takes {med:.3f} s (median), "
        f"{med / GOAL_S:.1f}x the goal of {GOAL_S:g} s; {load}."
    )


def hot_line(r: DatabaseResult) -> str:
    parts = []
    for label, runs in r.runs.items():
        shares = ", ".join(f"{hot:,}" for _n, hot in (run.hot for run in runs))
        parts.append(f"{label} {shares}")
    n = r.shipped[0].hot[0]
    return (
        f"- {r.name} (`pg_stat_user_tables` of each fresh copy): the ticks updated session rows "
        f"{n:,} times, twice per session; of those updates HOT, per run: {'; '.join(parts)}"
    )


def report(args, results: list[DatabaseResult], n_plans: int) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join([".venv/bin/python bench/ledger_metering.py", *args.argv])
    table = [
        "| database | code | tick | now | sessions charged | rows written (charges + session "
        "updates + warnings) | wall median (s) | runs (s) | shipped / baseline | goal < 1 s |",
        "|---|---|---|---|---:|---:|---:|---|---:|---|",
    ]
    for r in results:
        for label in r.runs:
            table += tick_rows(r, label)
    digest = results[0].shipped[0].digest
    load = (
        f"measured at a load average (1 min) of {LOAD[0]} before / {load_average()} after, "
        f"on {usable_cores()} cores shared with the PostgreSQL server and other work"
    )
    lines = [
        f"# Ledger: one metering tick for {n_plans:,} running sessions",
        "",
        f"`{command}`",
        "",
        f"- Date: {now}; machine: {machine_info()}",
        *[f"- {r.name}: {r.description}" for r in results],
        f"- Ledger: {args.projects} projects (every tenth on `full_price` with a HK$"
        f"{FULL_PRICE_GRANT_CENTS // 100:,} grant and a credit line, the rest `stop` with HK$"
        f"{STOP_GRANT_CENTS // 100:,}), {MEMBERS_PER_PROJECT} members each, scheme rate "
        f"{RATE_BP / 100:g}%, {n_plans:,} active sessions held with `open_sessions` in time "
        f"order, starting T0 .. T0 + {START_SPREAD_S - 1} s (T0 = {T0:%Y-%m-%d %H:%M} UTC), "
        f"{SHORT_SHARE:.0%} held for 10 min, the rest 1-8 h; seed {args.seed}.",
        "- Prices (HK$/h): "
        + ", ".join(f"{t} {c / 100:.2f}" for t, (c, _w) in SLICE_TYPES.items())
        + "; changing inside the window: "
        + ", ".join(f"{t} to {c / 100:.2f} at T0 + {s} s" for t, s, c in PRICE_CHANGES)
        + " (set before the holds, so those sessions are charged piecewise).",
        "- Setup through the Ledger API (not timed): "
        + "; ".join(f"{r.name} {r.setup_s:.0f} s" for r in results)
        + ". Each run: a fresh copy of that ledger, a new `Ledger(url)` with the shipped engine "
        "settings, an untimed warm-up (sessions table read once, one `meter(T0)` that charges "
        "nothing), then the three ticks, each timed around the `meter()` call alone "
        "(`time.perf_counter`), garbage collector on.",
        "- Code measured: the shipped `Ledger.meter`, whose writes "
        "(`slicehub.quota.store.apply_charges`) are "
        "one executemany `UPDATE sessions` (conditional on `metered_until`) and one "
        "executemany `INSERT` of charges on SQLite, and on PostgreSQL binary COPY into a "
        "temporary table joined by one `UPDATE sessions ... FROM`, then binary COPY of the "
        f"charges. And on PostgreSQL only, **{BASELINE}**: the same shipped `meter` with "
        "`slicehub.quota.store.apply_charges_postgresql` patched, in this bench only, to send "
        "SQLite's "
        "writes (the executemany UPDATE with the same conditional bind parameters, then "
        "`insert(Charge.__table__)` executemany). On SQLite the shipped writes are those "
        "writes, so it has no baseline. Shipped and baseline runs alternate, each on its own "
        "fresh copy.",
        "",
        "## One tick: shipped code and the baseline",
        "",
        verdict(results, load),
        "",
        *table,
        "",
        "Rows written are counted in the database around each tick; shipped / baseline is the "
        "ratio of the medians. Checked after every run, shipped and baseline alike:",
        "",
        *[f"- {c}" for c in results[0].shipped[0].checks],
        *[hot_line(r) for r in results if r.shipped[0].hot is not None],
        f"- every run on every database, shipped and baseline, wrote the same charges (digest "
        f"`{digest}`)",
        "",
        "## Where tick 1 spends its time",
        "",
        "cProfile of tick 1 on a fresh copy (profiling inflates the times; compare shares, "
        "and shipped with baseline), and the statements the database driver was sent during "
        "that tick:",
        "",
        "| database | code | part of `Ledger.meter` | cumulative (s) | share |",
        "|---|---|---|---:|---:|",
    ]
    for r in results:
        for p in r.profiles:
            lines.append(f"| {r.name} | {p.code} | whole tick | {p.total_s:.3f} | 100% |")
            for label, cum in p.parts:
                share = cum / p.total_s if p.total_s else 0.0
                lines.append(f"| {r.name} | {p.code} | {label} | {cum:.3f} | {share:.0%} |")
    lines += [
        "",
        "| database | code | statement (first words) | times sent | executemany rows |",
        "|---|---|---|---:|---:|",
    ]
    for r in results:
        for p in r.profiles:
            for key, (times, rows) in p.statements.items():
                shown = f"{rows:,}" if rows else ""
                lines.append(f"| {r.name} | {p.code} | {key} | {times:,} | {shown} |")
    lines += [
        "",
        "## Holds beside the running sessions (shipped `open_session`)",
        "",
        f"{HOLDS_AT_SCALE} holds one at a time (1 h of `cpu`, random project and member) on a "
        f"fresh copy with all {n_plans:,} sessions running, no metering; and how the database "
        "finds a user's active session for a server, a query every hold makes "
        f"(`{ACTIVE_CHECK}`):",
        "",
        "| database | hold p50 (ms) | p95 (ms) | max (ms) | plan of the active-session check |",
        "|---|---:|---:|---:|---|",
    ]
    for r in results:
        ordered = sorted(r.holds)
        p95 = ordered[max(1, -(-95 * len(ordered) // 100)) - 1]
        lines.append(
            f"| {r.name} | {statistics.median(ordered) * 1000:.1f} | {p95 * 1000:.1f} | "
            f"{ordered[-1] * 1000:.1f} | `{r.active_plan}` |"
        )
    lines += ["", "## Notes", "", *notes(results), ""]
    return "\n".join(lines)


def notes(results: list[DatabaseResult]) -> list[str]:
    writes = PROFILED[2][0]
    out = [
        "- A shipped tick reads the due sessions as plain rows, locked for the whole tick "
        "(SQLite: `BEGIN IMMEDIATE` holds the write lock from the first read; PostgreSQL: "
        "`FOR UPDATE SKIP LOCKED`, so a second metering process skips them instead of waiting), "
        "computes every charge in Python with integer arithmetic (`_next_charge`, "
        "`PriceSchedule.cost`), writes (`apply_charges`), then records the warnings due and lists "
        "the "
        "sessions whose end has come. Each session's update is conditional on the "
        "`metered_until` it was read with, and a tick whose writes move fewer sessions than it "
        "computed raises and rolls back: nothing is charged twice or half."
    ]
    for r in results:
        tick1 = r.median(SHIPPED.label, 0)
        shipped_writes = r.profiled(SHIPPED.label, writes)
        (profiled,) = [p.total_s for p in r.profiles if p.code == SHIPPED.label]
        if not r.baseline:
            out.append(
                f"- {r.name}'s shipped writes are one executemany `UPDATE sessions` and one "
                "executemany `INSERT` of the charges: the driver runs in this process, so each "
                "is one prepared statement stepped once per row, with no round trips. Under "
                f"the profiler they took {shipped_writes:.3f} s of tick 1's {profiled:.3f} s "
                f"({shipped_writes / profiled:.0%}). On SQLite the tick holds the database's "
                "write lock from its first read to its commit, so a hold (`open_session`) "
                "that arrives during a tick waits for up to its length; with a tick every "
                "10 s (the service's default, `SLICEHUB_METER_INTERVAL`) and tick 1's median "
                f"of {tick1:.3f} s, the lock is held {tick1 / 10:.0%} of the time."
            )
            continue
        base1 = r.median(BASELINE, 0)
        base_writes = r.profiled(BASELINE, writes)
        n, hot = r.shipped[0].hot
        out.append(
            f"- {r.name}'s shipped writes (`apply_charges_postgresql`) send the update rows by "
            "binary "
            "COPY into a temporary table (`slicehub_meter_tick`, created if absent and kept "
            "by the connection, `ON COMMIT DELETE ROWS`), apply them with one "
            "`UPDATE sessions ... FROM` it joined on id and `metered_until`, and COPY the "
            "charges straight into their table. "
            + (
                "Why: the baseline sends the same rows as bind parameters, and that costs more: "
                if tick1 < base1
                else "The baseline, which sends the same rows as bind parameters, was not "
                "slower in this run: "
            )
            + f"tick 1 took {tick1:.3f} s shipped against {base1:.3f} s baseline (medians; "
            f"shipped / baseline {tick1 / base1:.2f}); under the profiler the writes alone "
            f"took {shipped_writes:.3f} s shipped and {base_writes:.3f} s baseline. The "
            "statement table shows what each sent."
        )
        out.append(
            f"- `sessions` has fillfactor 45 on {r.name} (migration 0002): a tick updates "
            "every active session and changes no indexed column, so a page with room for the "
            "new row versions keeps them (a HOT update) and none of the table's five indexes "
            f"(primary key, project, status, user, the active-server unique index) gets an "
            f"entry. In the first shipped run {hot:,} of the {n:,} session row updates were "
            f"HOT ({hot / n:.0%})"
            + ("." if hot == n else "; the others wrote an entry in each of those indexes.")
        )
    out += [
        "- Each charge row costs one foreign-key check (`session_id`) and entries in three "
        "indexes (primary key, the unique (session_id, period_start, kind), "
        "`ix_charges_project_id`); `project_id` is a copy of the session's, with no foreign "
        "key. One charge row per session per tick: at 20,000 sessions and the default 10 s "
        "interval that is 7.2 million rows an hour. Holds and balances do not read them: they "
        "read each project's closed totals and its active sessions "
        "(`slicehub.quota.states.load_states`); "
        "statements (`slicehub.quota.statement`) do.",
        "- Timings are wall time on a shared machine (load average beside the verdict), with the "
        "PostgreSQL server on the same cores and the garbage collector on; shipped and "
        "baseline runs alternate, so both see the same load.",
    ]
    return out


# -- main -----------------------------------------------------------------------------------


def on_copy(db: Database, work: Callable[[str], object]):
    url = db.copy()
    try:
        return work(url)
    finally:
        db.discard(url)


def run_database(db: Database, args, plans: list[Plan]) -> DatabaseResult:
    print(f"{db.name}: building the ledger ({len(plans):,} holds) ...", flush=True)
    setup_s = build_ledger(db.template_url(), plans, args.projects)
    print(f"{db.name}: built in {setup_s:.0f} s", flush=True)
    description = db.describe(db.template_url())
    codes = [SHIPPED, BASELINE_CODE] if isinstance(db, PostgresDatabase) else [SHIPPED]
    runs: dict[str, list[RunResult]] = {code.label: [] for code in codes}
    for i in range(args.runs):
        for code in codes:  # alternating, so the shipped code and the baseline share the load
            r = on_copy(db, lambda url, code=code: run_once(url, code, plans))
            walls = ", ".join(f"{t.label} {t.wall_s:.3f} s" for t in r.ticks)
            print(f"{db.name} {code.label} run {i + 1}: {walls}", flush=True)
            runs[code.label].append(r)
    profiles = [on_copy(db, lambda url, code=code: profile_tick(url, code)) for code in codes]
    holds, active_plan = on_copy(db, lambda url: holds_at_scale(url, args.projects))
    return DatabaseResult(db.name, description, setup_s, runs, profiles, holds, active_plan)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20_000, help="(default: %(default)s)")
    parser.add_argument("--projects", type=int, default=300, help="(default: %(default)s)")
    parser.add_argument(
        "--runs", type=int, default=3, help="fresh copies per database and code (%(default)s)"
    )
    parser.add_argument("--seed", type=int, default=1, help="session mix seed (%(default)s)")
    parser.add_argument(
        "--databases",
        default="sqlite,postgresql",
        help="comma-separated: sqlite, postgresql (default: %(default)s)",
    )
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS}")
    args = parser.parse_args(argv)
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if not set(args.databases) <= {"sqlite", "postgresql"} or not args.databases:
        parser.error("--databases takes sqlite and/or postgresql")
    if args.sessions < args.projects or args.projects < 1 or args.runs < 1:
        parser.error("need at least one project, one run, and a session per project")
    if args.sessions > args.projects * MEMBERS_PER_PROJECT * 100:
        parser.error("too many sessions for the members' server names")
    if args.write and args.databases != ["sqlite", "postgresql"]:
        parser.error("--write needs both databases")
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plans = make_plans(args.sessions, args.projects, args.seed)
    results = []
    for name in args.databases:
        if name == "postgresql":
            try:
                db: Database = PostgresDatabase()
            except pg.PostgresUnavailable as e:
                print(f"PostgreSQL unavailable: {e.reason}", file=sys.stderr)
                return 1
        else:
            db = SqliteDatabase()
        try:
            results.append(run_database(db, args, plans))
        finally:
            db.close()
    digests = {run.digest for r in results for runs in r.runs.values() for run in runs}
    check(len(digests) == 1, f"runs wrote different charges: {sorted(digests)}")
    text_ = report(args, results, len(plans))
    publish(text_, RESULTS, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
