"""The database plumbing both of Slicehub's hub-side stores share (the ledger, `slicehub.quota`,
and the local slice reservations, `slicehub.spawners.local.reservations`): Alembic the way both
use it, and a column type for times.

Each store keeps its own migrations folder and its own version table, so the two can share one
database or live apart. `upgrade` brings a schema to its newest revision at start-up; `run_env`
is the body of each folder's env.py. Times are stored in UTC and come back timezone-aware.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import DateTime, TypeDecorator, create_engine
from sqlalchemy.engine import Engine


class UTCDateTime(TypeDecorator):
    """Stores UTC, hands back timezone-aware UTC (SQLite forgets the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(
                "naive datetime given to the database; use slicehub.common.clock.utcnow()"
            )
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def alembic_config(script_location: Path, url: str, version_table: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.set_main_option("version_table", version_table)
    return cfg


def upgrade(engine: Engine, script_location: Path, version_table: str) -> None:
    """Apply every migration not yet applied (idempotent)."""
    url = engine.url.render_as_string(hide_password=False)
    with engine.begin() as conn:
        cfg = alembic_config(script_location, url, version_table)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def run_env(target_metadata, version_table: str) -> None:
    """What a migrations folder's env.py runs: on the caller's connection, or on its own."""
    config = context.config

    def migrate(connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table=version_table,
            render_as_batch=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    connection = config.attributes.get("connection")
    if connection is not None:
        migrate(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as connection:
        migrate(connection)


def unreachable(url: str, timeout: float = 5) -> str:
    """Why the database at `url` cannot be reached now ("" when it can), without changing it: a
    connection is opened and closed (SQLite: the file's folder must exist)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    try:
        parsed = make_url(url)
    except ArgumentError as e:
        return f"not a database URL: {e}"
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and not Path(parsed.database).parent.is_dir():
            return f"the folder of {parsed.database} does not exist"
        return ""
    connect_args = (
        {"connect_timeout": int(timeout)} if parsed.get_backend_name() == "postgresql" else {}
    )
    engine = create_engine(parsed, connect_args=connect_args, pool_pre_ping=False)
    try:
        with engine.connect():
            return ""
    except SQLAlchemyError as e:
        return str(e.orig if getattr(e, "orig", None) is not None else e).strip().splitlines()[0]
    finally:
        engine.dispose()


def schema_behind(engine: Engine, script_location: Path, version_table: str) -> list[str]:
    """The migrations not yet applied to the database (empty: its schema is current), read
    without changing anything."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    url = engine.url.render_as_string(hide_password=False)
    script = ScriptDirectory.from_config(alembic_config(script_location, url, version_table))
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": version_table})
        current = set(context.get_current_heads())
    if current >= set(script.get_heads()):
        return []
    applied = set()
    for rev in current:
        applied |= {r.revision for r in script.iterate_revisions(rev, "base")}
    return [r.revision for r in script.walk_revisions() if r.revision not in applied][::-1]
