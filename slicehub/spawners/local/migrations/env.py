"""Alembic environment for the slice reservation tables (run by ReservationStore.upgrade)."""

from slicehub.db import run_env
from slicehub.spawners.local.reservations import VERSION_TABLE, Base

run_env(Base.metadata, VERSION_TABLE)
