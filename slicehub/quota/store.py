"""The ledger's store: its database connection, and the reads and writes that must be fast.

SQLite (the embedded default) or PostgreSQL. Holds must be decided one at a time per project:
on PostgreSQL a hold locks its project's row (`SELECT ... FOR UPDATE`); on SQLite every write
transaction starts with `BEGIN IMMEDIATE`, which takes the database's write lock before the
first read, so two holds never read the same balance.

Decides how the ledger's bulk writes reach the database: a batch of held sessions in one binary
COPY (`write_sessions`), a metering tick's updates and charges in bulk (`apply_charges`).
`Store` is the base the `Ledger` is built on: the engine, transactions (one, or several calls as
one), the audit entry, the project lookup, a session's price schedule. The set-wise reads of a
batch of holds are `slicehub.quota.states`. It decides no rule about money: the hold rules are
`slicehub.quota.hold`, the charges `slicehub.quota.metering`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import bindparam, create_engine, event, insert, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session as DBSession
from sqlalchemy.orm import sessionmaker

from slicehub.db import UTCDateTime
from slicehub.db import upgrade as upgrade_schema

from .errors import LedgerError
from .hold import HeldSession
from .models import AuditEntry, Charge, Project, Session
from .pricing import PriceSchedule
from .states import PriceCache

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "slicehub_ledger_alembic_version"


def make_engine(url: str, **kwargs) -> Engine:
    """The ledger's engine: SQLite with WAL and `BEGIN IMMEDIATE`, or a pooled PostgreSQL."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60}, **kwargs)

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" below decide
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 40)
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def upgrade(engine: Engine) -> None:
    """Bring the ledger's schema up to date (Alembic, `migrations/`)."""
    upgrade_schema(engine, MIGRATIONS, VERSION_TABLE)


def copy_rows(cur, table: str, columns: dict[str, str], rows) -> None:
    """Binary COPY of `rows` (sequences in the order of `columns`, name -> PostgreSQL type)
    into `table`, on a psycopg cursor inside the caller's transaction. For bulk writes:
    sending thousands of rows as statement parameters costs the driver more than the database
    (a timestamp array of 20,000 ~80 ms); binary COPY sends them in ~15 ms."""
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(columns.values()))
        for row in rows:
            copy.write_row(row)


class Store:
    """The ledger's database: its engine, its transactions, and what every part of the ledger
    writes or looks up the same way (an audit entry, a project, a price schedule)."""

    def __init__(self, url: str, **engine_kwargs):
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        self._is_sqlite = url.startswith("sqlite")
        self._prices = PriceCache()

    def upgrade(self) -> None:
        upgrade(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run several Ledger calls as one transaction: all of them are written, or none
        (a course and its roster, say). Each call's own transaction becomes a SAVEPOINT inside
        one outer transaction on one connection. For one thread at a time (the CLI)."""
        with self.engine.connect() as conn:
            outer = conn.begin()
            original = self.session
            self.session = sessionmaker(
                bind=conn, expire_on_commit=False, join_transaction_mode="create_savepoint"
            )
            try:
                yield
            except BaseException:
                outer.rollback()
                raise
            else:
                outer.commit()
            finally:
                self.session = original

    def _project(self, db: DBSession, slug: str, lock: bool = False) -> Project:
        return find_project(db, slug, lock=lock and not self._is_sqlite)

    @staticmethod
    def resolve(db: DBSession, session_id: int) -> int:
        """The session that stands for `session_id` now: itself, or, for a pre-warmed session
        its student claimed, the student's session it was handed to (`slicehub.quota.prewarm`).
        The server's spawner, its kernels and the culler know the first id only."""
        seen = {session_id}
        q = select(Session.handed_to)
        while (nxt := db.scalar(q.where(Session.id == session_id))) is not None:
            if nxt in seen:  # never written so; a loop would hang every caller
                raise LedgerError(f"Session {session_id} is handed over in a loop.", 500)
            seen.add(nxt)
            session_id = nxt
        return session_id

    def _schedule(self, db: DBSession, slice_type: str, known: int) -> PriceSchedule:
        """The price list of `slice_type` as it was known when price row `known` was newest.

        A session is charged at the prices known when it was held (including changes already
        scheduled then, piecewise); a price set later applies to later sessions only, so a
        hold always covers exactly what the session will be charged.
        """
        return self._prices.book(db).schedule(slice_type, known)

    @property
    def is_sqlite(self) -> bool:
        """Whether the ledger is SQLite (its write transactions lock the whole database)."""
        return self._is_sqlite

    def _audit(self, db: DBSession, at, actor: str, action: str, subject: str, **detail) -> None:
        """Append an audit entry inside the caller's transaction."""
        audit(db, at, actor, action, subject, **detail)


def audit(db: DBSession, at, actor: str, action: str, subject: str, **detail) -> None:
    """Append an audit entry (`detail` as JSON) inside the caller's transaction."""
    db.add(AuditEntry(at=at, actor=actor, action=action, subject=subject, detail=_detail(detail)))


def _detail(detail: dict) -> str:
    return json.dumps(detail, sort_keys=True, default=str)


def find_project(db: DBSession, slug: str, lock: bool = False) -> Project:
    """Project `slug` (its row locked for the transaction when `lock`), or a 404 refusal."""
    q = select(Project).where(Project.slug == slug)
    if lock:
        q = q.with_for_update()
    project = db.scalar(q)
    if project is None:
        raise LedgerError(f"There is no project {slug!r}.", 404)
    return project


# -- the writes of a batch of holds and of a metering tick -------------------------------------


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
    "prewarm_window_id": "int4",
}


