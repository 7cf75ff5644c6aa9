"""Progress reports: which are due, what the ledger fills in, the PI's narrative, and which are
overdue.

A project reports once per period of its scheme (`report_period_months`, from the project's
`valid_from`; the last period ends with the project). When a period has ended, its report is
opened (`open_due_reports`, which the service's loop calls; opening twice opens once) with what
the ledger knows of it, and the PI is mailed; it is due `GRACE` later. The PI adds the
narrative and submits it (`submit_report`), which fills the figures in again, so charges
metered after the report opened are counted. A report not submitted by its due date is
overdue. Courses do not report.

The figures (`prefill`): per slice type the slice-hours charged and their list cost, subsidy
and co-pay (each metered period counts in the report of the period it starts in; reversals
count against it), the sessions started in the period, and the idle share of the sessions that
ended in it (their idle seconds at their end over their metered seconds; None when none ended).
"""

from __future__ import annotations

import calendar
import json
from datetime import datetime, timedelta

from sqlalchemy import func, select

from ..errors import LedgerError
from ..models import Charge, Project, Scheme
from ..models import Session as LedgerSession
from ..store import audit
from . import notify
from .changes import pi_email
from .core import WorkflowBase, send
from .models import ProgressReport
from .states import DUE, REPORT, SUBMITTED, advance
from .validate import MAX_NARRATIVE, check_text

GRACE = timedelta(days=30)


def add_months(moment: datetime, months: int) -> datetime:
    """`moment` `months` later, on the same day of the month or the month's last day."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    last = calendar.monthrange(year, month)[1]
    return moment.replace(year=year, month=month, day=min(moment.day, last))


def periods_ended(
    valid_from: datetime, valid_until: datetime, months: int, now: datetime
) -> list[tuple[datetime, datetime]]:
    """The report periods of a project valid from `valid_from` to `valid_until` that have
    ended by `now`, each `months` long but the last, which ends with the project."""
    out, k = [], 0
    while True:
        start = add_months(valid_from, k * months)
        if start >= valid_until:
            return out
        end = min(add_months(valid_from, (k + 1) * months), valid_until)
        if end > now:
            return out
        out.append((start, end))
        k += 1


def prefill(db, project_id: int, start: datetime, end: datetime) -> dict:
    """What the ledger says of a project's period [start, end) (see the module)."""
    ct, st = Charge.__table__, LedgerSession.__table__
    c, s = ct.c, st.c
    per_type: dict[str, dict] = {}
    for slice_type, kind, p_start, p_end, list_cents, subsidy, copay in db.execute(
        select(
            s.slice_type,
            c.kind,
            c.period_start,
            c.period_end,
            c.list_cents,
            c.subsidy_cents,
            c.copay_cents,
        )
        .select_from(ct)
        .join(st, s.id == c.session_id)
        .where(c.project_id == project_id, c.period_start >= start, c.period_start < end)
    ):
        line = per_type.setdefault(
            slice_type, {"seconds": 0, "list_cents": 0, "subsidy_cents": 0, "copay_cents": 0}
        )
        sign = -1 if kind == "reversal" else 1
        line["seconds"] += sign * int((p_end - p_start).total_seconds())
        line["list_cents"] += int(list_cents)
        line["subsidy_cents"] += int(subsidy)
        line["copay_cents"] += int(copay)
    for line in per_type.values():
        line["gpu_hours"] = f"{line['seconds'] / 3600:.2f}"
    sessions = db.scalar(
        select(func.count()).where(
            s.project_id == project_id, s.started_at >= start, s.started_at < end
        )
    )
    idle = metered = 0
    for idle_seconds, started, until in db.execute(
        select(s.idle_seconds, s.started_at, s.metered_until).where(
            s.project_id == project_id,
            s.status == "stopped",
            s.stopped_at >= start,
            s.stopped_at < end,
        )
    ):
        idle += idle_seconds
        metered += max(int((until - started).total_seconds()), 0)
    return {
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "slice_types": dict(sorted(per_type.items())),
        "list_cents": sum(v["list_cents"] for v in per_type.values()),
        "subsidy_cents": sum(v["subsidy_cents"] for v in per_type.values()),
        "copay_cents": sum(v["copay_cents"] for v in per_type.values()),
        "sessions": int(sessions),
        "idle_seconds": idle,
        "idle_share_bp": idle * 10_000 // metered if metered else None,
    }


class ReportVerbs(WorkflowBase):
    def open_due_reports(self, now: datetime) -> list[ProgressReport]:
        """Open the report of every period that has ended by `now` and has none yet, pre-filled,
        each with its mail to the PI, in one transaction; the reports opened."""
        opened = []
        with self.ledger.session.begin() as db:
            rows = db.execute(
                select(Project, Scheme.report_period_months)
                .join(Scheme, Scheme.id == Project.scheme_id)
                .where(Project.is_course.is_(False), Project.valid_from < now)
            ).all()
            have = set(db.execute(select(ProgressReport.project_id, ProgressReport.period_start)))
            for p, months in rows:
                for start, end in periods_ended(p.valid_from, p.valid_until, months, now):
                    if (p.id, start) in have:
                        continue
                    report = ProgressReport(
                        project_id=p.id,
                        period_start=start,
                        period_end=end,
                        due_at=end + GRACE,
                        prefilled=json.dumps(prefill(db, p.id, start, end)),
                        narrative="",
                        status=DUE,
                    )
                    db.add(report)
                    db.flush()
                    audit(db, now, "scheme", "report.open", f"report:{report.id}", project=p.slug)
                    mail = notify.report_due(report, p.slug)
                    send(db, now, pi_email(db, p), mail, f"report:{report.id}")
                    opened.append(report)
        return opened

    def submit_report(
        self, actor: str, report_id: int, narrative: str, now: datetime
    ) -> ProgressReport:
        """The PI (`actor`) submits due report `report_id` with their `narrative`."""
        check_text("narrative", narrative, MAX_NARRATIVE, multiline=True)
        if not narrative.strip():
            raise LedgerError("Write the narrative of the report before submitting it.")
        with self.ledger.session.begin() as db:
            report = db.get(ProgressReport, report_id)
            p = db.get(Project, report.project_id) if report else None
            if report is None or p.pi != actor:
                raise LedgerError(f"There is no progress report {report_id} of yours.", 404)
            advance(REPORT, report, SUBMITTED, f"Progress report {report.id}")
            report.prefilled = json.dumps(prefill(db, p.id, report.period_start, report.period_end))
            report.narrative, report.submitted_at, report.submitted_by = narrative, now, actor
            audit(db, now, actor, "report.submit", f"report:{report.id}", project=p.slug)
        return report

    def reports(self, project: str | None = None, status: str | None = None):
        """Progress reports with their project's slug, oldest period first: of `project` only
        when given, with `status` only when given."""
        with self.ledger.session() as db:
            q = (
                select(ProgressReport, Project.slug)
                .join(Project, Project.id == ProgressReport.project_id)
                .order_by(ProgressReport.period_start, ProgressReport.id)
            )
            if project is not None:
                q = q.where(Project.slug == project)
            if status is not None:
                q = q.where(ProgressReport.status == status)
            return [(r, slug) for r, slug in db.execute(q)]

    def overdue_reports(self, now: datetime):
        """Due reports past their due date, with their project's slug."""
        return [(r, slug) for r, slug in self.reports(status=DUE) if r.due_at < now]
