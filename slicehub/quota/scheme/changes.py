"""Change requests: a project's PI asks for a top-up, a later end of validity or a change of
members, with a justification; the secretariat (optionally after one named reviewer) approves
or denies it, and an approval is applied at once, the same audited way as an approval.

- A top-up adds a grant from now (or the project's start) to the project's end, under the
  scheme's lock and within its fund (`slicehub.quota.scheme.fund`): refused with the amounts
  otherwise, and the request stays pending.
- An extension moves the project's end, and the end of every grant that ended with the
  project, to the new date.
- A change of members adds hub users as members and removes members (never the PI).

The request is separate from what it changes (ColdFront's rule): what was asked stays as it was
asked, whatever is decided. Each step is one transaction with its audit entry and its mail.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import date, datetime

from sqlalchemy import delete, select

from ..errors import LedgerError, check_amount
from ..models import Grant, Member, Project
from ..store import audit, find_project
from . import notify
from .core import WorkflowBase, send
from .fund import lock_scheme, reserve
from .models import Application, ChangeRequest
from .states import APPROVED, CHANGE_REQUEST, DENIED, PENDING, advance
from .validate import (
    MAX_COMMENT,
    MAX_JUSTIFICATION,
    MAX_MEMBERS,
    TeamMember,
    check_email,
    check_text,
    check_username,
    day,
)

KINDS = ("top_up", "extension", "members")


class ChangeVerbs(WorkflowBase):
    def request_change(
        self,
        actor: str,
        project: str,
        kind: str,
        justification: str,
        now: datetime,
        *,
        amount_cents: int | None = None,
        valid_until: date | datetime | None = None,
        add: Sequence[TeamMember] = (),
        remove: Sequence[str] = (),
        reviewer: str | None = None,
        known_users: Callable[[list[str]], set[str]] | None = None,
    ) -> ChangeRequest:
        """`actor`, the PI of `project`, asks for a change of `kind` (see the module)."""
        if kind not in KINDS:
            raise LedgerError(f"A change is one of {', '.join(KINDS)}; not {str(kind)[:40]!r}.")
        check_text("justification", justification, MAX_JUSTIFICATION, multiline=True)
        if not justification.strip():
            raise LedgerError("Say why the change is needed (the justification).")
        if reviewer is not None:
            check_username("reviewer", reviewer)
        until = day("new end", valid_until)
        if kind == "top_up":
            check_amount("top-up", amount_cents, positive=True)
        elif kind == "extension" and until is None:
            raise LedgerError("An extension names the new end date.")
        elif kind == "members":
            _check_member_change(actor, add, remove, known_users)
        with self.ledger.session.begin() as db:
            p = _pi_project(db, project, actor)
            if kind == "extension" and until <= p.valid_until:
                raise LedgerError(
                    f"Project {p.slug} is valid until {p.valid_until:%Y-%m-%d} already; an "
                    "extension asks for a later date."
                )
            if kind != "extension" and p.valid_until <= now:
                raise LedgerError(f"Project {p.slug} has ended; ask for an extension.", 409)
            cr = ChangeRequest(
                project_id=p.id,
                requested_by=actor,
                requested_at=now,
                kind=kind,
                amount_cents=amount_cents if kind == "top_up" else None,
                valid_until=until if kind == "extension" else None,
                members=json.dumps(
                    {
                        "add": [{"username": m.username, "email": m.email} for m in add],
                        "remove": list(remove),
                    }
                    if kind == "members"
                    else {}
                ),
                justification=justification,
                status=PENDING,
                reviewer=reviewer,
                note="",
            )
            db.add(cr)
            db.flush()
            audit(db, now, actor, "change.request", f"change:{cr.id}", project=p.slug, kind=kind)
            send(db, now, pi_email(db, p), notify.change_request(cr, p.slug), f"change:{cr.id}")
        return cr

    def decide_change(
        self, actor: str, change_id: int, approve: bool, now: datetime, note: str = ""
    ) -> ChangeRequest:
        """Approve (and apply) or deny pending change request `change_id`, with a `note`."""
        check_text("note", note, MAX_COMMENT, multiline=True)
        with self.ledger.session.begin() as db:
            q = select(ChangeRequest).where(ChangeRequest.id == change_id)
            cr = db.scalar(q if self.ledger.is_sqlite else q.with_for_update())
            if cr is None:
                raise LedgerError(f"There is no change request {change_id}.", 404)
            advance(CHANGE_REQUEST, cr, APPROVED if approve else DENIED, f"Change request {cr.id}")
            cr.decided_by, cr.decided_at, cr.note = actor, now, note
            p = db.get(Project, cr.project_id)
            if approve:
                self._apply(db, cr, p, actor, now)
            audit(
                db,
                now,
                actor,
                f"change.{'approve' if approve else 'deny'}",
                f"change:{cr.id}",
                project=p.slug,
                kind=cr.kind,
            )
            send(db, now, pi_email(db, p), notify.change_request(cr, p.slug), f"change:{cr.id}")
        return cr

    def _apply(self, db, cr: ChangeRequest, p: Project, actor: str, now: datetime) -> None:
        if cr.kind == "top_up":
            scheme = lock_scheme(db, p.scheme_id, self.ledger.is_sqlite)
            p = find_project(db, p.slug, lock=not self.ledger.is_sqlite)
            reserve(db, scheme, cr.amount_cents, f"Topping up project {p.slug}")
            start = max(now, p.valid_from)
            db.add(
                Grant(
                    project_id=p.id,
                    amount_cents=cr.amount_cents,
                    valid_from=start,
                    valid_until=p.valid_until,
                    note=f"change request {cr.id}",
                    created_at=now,
                )
            )
            audit(
                db,
                now,
                actor,
                "grant.add",
                p.slug,
                amount_cents=cr.amount_cents,
                valid_from=start,
                valid_until=p.valid_until,
                change=cr.id,
            )
        elif cr.kind == "extension":
            p = find_project(db, p.slug, lock=not self.ledger.is_sqlite)
            before = p.valid_until
            grants = db.scalars(
                select(Grant).where(Grant.project_id == p.id, Grant.valid_until == before)
            ).all()
            for g in grants:
                g.valid_until = cr.valid_until
            p.valid_until = cr.valid_until
            audit(
                db,
                now,
                actor,
                "project.extend",
                p.slug,
                valid_until_before=before,
                valid_until=cr.valid_until,
                grants=[g.id for g in grants],
                change=cr.id,
            )
        else:
            self._apply_members(db, cr, p, actor, now)

    @staticmethod
    def _apply_members(db, cr: ChangeRequest, p: Project, actor: str, now: datetime) -> None:
        asked = json.loads(cr.members)
        present = set(db.scalars(select(Member.username).where(Member.project_id == p.id)))
        for m in asked["add"]:
            if m["username"] in present:
                raise LedgerError(f"{m['username']} is already a member of {p.slug}.", 409)
            db.add(Member(project_id=p.id, username=m["username"], role="member", email=m["email"]))
            audit(db, now, actor, "member.add", f"{p.slug}/{m['username']}", change=cr.id)
        for username in asked["remove"]:
            if username not in present:
                raise LedgerError(f"{username} is not a member of {p.slug}.", 409)
            if username == p.pi:
                raise LedgerError(f"{username} is the PI of {p.slug}; the PI stays.", 409)
            db.execute(delete(Member).where(Member.project_id == p.id, Member.username == username))
            audit(db, now, actor, "member.remove", f"{p.slug}/{username}", change=cr.id)


def _check_member_change(actor, add, remove, known_users) -> None:
    if not add and not remove:
        raise LedgerError("A change of members adds or removes at least one member.")
    if len(add) + len(remove) > MAX_MEMBERS:
        raise LedgerError(f"A change of members names at most {MAX_MEMBERS} people.")
    names = [m.username for m in add] + list(remove)
    for m in add:
        check_username("new member", m.username)
        check_email(f"e-mail of {m.username}", m.email)
    for username in remove:
        check_username("member to remove", username)
    if len(set(names)) != len(names):
        raise LedgerError("Name each person once in a change of members.")
    if actor in remove:
        raise LedgerError("The PI stays a member of their project.")
    if add:
        if known_users is None:
            raise LedgerError("New members must be checked against the hub's users.")
        unknown = sorted({m.username for m in add} - set(known_users([m.username for m in add])))
        if unknown:
            raise LedgerError(f"{', '.join(unknown)}: not hub users; they must sign in once.")


def _pi_project(db, slug: str, actor: str) -> Project:
    """Project `slug` when `actor` is its PI; 404 otherwise (its existence is not revealed)."""
    p = db.scalar(select(Project).where(Project.slug == slug))
    if p is None or p.pi != actor:
        raise LedgerError(f"There is no project {slug!r} of yours.", 404)
    return p


def pi_email(db, p: Project) -> str:
    """Where a project's mail goes: its application's contact address, else its PI's member
    row's e-mail; "" when neither is known."""
    found = db.scalar(
        select(Application.email).where(Application.project_id == p.id).order_by(Application.id)
    )
    if found:
        return found
    return (
        db.scalar(select(Member.email).where(Member.project_id == p.id, Member.username == p.pi))
        or ""
    )
