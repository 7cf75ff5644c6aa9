"""Who sees which application, what a compute request costs today, and how reviewers scored.
Read-only; the pages and the REST API call these.

Visibility (the contract's roles, which the API takes from the hub's scopes): an applicant sees
their own applications, drafts included; a reviewer (committee) those assigned to them, never
after declaring a conflict; the secretariat and staff every application that has been
submitted (a draft is its applicant's until then). Anyone else sees nothing, and the API
answers 404 rather than reveal that an application exists.

Scores: the secretariat and staff see every reviewer's scores but a conflicted reviewer's, and
the weighted totals; a reviewer sees only their own, and nothing after a conflict; an applicant
sees none.

The live cost of a request prices its GPU-hours at today's list prices: the list cost, the
subsidy at the requested rate (rounded down per line, as the scheme never pays more than its
rate) and the co-pay, which sum to the list cost to the cent.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, exists, or_, select

from slicehub.common.money import subsidy_of

from ..errors import LedgerError
from ..models import Price, Scheme
from .models import Application, ReviewerAssignment, Score
from .states import DRAFT

SECRETARIAT, COMMITTEE, STAFF = "secretariat", "committee", "staff"


@dataclass(frozen=True)
class CostLine:
    slice_type: str
    gpu_hours: int
    cents_per_hour: int
    list_cents: int
    subsidy_cents: int

    @property
    def copay_cents(self) -> int:
        return self.list_cents - self.subsidy_cents


@dataclass(frozen=True)
class RequestCost:
    rate_bp: int
    lines: tuple[CostLine, ...]

    @property
    def list_cents(self) -> int:
        return sum(line.list_cents for line in self.lines)

    @property
    def subsidy_cents(self) -> int:
        return sum(line.subsidy_cents for line in self.lines)

    @property
    def copay_cents(self) -> int:
        return self.list_cents - self.subsidy_cents


def cost_of_request(
    lines: Iterable[tuple[str, int]], prices: Mapping[str, int], rate_bp: int
) -> RequestCost:
    """(slice type, GPU-hours) lines priced at `prices` (slice type -> cents an hour) with
    the subsidy at `rate_bp`; a slice type without a price is refused."""
    out = []
    for slice_type, hours in lines:
        if slice_type not in prices:
            raise LedgerError(f"{slice_type} has no list price; it cannot be priced.", 409)
        listed = prices[slice_type] * hours
        out.append(
            CostLine(slice_type, hours, prices[slice_type], listed, subsidy_of(listed, rate_bp))
        )
    return RequestCost(rate_bp, tuple(out))


def list_prices(db, now: datetime) -> dict[str, int]:
    """Each slice type's list price in effect at `now`, in cents an hour."""
    prices: dict[str, int] = {}
    for slice_type, cents in db.execute(
        select(Price.slice_type, Price.cents_per_hour)
        .where(Price.effective_from <= now)
        .order_by(Price.effective_from, Price.id)
    ):
        prices[slice_type] = cents  # the newest in effect wins
    return prices


def live_cost(ledger, lines: Iterable[tuple[str, int]], rate_bp: int, now: datetime):
    """`cost_of_request` at the ledger's list prices in effect at `now`."""
    with ledger.session() as db:
        return cost_of_request(lines, list_prices(db, now), rate_bp)


def criteria_of(scheme: Scheme) -> list[dict]:
    return json.loads(scheme.criteria)


def _visible(user: str, roles: Collection[str]):
    """The condition on applications that `user`, with `roles`, may see."""
    conditions = [Application.applicant == user]
    if SECRETARIAT in roles or STAFF in roles:
        conditions.append(Application.status != DRAFT)
    if COMMITTEE in roles:
        conditions.append(
            exists().where(
                and_(
                    ReviewerAssignment.application_id == Application.id,
                    ReviewerAssignment.reviewer == user,
                    ReviewerAssignment.conflict.is_(False),
                )
            )
        )
    return or_(*conditions)


def visible_applications(
    db, user: str, roles: Collection[str], status: str | None = None
) -> list[Application]:
    """The applications `user` (with `roles`: "secretariat", "committee", "staff") may see,
    oldest first; only those with `status` when given."""
    q = select(Application).where(_visible(user, roles)).order_by(Application.id)
    if status is not None:
        q = q.where(Application.status == status)
    return list(db.scalars(q))


def can_see(db, application_id: int, user: str, roles: Collection[str]) -> bool:
    return (
        db.scalar(
            select(Application.id).where(Application.id == application_id, _visible(user, roles))
        )
        is not None
    )


def scores_seen(db, application_id: int, user: str, roles: Collection[str]) -> dict:
    """The scores of application `application_id` that `user` may see: {reviewer: {"scores":
    {criterion: (score, comment)}, "weighted": 0..100 or None while incomplete}}."""
    app = db.get(Application, application_id)
    if app is None:
        return {}
    weights = {c["key"]: c["weight"] for c in criteria_of(db.get(Scheme, app.scheme_id))}
    q = (
        select(ReviewerAssignment.reviewer, Score.criterion, Score.score, Score.comment)
        .join(Score, Score.assignment_id == ReviewerAssignment.id)
        .where(
            ReviewerAssignment.application_id == application_id,
            ReviewerAssignment.conflict.is_(False),
        )
        .order_by(ReviewerAssignment.reviewer, Score.criterion)
    )
    if not (SECRETARIAT in roles or STAFF in roles):
        if COMMITTEE not in roles:
            return {}
        q = q.where(ReviewerAssignment.reviewer == user)
    out: dict[str, dict] = {}
    for reviewer, criterion, score, comment in db.execute(q):
        out.setdefault(reviewer, {"scores": {}})["scores"][criterion] = (score, comment)
    for entry in out.values():
        entry["weighted"] = weighted_score(entry["scores"], weights)
    return out


def weighted_score(scores: Mapping[str, tuple[int, str]], weights: Mapping[str, int]):
    """The weighted score out of 100 (a score of 10 on every criterion is 100), rounded down;
    None unless every criterion is scored."""
    if not weights or set(weights) - set(scores):
        return None
    return sum(weights[k] * scores[k][0] for k in weights) // 10
