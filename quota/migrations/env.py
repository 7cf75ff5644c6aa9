"""Alembic environment for the ledger's tables (run by Ledger.upgrade)."""

from quota.ledger_db import VERSION_TABLE
from quota.migrate import run_env
from quota.models import Base

run_env(Base.metadata, VERSION_TABLE)
