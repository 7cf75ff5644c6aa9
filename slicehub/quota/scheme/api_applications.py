"""The scheme's REST API for applications and their review (under `api/scheme/`).

- `GET schemes`: the schemes an application may go to, with their rates and criteria (anyone).
- `GET cost?rate_bp=7000&line=h100.1g.10gb:100&line=...`: what compute costs at today's list
  prices, the subsidy at that rate and the co-pay (anyone; the form's live preview).
- `GET applications[?status=]`: those the caller may see (`views.visible_applications`).
- `POST applications`: a new draft of the caller's (`scheme` and any of the fields); 201.
- `GET applications/{id}`, `PUT applications/{id}` (the applicant's draft, every field again).
- `POST applications/{id}/submit`, `/withdraw` (the applicant).
- `POST applications/{id}/review` `{"reviewers": [...]}`: the secretariat starts the review;
  `/reviewers` assigns more.
- `POST applications/{id}/conflict` `{"note"}`, `/scores` `{"scores": {criterion: 0..10},
  "comments": {criterion: text}}`: an assigned reviewer (the committee).
- `POST applications/{id}/decision`: the secretariat decides (`decisions.DecisionVerbs`).

Every answer about an application is the application as the caller may see it: its fields,
team, compute request and cost, decision, the scores they may see and, for the secretariat
and staff, its reviewers (a reviewer sees only their own assignment; an applicant none).
"""

from __future__ import annotations

from sqlalchemy import select
from tornado import web

from slicehub.common import clock
from slicehub.common.money import BASIS_POINTS

