"""Who sees which application, what a compute request costs today, and how reviewers scored.
Read-only; the pages and the REST API call these.

Visibility (the contract's roles, which the API takes from the hub's scopes): an applicant sees
their own applications, drafts included; a reviewer (committee) those assigned to them, never
after declaring a conflict; the secretariat and staff every application that has been
submitted (a draft is its applicant's until then). Anyone else sees nothing, and the API
answers 404 rather than reveal that an application exists.

Change requests and progress reports: a project's PI sees their project's; the secretariat and
staff all of them; the committee every progress report and the change requests that name them
as reviewer.

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
from ..models import Price, Project, Scheme
from .models import (
    Application,
    ApplicationMember,
    ApplicationRequest,
    ChangeRequest,
    Decision,
    ProgressReport,
    ReviewerAssignment,
    Score,
)
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


def visible_change_requests(db, user: str, roles: Collection[str]) -> list[tuple]:
    """(change request, project slug) that `user` may see, oldest first."""
    q = (
        select(ChangeRequest, Project.slug)
        .join(Project, Project.id == ChangeRequest.project_id)
        .order_by(ChangeRequest.id)
    )
    if not (SECRETARIAT in roles or STAFF in roles):
        mine = Project.pi == user
        q = q.where(or_(mine, ChangeRequest.reviewer == user) if COMMITTEE in roles else mine)
    return [tuple(r) for r in db.execute(q)]


def visible_reports(db, user: str, roles: Collection[str]) -> list[tuple]:
    """(progress report, project slug) that `user` may see, oldest period first."""
    q = (
        select(ProgressReport, Project.slug)
        .join(Project, Project.id == ProgressReport.project_id)
        .order_by(ProgressReport.period_start, ProgressReport.id)
    )
    if not ({SECRETARIAT, STAFF, COMMITTEE} & set(roles)):
        q = q.where(Project.pi == user)
    return [tuple(r) for r in db.execute(q)]


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def application_view(db, app: Application, now: datetime) -> dict:
    """Application `app` as plain JSON-ready data (money in cents, times ISO 8601): its
    fields, its age in days since submission (or creation), team, compute request with its
    cost at today's list prices, and its decision."""
    members = db.execute(
        select(ApplicationMember.username, ApplicationMember.email, ApplicationMember.role)
        .where(ApplicationMember.application_id == app.id)
        .order_by(ApplicationMember.id)
    ).all()
    requests = db.scalars(
        select(ApplicationRequest)
        .where(ApplicationRequest.application_id == app.id)
        .order_by(ApplicationRequest.slice_type)
    ).all()
    prices = list_prices(db, now)
    priced = [(r.slice_type, r.gpu_hours) for r in requests if r.slice_type in prices]
    cost = cost_of_request(priced, prices, app.rate_bp)
    decision = db.scalar(select(Decision).where(Decision.application_id == app.id))
    return {
        "id": app.id,
        "scheme": db.get(Scheme, app.scheme_id).name,
        "applicant": app.applicant,
        "email": app.email,
        "organisation": app.organisation,
        "org_type": app.org_type,
        "title": app.title,
        "abstract": app.abstract,
        "ai_area": app.ai_area,
        "period_start": _when(app.period_start),
        "period_end": _when(app.period_end),
        "rate_bp": app.rate_bp,
        "status": app.status,
        "created_at": _when(app.created_at),
        "submitted_at": _when(app.submitted_at),
        "decided_at": _when(app.decided_at),
        "age_days": (now - (app.submitted_at or app.created_at)).days,
        "project": db.scalar(select(Project.slug).where(Project.id == app.project_id))
        if app.project_id
        else None,
        "members": [{"username": u, "email": e, "role": r} for u, e, r in members],
        "requests": [
            {"slice_type": r.slice_type, "gpu_hours": r.gpu_hours, "justification": r.justification}
            for r in requests
        ],
        "cost": {
            "list_cents": cost.list_cents,
            "subsidy_cents": cost.subsidy_cents,
            "copay_cents": cost.copay_cents,
        },
        "decision": None
        if decision is None
        else {
            "outcome": decision.outcome,
            "amount_cents": decision.amount_cents,
            "rate_bp": decision.rate_bp,
            "compute": json.loads(decision.compute),
            "valid_from": _when(decision.valid_from),
            "valid_until": _when(decision.valid_until),
            "terms": decision.terms,
            "reasons": decision.reasons,
            "decided_by": decision.decided_by,
            "decided_at": _when(decision.decided_at),
        },
    }
