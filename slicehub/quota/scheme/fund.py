"""The scheme's fund: what is committed, and the rule that it is never over-committed.

Committed is the sum of the grants of the scheme's projects (approvals and top-ups add grants,
and so does staff's `add_grant`); what is left is the fund less that. Whatever adds a grant
first locks the scheme's row (`lock_scheme`: `SELECT ... FOR UPDATE` on PostgreSQL; on SQLite
every write transaction already holds the database's write lock from `BEGIN IMMEDIATE`), then
reads the committed total and refuses, with the amounts, a grant that would take it past the
fund (`reserve`). Two approvals that together exceed the fund are thus decided one after the
other: exactly one succeeds.

Lock order: the scheme's row before any of its projects' rows (holds lock only projects), so
a grant and a hold never wait on each other in a cycle. What is disbursed (subsidy charged) is
the statements' (`slicehub.quota.statement`), not a rule of the fund.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from slicehub.common.money import format_money

from ..errors import LedgerError
from ..models import Grant, Project, Scheme


@dataclass(frozen=True)
class Fund:
    scheme: str
    fund_cents: int
    committed_cents: int

    @property
    def left_cents(self) -> int:
        return self.fund_cents - self.committed_cents


def lock_scheme(db, scheme_id: int, is_sqlite: bool) -> Scheme:
    """The scheme's row, locked for the rest of the transaction (see the module's note)."""
    q = select(Scheme).where(Scheme.id == scheme_id)
    if not is_sqlite:
        q = q.with_for_update()
    scheme = db.scalar(q)
    if scheme is None:
        raise LedgerError(f"There is no scheme {scheme_id}.", 404)
    return scheme


def committed(db, scheme_id: int) -> int:
    """The sum of the grants of the scheme's projects, in cents."""
    return int(
        db.scalar(
            select(func.coalesce(func.sum(Grant.amount_cents), 0))
            .join(Project, Project.id == Grant.project_id)
            .where(Project.scheme_id == scheme_id)
        )
    )


def fund_of(db, scheme: Scheme) -> Fund:
    return Fund(scheme.name, scheme.fund_cents, committed(db, scheme.id))


def reserve(db, scheme: Scheme, amount_cents: int, what: str) -> Fund:
    """Refuse (409) `what` (e.g. "Approving application 12") when `amount_cents` more would
    take the scheme's committed total past its fund; the fund as it stands otherwise. The
    scheme's row must be locked by the caller (`lock_scheme`) in the same transaction."""
    fund = fund_of(db, scheme)
    if amount_cents > fund.left_cents:
        raise LedgerError(
            f"{what} for {format_money(amount_cents)} would over-commit the scheme "
            f"{scheme.name}: its fund is {format_money(fund.fund_cents)}, "
            f"{format_money(fund.committed_cents)} is committed and "
            f"{format_money(max(fund.left_cents, 0))} is left.",
            409,
        )
    return fund
