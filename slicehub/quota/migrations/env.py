"""Alembic environment for the ledger's tables (run by Ledger.upgrade)."""

from slicehub.db import run_env
from slicehub.quota.models import Base
from slicehub.quota.scheme import outbox  # noqa: F401  (its table, in the same metadata)
from slicehub.quota.store import VERSION_TABLE

run_env(Base.metadata, VERSION_TABLE)