def write_sessions(db, sessions: list[HeldSession], is_sqlite: bool) -> None:
    """Insert the sessions and learn their ids. On PostgreSQL: the ids drawn from the table's
    sequence in one statement, then one binary COPY, whatever the batch's size (a multi-row
    INSERT of a few hundred rows costs several times more, most of it in the driver).

    A hold by a member row writes no audit entry: its session row is the record (who, when,
    which slice, what was held) and the member row says why they could; the audit log stays the
    log of staff changes and releases. A hold through a project's member group is audited
    (`write_group_holds`), since the directory's group may say otherwise tomorrow."""
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
        copy_rows(cur, "sessions", _SESSION_COLUMNS, rows)


def write_group_holds(db, sessions: list[HeldSession], slugs: dict[int, str]) -> None:
    """One audit entry per session held through a project's member group (`HeldSession.via`,
    e.g. "group:proj-vision"), all in one statement, after `write_sessions` gave them ids.
    `slugs`: project id -> slug."""
    rows = [
        {
            "at": s.started_at,
            "actor": s.username,
            "action": "session.hold",
            "subject": str(s.id),
            "detail": _detail(
                {"via": s.via, "project": slugs[s.project_id], "slice_type": s.slice_type}
            ),
        }
        for s in sessions
    ]
    db.connection().execute(insert(AuditEntry.__table__), rows)


# the sequence is looked up once per statement, in FROM: called per row in the select list,
# pg_get_serial_sequence took two thirds of a millisecond of a batch of 200
_NEW_SESSION_IDS = text(
    "SELECT nextval(seq) FROM CAST(pg_get_serial_sequence('sessions', 'id') AS regclass) AS seq,"
    " generate_series(1, :n)"
)


def apply_charges(db, updates: list[dict], charges: list[dict]) -> None:
    """Move sessions' running totals and append their charges, in bulk, in one transaction.
    Each update is conditional on the `metered_until` it was computed from."""
    if not updates:
        return
    conn = db.connection()
    if conn.dialect.name == "postgresql":
        moved = apply_charges_postgresql(conn, updates, charges)
    else:
        moved = apply_charges_executemany(conn, updates, charges)
    if moved != len(updates):  # the locks taken before make this impossible; never guess
        raise RuntimeError("a metering write raced another; rolled back, nothing charged")


def apply_charges_executemany(conn, updates: list[dict], charges: list[dict]) -> int:
    """The writes as SQLAlchemy executemany statements (SQLite's path): one UPDATE with the
    conditional bind parameters, one INSERT of the charges. Returns the sessions moved."""
    t = Session.__table__
    stmt = (
        update(t)
        .where(t.c.id == bindparam("b_id"))
        .where(t.c.metered_until == bindparam("b_old", type_=UTCDateTime))
        .values(
            metered_until=bindparam("b_new", type_=UTCDateTime),
            charged_list_cents=t.c.charged_list_cents + bindparam("b_list"),
            charged_subsidy_cents=t.c.charged_subsidy_cents + bindparam("b_subsidy"),
        )
    )
    moved = conn.execute(stmt, updates).rowcount
    conn.execute(insert(Charge.__table__), charges)
    return moved


_TICK_COLUMNS = {  # the update rows, as the temporary table holds them
    "b_id": "int4",
    "b_old": "timestamptz",
    "b_new": "timestamptz",
    "b_list": "int8",
    "b_subsidy": "int8",
}
_CHARGE_COLUMNS = {
    "session_id": "int4",
    "project_id": "int4",
    "period_start": "timestamptz",
    "period_end": "timestamptz",
    "list_cents": "int8",
    "subsidy_cents": "int8",
    "copay_cents": "int8",
    "kind": "text",
}


def apply_charges_postgresql(conn, updates: list[dict], charges: list[dict]) -> int:
    """The same writes on PostgreSQL through binary COPY (`copy_rows`): the charges
    straight into their table, the updates into a temporary table joined by one UPDATE.
    Returns the number of sessions moved."""
    raw = conn.connection.driver_connection  # the psycopg connection, inside this transaction
    with raw.cursor() as cur:
        cur.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS slicehub_meter_tick ("
            + ", ".join(f"{c} {t}" for c, t in _TICK_COLUMNS.items())
            + ") ON COMMIT DELETE ROWS"
        )
        copy_rows(cur, "slicehub_meter_tick", _TICK_COLUMNS, _rows(updates, _TICK_COLUMNS))
        cur.execute(
            "UPDATE sessions SET metered_until = v.b_new, "
            "charged_list_cents = sessions.charged_list_cents + v.b_list, "
            "charged_subsidy_cents = sessions.charged_subsidy_cents + v.b_subsidy "
            "FROM slicehub_meter_tick v "
            "WHERE sessions.id = v.b_id AND sessions.metered_until = v.b_old"
        )
        moved = cur.rowcount
        cur.execute("TRUNCATE slicehub_meter_tick")
        copy_rows(cur, "charges", _CHARGE_COLUMNS, _rows(charges, _CHARGE_COLUMNS))
    return moved


def _rows(dicts: list[dict], columns) -> list[list]:
    names = list(columns)
    return [[d[c] for c in names] for d in dicts]
