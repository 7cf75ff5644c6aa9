"""The decision on an application under review: approved (as asked), approved with changes, or
rejected, with reasons.

An approval names the compute (GPU-hours per slice type; by default what was asked), the rate
(by default the requested one; at most the scheme's highest), the approved subsidy (by default
the subsidy of that compute at today's list prices and that rate) and the validity (by default
the requested period), with terms. In one transaction, under the scheme's lock
(`slicehub.quota.scheme.fund`), it creates the project (its slug given, or made from the title),
its own rate, its grant and its members (the PI with role "pi", the team as "member"), links
the application to it, audits each step and queues the applicant's mail. An approval that
would over-commit the scheme's fund is refused with the amounts, and nothing is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select

from slicehub.common.names import PROJECT_ID

from ..errors import LedgerError, check_amount, check_window
from ..models import Grant, Member, Project
from ..store import audit
from . import notify
from .applications import members_of, requests_of
from .core import WorkflowBase, send, subject_of
from .fund import lock_scheme, reserve
from .models import Decision
from .states import APPLICATION, APPROVED_WITH_CHANGES, DECIDED, REJECTED, advance
from .validate import MAX_TERMS, check_gpu_hours, check_rate_bp, check_text, day
from .views import cost_of_request, list_prices

DEFAULT_MAX_SESSIONS = 10


class DecisionVerbs(WorkflowBase):
    def decide(
        self,
        actor: str,
        application_id: int,
        outcome: str,
        now: datetime,
        *,
        reasons: str = "",
        terms: str = "",
        amount_cents: int | None = None,
        rate_bp: int | None = None,
        compute: Mapping[str, int] | None = None,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        slug: str | None = None,
        max_concurrent_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> Decision:
        """Decide application `application_id` (see the module's docstring); returns the
        decision, whose application names the new project when it approves."""
        if outcome not in DECIDED:
            raise LedgerError(
                f"The outcome {str(outcome)[:40]!r} is unknown: use approved, "
                "approved_with_changes or rejected."
            )
        check_text("reasons", reasons, MAX_TERMS, multiline=True)
        check_text("terms", terms, MAX_TERMS, multiline=True)
        if outcome in (REJECTED, APPROVED_WITH_CHANGES) and not reasons.strip():
            raise LedgerError("Give the reasons for a rejection or for the changes.")
        if slug is not None and (not isinstance(slug, str) or not PROJECT_ID.fullmatch(slug)):
            raise LedgerError(f"{str(slug)[:64]!r} is not a project id: use a-z, 0-9 and '-'.")
        with self.ledger.session.begin() as db:
            app = self._application(db, application_id)
            advance(APPLICATION, app, outcome, f"Application {app.id}")
            app.decided_at = now
            decision = Decision(
                application_id=app.id,
                outcome=outcome,
                amount_cents=0,
                rate_bp=0,
                compute="{}",
                terms=terms,
                reasons=reasons,
                decided_by=actor,
                decided_at=now,
            )
            project = None
            if outcome != REJECTED:
                project = self._approve(
                    db,
                    app,
                    decision,
                    actor,
                    now,
                    amount_cents=amount_cents,
                    rate_bp=rate_bp,
                    compute=compute,
                    valid_from=valid_from,
                    valid_until=valid_until,
                    slug=slug,
                    max_concurrent_sessions=max_concurrent_sessions,
                )
            db.add(decision)
            audit(
                db,
                now,
                actor,
                f"application.{'reject' if outcome == REJECTED else 'approve'}",
                subject_of(app),
                outcome=outcome,
                amount_cents=decision.amount_cents,
                rate_bp=decision.rate_bp,
                project=project.slug if project else None,
            )
            mail = notify.decided(app, decision, project.slug if project else None)
            send(db, now, app.email, mail, subject_of(app))
        return decision

    def _approve(self, db, app, decision: Decision, actor, now, **asked) -> Project:
        """Fill the approval's terms into `decision` and create its project, grant and members."""
        requested = requests_of(db, app.id)
        compute = dict(asked["compute"] or {r.slice_type: r.gpu_hours for r in requested})
        prices = list_prices(db, now)
        if not compute:
            raise LedgerError("An approval names the compute it approves.")
        for slice_type, hours in compute.items():
            if slice_type not in prices:
                raise LedgerError(f"{slice_type} has no list price; it cannot be approved.")
            check_gpu_hours(slice_type, hours)
        scheme = lock_scheme(db, app.scheme_id, self.ledger.is_sqlite)
        rate = app.rate_bp if asked["rate_bp"] is None else asked["rate_bp"]
        check_rate_bp(rate, scheme.max_rate_bp)
        amount = asked["amount_cents"]
        if amount is None:
            amount = cost_of_request(sorted(compute.items()), prices, rate).subsidy_cents
        check_amount("approved subsidy", amount, positive=True)
        start = day("validity's start", asked["valid_from"]) or app.period_start
        end = day("validity's end", asked["valid_until"]) or app.period_end
        check_window("validity", start, end)
        if end <= now:
            raise LedgerError(f"The validity ends in the past ({end:%Y-%m-%d}).")
        sessions = asked["max_concurrent_sessions"]
        if isinstance(sessions, bool) or not isinstance(sessions, int) or not 1 <= sessions <= 1000:
            raise LedgerError("The cap on concurrent sessions must be from 1 to 1,000.")
        reserve(db, scheme, amount, f"Approving application {app.id}")
        slug = asked["slug"] or free_slug(db, app.title, app.id)
        if db.scalar(select(Project.id).where(Project.slug == slug)) is not None:
            raise LedgerError(f"A project {slug!r} exists already; choose another id.", 409)
        project = Project(
            slug=slug,
            name=app.title,
            organisation=app.organisation,
            pi=app.applicant,
            scheme_id=scheme.id,
            valid_from=start,
            valid_until=end,
            allowed_slice_types=json.dumps(sorted(compute)),
            max_concurrent_sessions=sessions,
            policy="stop",
            credit_limit_cents=0,
            is_course=False,
            subsidy_rate_bp=rate,
            created_at=now,
        )
        db.add(project)
        db.flush()
        db.add(
            Grant(
                project_id=project.id,
                amount_cents=amount,
                valid_from=start,
                valid_until=end,
                note=f"application {app.id}",
                created_at=now,
            )
        )
        team = members_of(db, app.id)
        db.add_all(
            Member(project_id=project.id, username=m.username, role=m.role, email=m.email)
            for m in team
        )
        app.project_id = project.id
        decision.amount_cents, decision.rate_bp = amount, rate
        decision.compute = json.dumps(compute, sort_keys=True)
        decision.valid_from, decision.valid_until = start, end
        audit(db, now, actor, "project.add", slug, scheme=scheme.name, application=app.id)
        audit(
            db,
            now,
            actor,
            "grant.add",
            slug,
            amount_cents=amount,
            valid_from=start,
            valid_until=end,
        )
        for m in team:
            audit(db, now, actor, "member.add", f"{slug}/{m.username}", role=m.role)
        return project


def free_slug(db, title: str, application_id: int) -> str:
    """A project id made from `title` (a-z, 0-9, '-'), made unique with -2, -3, ..."""
    base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:50].strip("-")
    base = base or f"application-{application_id}"
    taken = set(db.scalars(select(Project.slug).where(Project.slug.like(f"{base}%"))))
    slug, n = base, 1
    while slug in taken:
        n += 1
        slug = f"{base}-{n}"
    return slug
