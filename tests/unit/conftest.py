"""Fixtures of the unit tests. A module that defines its own `ledger` fixture uses that one."""

import pytest

from tests.unit.rules_ledger import build


@pytest.fixture
def ledger(tmp_path):
    """The rule tests' ledger (tests/unit/rules_ledger.py), in a fresh SQLite file."""
    lg = build(f"sqlite:///{tmp_path / 'l.sqlite'}")
    yield lg
    lg.dispose()
