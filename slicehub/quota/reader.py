"""Read-only queries of the ledger: what the REST API, the hub pages and the Slurm reconcile see.

Every query behind the API is scoped by the caller's identity: a user's own projects, sessions
and warnings (None: all, for staff). A user's projects are those with their member row and those
whose member group is among their hub groups (`slicehub.quota.hold.membership`, the hold's
rule). The views are plain JSON-ready dicts; money in cents, times ISO 8601. It never writes,
and decides nothing about money: balances are the ledger's (`Ledger.balances`), as holds see
them.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import or_, select

from .errors import LedgerError
from .hold import MemberRow, membership
from .models import ClassWindow, Member, Project, Scheme, Session, SessionWarning

if TYPE_CHECKING:
    from .ledger import Balance, Ledger


def _member_of(username: str, groups: Collection[str]):
    """The projects `username` is a member of: a member row, or a member group among
    `groups` (the rule of `slicehub.quota.hold.membership`, as a condition on projects)."""
    by_row = Project.id.in_(select(Member.project_id).where(Member.username == username))
    if not groups:
        return by_row
    return or_(by_row, Project.member_group.in_(sorted(groups)))


def rate_in_force(p: Project, scheme: Scheme) -> int:
    """The subsidy rate `p`'s holds charge: its own (from its decision), else its scheme's."""
    return scheme.subsidy_rate_bp if p.subsidy_rate_bp is None else p.subsidy_rate_bp


def project_view(p: Project, bal: Balance, scheme: Scheme) -> dict:
    return {
        "project": p.slug,
        "name": p.name,
        "organisation": p.organisation,
        "policy": p.policy,
        "subsidy_rate_bp": rate_in_force(p, scheme),
        "allowed_slice_types": json.loads(p.allowed_slice_types),
        "valid_from": p.valid_from.isoformat(),
        "valid_until": p.valid_until.isoformat(),
        "is_course": p.is_course,
        "member_group": p.member_group,
        "grants_cents": bal.grants_cents,
        "subsidy_charged_cents": bal.subsidy_charged_cents,
        "subsidy_held_cents": bal.subsidy_held_cents,
        "subsidy_left_cents": bal.subsidy_left_cents,
        "copay_charged_cents": bal.copay_charged_cents,
        "credit_limit_cents": bal.credit_limit_cents,
        "credit_left_cents": bal.credit_left_cents,
    }


def session_view(s: Session, project_slug: str) -> dict:
    return {
        "id": s.id,
        "project": project_slug,
        "user": s.username,
        "server_name": s.server_name,
        "slice_type": s.slice_type,
        "status": s.status,
        "started_at": s.started_at.isoformat(),
        "end_at": s.end_at.isoformat(),
        "stopped_at": s.stopped_at.isoformat() if s.stopped_at else None,
        "hold_list_cents": s.hold_list_cents,
        "hold_subsidy_cents": s.hold_subsidy_cents,
        "charged_list_cents": s.charged_list_cents,
        "charged_subsidy_cents": s.charged_subsidy_cents,
        "charged_copay_cents": s.charged_list_cents - s.charged_subsidy_cents,
        "metered_until": s.metered_until.isoformat(),
        "begun": s.begun,
        "stop_reason": s.stop_reason,
        # a pre-warmed server's session: its class window; once claimed, the student's session
        "prewarm_window": s.prewarm_window_id,
        "handed_to": s.handed_to,
        "idle_since": s.idle_since.isoformat() if s.idle_since else None,
        "idle_seconds": s.idle_seconds,  # at its end (0 while it runs)
        # a parking warning that stands (the status bar's "Keep working")
        "parking": (
            {"warned_at": s.idle_warned_at.isoformat(), "park_at": s.idle_park_at.isoformat()}
            if s.idle_warned_at and s.idle_park_at
            else None
        ),
    }


class LedgerReader:
    """Read-only queries of `ledger`: behind the REST API and pages, and for the reconcile."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def projects(
        self,
        username: str | None,
        now: datetime,
        slug: str | None = None,
        groups: Collection[str] = (),
    ) -> list:
        """The projects `username` belongs to (None: all, for staff), by a member row or
        through a project's member group among their hub `groups`, with balances; only
        project `slug` when given."""
        with self.ledger.session() as db:
            q = select(Project).order_by(Project.slug)
            if slug is not None:
                q = q.where(Project.slug == slug)
            if username is not None:
                q = q.where(_member_of(username, groups))
            projects = db.scalars(q).all()
            balances = self.ledger.balances(db, [p.slug for p in projects], now)
            views = [
                project_view(p, balances[p.slug], db.get(Scheme, p.scheme_id)) for p in projects
            ]
            if username is not None:
                for p, view in zip(projects, views, strict=True):
                    view["member"] = self._membership(db, p, username, now, groups)
            return views

    def _membership(self, db, p: Project, username: str, now: datetime, groups) -> dict:
        """What the spawn form needs to know of `username` in `p`: their role, what their cap
        leaves them, how they are a member (`via`: "row", or "group:<name>"), and (a course)
        the class windows still to come."""
        row = db.scalar(
            select(Member).where(Member.project_id == p.id, Member.username == username)
        )
        m = membership(
            row and MemberRow(row.username, row.role, row.cap_cents),
            username,
            p.member_group,
            groups,
        )
        cap = m.cap_cents if m.cap_cents is not None else p.member_cap_cents
        out = {
            "role": m.role,
            "via": m.via,
            "cap_cents": cap,
            "cap_left_cents": None,
            "class_windows": [],
        }
        if cap is not None:
            charged, held = self.ledger.member_draw(db, p, username)
            out["cap_left_cents"] = max(cap - charged - held, 0)
        if p.is_course:
            windows = db.execute(
                select(ClassWindow.starts_at, ClassWindow.ends_at)
                .where(ClassWindow.project_id == p.id, ClassWindow.ends_at > now)
                .order_by(ClassWindow.starts_at)
                .limit(5)
            ).all()
            out["class_windows"] = [
                {"starts_at": a.isoformat(), "ends_at": b.isoformat()} for a, b in windows
            ]
        return out

    def is_member(self, username: str, project: str, groups: Collection[str] = ()) -> bool:
        """Whether `username` (in hub `groups`) is a member of `project`: by row or group."""
        with self.ledger.session() as db:
            return bool(
                db.scalar(
                    select(Project.id).where(Project.slug == project, _member_of(username, groups))
                )
            )

    def member_groups(self) -> frozenset[str]:
        """Every hub group a project names as its member group (empty: membership is by
        member rows alone, and nobody's groups need to be asked for)."""
        with self.ledger.session() as db:
            return frozenset(
                db.scalars(
                    select(Project.member_group).where(Project.member_group.is_not(None)).distinct()
                )
            )

    def session_view_of(self, session_id: int) -> dict:
        """The view of session `session_id` (a 404 refusal when there is none)."""
        with self.ledger.session() as db:
            found = db.execute(
                select(Session, Project.slug)
                .join(Project, Project.id == Session.project_id)
                .where(Session.id == session_id)
            ).first()
            if found is None:
                raise LedgerError(f"There is no session {session_id}.", 404)
            return session_view(*found)

    def session_server(self, session_id: int) -> tuple[str, str] | None:
        """(user, server name) of session `session_id` (None: no such session)."""
        with self.ledger.session() as db:
            row = db.execute(
                select(Session.username, Session.server_name).where(Session.id == session_id)
            ).first()
            return None if row is None else (row[0], row[1])

    def session_owner(self, session_id: int) -> str | None:
        """The user of session `session_id` (None: no such session)."""
        with self.ledger.session() as db:
            return db.scalar(select(Session.username).where(Session.id == session_id))

    def sessions(self, username: str | None, project: str | None, active_only=False) -> list:
        with self.ledger.session() as db:
            q = select(Session, Project.slug).join(Project, Project.id == Session.project_id)
            if username is not None:
                q = q.where(Session.username == username)
            if project is not None:
                q = q.where(Project.slug == project)
            if active_only:
                q = q.where(Session.status == "active")
            rows = db.execute(q.order_by(Session.id.desc()).limit(500)).all()
            views = [session_view(s, slug) for s, slug in rows]
            # a claimed pre-warmed server's spawner and kernels know the pre-warmed id only
            claimed = dict(
                db.execute(
                    select(Session.handed_to, Session.id).where(
                        Session.handed_to.in_([v["id"] for v in views])
                    )
                ).all()
            )
            for v in views:
                v["claimed_from"] = claimed.get(v["id"])
            return views

    def warnings(self, username: str | None, since_id: int = 0) -> list[dict]:
        with self.ledger.session() as db:
            q = (
                select(SessionWarning, Session)
                .join(Session, Session.id == SessionWarning.session_id)
                .where(SessionWarning.id > since_id)
            )
            if username is not None:
                q = q.where(Session.username == username)
            rows = db.execute(q.order_by(SessionWarning.id)).all()
            return [
                {
                    "id": w.id,
                    "session": s.id,
                    "user": s.username,
                    "server_name": s.server_name,
                    "level": w.level,
                    "message": w.message,
                    "created_at": w.created_at.isoformat(),
                }
                for w, s in rows
            ]

    def sessions_for_reconcile(self, ids, since: datetime) -> list[dict]:
        """Every ledger session with one of `ids` or started at or after `since`, for the Slurm
        reconcile to compare with the batch system's accounting: id, project (its slug),
        username, slice_type, status, started_at and metered_until (aware datetimes)."""
        with self.ledger.session() as db:
            q = (
                select(Session, Project.slug)
                .join(Project, Project.id == Session.project_id)
                .where(or_(Session.id.in_(list(ids)), Session.started_at >= since))
                .order_by(Session.id)
            )
            return [
                {
                    "id": s.id,
                    "project": slug,
                    "username": s.username,
                    "slice_type": s.slice_type,
                    "status": s.status,
                    "started_at": s.started_at,
                    "metered_until": s.metered_until,
                }
                for s, slug in db.execute(q).all()
            ]
