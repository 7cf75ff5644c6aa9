"""Idleness in the ledger: a reading of a running server applied to its session, and parking.

`Idleness.observe` takes what the culler service read from a server (`parking.Reading`), decides
by the pure rules (`slicehub.quota.parking.decide`) under the project's policy (the site's
`[parking]`, the project's own window and lead, its exemption) and writes what the session's
row keeps of it: idle since when, and the warning that stands (when given, when it parks). A
warning is audited ("session.idle-warning"). `Idleness.park` releases a session that is still
warned, with the stop reason "parked": it is charged to that moment, and the rest of its hold
goes back to the project at once (`Metering.close_session`, which also records the idle
stretch each session was charged for at its end, parked or not).

The reading must be of the session's own server: the session's user and server name are
checked against the hub's, which the culler service sends, never against what a server says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from .errors import LedgerError
from .models import Project, Session
from .parking import KEEP, WARN, Decision, Reading, decide
from .site_parking import SiteParking


@dataclass(frozen=True)
class Observed:
    """A decision and what the culler and the pages need with it."""

    decision: Decision
    session_id: int
    project: str
    opted_out: bool  # the project is exempt: never parked, idle time still shown


class Idleness:
    """The ledger's verbs for idleness (a part of `slicehub.quota.ledger.Ledger`)."""

    def observe(
        self,
        session_id: int,
        username: str,
        server_name: str,
        reading: Reading,
        site: SiteParking,
        now: datetime,
    ) -> Observed:
        with self.session.begin() as db:
            s, p = self._running(db, session_id, username, server_name)
            policy = site.policy(p.idle_minutes, p.idle_warning_minutes, p.parking_opt_out)
            if not s.begun:  # queued in a batch system: not running, not idle
                d = Decision(KEEP, timedelta(0), None, None, False)
            else:
                d = decide(policy, reading, s.started_at, s.idle_warned_at, now)
            s.idle_since = d.idle_since
            if d.action == WARN:
                s.idle_warned_at, s.idle_park_at = now, d.park_at
                self._audit(
                    db,
                    now,
                    "culler",
                    "session.idle-warning",
                    str(s.id),
                    idle_seconds=int(d.idle.total_seconds()),
                    park_at=d.park_at,
                )
            elif d.warned:
                s.idle_park_at = d.park_at
            else:
                s.idle_warned_at = s.idle_park_at = None
            return Observed(d, s.id, p.slug, not policy.enabled)

    def park(self, session_id: int, username: str, server_name: str, now: datetime) -> Session:
        """Release `session_id` as parked, now: only while its idle warning stands (activity
        since, e.g. "Keep working", withdrew it: then a 409 and nothing changes)."""
        with self.session.begin() as db:
            s, _ = self._running(db, session_id, username, server_name)
            if s.idle_warned_at is None or s.idle_since is None:
                raise LedgerError(
                    f"Session {session_id} is not waiting to be parked: it was not warned, or "
                    "there was activity since the warning.",
                    409,
                )
        return self.close_session(session_id, now, "parked")

    def _running(self, db, session_id: int, username: str, server_name: str):
        """Active session `session_id` of `username`'s server `server_name`, locked, and its
        project; a 404 when there is none such (ended, or another server's)."""
        q = (
            select(Session, Project)
            .join(Project, Project.id == Session.project_id)
            .where(Session.id == self.resolve(db, session_id))  # claimed: the student's
        )
        if not self._is_sqlite:
            q = q.with_for_update(of=Session)
        found = db.execute(q).first()
        if found is None or (found[0].username, found[0].server_name) != (username, server_name):
            raise LedgerError(
                f"There is no active session {session_id} of {username}'s server "
                f"{server_name or '(default)'}.",
                404,
            )
        s, p = found
        if s.status != "active":
            raise LedgerError(f"Session {session_id} has already ended.", 404)
        return s, p
