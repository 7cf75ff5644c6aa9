"""Alembic environment for the ledger's tables (run by Ledger.upgrade)."""

from slicehub.db import run_env
from slicehub.quota.models import Base
from slicehub.quota.scheme import models, outbox  # noqa: F401  (their tables, same metadata)
from slicehub.quota.store import VERSION_TABLE

run_env(Base.metadata, VERSION_TABLE)
