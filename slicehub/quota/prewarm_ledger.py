"""Pre-warming in the ledger: a course's setting, the claim, and what the classroom service
is told to do. The rules are `slicehub.quota.prewarm`; this module writes them.

- `set_prewarm` / `clear_prewarm`: staff turn a course's pre-warming on (lead, claim time,
  seats, slice type, who pays) or off; audited.
- `claim`: the student reached their pre-warmed server inside the window. In one transaction
  the pre-warmed session is released at this second ("claimed", charged to its payer) and the
  student's own session opens from this second by the ordinary hold rules (the course, their
  cap, the window's end), linked from the first (`Session.handed_to`), so the server's spawner,
  kernels and culler, who know the first id only, reach the student's. A claim the rules refuse
  (the student's cap is spent, say) releases the pre-warmed session as "claim-refused": the
  course does not pay for a server the student works on; the caller stops the server.
- `class_plan`: for the classroom service (`slicehub.classroom`), every window of a pre-warming
  course from `lead` before it to its end: its phase, the roster (the students to pre-warm, in
  roster order, as many as the seats), and each student's pre-warmed session (held, claimed or
  stopped), so the service starts what is missing and stops what nobody claimed.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from . import hold
from .admin import change
from .errors import LedgerError
from .hold import HeldSession, HoldRequest
from .models import ClassPrewarm, ClassWindow, Member, Project, Session
from .prewarm import (
    CLAIMED,
    CLOSING,
    UNCLAIMED,
    check_claim,
    check_policy,
    course_slice_type,
)
from .states import busy_servers, load_states, prewarm_policies
from .store import write_sessions

CLAIM_REFUSED = "claim-refused"
MIN_CLAIM_MINUTES = 5  # a claim the student can pay for less than this long is refused
PLAN_HORIZON = timedelta(days=7)  # windows this far ahead are planned (Slurm reservations)


class Prewarming:
    """Pre-warming verbs of `slicehub.quota.ledger.Ledger` (its `Store`, `AdminVerbs` and
    `Metering` provide the rest)."""

    def set_prewarm(
        self,
        actor: str,
        course: str,
        now: datetime,
        lead_minutes: int,
        claim_minutes: int,
        seats: int | None = None,
        slice_type: str | None = None,
        paid_by: str | None = None,
    ) -> ClassPrewarm:
        """Pre-warm `course`'s servers `lead_minutes` before each class window, for `seats`
        students (None: the roster), on `slice_type` (None: the course's only one); stop those
        not claimed `claim_minutes` into the window; `paid_by` (None: the course) pays."""

        def write(db) -> ClassPrewarm:
            p = self._project(db, course)
            if not p.is_course:
                raise LedgerError(f"{course} is not a course; only courses pre-warm.")
            allowed = _allowed(p)
            kind = slice_type if slice_type is not None else course_slice_type(allowed, course)
            check_policy(lead_minutes, claim_minutes, seats, kind, allowed, course)
            payer = p if paid_by in (None, course) else self._project(db, paid_by)
            if payer.is_course and payer.id != p.id:
                raise LedgerError(
                    f"{paid_by} is another course; pre-warming is paid by the course itself or "
                    "by a project of the centre's."
                )
            row = db.get(ClassPrewarm, p.id) or ClassPrewarm(project_id=p.id)
            row.lead_minutes, row.claim_minutes, row.seats = lead_minutes, claim_minutes, seats
            row.slice_type, row.paid_by_id = kind, payer.id
            db.add(row)
            return row

        audit = change(
            "course.prewarm",
            course,
            lead_minutes=lead_minutes,
            claim_minutes=claim_minutes,
            seats=seats,
            slice_type=slice_type,
            paid_by=paid_by or course,
        )
        return self._audited(actor, now, write, audit)

    def clear_prewarm(self, actor: str, course: str, now: datetime) -> None:
        """Stop pre-warming `course` (servers already pre-warmed run on until claimed or
        stopped)."""

        def write(db) -> None:
            p = self._project(db, course)
            db.execute(delete(ClassPrewarm).where(ClassPrewarm.project_id == p.id))

        self._audited(actor, now, write, change("course.prewarm-off", course))

    def claim(
        self, session_id: int, username: str, now: datetime, groups: Collection[str] = ()
    ) -> HeldSession:
        """`username` claims their pre-warmed session `session_id`: the student's own session,
        or the refusal (see the module docstring)."""
        try:
            with self.session.begin() as db:
                return self._claim(db, session_id, username, now, groups)
        except LedgerError as e:
            if e.status in (402, 403):  # the student may not have it: the course stops paying
                self.refuse_claim(session_id, username, now)
            raise

    def _claim(self, db, session_id, username, now, groups) -> HeldSession:
        # Locks in the order every writer takes them: the projects (the payer's and the
        # course's, in id order, as a batch of holds locks them), then the session. Locking
        # the session first deadlocked forty simultaneous claims on PostgreSQL.
        s = db.get(Session, session_id)
        if s is None or s.username != username or s.prewarm_window_id is None:
            raise LedgerError(f"There is no pre-warmed session {session_id} of yours.", 404)
        window = db.get(ClassWindow, s.prewarm_window_id)
        course = db.get(Project, window.project_id) if window is not None else None
        if course is None:
            raise LedgerError("This server's class window is gone.", 409)
        payer = db.get(Project, s.project_id)
        load_states(db, {course.slug, payer.slug}, now, True, self._is_sqlite)
        s = db.get(Session, session_id, with_for_update=not self._is_sqlite, populate_existing=True)
        policy = prewarm_policies(db.connection(), [course.id]).get(course.id)
        check_claim((window.starts_at, window.ends_at), policy, s.status, s.handed_to, now)
        self.close_locked(db, s, now, CLAIMED)
        db.flush()
        states = load_states(  # again, as the release left the course (its locks are held)
            db,
            {course.slug},
            now,
            True,
            self._is_sqlite,
            {(course.slug, username)},
            {username: groups},
        )
        state = states[course.slug]
        groups = frozenset(groups)
        book = self._prices.book(db, state.known)
        busy = busy_servers(db, [username])

        def hold_for(minutes: int) -> HeldSession:
            """The hold for `minutes`, decided on a copy of the course's state (an accepted
            hold moves the state it is given)."""
            length = min(timedelta(minutes=minutes), window.ends_at - now)
            request = HoldRequest(
                course.slug, username, s.server_name, s.slice_type, length, now, groups=groups
            )
            trial = replace(state, member_used=dict(state.member_used))
            return hold.decide(request, trial, book, state.known, set(busy))

        mine = affordable(hold_for, _minutes_between(now, window.ends_at))
        write_sessions(db, [mine], self._is_sqlite)
        s.handed_to = mine.id
        self._audit(db, now, username, "session.claim", str(s.id), handed_to=mine.id)
        return mine

    def refuse_claim(self, session_id: int, username: str, now: datetime) -> None:
        """Release `username`'s pre-warmed session `session_id` as claim-refused (no-op when it
        is no longer active)."""
        with self.session.begin() as db:
            s = db.get(Session, session_id, with_for_update=not self._is_sqlite)
            if s is not None and s.username == username and s.status == "active":
                if s.prewarm_window_id is not None and s.handed_to is None:
                    self.close_locked(db, s, now, CLAIM_REFUSED)

    def class_plan(self, now: datetime, horizon: timedelta = PLAN_HORIZON) -> list[dict]:
        """Every class window of a pre-warming course that starts within `horizon` from `now`
        and has not ended, for the classroom service (it reserves Slurm nodes ahead, and
        pre-warms from each window's lead); see the module docstring. In order of start."""
        with self.session() as db:
            courses = db.execute(
                select(Project).join(ClassPrewarm, ClassPrewarm.project_id == Project.id)
            ).scalars()
            by_id = {p.id: p for p in courses}
            if not by_id:
                return []
            policies = prewarm_policies(db.connection(), list(by_id))
            windows = db.scalars(
                select(ClassWindow)
                .where(
                    ClassWindow.project_id.in_(list(by_id)),
                    ClassWindow.ends_at > now,
                    ClassWindow.starts_at <= now + horizon,
                )
                .order_by(ClassWindow.starts_at, ClassWindow.id)
            ).all()
            if not windows:
                return []
            students: dict[int, list[str]] = {}
            for pid, username in db.execute(
                select(Member.project_id, Member.username)
                .where(Member.project_id.in_(list(by_id)), Member.role == "student")
                .order_by(Member.id)
            ):
                students.setdefault(pid, []).append(username)
            warm: dict[int, list[Session]] = {}
            for s in db.scalars(
                select(Session)
                .where(Session.prewarm_window_id.in_([w.id for w in windows]))
                .order_by(Session.id)
            ):
                warm.setdefault(s.prewarm_window_id, []).append(s)
            return [
                _window_plan(w, by_id[w.project_id], policies[w.project_id], students, warm, now)
                for w in windows
            ]

    def stop_unclaimed(self, session_id: int, now: datetime) -> Session:
        """Release a pre-warmed session nobody claimed as "unclaimed" (the classroom service
        then stops its server; the spawner's own release after that changes nothing)."""
        with self.session.begin() as db:
            s = db.get(Session, session_id, with_for_update=not self._is_sqlite)
            if s is None or s.prewarm_window_id is None:
                raise LedgerError(f"There is no pre-warmed session {session_id}.", 404)
            if s.status == "active" and s.handed_to is None:
                self.close_locked(db, s, now, UNCLAIMED)
            return s


def affordable(hold_for, minutes: int) -> HeldSession:
    """`hold_for(minutes)` for the whole class, or, when the student cannot pay for all of it
    (402: their cap, or the course's subsidy), for the most whole minutes they can, at least
    `MIN_CLAIM_MINUTES` (the rest of the class is theirs to extend, or to start again, as any
    session). A refusal for anything else, or for even that much, is the refusal. `hold_for`
    changes nothing when it refuses (the hold rules check before they move a state)."""
    try:
        return hold_for(minutes)
    except LedgerError as refused:
        if refused.status != 402 or minutes <= MIN_CLAIM_MINUTES:
            raise
        low, high, best = MIN_CLAIM_MINUTES, minutes - 1, None
        while low <= high:  # the largest length that is accepted; each try is pure
            mid = (low + high) // 2
            try:
                hold_for(mid)
            except LedgerError as e:
                if e.status != 402:
                    raise
                high = mid - 1
            else:
                best, low = mid, mid + 1
        if best is None:
            raise refused from None
        return hold_for(best)


def _minutes_between(a: datetime, b: datetime) -> int:
    return max(1, -(-int((b - a).total_seconds()) // 60))  # rounded up: the whole class


def _allowed(p: Project) -> list[str]:
    return json.loads(p.allowed_slice_types)


def _window_plan(w, course, policy, students, warm, now) -> dict:
    phase = policy.phase(w.starts_at, w.ends_at, now)
    roster = students.get(course.id, [])
    seats = roster if policy.seats is None else roster[: policy.seats]
    sessions = warm.get(w.id, [])
    latest: dict[str, Session] = {}
    for s in sessions:  # the newest per student: a server may have been pre-warmed twice
        latest[s.username] = s
    return {
        "course": course.slug,
        "window": w.id,
        "starts_at": w.starts_at.isoformat(),
        "ends_at": w.ends_at.isoformat(),
        "prewarm_from": (w.starts_at - policy.lead).isoformat(),
        "claim_until": min(w.starts_at + policy.claim, w.ends_at).isoformat(),
        "phase": phase,
        "slice_type": policy.slice_type,
        "paid_by": policy.paid_by,
        "students": seats,
        "servers": [
            {
                "user": s.username,
                "server_name": s.server_name,
                "session": s.id,
                "state": _server_state(s),
                "stop_reason": s.stop_reason,
            }
            for s in latest.values()
        ],
        "stop_unclaimed": phase == CLOSING,
    }


def _server_state(s: Session) -> str:
    if s.handed_to is not None:
        return "claimed"
    return "pre-warmed" if s.status == "active" else "stopped"
