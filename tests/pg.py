"""A real PostgreSQL for the tests: find it (or have scripts/postgres.sh install and start it) and
hand out throwaway databases on it.

Decides: which server the tests use (``SLICEHUB_TEST_PG_URL`` if set, else the local Debian cluster
15/main that the script prepares), whether it is usable, and how test databases are named, made
and dropped. It does not decide whether a test skips or fails when there is no server: that is
the ``postgres_server`` fixture's job in conftest.py.

URLs are SQLAlchemy URLs (``postgresql+psycopg://...``); psycopg is imported only when used, so
collecting the suite does not need it.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy.engine import URL, make_url

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "postgres.sh"
DEFAULT_URL = "postgresql+psycopg://slicehub:slicehub@127.0.0.1:5432/slicehub_test"
URL_ENV = "SLICEHUB_TEST_PG_URL"
MIN_MAX_CONNECTIONS = 300  # tests hold 200 connections at once; the script raises it to this
SCRIPT_TIMEOUT_S = 600  # a cold apt-get install on a slow mirror
CANNOT_INSTALL_STATUS = 3  # scripts/postgres.sh: not usable and cannot be installed or started here
DATABASE_PREFIX = "t_"  # every database fresh_database makes starts with this

_lock = threading.Lock()
_ensured: str | None = None
_failure: PostgresUnavailable | None = None


class PostgresUnavailable(RuntimeError):
    """No usable PostgreSQL. ``skippable`` is True when this machine cannot install or start one
    (not root, no apt-get, apt-get failed): outside CI the tests may skip. False means something
    is broken (the script failed otherwise, SLICEHUB_TEST_PG_URL does not work): a failure."""

    def __init__(self, reason: str, *, skippable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.skippable = skippable


def _conninfo(url: str | URL, database: str | None = None) -> dict[str, object]:
    """psycopg.connect() keyword arguments for a SQLAlchemy URL (optionally another database)."""
    u = make_url(url)
    return {
        "host": u.host or "127.0.0.1",
        "port": u.port or 5432,
        "user": u.username,
        "password": u.password,
        "dbname": database or u.database,
        "connect_timeout": 5,
    }


def _probe(url: str) -> str | None:
    """None when `url` accepts a login and allows enough connections, else why not."""
    import psycopg

    try:
        with psycopg.connect(**_conninfo(url)) as conn:
            row = conn.execute("SELECT current_setting('max_connections')::int").fetchone()
    except psycopg.Error as e:
        return f"cannot log in at {make_url(url).render_as_string()}: {str(e).strip()}"
    max_connections = row[0] if row else 0
    if max_connections < MIN_MAX_CONNECTIONS:
        return f"max_connections is {max_connections}, the tests need >= {MIN_MAX_CONNECTIONS}"
    return None


def _run_script() -> str:
    if shutil.which("bash") is None:
        raise PostgresUnavailable("no bash to run scripts/postgres.sh", skippable=True)
    started = time.monotonic()
    try:
        done = subprocess.run(
            ["bash", str(SCRIPT)],
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise PostgresUnavailable(
            f"scripts/postgres.sh did not finish in {SCRIPT_TIMEOUT_S} s", skippable=False
        ) from e
    if done.returncode != 0:
        raise PostgresUnavailable(
            f"scripts/postgres.sh exited {done.returncode} after "
            f"{time.monotonic() - started:.1f} s:\n{done.stderr.strip()}",
            skippable=done.returncode == CANNOT_INSTALL_STATUS,
        )
    return done.stdout.strip().splitlines()[-1]


def ensure_postgres() -> str:
    """The SQLAlchemy URL of a usable PostgreSQL, installing and starting it if needed.

    ``SLICEHUB_TEST_PG_URL`` wins when set (it is checked, never installed). Otherwise, when the
    local server does not accept slicehub's login, scripts/postgres.sh runs, at most once per
    process; its failure is remembered and raised again as the same PostgresUnavailable.
    """
    global _ensured, _failure
    with _lock:
        if _ensured is not None:
            return _ensured
        if _failure is not None:
            raise _failure
        try:
            _ensured = _ensure_uncached()
        except PostgresUnavailable as e:
            _failure = e
            raise
        return _ensured


def _ensure_uncached() -> str:
    configured = os.environ.get(URL_ENV)
    if configured:
        problem = _probe(configured)
        if problem is not None:
            raise PostgresUnavailable(f"{URL_ENV}: {problem}", skippable=False)
        return configured
    if _probe(DEFAULT_URL) is None:
        return DEFAULT_URL
    url = _run_script()
    problem = _probe(url)
    if problem is not None:
        raise PostgresUnavailable(
            f"scripts/postgres.sh succeeded but the server is not usable: {problem}",
            skippable=False,
        )
    return url


def database_name(name_prefix: str) -> str:
    """A new database name: DATABASE_PREFIX + `name_prefix` squeezed to [a-z0-9_] + a random
    suffix, within PostgreSQL's 63-byte limit."""
    stem = re.sub(r"[^a-z0-9_]+", "_", name_prefix.lower()).strip("_")
    suffix = uuid.uuid4().hex[:12]
    return f"{DATABASE_PREFIX}{stem[: 63 - len(DATABASE_PREFIX) - 1 - len(suffix)]}_{suffix}"


def fresh_database(name_prefix: str) -> str:
    """Create an empty database owned by the server URL's user; return its SQLAlchemy URL."""
    import psycopg
    from psycopg import sql

    base = make_url(ensure_postgres())
    name = database_name(name_prefix)
    create = sql.SQL("CREATE DATABASE {} OWNER {}").format(
        sql.Identifier(name), sql.Identifier(base.username or "slicehub")
    )
    # CREATE DATABASE copies template1 and refuses while another session is connected to it
    # (another test run's CREATE at the same instant): retry briefly.
    for attempt in itertools.count(1):
        try:
            with psycopg.connect(**_conninfo(base), autocommit=True) as conn:
                conn.execute(create)
            break
        except psycopg.errors.ObjectInUse:
            if attempt == 20:
                raise
            time.sleep(0.1)
    return base.set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop `url`'s database, ending its sessions first; a database already gone is fine.

    Connects to the server's base database (the one ensure_postgres returns), never to `url`'s.
    """
    import psycopg
    from psycopg import sql

    target = make_url(url)
    base = make_url(ensure_postgres())
    if target.database in (None, base.database, "postgres", "template0", "template1"):
        raise ValueError(f"refusing to drop database {target.database!r}")
    with psycopg.connect(**_conninfo(base), autocommit=True) as conn:
        conn.execute(
            # only our own client sessions: an autovacuum worker on the database (after a
            # test's updates) belongs to the superuser; DROP DATABASE cancels it itself
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend' AND usename = current_user",
            (target.database,),
        )
        # FORCE ends sessions that connected after the line above (PostgreSQL >= 13); it may
        # not end a superuser's process, and a plain DROP then stops an autovacuum worker itself
        name = sql.Identifier(target.database)
        try:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        except psycopg.errors.InsufficientPrivilege:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(name))