from ..errors import LedgerError
from ..models import Scheme
from .api_base import (
    COMMITTEE_SCOPE,
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
from .models import Application, ReviewerAssignment
from .review import MAX_REVIEWERS
from .states import APPLICATION
from .validate import (
    MAX_MEMBERS,
    MAX_REQUESTS,
    ApplicationInput,
    ComputeLine,
    TeamMember,
    check_gpu_hours,
    check_username,
)
from .views import (
    SECRETARIAT,
    STAFF,
    application_view,
    can_see,
    criteria_of,
    live_cost,
    scores_seen,
    visible_applications,
)

FIELDS = {
    "email",
    "organisation",
    "org_type",
    "title",
    "abstract",
    "ai_area",
    "period_start",
    "period_end",
    "rate_bp",
    "members",
    "requests",
}
TEXT_FIELDS = ("email", "organisation", "org_type", "title", "abstract", "ai_area")
DECISION_FIELDS = {
    "outcome",
    "reasons",
    "terms",
    "amount_cents",
    "rate_bp",
    "compute",
    "valid_from",
    "valid_until",
    "project",
    "max_concurrent_sessions",
}


def application_input(data: dict) -> ApplicationInput:
    """The form's fields as the workflow takes them; the shape checked, the values left to
    `validate.check_draft`."""
    members = objects(data, "members", {"username", "email"}, {"username"}, MAX_MEMBERS)
    for m in members:
        as_400(check_username, "team member", m["username"])
        text(m, "email")
    lines = objects(
        data, "requests", {"slice_type", "gpu_hours", "justification"}, {"slice_type"}, MAX_REQUESTS
    )
    for r in lines:
        text(r, "slice_type")
        text(r, "justification")
    return ApplicationInput(
        **{key: text(data, key) for key in TEXT_FIELDS},
        period_start=optional_date(data, "period_start"),
        period_end=optional_date(data, "period_end"),
        rate_bp=optional_whole(data, "rate_bp"),
        members=tuple(TeamMember(m["username"], m.get("email", "")) for m in members),
        requests=tuple(
            ComputeLine(r["slice_type"], r.get("gpu_hours"), r.get("justification", ""))
            for r in lines
        ),
    )


class ApplicationsBase(SchemeHandler):
    def detail(self, application_id: int) -> dict:
        """Application `application_id` as the caller may see it; 404 when they may not."""
        user, roles = self.username(), self.roles()
        now = clock.utcnow()
        with self.ledger.session() as db:
            if not can_see(db, application_id, user, roles):
                raise LedgerError(f"There is no application {application_id}.", 404)
            app = db.get(Application, application_id)
            out = application_view(db, app, now)
            out["scores"] = {
                reviewer: {
                    "scores": {
                        k: {"score": s, "comment": c} for k, (s, c) in seen["scores"].items()
                    },
                    "weighted": seen["weighted"],
                }
                for reviewer, seen in scores_seen(db, app.id, user, roles).items()
            }
            q = select(ReviewerAssignment).where(ReviewerAssignment.application_id == app.id)
            if not ({SECRETARIAT, STAFF} & roles):
                q = q.where(ReviewerAssignment.reviewer == user)
            out["reviewers"] = [
                {
                    "reviewer": a.reviewer,
                    "assigned_by": a.assigned_by,
                    "assigned_at": a.assigned_at.isoformat(),
                    "conflict": a.conflict,
                    "conflict_note": a.conflict_note,
                    "declared_at": a.declared_at.isoformat() if a.declared_at else None,
                }
                for a in db.scalars(q.order_by(ReviewerAssignment.id))
            ]
            return out

    async def answer(self, application_id: int, status: int = 200) -> None:
        self.write_json(await self.in_db(self.detail, application_id), status)

    async def secretariat_sees(self, application_id: int) -> None:
        """The secretariat's verbs act on applications they see (submitted ones): 403 without
        the role, 404 for a draft or none."""
        self.require(SECRETARIAT_SCOPE)
        user, roles = self.username(), self.roles()

        def check():
            with self.ledger.session() as db:
                if not can_see(db, application_id, user, roles):
                    raise LedgerError(f"There is no application {application_id}.", 404)

        await self.in_db(check)


class SchemesHandler(SchemeHandler):
    @web.authenticated
    async def get(self):
        def schemes():
            with self.ledger.session() as db:
                return [
                    {
                        "name": s.name,
                        "subsidy_rate_bp": s.subsidy_rate_bp,
                        "max_rate_bp": s.max_rate_bp,
                        "report_period_months": s.report_period_months,
                        "criteria": criteria_of(s),
                    }
                    for s in db.scalars(select(Scheme).order_by(Scheme.name))
                ]

        self.write_json({"schemes": await self.in_db(schemes)})


class CostHandler(SchemeHandler):
    @web.authenticated
    async def get(self):
        try:
            rate = int(self.get_argument("rate_bp"))
        except (web.MissingArgumentError, ValueError):
            raise web.HTTPError(400, "rate_bp must be a whole number of basis points.") from None
        if not 0 < rate <= BASIS_POINTS:
            raise web.HTTPError(400, "rate_bp must be more than 0 and at most 10000 (100%).")
        raw = self.get_arguments("line")
        if len(raw) > MAX_REQUESTS:
            raise web.HTTPError(400, f"At most {MAX_REQUESTS} lines.")
        lines = []
        for line in raw:
            slice_type, _, hours = line.partition(":")
            if not hours.isdigit() or len(hours) > 9:
                raise web.HTTPError(400, f"line {line[:80]!r} must be SLICE_TYPE:GPU_HOURS.")
            lines.append((slice_type, as_400(check_gpu_hours, slice_type, int(hours))))
        cost = await self.in_db(live_cost, self.ledger, lines, rate, clock.utcnow())
        self.write_json(
            {
                "rate_bp": cost.rate_bp,
                "lines": [
                    {
                        "slice_type": c.slice_type,
                        "gpu_hours": c.gpu_hours,
                        "cents_per_hour": c.cents_per_hour,
                        "list_cents": c.list_cents,
                        "subsidy_cents": c.subsidy_cents,
                        "copay_cents": c.copay_cents,
                    }
                    for c in cost.lines
                ],
                "list_cents": cost.list_cents,
                "subsidy_cents": cost.subsidy_cents,
                "copay_cents": cost.copay_cents,
            }
        )


class ApplicationsHandler(ApplicationsBase):
    @web.authenticated
    async def get(self):
        status = self.get_argument("status", None)
        if status is not None and status not in APPLICATION:
            raise web.HTTPError(400, f"status must be one of {', '.join(APPLICATION)}.")
        user, roles = self.username(), self.roles()
        now = clock.utcnow()

        def listed():
            with self.ledger.session() as db:
                return [
                    application_view(db, app, now)
                    for app in visible_applications(db, user, roles, status)
                ]

        self.write_json({"applications": await self.in_db(listed)})

    @web.authenticated
    async def post(self):
        data = self.body(FIELDS | {"scheme"})
        scheme = data.get("scheme")
        if not isinstance(scheme, str) or not scheme:
            raise web.HTTPError(400, "scheme must name the scheme the application goes to.")
        fields = application_input(data)
        known = await self.hub_users(m.username for m in fields.members)
        app = await self.in_db(
            self.workflow.create_draft, self.username(), scheme, fields, known, clock.utcnow()
        )
        await self.answer(app.id, 201)


class ApplicationHandler(ApplicationsBase):
    @web.authenticated
    async def get(self, raw_id):
        await self.answer(object_id(raw_id))

    @web.authenticated
    async def put(self, raw_id):
        fields = application_input(self.body(FIELDS))
        known = await self.hub_users(m.username for m in fields.members)
        app = await self.in_db(
            self.workflow.update_draft,
            self.username(),
            object_id(raw_id),
            fields,
            known,
            clock.utcnow(),
        )
        await self.answer(app.id)


class ApplicantVerbHandler(ApplicationsBase):
    """POST {id}/submit or {id}/withdraw: the applicant's verb named `verb`."""

    def initialize(self, verb: str):
        self.verb = verb

    @web.authenticated
    async def post(self, raw_id):
        self.body(set())
        verb = getattr(self.workflow, self.verb)
        app = await self.in_db(verb, self.username(), object_id(raw_id), clock.utcnow())
        await self.answer(app.id)


class ReviewHandler(ApplicationsBase):
    """POST {id}/review starts the review with its reviewers; {id}/reviewers adds some."""

    def initialize(self, start: bool):
        self.start = start

    @web.authenticated
    async def post(self, raw_id):
        application_id = object_id(raw_id)
        await self.secretariat_sees(application_id)
        data = self.body({"reviewers"})
        if "reviewers" not in data:
            raise web.HTTPError(400, "reviewers must list the reviewers' hub user names.")
        reviewers = usernames(data, "reviewers", "reviewer", MAX_REVIEWERS)
        known = (await self.hub_users(reviewers))(reviewers)
        unknown = sorted(set(reviewers) - known)
        if unknown:
            raise web.HTTPError(
                400, f"Not a hub user: {', '.join(unknown)}; a reviewer must sign in once."
            )
        verb = self.workflow.start_review if self.start else self.workflow.assign_reviewers
        await self.in_db(verb, self.username(), application_id, reviewers, clock.utcnow())
        await self.answer(application_id)


class ConflictHandler(ApplicationsBase):
    @web.authenticated
    async def post(self, raw_id):
        self.require(COMMITTEE_SCOPE)
        note = text(self.body({"note"}), "note")
        application_id = object_id(raw_id)
        await self.in_db(
            self.workflow.declare_conflict, self.username(), application_id, note, clock.utcnow()
        )
        self.write_json({"id": application_id, "conflict": True, "note": note})


class ScoresHandler(ApplicationsBase):
    @web.authenticated
    async def post(self, raw_id):
        self.require(COMMITTEE_SCOPE)
        data = self.body({"scores", "comments"})
        scores, comments = data.get("scores"), data.get("comments", {})
        if not isinstance(scores, dict):
            raise web.HTTPError(400, "scores must be an object: {criterion: score from 0 to 10}.")
        if not isinstance(comments, dict):
            raise web.HTTPError(400, "comments must be an object: {criterion: text}.")
        application_id = object_id(raw_id)
        await self.in_db(
            self.workflow.score,
            self.username(),
            application_id,
            scores,
            clock.utcnow(),
            comments,
        )
        await self.answer(application_id)


class DecisionHandler(ApplicationsBase):
    @web.authenticated
    async def post(self, raw_id):
        application_id = object_id(raw_id)
        await self.secretariat_sees(application_id)
        data = self.body(DECISION_FIELDS)
        compute = data.get("compute")
        if compute is not None and not isinstance(compute, dict):
            raise web.HTTPError(400, "compute must be an object: {slice type: GPU-hours}.")
        sessions = optional_whole(data, "max_concurrent_sessions")
        asked = dict(
            reasons=text(data, "reasons"),
            terms=text(data, "terms"),
            amount_cents=optional_whole(data, "amount_cents"),
            rate_bp=optional_whole(data, "rate_bp"),
            compute=compute,
            valid_from=optional_date(data, "valid_from"),
            valid_until=optional_date(data, "valid_until"),
            slug=data.get("project"),
            **({} if sessions is None else {"max_concurrent_sessions": sessions}),
        )
        actor, outcome, now = self.username(), text(data, "outcome"), clock.utcnow()
        await self.in_db(lambda: self.workflow.decide(actor, application_id, outcome, now, **asked))
        await self.answer(application_id)


def routes(route) -> list[tuple]:
    one = r"api/scheme/applications/(\d+)"
    return [
        (route("api/scheme/schemes"), SchemesHandler),
        (route("api/scheme/cost"), CostHandler),
        (route("api/scheme/applications"), ApplicationsHandler),
        (route(one), ApplicationHandler),
        (route(f"{one}/submit"), ApplicantVerbHandler, {"verb": "submit"}),
        (route(f"{one}/withdraw"), ApplicantVerbHandler, {"verb": "withdraw"}),
        (route(f"{one}/review"), ReviewHandler, {"start": True}),
        (route(f"{one}/reviewers"), ReviewHandler, {"start": False}),
        (route(f"{one}/conflict"), ConflictHandler),
        (route(f"{one}/scores"), ScoresHandler),
        (route(f"{one}/decision"), DecisionHandler),
    ]
