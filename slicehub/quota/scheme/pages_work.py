"""The scheme's work lists: the secretariat's, the reviewers', and the dashboard.

- `scheme/secretariat` (`custom:scheme:secretariat`; others 403): every submitted application
  by status with its age in days, its completeness, its reviewers (and conflicts) and its cost;
  the change requests to decide, each with Approve and Deny and a note, posted here; the
  progress reports past their due date.
- `scheme/reviews` (`custom:scheme:committee`; others 403): the applications assigned to the
  reader and not given up for a conflict, with whether they have scored each.
- `scheme/dashboard` (staff, the secretariat and the committee; others 403): applications by
  status and organisation type, decision times, and the fund approved, committed, disbursed and
  left (`slicehub.quota.scheme.dashboard`, as the REST API's JSON and CSV), with a link to the
  CSV.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select
from tornado import web

from slicehub.common import clock

from ..errors import LedgerError
from .applications import requests_of
from .dashboard import STATUSES, dashboard
from .models import ReviewerAssignment
from .pages_base import READERS, Refused, SchemePage
from .pages_forms import one
from .states import APPLICATION, DRAFT, PENDING
from .validate import check_complete
from .views import (
    COMMITTEE,
    SECRETARIAT,
    application_view,
    scores_seen,
    visible_applications,
    visible_change_requests,
)
from .workflow import SchemeWorkflow


def change_view(cr, slug: str) -> dict:
    """A change request as the pages show it."""
    members = json.loads(cr.members or "{}")
    return {
        "id": cr.id,
        "project": slug,
        "kind": cr.kind,
        "requested_by": cr.requested_by,
        "requested_at": cr.requested_at,
        "amount_cents": cr.amount_cents,
        "valid_until": cr.valid_until,
        "add": members.get("add", []),
        "remove": members.get("remove", []),
        "justification": cr.justification,
        "status": cr.status,
        "decided_by": cr.decided_by,
        "decided_at": cr.decided_at,
        "note": cr.note,
    }


def secretariat_view(ledger, user: str, now: datetime) -> dict:
    roles = {SECRETARIAT}
    with ledger.session() as db:
        by_status: dict[str, list[dict]] = {s: [] for s in APPLICATION if s != DRAFT}
        for app in visible_applications(db, user, roles):
            view = application_view(db, app, now)
            try:
                check_complete(app, requests_of(db, app.id))
                view["completeness"] = "complete"
            except LedgerError as e:
                view["completeness"] = str(e)
            view["reviewers"] = [
                (a.reviewer, a.conflict)
                for a in db.scalars(
                    select(ReviewerAssignment)
                    .where(ReviewerAssignment.application_id == app.id)
                    .order_by(ReviewerAssignment.id)
                )
            ]
            by_status.setdefault(app.status, []).append(view)
        changes = [change_view(cr, slug) for cr, slug in visible_change_requests(db, user, roles)]
    overdue = SchemeWorkflow(ledger).overdue_reports(now)
    return {
        "by_status": by_status,
        "pending": [c for c in changes if c["status"] == PENDING],
        "decided": [c for c in reversed(changes) if c["status"] != PENDING][:50],
        "overdue": [
            {
                "id": r.id,
                "project": slug,
                "period_end": r.period_end,
                "due_at": r.due_at,
                "days_late": (now - r.due_at).days,
            }
            for r, slug in overdue
        ],
    }


def reviews_view(ledger, user: str, now: datetime) -> list[dict]:
    with ledger.session() as db:
        assigned = set(
            db.scalars(
                select(ReviewerAssignment.application_id).where(
                    ReviewerAssignment.reviewer == user, ReviewerAssignment.conflict.is_(False)
                )
            )
        )
        out = []
        for app in visible_applications(db, user, {COMMITTEE}):
            if app.id in assigned:
                view = application_view(db, app, now)
                view["scored"] = user in scores_seen(db, app.id, user, {COMMITTEE})
                out.append(view)
        return out


def read_dashboard(ledger, now: datetime):
    with ledger.session() as db:
        return dashboard(db, now)


class SecretariatPage(SchemePage):
    def check(self) -> str:
        user = self.username()
        if SECRETARIAT not in self.roles():
            self.forbid("the scheme's secretariat (custom:scheme:secretariat)")
        return user

    async def show_list(self, error: str = "", status: int = 200, posted=None, failed=0):
        view = await self.in_db(secretariat_view, self.ledger, self.check(), clock.utcnow())
        posted = posted or {}
        self.show(
            "scheme_secretariat.html.j2",
            status=status,
            title="Secretariat",
            v=view,
            error=error,
            failed=failed,
            note_typed=one(posted, "note", strip=False),
        )

    @web.authenticated
    async def get(self):
        await self.show_list()

    @web.authenticated
    async def post(self):
        user = self.check()
        state = self.form()
        decision = one(state, "decision")
        try:
            change = int(one(state, "change") or 0)
        except ValueError:
            raise web.HTTPError(400, "change must be a change request's number.") from None
        if decision not in ("approve", "deny"):
            raise web.HTTPError(400, "Approve or deny the change request.")
        try:
            await self.attempt(
                SchemeWorkflow(self.ledger).decide_change,
                user,
                change,
                decision == "approve",
                clock.utcnow(),
                one(state, "note", strip=False),
            )
        except Refused as e:
            return await self.show_list(str(e), e.status, state, change)
        self.done("secretariat", "change-decided")


class ReviewsPage(SchemePage):
    @web.authenticated
    async def get(self):
        user = self.username()
        if COMMITTEE not in self.roles():
            self.forbid("the scheme's committee (custom:scheme:committee)")
        apps = await self.in_db(reviews_view, self.ledger, user, clock.utcnow())
        self.show("scheme_reviews.html.j2", title="My reviews", apps=apps)


class DashboardPage(SchemePage):
    @web.authenticated
    async def get(self):
        self.username()
        if not self.roles() & READERS:
            self.forbid("the centre's staff, the scheme's secretariat and its committee")
        board = await self.in_db(read_dashboard, self.ledger, clock.utcnow())
        self.show("scheme_dashboard.html.j2", title="Scheme dashboard", d=board, statuses=STATUSES)
