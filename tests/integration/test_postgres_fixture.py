"""The PostgreSQL fixtures give real, isolated databases whose row locks really block.

The ledger's correctness rests on `SELECT ... FOR UPDATE` serializing concurrent holds; this file
shows the test server does that, so a ledger test that passes here is evidence about production.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pg
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

pytestmark = pytest.mark.postgres

LOCK_WAIT_TIMEOUT_S = 10.0  # how long the test waits to see the second transaction blocked
HOLD_AFTER_BLOCKED_S = 0.5  # the first transaction keeps its lock this long after that


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    eng = create_engine(pg_url, pool_size=5)
    yield eng
    eng.dispose()


def test_fixture_database_is_a_working_postgresql(engine: Engine, pg_url: str) -> None:
    assert engine.dialect.name == "postgresql"
    assert engine.dialect.driver == "psycopg"
    with engine.begin() as conn:
        conn.execute(
            text("CREATE TABLE subsidy (id serial PRIMARY KEY, project text, cents bigint)")
        )
        conn.execute(
            text("INSERT INTO subsidy (project, cents) VALUES (:p, :c)"),
            [{"p": "ai-lab", "c": 4120}, {"p": "bio", "c": 9600}],
        )
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT project, cents FROM subsidy ORDER BY id")).all()
        database, owner, version = conn.execute(
            text(
                "SELECT current_database(), pg_get_userbyid(datdba),"
                " current_setting('server_version_num')::int"
                " FROM pg_database WHERE datname = current_database()"
            )
        ).one()
    assert [tuple(r) for r in rows] == [("ai-lab", 4120), ("bio", 9600)]
    assert database == make_url(pg_url).database
    assert database.startswith(pg.DATABASE_PREFIX)
    assert owner == make_url(pg_url).username
    assert version >= 130000  # DROP DATABASE ... WITH (FORCE); the local server is 15


def test_server_allows_the_connections_the_tests_need(engine: Engine) -> None:
    with engine.connect() as conn:
        max_connections = conn.execute(text("SHOW max_connections")).scalar_one()
    assert int(max_connections) >= pg.MIN_MAX_CONNECTIONS


def test_fresh_databases_are_isolated_and_drop_cleanly(engine: Engine, pg_url: str) -> None:
    other_url = pg.fresh_database("isolation_other")
    assert make_url(other_url).database != make_url(pg_url).database
    other = create_engine(other_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE hold (id int PRIMARY KEY)"))
            conn.execute(text("INSERT INTO hold VALUES (1)"))
        with other.begin() as conn:
            assert conn.execute(text("SELECT to_regclass('hold')")).scalar_one() is None
            conn.execute(text("CREATE TABLE hold (id int PRIMARY KEY)"))  # same name, no clash
            conn.execute(text("INSERT INTO hold VALUES (2)"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT array_agg(id) FROM hold")).scalar_one() == [1]
        with other.connect() as held:  # still open when the database is dropped
            assert held.execute(text("SELECT array_agg(id) FROM hold")).scalar_one() == [2]
            pg.drop_database(other_url)
            with pytest.raises(OperationalError):  # drop_database ended this session
                held.execute(text("SELECT 1"))
    finally:
        other.dispose()
        pg.drop_database(other_url)  # idempotent
    with engine.connect() as conn:
        gone = conn.execute(
            text("SELECT count(*) FROM pg_database WHERE datname = :n"),
            {"n": make_url(other_url).database},
        ).scalar_one()
    assert gone == 0


def _wait_for_lock_waiter(engine: Engine, database: str) -> float:
    """Block until some session in `database` waits on a lock; return when it was seen."""
    deadline = time.monotonic() + LOCK_WAIT_TIMEOUT_S
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = :d AND wait_event_type = 'Lock'"
                ),
                {"d": database},
            ).scalar_one()
            conn.rollback()  # a fresh snapshot of pg_stat_activity each time
            if waiting:
                return time.monotonic()
            time.sleep(0.01)
    raise TimeoutError(f"no session waited on a lock within {LOCK_WAIT_TIMEOUT_S} s")


def test_select_for_update_serializes_two_transactions(engine: Engine, pg_url: str) -> None:
    """Two transactions read-modify-write one allocation row under FOR UPDATE: the second's
    SELECT returns only after the first commits, and sees the first's write."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE allocation (id int PRIMARY KEY, cents bigint)"))
        conn.execute(text("INSERT INTO allocation VALUES (1, 10000)"))

    first_locked = threading.Event()
    release_first = threading.Event()
    stamps: dict[str, float] = {}

    def first() -> int:
        with engine.connect() as conn:
            transaction = conn.begin()
            cents = conn.execute(
                text("SELECT cents FROM allocation WHERE id = 1 FOR UPDATE")
            ).scalar_one()
            stamps["first_locked"] = time.monotonic()
            first_locked.set()
            if not release_first.wait(LOCK_WAIT_TIMEOUT_S + 5):
                raise TimeoutError("never released")
            conn.execute(text("UPDATE allocation SET cents = :c WHERE id = 1"), {"c": cents - 960})
            stamps["first_commit_sent"] = time.monotonic()
            transaction.commit()
            stamps["first_committed"] = time.monotonic()
        return cents

    def second() -> int:
        if not first_locked.wait(LOCK_WAIT_TIMEOUT_S):
            raise TimeoutError("first transaction never locked the row")
        with engine.connect() as conn, conn.begin():
            stamps["second_asked"] = time.monotonic()
            cents = conn.execute(
                text("SELECT cents FROM allocation WHERE id = 1 FOR UPDATE")
            ).scalar_one()
            stamps["second_locked"] = time.monotonic()
            conn.execute(text("UPDATE allocation SET cents = :c WHERE id = 1"), {"c": cents - 4120})
        return cents

    with ThreadPoolExecutor(max_workers=2) as pool:
        first_done = pool.submit(first)
        second_done = pool.submit(second)
        try:
            stamps["second_seen_waiting"] = _wait_for_lock_waiter(engine, make_url(pg_url).database)
            time.sleep(HOLD_AFTER_BLOCKED_S)
        finally:
            release_first.set()
        first_read = first_done.result(timeout=LOCK_WAIT_TIMEOUT_S)
        second_read = second_done.result(timeout=LOCK_WAIT_TIMEOUT_S)

    with engine.connect() as conn:
        final = conn.execute(text("SELECT cents FROM allocation WHERE id = 1")).scalar_one()

    waited = stamps["second_locked"] - stamps["second_asked"]
    print(
        "FOR UPDATE: first locked at 0.000 s, second asked at "
        f"{stamps['second_asked'] - stamps['first_locked']:.3f} s, seen waiting at "
        f"{stamps['second_seen_waiting'] - stamps['first_locked']:.3f} s, first sent COMMIT at "
        f"{stamps['first_commit_sent'] - stamps['first_locked']:.3f} s (done at "
        f"{stamps['first_committed'] - stamps['first_locked']:.3f} s), second got the row at "
        f"{stamps['second_locked'] - stamps['first_locked']:.3f} s (waited {waited:.3f} s)"
    )
    assert stamps["first_locked"] < stamps["second_asked"] < stamps["second_seen_waiting"]
    # The second got the row only once the first had sent its COMMIT (it may wake a hair before
    # the first thread stamps COMMIT's return, so that stamp is printed, not compared).
    assert stamps["second_locked"] > stamps["first_commit_sent"]
    assert waited >= HOLD_AFTER_BLOCKED_S
    assert first_read == 10000
    assert second_read == 10000 - 960  # it read the first's committed write, not a stale 10000
    assert final == 10000 - 960 - 4120
