"""The scheme's dashboard, for staff, the secretariat and the committee: applications by status,
how long decisions take, and each scheme's fund (approved, committed, disbursed, left), in
total and by organisation type; as JSON-ready data and as CSV. Read-only.

- Applications count once they are submitted (a draft is its applicant's alone), by status.
- Decision time: days from submission to decision of each decided application; the median and
  the 90th percentile (nearest rank: the smallest time at least 90% of decisions took).
- Approved: the subsidy the decisions approved. Committed: the grants of the scheme's projects
  (approvals and top-ups; `slicehub.quota.scheme.fund`). Disbursed: the subsidy charged to them
  (the ledger's charges, reversals included, as the scheme report counts it). Left: the fund
  less what is committed, for a scheme as a whole.
- By organisation type: a project counts under the type of the application that created it;
  projects staff made without an application under `no_application`; a draft withdrawn before
  its type was filled in under `unspecified` (that row only when there is one).

The CSV has one row per scheme and organisation type, then the scheme's `total` row; the
scheme's name is the one typed text in it and is neutralised as the scheme report's CSV is
(`slicehub.quota.statement_render.text_cell`).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select

from ..models import Charge, Grant, Project, Scheme
from ..statement_render import money_plain, text_cell
from .models import Application, Decision
from .states import APPLICATION, DECIDED, DRAFT, REJECTED
from .validate import ORG_TYPES

NO_APPLICATION = "no_application"
UNSPECIFIED = "unspecified"
ORG_KEYS = (*ORG_TYPES, NO_APPLICATION)
STATUSES = tuple(s for s in APPLICATION if s != DRAFT)
DAY_SECONDS = 86_400


@dataclass
class Figures:
    """What the dashboard counts for one group of applications and projects."""

    statuses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    decision_days: list[float] = field(default_factory=list)
    approved_cents: int = 0
    committed_cents: int = 0
    disbursed_cents: int = 0

    @property
    def median_days(self) -> float | None:
        return round(statistics.median(self.decision_days), 1) if self.decision_days else None

    @property
    def p90_days(self) -> float | None:
        if not self.decision_days:
            return None
        ranked = sorted(self.decision_days)
        return round(ranked[math.ceil(0.9 * len(ranked)) - 1], 1)

    def add(self, other: Figures) -> None:
        for status, n in other.statuses.items():
            self.statuses[status] += n
        self.decision_days += other.decision_days
        self.approved_cents += other.approved_cents
        self.committed_cents += other.committed_cents
        self.disbursed_cents += other.disbursed_cents

    def view(self) -> dict:
        return {
            "applications": dict(self.statuses),
            "decisions": {
                "count": len(self.decision_days),
                "median_days": self.median_days,
                "p90_days": self.p90_days,
            },
            "approved_cents": self.approved_cents,
            "committed_cents": self.committed_cents,
            "disbursed_cents": self.disbursed_cents,
        }


def _sum(groups) -> Figures:
    out = Figures()
    for figures in groups:
        out.add(figures)
    return out


@dataclass
class SchemeFigures:
    name: str
    fund_cents: int
    by_org_type: dict[str, Figures] = field(
        default_factory=lambda: {key: Figures() for key in ORG_KEYS}
    )

    @property
    def total(self) -> Figures:
        return _sum(self.by_org_type.values())

    @property
    def left_cents(self) -> int:
        return self.fund_cents - self.total.committed_cents


@dataclass(frozen=True)
class Dashboard:
    generated_at: datetime
    schemes: list[SchemeFigures]

    @property
    def total(self) -> Figures:
        return _sum(s.total for s in self.schemes)


def dashboard(db, now: datetime) -> Dashboard:
    """The dashboard as the ledger stands (see the module)."""
    schemes = {
        s.id: SchemeFigures(s.name, s.fund_cents)
        for s in db.scalars(select(Scheme).order_by(Scheme.name))
    }
    approved = dict(
        db.execute(
            select(Decision.application_id, Decision.amount_cents).where(
                Decision.outcome != REJECTED
            )
        ).all()
    )
    project_org: dict[int, str] = {}
    for app in db.scalars(select(Application).where(Application.status != DRAFT)):
        figures = schemes[app.scheme_id].by_org_type.setdefault(
            app.org_type or UNSPECIFIED, Figures()
        )
        figures.statuses[app.status] += 1
        if app.status in DECIDED and app.submitted_at and app.decided_at:
            seconds = (app.decided_at - app.submitted_at).total_seconds()
            figures.decision_days.append(seconds / DAY_SECONDS)
        figures.approved_cents += int(approved.get(app.id, 0))
        if app.project_id is not None:
            project_org[app.project_id] = app.org_type
    for amount, project_id_column, cents_column in (
        ("committed_cents", Grant.project_id, Grant.amount_cents),
        ("disbursed_cents", Charge.project_id, Charge.subsidy_cents),
    ):
        for project_id, scheme_id, cents in db.execute(
            select(project_id_column, Project.scheme_id, func.sum(cents_column))
            .join(Project, Project.id == project_id_column)
            .group_by(project_id_column, Project.scheme_id)
        ):
            figures = schemes[scheme_id].by_org_type[project_org.get(project_id, NO_APPLICATION)]
            setattr(figures, amount, getattr(figures, amount) + int(cents or 0))
    return Dashboard(now, list(schemes.values()))


def dashboard_view(d: Dashboard) -> dict:
    """`d` as JSON-ready data: money in cents, days to one decimal."""
    return {
        "generated_at": d.generated_at.isoformat(),
        **d.total.view(),
        "schemes": [
            {
                "name": s.name,
                "fund_cents": s.fund_cents,
                "left_cents": s.left_cents,
                **s.total.view(),
                "by_org_type": {key: f.view() for key, f in s.by_org_type.items()},
            }
            for s in d.schemes
        ],
    }


CSV_COLUMNS = [
    "scheme",
    "org_type",
    *STATUSES,
    "decisions",
    "median_decision_days",
    "p90_decision_days",
    "fund_hkd",
    "approved_hkd",
    "committed_hkd",
    "disbursed_hkd",
    "left_hkd",
]


def _days(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def dashboard_csv(d: Dashboard) -> str:
    """One row per scheme and organisation type, then the scheme's `total` row (the only one
    with the fund and what is left)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for s in d.schemes:
        for key, f in [*s.by_org_type.items(), ("total", s.total)]:
            whole = key == "total"
            w.writerow(
                [
                    text_cell(s.name),
                    key,
                    *(f.statuses[status] for status in STATUSES),
                    len(f.decision_days),
                    _days(f.median_days),
                    _days(f.p90_days),
                    money_plain(s.fund_cents) if whole else "",
                    money_plain(f.approved_cents),
                    money_plain(f.committed_cents),
                    money_plain(f.disbursed_cents),
                    money_plain(s.left_cents) if whole else "",
                ]
            )
    return out.getvalue()
