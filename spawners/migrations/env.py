"""Alembic environment for the slice reservation tables (run by ReservationStore.upgrade)."""

from quota.migrate import run_env
from spawners.reservations import VERSION_TABLE, Base

run_env(Base.metadata, VERSION_TABLE)
