"""The scheme's application pages: "My applications", the application form with its live cost,
and one application's page, which shows each reader what their role lets them do with it.

- `scheme/applications`: the reader's own applications (drafts included), newest first.
- `scheme/applications/new`: the form (organisation and type, title, abstract, AI area, team,
  period, rate, compute per slice type with its justification); Save draft or Submit.
- `scheme/applications/N`: the applicant's draft is the form again (Save, Submit, Withdraw);
  otherwise the application read-only with its status and history, and by role: Withdraw for
  its applicant until the decision; for the secretariat the completeness check, Start review
  with reviewers, more reviewers, every reviewer's scores and the decision form; for an
  assigned reviewer Declare a conflict and the score form; staff read it.
  Who may not see it gets 404, whether it exists or not (`slicehub.quota.scheme.views`).

The cost preview is the request priced at today's list prices (`views.cost_of_request`): the
page shows it for what the form holds, and a few lines of script recompute it as the reader
types from the prices and the rate the page carries as data attributes.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select
from tornado import web

from slicehub.common import clock

from ..errors import LedgerError
from ..models import AuditEntry, Scheme
from . import pages_forms as forms
from .api_base import object_id
from .applications import requests_of
from .models import Application, ReviewerAssignment
from .pages_base import Refused, SchemePage
from .states import DRAFT, SUBMITTED, UNDER_REVIEW, WORDS
from .validate import ORG_TYPES, check_complete
from .views import (
    SECRETARIAT,
    STAFF,
    application_view,
    can_see,
    cost_of_request,
    criteria_of,
    list_prices,
    scores_seen,
    visible_applications,
)

BLANK_MEMBER_ROWS = 3
ORG_WORDS = {
    "university": "University",
    "research_institute": "Research institute",
    "company": "Company",
}
# what the history says of each audited action; the applicant and reviewers see only the
# status changes, the secretariat and staff everything
HISTORY = {
    "application.create": "draft created",
    "application.submit": "submitted",
    "application.start_review": "review started",
    "application.approve": "decided",
    "application.reject": "rejected",
    "application.withdraw": "withdrawn",
}
HISTORY_FOR_SECRETARIAT = {
    **HISTORY,
    "application.assign": "reviewer assigned",
    "application.conflict": "conflict of interest declared",
    "application.score": "scored",
}


def form_context(db, now: datetime) -> dict:
    """What the application form offers: the schemes (name, standard and highest rate) and
    today's list prices per slice type."""
    schemes = [
        {"name": s.name, "rate_bp": s.subsidy_rate_bp, "max_rate_bp": s.max_rate_bp}
        for s in db.scalars(select(Scheme).order_by(Scheme.name))
    ]
    return {"schemes": schemes, "prices": dict(sorted(list_prices(db, now).items()))}


def state_of_view(view: dict) -> dict:
    """The form's fields as a saved application holds them."""
    return {
        "scheme": [view["scheme"]],
        **{name: [view[name]] for name in (*forms.APPLICATION_FIELDS, "abstract")},
        "period_start": [(view["period_start"] or "")[:10]],
        "period_end": [(view["period_end"] or "")[:10]],
        "rate": [forms.percent_text(view["rate_bp"])],
        "member_username": [m["username"] for m in view["members"] if m["role"] != "pi"],
        "member_email": [m["email"] for m in view["members"] if m["role"] != "pi"],
        "slice_type": [r["slice_type"] for r in view["requests"]],
        "gpu_hours": [str(r["gpu_hours"]) for r in view["requests"]],
        "justification": [r["justification"] for r in view["requests"]],
    }


def form_view(state: dict, context: dict) -> dict:
    """What the form template shows for `state` (the form's fields, as posted or saved): each
    field's text, the team rows with blank rows to fill, one compute line per priced slice
    type (and any other the state names), and the cost preview of what parses."""
    names = (*forms.APPLICATION_FIELDS, "abstract", "scheme", "period_start", "period_end", "rate")
    one = {k: forms.one(state, k, strip=False) for k in names}
    rows = list(zip(state.get("member_username", []), state.get("member_email", []), strict=False))
    rows += [("", "")] * BLANK_MEMBER_ROWS
    typed = {
        t: (h, j)
        for t, h, j in zip(
            state.get("slice_type", []),
            state.get("gpu_hours", []),
            state.get("justification", []),
            strict=False,
        )
    }
    prices = context["prices"]
    lines = [
        {
            "slice_type": t,
            "cents_per_hour": prices.get(t),
            "hours": typed.get(t, ("", ""))[0],
            "justification": typed.get(t, ("", ""))[1],
        }
        for t in sorted(set(prices) | set(typed))
    ]
    scheme = next(
        (s for s in context["schemes"] if s["name"] == one.get("scheme")),
        context["schemes"][0] if context["schemes"] else None,
    )
    return {
        "one": one,
        "members": rows,
        "lines": lines,
        "scheme": scheme,
        "cost": preview(lines, one.get("rate", ""), scheme),
    }


