"""An applicant's verbs: create and save a draft, submit it, withdraw it; and the scheme's
configuration the review needs (criteria, highest rate, report period).

A draft is saved whole (the form sends every field): its fields, its team and its compute
request are checked (`slicehub.quota.scheme.validate`) before anything is written, and replace
what the draft held. The applicant is the PI and a member of their own team; team members must
be hub users (`known_users`, which the service answers from the hub). Only the applicant sees,
saves, submits or withdraws their application; a submitted application can no longer be
edited. Each verb is one transaction with its audit entry and its mail.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import delete, select

from ..errors import LedgerError
from ..models import Scheme
from ..store import audit
from . import notify
from .core import WorkflowBase, send, subject_of
from .models import Application, ApplicationMember, ApplicationRequest
from .states import APPLICATION, DRAFT, SUBMITTED, WITHDRAWN, advance
from .validate import ApplicationInput, check_complete, check_criteria, check_draft
from .views import cost_of_request, list_prices

KnownUsers = Callable[[list[str]], set[str]]
MAX_REPORT_PERIOD_MONTHS = 24


class ApplicationVerbs(WorkflowBase):
    def configure_scheme(
        self,
        actor: str,
        scheme: str,
        now: datetime,
        criteria: list[dict] | None = None,
        max_rate_bp: int | None = None,
        report_period_months: int | None = None,
    ) -> Scheme:
        """Set what is named of `scheme`'s review configuration: its criteria (weights sum to
        100), its highest rate (at least its standard rate, at most 100%), its report period in
        months (1 to 24)."""
        stored = None if criteria is None else check_criteria(criteria)
        if report_period_months is not None and (
            isinstance(report_period_months, bool)
            or not isinstance(report_period_months, int)
            or not 1 <= report_period_months <= MAX_REPORT_PERIOD_MONTHS
        ):
            raise LedgerError(
                f"The report period is a whole number of months, 1 to {MAX_REPORT_PERIOD_MONTHS}."
            )
        with self.ledger.session.begin() as db:
            row = db.scalar(select(Scheme).where(Scheme.name == scheme))
            if row is None:
                raise LedgerError(f"There is no scheme {scheme!r}.", 404)
            if max_rate_bp is not None and (
                isinstance(max_rate_bp, bool)
                or not isinstance(max_rate_bp, int)
                or not row.subsidy_rate_bp <= max_rate_bp <= 10_000
            ):
                raise LedgerError(
                    f"The highest rate must be from the scheme's standard rate "
                    f"({row.subsidy_rate_bp / 100:g}%) to 100%."
                )
            changed = {}
            for name, value in (
                ("criteria", stored),
                ("max_rate_bp", max_rate_bp),
                ("report_period_months", report_period_months),
            ):
                if value is not None:
                    setattr(row, name, value)
                    changed[name] = value
            audit(db, now, actor, "scheme.configure", scheme, **changed)
        return row

    def create_draft(
        self,
        applicant: str,
        scheme: str,
        fields: ApplicationInput,
        known_users: KnownUsers,
        now: datetime,
    ) -> Application:
        """A new draft of `applicant` to `scheme`, with `fields` (any may be empty)."""
        with self.ledger.session.begin() as db:
            row = db.scalar(select(Scheme).where(Scheme.name == scheme))
            if row is None:
                raise LedgerError(f"There is no scheme {scheme!r}.", 404)
            app = Application(
                scheme_id=row.id,
                applicant=applicant,
                rate_bp=row.subsidy_rate_bp,
                status=DRAFT,
                created_at=now,
            )
            self._fill(db, app, row, fields, known_users, now)
            db.add(app)
            db.flush()
            self._write_team_and_request(db, app, fields)
            audit(db, now, applicant, "application.create", subject_of(app), scheme=scheme)
        return app

    def update_draft(
        self,
        actor: str,
        application_id: int,
        fields: ApplicationInput,
        known_users: KnownUsers,
        now: datetime,
    ) -> Application:
        """Replace every field, the team and the request of `actor`'s draft `application_id`."""
        with self.ledger.session.begin() as db:
            app = self._application(db, application_id, owner=actor)
            if app.status != DRAFT:
                raise LedgerError(
                    f"Application {app.id} is submitted; it can no longer be edited, only "
                    "withdrawn.",
                    409,
                )
            self._fill(db, app, db.get(Scheme, app.scheme_id), fields, known_users, now)
            for table in (ApplicationMember, ApplicationRequest):
                db.execute(delete(table).where(table.application_id == app.id))
            self._write_team_and_request(db, app, fields)
            audit(db, now, actor, "application.update", subject_of(app))
        return app

    def _fill(self, db, app, scheme: Scheme, f: ApplicationInput, known_users, now) -> None:
        """Check `f` and copy it onto `app` (nothing is written when the check refuses)."""
        start, end = check_draft(
            f, app.applicant, scheme.max_rate_bp, list_prices(db, now), known_users
        )
        app.email, app.organisation, app.org_type = f.email, f.organisation, f.org_type
        app.title, app.abstract, app.ai_area = f.title, f.abstract, f.ai_area
        app.period_start, app.period_end = start, end
        app.rate_bp = scheme.subsidy_rate_bp if f.rate_bp is None else f.rate_bp

    @staticmethod
    def _write_team_and_request(db, app: Application, f: ApplicationInput) -> None:
        db.add(
            ApplicationMember(
                application_id=app.id, username=app.applicant, email=app.email, role="pi"
            )
        )
        db.add_all(
            ApplicationMember(
                application_id=app.id, username=m.username, email=m.email, role="member"
            )
            for m in f.members
        )
        db.add_all(
            ApplicationRequest(
                application_id=app.id,
                slice_type=r.slice_type,
                gpu_hours=r.gpu_hours,
                justification=r.justification,
            )
            for r in f.requests
        )

    def submit(self, actor: str, application_id: int, now: datetime) -> Application:
        """Submit `actor`'s complete draft; mails the applicant what it costs and what next."""
        with self.ledger.session.begin() as db:
            app = self._application(db, application_id, owner=actor)
            requests = requests_of(db, app.id)
            if app.status == DRAFT:
                check_complete(app, requests)
            advance(APPLICATION, app, SUBMITTED, f"Application {app.id}")
            app.submitted_at = now
            cost = cost_of_request(
                [(r.slice_type, r.gpu_hours) for r in requests], list_prices(db, now), app.rate_bp
            )
            audit(
                db,
                now,
                actor,
                "application.submit",
                subject_of(app),
                list_cents=cost.list_cents,
                subsidy_cents=cost.subsidy_cents,
            )
            send(db, now, app.email, notify.application_status(app, cost), subject_of(app))
        return app

    def withdraw(self, actor: str, application_id: int, now: datetime) -> Application:
        """Withdraw `actor`'s application, until it is decided."""
        with self.ledger.session.begin() as db:
            app = self._application(db, application_id, owner=actor)
            before = advance(APPLICATION, app, WITHDRAWN, f"Application {app.id}")
            audit(db, now, actor, "application.withdraw", subject_of(app), before=before)
            send(db, now, app.email, notify.application_status(app), subject_of(app))
        return app


def requests_of(db, application_id: int) -> list[ApplicationRequest]:
    return list(
        db.scalars(
            select(ApplicationRequest)
            .where(ApplicationRequest.application_id == application_id)
            .order_by(ApplicationRequest.slice_type)
        )
    )


def members_of(db, application_id: int) -> list[ApplicationMember]:
    return list(
        db.scalars(
            select(ApplicationMember)
            .where(ApplicationMember.application_id == application_id)
            .order_by(ApplicationMember.id)
        )
    )
