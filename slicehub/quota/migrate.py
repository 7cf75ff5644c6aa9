"""Alembic, the way both of Slicehub's databases use it (the slice reservations and the ledger).

Each keeps its own migrations folder and its own version table, so the two can share one
database or live apart. `upgrade` brings a schema to its newest revision at start-up; `run_env`
is the body of each folder's env.py.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine


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