def preview(lines: list[dict], rate: str, scheme: dict | None):
    """The request's cost at today's prices for the lines whose GPU-hours parse, at the typed
    rate (the scheme's standard one when blank); None when the rate does not parse."""
    try:
        rate_bp = forms.rate_bp(rate)
    except LedgerError:
        return None
    if rate_bp is None:
        rate_bp = scheme["rate_bp"] if scheme else 0
    if not 0 <= rate_bp <= 10_000:
        return None
    priced = []
    for line in lines:
        try:
            hours = forms.whole("GPU-hours", line["hours"])
        except LedgerError:
            continue
        if hours and hours > 0 and line["cents_per_hour"] is not None:
            priced.append((line["slice_type"], hours))
    return cost_of_request(
        priced,
        {
            ln["slice_type"]: ln["cents_per_hour"]
            for ln in lines
            if ln["cents_per_hour"] is not None
        },
        rate_bp,
    )


def history(db, app_id: int, applicant: str, roles) -> list[dict]:
    """The application's audited steps the reader may see, oldest first."""
    full = bool({SECRETARIAT, STAFF} & set(roles))
    words = HISTORY_FOR_SECRETARIAT if full else HISTORY
    out = []
    for e in db.scalars(
        select(AuditEntry)
        .where(AuditEntry.subject == f"application:{app_id}")
        .order_by(AuditEntry.id)
    ):
        if e.action not in words:
            continue
        detail = json.loads(e.detail or "{}")
        what = words[e.action]
        if e.action == "application.approve":
            what = f"decided: {WORDS.get(detail.get('outcome'), 'approved')}"
        elif e.action == "application.assign":
            what = f"{what}: {detail.get('reviewer', '')}"
        who = e.actor if full or e.actor == applicant else "the scheme's secretariat"
        out.append({"at": e.at, "what": what, "who": who})
    return out


def application_page(ledger, app_id: int, user: str, roles, now: datetime) -> dict | None:
    """Everything application `app_id`'s page shows `user` (with `roles`); None when they may
    not see it."""
    with ledger.session() as db:
        if not can_see(db, app_id, user, roles):
            return None
        app = db.get(Application, app_id)
        scheme = db.get(Scheme, app.scheme_id)
        mine = app.applicant == user
        assignments = list(
            db.scalars(
                select(ReviewerAssignment)
                .where(ReviewerAssignment.application_id == app_id)
                .order_by(ReviewerAssignment.id)
            )
        )
        reviewing = next((a for a in assignments if a.reviewer == user and not a.conflict), None)
        missing = ""
        if app.status in (SUBMITTED, UNDER_REVIEW):
            try:
                check_complete(app, requests_of(db, app.id))
            except LedgerError as e:
                missing = str(e)
        secretariat = SECRETARIAT in roles
        return {
            "app": application_view(db, app, now),
            "mine": mine,
            "editable": mine and app.status == DRAFT,
            "withdrawable": mine and app.status in (DRAFT, SUBMITTED, UNDER_REVIEW),
            "secretariat": secretariat and app.status != DRAFT,
            "reviewing": reviewing is not None and app.status == UNDER_REVIEW,
            "assignments": [
                {
                    "reviewer": a.reviewer,
                    "conflict": a.conflict,
                    "note": a.conflict_note,
                    "assigned_at": a.assigned_at,
                    "declared_at": a.declared_at,
                }
                for a in assignments
            ]
            if secretariat or STAFF in roles
            else [],
            "criteria": criteria_of(scheme),
            "max_rate_bp": scheme.max_rate_bp,
            "scores": scores_seen(db, app_id, user, roles),
            "missing": missing,
            "history": history(db, app_id, app.applicant, roles),
            "context": form_context(db, now),
        }


def my_applications(ledger, user: str, now: datetime) -> list[dict]:
    with ledger.session() as db:
        return [
            application_view(db, a, now)
            for a in reversed(visible_applications(db, user, frozenset()))
        ]


class MyApplicationsPage(SchemePage):
    @web.authenticated
    async def get(self):
        user = self.username()
        apps = await self.in_db(my_applications, self.ledger, user, clock.utcnow())
        self.show("scheme_applications.html.j2", title="My applications", apps=apps)


