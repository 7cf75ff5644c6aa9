"""A PI's side of an active project, and progress reports.

- `scheme/projects`: the projects the reader is the PI of, with their validity, members and
  subsidy left; the change request form (a top-up in HK$, a later end, members to add or
  remove, each with its justification), posted here; and their change requests with what
  was decided.
- `scheme/reports`: the progress reports the reader may see (a PI their projects'; the
  secretariat, staff and committee all), due, overdue or submitted.
- `scheme/reports/N`: one report, its figures pre-filled from the ledger; its PI writes the
  narrative and submits it while it is due. Anyone else who may not see it gets 404.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select
from tornado import web

from slicehub.common import clock

from ..errors import LedgerError
from ..models import Member, Project
from . import pages_forms as forms
from .api_base import object_id
from .changes import KINDS
from .pages_base import Refused, SchemePage
from .pages_work import change_view
from .views import visible_change_requests, visible_reports

KIND_WORDS = {"top_up": "top-up", "extension": "extension", "members": "members"}


def projects_view(ledger, user: str, now: datetime) -> dict:
    with ledger.session() as db:
        rows = db.scalars(select(Project).where(Project.pi == user).order_by(Project.slug)).all()
        projects = [
            {
                "slug": p.slug,
                "name": p.name,
                "valid_from": p.valid_from,
                "valid_until": p.valid_until,
                "members": sorted(
                    db.scalars(select(Member.username).where(Member.project_id == p.id))
                ),
            }
            for p in rows
        ]
        changes = [change_view(cr, slug) for cr, slug in visible_change_requests(db, user, ())]
    for p in projects:
        bal = ledger.balance(p["slug"], now)
        p["grants_cents"], p["subsidy_left_cents"] = bal.grants_cents, bal.subsidy_left_cents
    return {"projects": projects, "changes": list(reversed(changes))}


def report_fields(r, slug: str) -> dict:
    return {
        "id": r.id,
        "project": slug,
        "period_start": r.period_start,
        "period_end": r.period_end,
        "due_at": r.due_at,
        "status": r.status,
        "submitted_at": r.submitted_at,
    }


def report_rows(ledger, user: str, roles, now: datetime) -> list[dict]:
    with ledger.session() as db:
        return [
            {**report_fields(r, slug), "overdue": r.status == "due" and r.due_at < now}
            for r, slug in visible_reports(db, user, roles)
        ]


def report_view(ledger, report_id: int, user: str, roles) -> dict | None:
    with ledger.session() as db:
        found = next(
            ((r, slug) for r, slug in visible_reports(db, user, roles) if r.id == report_id),
            None,
        )
        if found is None:
            return None
        r, slug = found
        pi = db.scalar(select(Project.pi).where(Project.id == r.project_id))
        return {
            **report_fields(r, slug),
            "narrative": r.narrative,
            "submitted_by": r.submitted_by,
            "figures": json.loads(r.prefilled or "{}"),
            "writable": pi == user and r.status == "due",
        }


class ProjectsPage(SchemePage):
    async def show_projects(self, error: str = "", status: int = 200, posted=None):
        view = await self.in_db(projects_view, self.ledger, self.username(), clock.utcnow())
        posted = posted or {"kind": ["top_up"]}
        self.show(
            "scheme_projects.html.j2",
            status=status,
            title="My projects",
            v=view,
            kinds=[(k, KIND_WORDS[k]) for k in KINDS],
            error=error,
            typed=lambda name: forms.one(posted, name, strip=False),
            typed_rows=list(
                zip(
                    posted.get("member_username", []),
                    posted.get("member_email", []),
                    strict=False,
                )
            )
            + [("", "")] * 3,
        )

    @web.authenticated
    async def get(self):
        await self.show_projects()

    @web.authenticated
    async def post(self):
        user = self.username()
        state = self.form()
        try:
            kw = forms.change_request(state)
            known = await self.known_users([m.username for m in kw["add"]])
            await self.attempt(
                self.workflow.request_change,
                user,
                forms.one(state, "project"),
                forms.one(state, "kind"),
                forms.one(state, "justification", strip=False),
                clock.utcnow(),
                known_users=known,
                **kw,
            )
        except (LedgerError, Refused) as e:
            return await self.show_projects(str(e), e.status, state)
        self.done("projects", "change")


class ReportsPage(SchemePage):
    @web.authenticated
    async def get(self):
        rows = await self.in_db(
            report_rows, self.ledger, self.username(), self.roles(), clock.utcnow()
        )
        self.show("scheme_reports.html.j2", title="Progress reports", reports=rows)


class ReportPage(SchemePage):
    async def load(self, report_id: int) -> dict:
        found = await self.in_db(report_view, self.ledger, report_id, self.username(), self.roles())
        if found is None:
            raise web.HTTPError(404, f"There is no progress report {report_id} that you can see.")
        return found

    def show_report(self, report: dict, error: str = "", status: int = 200, narrative=None):
        self.show(
            "scheme_report.html.j2",
            status=status,
            title=f"Progress report {report['id']}",
            r=report,
            error=error,
            narrative=report["narrative"] if narrative is None else narrative,
        )

    @web.authenticated
    async def get(self, report_id):
        self.show_report(await self.load(object_id(report_id)))

    @web.authenticated
    async def post(self, report_id):
        report = await self.load(object_id(report_id))
        narrative = forms.one(self.form(), "narrative", strip=False)
        if not report["writable"]:
            raise web.HTTPError(403, "Only the project's PI submits its due report.")
        try:
            await self.attempt(
                self.workflow.submit_report,
                self.username(),
                report["id"],
                narrative,
                clock.utcnow(),
            )
        except Refused as e:
            return self.show_report(report, str(e), e.status, narrative)
        self.done(f"reports/{report['id']}", "report")
