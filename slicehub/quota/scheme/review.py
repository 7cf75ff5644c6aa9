"""The review: the secretariat puts a submitted application under review and assigns reviewers;
a reviewer declares a conflict of interest or scores every criterion of the scheme.

A reviewer is never the applicant or one of the team. A conflict removes the reviewer from the
application: they no longer see it (`slicehub.quota.scheme.views`), cannot score it, and their
scores, if any, are hidden and no longer count. Scores are whole numbers from 0 to 10, one per
criterion of the scheme, all of them at once, each with an optional comment; a reviewer may
score again while the application is under review (the newest scores stand).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import select

from ..errors import LedgerError
from ..models import Scheme
from ..store import audit
from . import notify
from .core import WorkflowBase, send, subject_of
from .models import ApplicationMember, ReviewerAssignment, Score
from .states import APPLICATION, UNDER_REVIEW, advance
from .validate import MAX_COMMENT, MAX_SCORE, check_text, check_username
from .views import criteria_of

MAX_REVIEWERS = 20


class ReviewVerbs(WorkflowBase):
    def start_review(
        self, actor: str, application_id: int, reviewers: Sequence[str], now: datetime
    ) -> list[ReviewerAssignment]:
        """The secretariat (`actor`) found submitted application `application_id` complete: it
        goes under review, with `reviewers` (at least one) assigned; the applicant is told."""
        if not reviewers:
            raise LedgerError("Assign at least one reviewer to start the review.")
        with self.ledger.session.begin() as db:
            app = self._application(db, application_id)
            advance(APPLICATION, app, UNDER_REVIEW, f"Application {app.id}")
            audit(db, now, actor, "application.start_review", subject_of(app))
            rows = self._assign(db, app, actor, reviewers, now)
            send(db, now, app.email, notify.application_status(app), subject_of(app))
        return rows

    def assign_reviewers(
        self, actor: str, application_id: int, reviewers: Sequence[str], now: datetime
    ) -> list[ReviewerAssignment]:
        """Assign more `reviewers` to an application under review."""
        with self.ledger.session.begin() as db:
            app = self._application(db, application_id)
            if app.status != UNDER_REVIEW:
                raise LedgerError(
                    f"Application {app.id} is not under review; reviewers are assigned when "
                    "its review starts.",
                    409,
                )
            return self._assign(db, app, actor, reviewers, now)

    def _assign(self, db, app, actor, reviewers, now) -> list[ReviewerAssignment]:
        if len(reviewers) > MAX_REVIEWERS or len(set(reviewers)) != len(reviewers):
            raise LedgerError(f"Name each reviewer once, at most {MAX_REVIEWERS}.")
        team = set(
            db.scalars(
                select(ApplicationMember.username).where(ApplicationMember.application_id == app.id)
            )
        )
        already = set(
            db.scalars(
                select(ReviewerAssignment.reviewer).where(
                    ReviewerAssignment.application_id == app.id
                )
            )
        )
        rows = []
        for reviewer in reviewers:
            check_username("reviewer", reviewer)
            if reviewer in team or reviewer == app.applicant:
                raise LedgerError(
                    f"{reviewer} is on the team of application {app.id}; they cannot review it."
                )
            if reviewer in already:
                raise LedgerError(f"{reviewer} is already assigned to application {app.id}.", 409)
            rows.append(
                ReviewerAssignment(
                    application_id=app.id,
                    reviewer=reviewer,
                    assigned_by=actor,
                    assigned_at=now,
                    conflict=False,
                    conflict_note="",
                )
            )
            audit(db, now, actor, "application.assign", subject_of(app), reviewer=reviewer)
        db.add_all(rows)
        return rows

    def _assignment(self, db, application_id: int, reviewer: str):
        """The application and `reviewer`'s standing assignment to it (locked with it), or 404: a
        reviewer who declared a conflict no longer sees the application."""
        app = self._application(db, application_id)
        row = db.scalar(
            select(ReviewerAssignment).where(
                ReviewerAssignment.application_id == app.id,
                ReviewerAssignment.reviewer == reviewer,
                ReviewerAssignment.conflict.is_(False),
            )
        )
        if row is None:
            raise LedgerError(f"There is no application {application_id} assigned to you.", 404)
        if app.status != UNDER_REVIEW:
            raise LedgerError(f"Application {app.id} is no longer under review.", 409)
        return app, row

    def declare_conflict(
        self, reviewer: str, application_id: int, note: str, now: datetime
    ) -> ReviewerAssignment:
        """`reviewer` declares a conflict of interest (`note` says what): they are removed."""
        check_text("note", note, MAX_COMMENT, multiline=True)
        with self.ledger.session.begin() as db:
            _, row = self._assignment(db, application_id, reviewer)
            row.conflict, row.conflict_note, row.declared_at = True, note, now
            audit(db, now, reviewer, "application.conflict", f"application:{application_id}")
        return row

    def score(
        self,
        reviewer: str,
        application_id: int,
        scores: Mapping[str, int],
        now: datetime,
        comments: Mapping[str, str] | None = None,
    ) -> list[Score]:
        """`reviewer`'s score (0..10) for every criterion of the scheme, with comments."""
        comments = dict(comments or {})
        for key, comment in comments.items():
            check_text(f"comment on {str(key)[:64]}", comment, MAX_COMMENT, multiline=True)
        with self.ledger.session.begin() as db:
            app, row = self._assignment(db, application_id, reviewer)
            keys = [c["key"] for c in criteria_of(db.get(Scheme, app.scheme_id))]
            if not keys:
                raise LedgerError("The scheme has no criteria to score against yet.", 409)
            unknown = sorted((set(scores) | set(comments)) - set(keys))
            if unknown:
                raise LedgerError(f"The scheme has no criterion {', '.join(unknown)}.")
            missing = [k for k in keys if k not in scores]
            if missing:
                raise LedgerError(f"Score every criterion; missing: {', '.join(missing)}.")
            for key in keys:
                value = scores[key]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise LedgerError(f"The score for {key} must be a whole number.")
                if not 0 <= value <= MAX_SCORE:
                    raise LedgerError(f"The score for {key} must be from 0 to {MAX_SCORE}.")
            old = {
                s.criterion: s
                for s in db.scalars(select(Score).where(Score.assignment_id == row.id))
            }
            out = []
            for key in keys:
                s = old.get(key) or Score(assignment_id=row.id, criterion=key)
                s.score, s.comment, s.scored_at = scores[key], comments.get(key, ""), now
                db.add(s)
                out.append(s)
            audit(db, now, reviewer, "application.score", subject_of(app), scores=dict(scores))
        return out
