"""Alembic environment for the ledger's tables (run by Ledger.upgrade)."""

from slicehub.quota.ledger_db import VERSION_TABLE
from slicehub.quota.migrate import run_env
from slicehub.quota.models import Base

run_env(Base.metadata, VERSION_TABLE)
