"""The subsidy ledger: holds before a start, metering into charges, release at stop.

`Ledger` is the one object callers use (the quota service, the `slicehub admin` verbs, the
statements, the tests). It is put together from the ledger's parts, one job each:

- `slicehub.quota.store.Store`: the database, transactions, the audit entry;
- `slicehub.quota.admin.AdminVerbs`: staff changes, each audited in its own transaction;
- holds and balances (here): a batch of hold requests decided in one transaction by the pure
  rules of `slicehub.quota.hold`, over the projects' states read set-wise
  (`slicehub.quota.states`); a hold through a project's member group is audited with how
  (`via`, e.g. "group:proj-vision");
- `slicehub.quota.metering.Metering`: metering, release, begin and extend;
- `slicehub.quota.idle.Idleness`: a culler's reading of a server applied to its session, and
  parking (a release with the reason "parked");
- `slicehub.quota.prewarm_ledger.Prewarming`: a course's pre-warming, a student's claim of
  their pre-warmed server, and the plan the classroom service follows.

Read-only queries are `slicehub.quota.reader.LedgerReader`; refusals are
`slicehub.quota.errors.LedgerError`, with a sentence in HK$.

Invariants the property tests check: subsidy charged never exceeds the grants, credit used never
exceeds the credit limit, every charge's subsidy + co-pay equals its list cost, and every second
of every session is charged exactly once.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session as DBSession

from . import hold
from .admin import AdminVerbs
from .errors import LedgerError
from .hold import ROW, HeldSession, HoldRequest, ProjectState
from .idle import Idleness
from .metering import Metering
from .models import Project, Session
from .prewarm_ledger import Prewarming
from .states import busy_servers, load_states, newest_price, prewarm_payers
from .store import Store, write_group_holds, write_sessions


@dataclass(frozen=True)
class Balance:
    project: str
    grants_cents: int
    subsidy_charged_cents: int
    subsidy_held_cents: int
    copay_charged_cents: int
    credit_limit_cents: int
    credit_used_cents: int

    @property
    def subsidy_left_cents(self) -> int:
        return self.grants_cents - self.subsidy_charged_cents - self.subsidy_held_cents

    @property
    def credit_left_cents(self) -> int:
        return self.credit_limit_cents - self.credit_used_cents


class Ledger(AdminVerbs, Metering, Idleness, Prewarming, Store):
    """The ledger at database `url` (SQLAlchemy URL; `engine_kwargs` go to the engine)."""

    # -- balances --------------------------------------------------------------------------

    def balance(self, project: str, now: datetime) -> Balance:
        with self.session() as db:
            return self.balances(db, [project], now)[project]

    def balances(self, db: DBSession, slugs, now: datetime) -> dict[str, Balance]:
        """Balances of projects `slugs` (those that exist), from each project's closed totals
        and its active sessions: a few statements, however long the projects' history."""
        states = load_states(db, slugs, now, False, self._is_sqlite)
        if len(states) < len(set(slugs)):
            missing = sorted(set(slugs) - set(states))[0]
            raise LedgerError(f"There is no project {missing!r}.", 404)
        return {slug: _balance_of(st, now) for slug, st in states.items()}

    @staticmethod
    def member_draw(db, p: Project, username: str) -> tuple[int, int]:
        """Subsidy `username` has drawn from `p`: (charged, still held by active sessions)."""
        charged, held = db.execute(
            select(
                func.coalesce(func.sum(Session.charged_subsidy_cents), 0),
                func.coalesce(
                    func.sum(
                        case(
                            (
                                Session.status == "active",
                                Session.hold_subsidy_cents - Session.charged_subsidy_cents,
                            ),
                            else_=0,
                        )
                    ),
                    0,
                ),
            ).where(
                Session.project_id == p.id,
                Session.username == username,
                Session.prewarm_window_id.is_(None),
            )
        ).one()
        return int(charged), int(held)

    # -- holds -----------------------------------------------------------------------------

    def open_session(
        self,
        project: str,
        username: str,
        server_name: str,
        slice_type: str,
        duration: timedelta,
        now: datetime,
        groups: Collection[str] = (),
    ) -> HeldSession:
        """Hold the cost of `duration` on `slice_type` for `username` (in hub `groups`) in
        `project`, or refuse (`LedgerError`). A batch of one; see `open_sessions`."""
        request = HoldRequest(
            project, username, server_name, slice_type, duration, now, groups=frozenset(groups)
        )
        (outcome,) = self.open_sessions([request])
        if isinstance(outcome, LedgerError):
            raise outcome
        return outcome

    def open_sessions(self, requests: list[HoldRequest]) -> list[HeldSession | LedgerError]:
        """Decide `requests` in order, in one transaction: for each, the held session (with its
        id) or the `LedgerError` that refused it; nothing is written for a refused request.

        A fixed number of statements, however many requests: the projects involved are locked
        (in id order, so two batches never deadlock) and read set-wise, every request is
        decided in memory in the order it arrived (each decision sees the ones before it), and
        the accepted sessions are written at once. This is what lets the quota service answer
        200 simultaneous starts in a few milliseconds each (`slicehub.quota.hold_queue`)."""
        if not requests:
            return []
        groups: dict[str, set[str]] = {}  # a user's groups, as any of their requests gave them
        for r in requests:
            if r.groups:
                groups.setdefault(r.username, set()).update(r.groups)
        with self.session.begin() as db:
            slugs = {r.project for r in requests}
            warming = {r.project for r in requests if r.prewarm_window is not None}
            payers = prewarm_payers(db, warming) if warming else {}
            now = min(r.now for r in requests)  # grants still valid then are read; each
            states = load_states(  # request then counts those valid at its own moment
                db,
                slugs | set(payers.values()),
                now,
                True,
                self._is_sqlite,
                {(r.project, r.username) for r in requests},
                groups,
            )
            known = next(iter(states.values())).known if states else newest_price(db)
            book = self._prices.book(db, known)
            busy = busy_servers(db, sorted({r.username for r in requests}))
            outcomes: list[HeldSession | LedgerError] = []
            for r in requests:
                p = states.get(r.project)
                if r.prewarm_window is not None:  # held on the course's pre-warm payer
                    p, course = states.get(payers.get(r.project, "")), p
                else:
                    course = None
                try:
                    outcomes.append(hold.decide(r, p, book, known, busy, course))
                except LedgerError as e:
                    outcomes.append(e)
            accepted = [s for s in outcomes if isinstance(s, HeldSession)]
            if accepted:
                write_sessions(db, accepted, self._is_sqlite)
            by_group = [s for s in accepted if s.via != ROW]
            if by_group:
                slugs = {st.row.id: slug for slug, st in states.items()}
                write_group_holds(db, by_group, slugs)
        return outcomes

    # -- active sessions -------------------------------------------------------------------

    def active_sessions(self) -> list[Session]:
        with self.session() as db:
            return list(db.scalars(select(Session).where(Session.status == "active")))

    def active_session(self, username: str, server_name: str) -> Session | None:
        with self.session() as db:
            return db.scalar(
                select(Session).where(
                    Session.username == username,
                    Session.server_name == server_name,
                    Session.status == "active",
                )
            )


def _balance_of(st: ProjectState, now: datetime) -> Balance:
    return Balance(
        st.row.slug,
        st.grants_at(now),
        st.subsidy_charged,
        st.subsidy_held,
        st.copay_charged,
        st.row.credit_limit_cents,
        st.credit_used,
    )
