"""The scheme's REST API after the decision: change requests and progress reports (under
`api/scheme/`).

- `GET changes[?status=]`: the change requests the caller may see
  (`views.visible_change_requests`: a project's PI theirs; the secretariat and staff all).
- `POST changes` `{"project", "kind": "top_up"|"extension"|"members", "justification",
  "amount_cents" | "valid_until" | "add"/"remove"}`: the project's PI asks (others: 404); 201.
- `POST changes/{id}/decision` `{"outcome": "approved"|"denied", "note"}`: the secretariat.
- `GET reports[?overdue=1]`: the progress reports the caller may see (the PI theirs; the
  secretariat, staff and the committee all), with `overdue` said of each.
- `POST reports/{id}` `{"narrative"}`: the project's PI submits the report (others: 404).
"""

from __future__ import annotations

import json

from tornado import web

from slicehub.common import clock

from ..models import Project
from .api_base import (
    SECRETARIAT_SCOPE,
    SchemeHandler,
    as_400,
    object_id,
    objects,
    optional_date,
    optional_whole,
    text,
    usernames,
)
from .changes import KINDS
from .models import ChangeRequest, ProgressReport
from .states import APPROVED, CHANGE_REQUEST, DENIED, DUE
from .validate import MAX_MEMBERS, TeamMember, check_username
from .views import visible_change_requests, visible_reports

CHANGE_FIELDS = {"project", "kind", "justification", "amount_cents", "valid_until", "add", "remove"}


def _when(moment) -> str | None:
    return moment.isoformat() if moment else None


def change_view(cr: ChangeRequest, slug: str) -> dict:
    return {
        "id": cr.id,
        "project": slug,
        "kind": cr.kind,
        "requested_by": cr.requested_by,
        "requested_at": _when(cr.requested_at),
        "amount_cents": cr.amount_cents,
        "valid_until": _when(cr.valid_until),
        "members": json.loads(cr.members),
        "justification": cr.justification,
        "status": cr.status,
        "reviewer": cr.reviewer,
        "decided_by": cr.decided_by,
        "decided_at": _when(cr.decided_at),
        "note": cr.note,
    }


def report_view(r: ProgressReport, slug: str, now) -> dict:
    return {
        "id": r.id,
        "project": slug,
        "period_start": _when(r.period_start),
        "period_end": _when(r.period_end),
        "due_at": _when(r.due_at),
        "status": r.status,
        "overdue": r.status == DUE and r.due_at < now,
        "prefilled": json.loads(r.prefilled),
        "narrative": r.narrative,
        "submitted_at": _when(r.submitted_at),
        "submitted_by": r.submitted_by,
    }


def project_slug(ledger, project_id: int) -> str:
    with ledger.session() as db:
        return db.get(Project, project_id).slug


class ChangesHandler(SchemeHandler):
    @web.authenticated
    async def get(self):
        status = self.get_argument("status", None)
        if status is not None and status not in CHANGE_REQUEST:
            raise web.HTTPError(400, f"status must be one of {', '.join(CHANGE_REQUEST)}.")
        user, roles = self.username(), self.roles()

        def listed():
            with self.ledger.session() as db:
                return [
                    change_view(cr, slug)
                    for cr, slug in visible_change_requests(db, user, roles)
                    if status is None or cr.status == status
                ]

        self.write_json({"changes": await self.in_db(listed)})

    @web.authenticated
    async def post(self):
        data = self.body(CHANGE_FIELDS)
        project, kind = text(data, "project"), text(data, "kind")
        if kind not in KINDS:
            raise web.HTTPError(400, f"kind must be one of {', '.join(KINDS)}.")
        add = objects(data, "add", {"username", "email"}, {"username"}, MAX_MEMBERS)
        for m in add:
            as_400(check_username, "new member", m["username"])
        add_members = [TeamMember(m["username"], text(m, "email")) for m in add]
        names = [m.username for m in add_members]
        remove = usernames(data, "remove", "member to remove", MAX_MEMBERS)
        known = await self.hub_users(names) if names else None
        actor, now = self.username(), clock.utcnow()
        asked = dict(
            amount_cents=optional_whole(data, "amount_cents"),
            valid_until=optional_date(data, "valid_until"),
            add=add_members,
            remove=remove,
            known_users=known,
        )
        justification = text(data, "justification")
        cr = await self.in_db(
            lambda: self.workflow.request_change(actor, project, kind, justification, now, **asked)
        )
        self.write_json(change_view(cr, project), 201)


class ChangeDecisionHandler(SchemeHandler):
    @web.authenticated
    async def post(self, raw_id):
        self.require(SECRETARIAT_SCOPE)
        data = self.body({"outcome", "note"})
        outcome, note = text(data, "outcome"), text(data, "note")
        if outcome not in (APPROVED, DENIED):
            raise web.HTTPError(400, "outcome must be approved or denied.")
        change_id = object_id(raw_id)
        cr = await self.in_db(
            self.workflow.decide_change,
            self.username(),
            change_id,
            outcome == APPROVED,
            clock.utcnow(),
            note,
        )

        def slug():
            with self.ledger.session() as db:
                return next(
                    s for c, s in visible_change_requests(db, "", {"staff"}) if c.id == cr.id
                )

        self.write_json(change_view(cr, await self.in_db(slug)))


class ReportsHandler(SchemeHandler):
    @web.authenticated
    async def get(self):
        overdue = self.get_argument("overdue", "0")
        if overdue not in ("0", "1"):
            raise web.HTTPError(400, "overdue must be 0 or 1.")
        user, roles, now = self.username(), self.roles(), clock.utcnow()

        def listed():
            with self.ledger.session() as db:
                views = [report_view(r, slug, now) for r, slug in visible_reports(db, user, roles)]
            return [v for v in views if v["overdue"] or overdue == "0"]

        self.write_json({"reports": await self.in_db(listed)})


class ReportHandler(SchemeHandler):
    @web.authenticated
    async def post(self, raw_id):
        narrative = text(self.body({"narrative"}), "narrative")
        report = await self.in_db(
            self.workflow.submit_report,
            self.username(),
            object_id(raw_id),
            narrative,
            clock.utcnow(),
        )
        slug = await self.in_db(project_slug, self.ledger, report.project_id)
        self.write_json(report_view(report, slug, clock.utcnow()))


def routes(route) -> list[tuple]:
    return [
        (route("api/scheme/changes"), ChangesHandler),
        (route(r"api/scheme/changes/(\d+)/decision"), ChangeDecisionHandler),
        (route("api/scheme/reports"), ReportsHandler),
        (route(r"api/scheme/reports/(\d+)"), ReportHandler),
    ]