class ApplicationFormPage(SchemePage):
    """The form of a new application; what it saves becomes scheme/applications/N."""

    async def show_form(self, app: dict | None, state: dict, error: str = "", status: int = 200):
        """The form for `state` (posted or saved); `app` the saved application, if any."""
        context = await self.in_db(self._context)
        self.show(
            "scheme_application_form.html.j2",
            status=status,
            title=f"Application {app['id']}" if app else "New application",
            app=app,
            form=form_view(state, context),
            context=context,
            org_types=[(t, ORG_WORDS[t]) for t in ORG_TYPES],
            error=error,
        )

    def _context(self):
        with self.ledger.session() as db:
            return form_context(db, clock.utcnow())

    async def save(self, app: dict | None, state: dict) -> None:
        """Save (and with action=submit, submit) the posted form: a new draft, or `app`'s."""
        user = self.username()
        action = forms.one(state, "action")
        try:
            fields = forms.application(state)
            if action == "submit":
                check_complete(fields, fields.requests)  # nothing written when incomplete
            known = await self.known_users([m.username for m in fields.members])
            now = clock.utcnow()
            if app is None:
                scheme = forms.one(state, "scheme")
                saved = await self.attempt(
                    self.workflow.create_draft, user, scheme, fields, known, now
                )
            else:
                saved = await self.attempt(
                    self.workflow.update_draft, user, app["id"], fields, known, now
                )
            if action == "submit":
                await self.attempt(self.workflow.submit, user, saved.id, now)
        except LedgerError as e:
            return await self.show_form(app, state, str(e), e.status)
        except Refused as e:
            return await self.show_form(app, state, str(e), e.status)
        self.done(f"applications/{saved.id}", "submitted" if action == "submit" else "saved")

    @web.authenticated
    async def get(self):
        await self.show_form(None, {"email": [""]})

    @web.authenticated
    async def post(self):
        await self.save(None, self.form())


class ApplicationPage(ApplicationFormPage):
    """One application: its form while it is its applicant's draft, else read-only with what
    the reader's role lets them do."""

    async def load(self, app_id: int) -> dict:
        found = await self.in_db(
            application_page, self.ledger, app_id, self.username(), self.roles(), clock.utcnow()
        )
        if found is None:
            raise web.HTTPError(404, f"There is no application {app_id} that you can see.")
        return found

    async def show_app(
        self,
        found: dict,
        failed: str = "",
        error: str = "",
        status: int = 200,
        posted: dict | None = None,
    ) -> None:
        if found["editable"] and failed in ("", "form"):
            return await self.show_form(
                found["app"], posted or state_of_view(found["app"]), error, status
            )
        posted = posted or {}

        def typed(form: str, name: str, default="") -> str:
            """What was typed in field `name` of form `form` when it was refused; else
            `default`."""
            if form == failed and name in posted:
                return forms.one(posted, name, strip=False)
            return default

        def typed_list(form: str, name: str) -> list[str]:
            return forms.many(posted, name, strip=False) if form == failed else []

        self.show(
            "scheme_application.html.j2",
            typed_list=typed_list,
            status=status,
            title=f"Application {found['app']['id']}",
            f=found,
            a=found["app"],
            failed=failed,
            error=error,
            typed=typed,
            percent=forms.percent_text,
            money_text=forms.money_text,
            org_words=ORG_WORDS,
        )

    @web.authenticated
    async def get(self, app_id):
        await self.show_app(await self.load(object_id(app_id)))

    @web.authenticated
    async def post(self, app_id):
        app_id = object_id(app_id)
        found = await self.load(app_id)
        state = self.form()
        action = forms.one(state, "action")
        user, now, wf = self.username(), clock.utcnow(), self.workflow
        if action in ("save", "submit") and found["editable"]:
            return await self.save(found["app"], state)
        try:
            if action == "withdraw" and found["withdrawable"]:
                await self.attempt(wf.withdraw, user, app_id, now)
                return self.done(f"applications/{app_id}", "withdrawn")
            if action in ("start_review", "assign") and found["secretariat"]:
                names = forms.names(forms.one(state, "reviewers"))
                verb = wf.start_review if action == "start_review" else wf.assign_reviewers
                await self.attempt(verb, user, app_id, names, now)
                return self.done(
                    f"applications/{app_id}", "review" if action == "start_review" else "assigned"
                )
            if action == "decide" and found["secretariat"]:
                kw = forms.decision(state)
                outcome = forms.one(state, "outcome")
                await self.attempt(wf.decide, user, app_id, outcome, now, **kw)
                return self.done(f"applications/{app_id}", "decided")
            if action == "conflict" and found["reviewing"]:
                note = forms.one(state, "note", strip=False)
                await self.attempt(wf.declare_conflict, user, app_id, note, now)
                return self.done("reviews", "conflict")
            if action == "score" and found["reviewing"]:
                keys = [c["key"] for c in found["criteria"]]
                values, comments = forms.scores(state, keys)
                await self.attempt(wf.score, user, app_id, values, now, comments)
                return self.done(f"applications/{app_id}", "scored")
        except (LedgerError, Refused) as e:
            return await self.show_app(found, action, str(e), e.status, state)
        raise web.HTTPError(
            403 if action in ACTIONS else 400,
            f"You cannot {ACTIONS.get(action, 'do that to')} application {app_id} now."
            if action in ACTIONS
            else f"Unknown action {action[:40]!r}.",
        )


ACTIONS = {
    "save": "save",
    "submit": "submit",
    "withdraw": "withdraw",
    "start_review": "start the review of",
    "assign": "assign reviewers to",
    "decide": "decide",
    "conflict": "declare a conflict on",
    "score": "score",
}
