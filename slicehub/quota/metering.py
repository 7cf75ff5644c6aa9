"""Metering and release: held time becomes charges, a stop frees what was not used.

- *Metering* (`meter`) turns held time into charges up to min(now, end): each charge is the
  difference of the session's running totals (see `slicehub.quota.pricing` for the rounding rule),
  written with a conditional update of the session's `metered_until`, so a tick applied twice, or by
  two processes, charges once, and a tick after a crash charges exactly the time that passed. A
  tick also records the warnings that are due (80%, 95% of the held budget, 10 minutes before
  the end) and lists the sessions whose end has come.
- *Release* (`close_session`) meters to the stop (or gives back time charged past it) and frees
  what was held and not used, adding the session's totals to its project's closed totals.
- *Begin* starts the clock of a deferred hold (a batch job that left the queue); *extend* holds
  more time for a running session, under its project's lock, by the hold rules
  (`slicehub.quota.hold.extend`).

Decides how each of these moves a session's row, in one transaction each; the hold rules and
the arithmetic are `slicehub.quota.hold` and `slicehub.quota.pricing`, the bulk writes
`slicehub.quota.store`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from slicehub.common.money import subsidy_of

from . import hold
from .errors import LedgerError
from .models import Charge, Project, Session, SessionWarning
from .pricing import PriceSchedule, split_increment
from .states import load_states
from .store import apply_charges

WARN_LEVELS = ((0.80, "budget-80"), (0.95, "budget-95"))
END_WARNING = timedelta(minutes=10)


@dataclass(frozen=True)
class MeterResult:
    charges: int
    warnings: list[tuple[int, str, str]]  # (session id, level, message)
    due: list[int]  # sessions whose end has come: the hub must stop their servers


class Metering:
    """Metering, release, begin and extend of `slicehub.quota.ledger.Ledger` (its `Store`
    provides the session factory, the price cache, `_schedule` and `_audit`)."""

    def meter(self, now: datetime, session_ids: list[int] | None = None) -> MeterResult:
        """Charge every active session up to min(now, its end). Safe to repeat and to race.

        One transaction for the whole tick, written in bulk: the sessions it charges are locked
        first (SQLite: the tick holds the write lock from its first read; PostgreSQL: `FOR
        UPDATE SKIP LOCKED`, so a second metering process skips them instead of waiting), and
        each session's update is still conditional on the `metered_until` it read.
        """
        with self.session.begin() as db:
            t = Session.__table__
            q = select(*(t.c[name] for name in _Metered.__slots__)).where(
                t.c.status == "active", t.c.begun, t.c.metered_until < now
            )
            if session_ids is not None:
                q = q.where(t.c.id.in_(session_ids))
            if not self._is_sqlite:
                q = q.with_for_update(skip_locked=True)
            # plain rows, not ORM objects: a tick writes in bulk, never through the ORM's flush
            sessions = [_Metered(*row) for row in db.execute(q).all()]
            prices = self._prices.book(db)
            updates, charges = [], []
            for s in sessions:
                row = self._next_charge(s, prices.schedule(s.slice_type, s.prices_known), now)
                if row is not None:
                    updates.append(row[0])
                    charges.append(row[1])
            apply_charges(db, updates, charges)
            warnings = self._warn_all(db, sessions, now)
            due = db.scalars(
                select(Session.id).where(Session.status == "active", Session.end_at <= now)
            ).all()
        return MeterResult(len(charges), warnings, sorted(due))

    def _next_charge(self, s: Session, schedule: PriceSchedule, now: datetime):
        """The update and the charge row that bring `s` up to min(now, its end), or None.
        Updates `s` in memory too, for the warnings that follow."""
        until = min(now, s.end_at)
        if until <= s.metered_until:
            return None
        new_list = min(schedule.cost(s.started_at, until), s.hold_list_cents)
        part = split_increment(
            s.charged_list_cents,
            new_list,
            s.rate_bp,
            s.hold_subsidy_cents - s.charged_subsidy_cents,
        )
        update_row = {
            "b_id": s.id,
            "b_old": s.metered_until,
            "b_new": until,
            "b_list": part.list_cents,
            "b_subsidy": part.subsidy_cents,
        }
        charge_row = {
            "session_id": s.id,
            "project_id": s.project_id,
            "period_start": s.metered_until,
            "period_end": until,
            "list_cents": part.list_cents,
            "subsidy_cents": part.subsidy_cents,
            "copay_cents": part.copay_cents,
            "kind": "charge",
        }
        s.metered_until = until
        s.charged_list_cents += part.list_cents
        s.charged_subsidy_cents += part.subsidy_cents
        return update_row, charge_row

    def _warn_all(self, db, sessions, now: datetime) -> list[tuple[int, str, str]]:
        """Record the warnings that are due and not yet given (80%, 95%, 10 minutes left)."""
        due: list[tuple[Session, str]] = []
        for s in sessions:
            used = s.charged_list_cents / s.hold_list_cents if s.hold_list_cents else 1.0
            due.extend((s, level) for share, level in WARN_LEVELS if used >= share)
            if s.end_at - now <= END_WARNING:
                due.append((s, "end-10min"))
        if not due:
            return []
        ids = {s.id for s, _ in due}
        w = SessionWarning.__table__.c
        have = set(
            db.execute(select(w.session_id, w.level, w.round).where(w.session_id.in_(ids))).all()
        )
        out = []
        for s, level in due:
            if (s.id, level, s.extended) in have:  # given in this round (since the last extension)
                continue
            message = _warning_text(level, s, now)
            db.add(
                SessionWarning(
                    session_id=s.id, level=level, round=s.extended, created_at=now, message=message
                )
            )
            out.append((s.id, level, message))
        return out

    def _charge(self, db, s: Session, schedule: PriceSchedule, until: datetime) -> bool:
        row = self._next_charge(s, schedule, until)
        if row is None:
            return False
        apply_charges(db, [row[0]], [row[1]])
        return True

    def _reverse(self, db, s: Session, schedule: PriceSchedule, stop: datetime) -> None:
        """The server stopped before time already charged (found dead after a tick): append a
        reversal of [stop, metered_until) so the session pays to the second it stopped."""
        new_list = schedule.cost(s.started_at, stop)
        new_subsidy = min(subsidy_of(new_list, s.rate_bp), s.charged_subsidy_cents)
        back_list = new_list - s.charged_list_cents
        back_subsidy = new_subsidy - s.charged_subsidy_cents
        db.add(
            Charge(
                session_id=s.id,
                project_id=s.project_id,
                period_start=stop,
                period_end=s.metered_until,
                list_cents=back_list,
                subsidy_cents=back_subsidy,
                copay_cents=back_list - back_subsidy,
                kind="reversal",
            )
        )
        s.metered_until = stop
        s.charged_list_cents = new_list
        s.charged_subsidy_cents = new_subsidy

    def close_session(self, session_id: int, at: datetime, reason: str = "stopped") -> Session:
        """Meter up to the stop (never past the hold's end) and release what is left. A
        pre-warmed session its student claimed stands for the student's session it was handed
        to (the server's spawner knows the first one only): that one is released."""
        with self.session.begin() as db:
            s = self.current_session(db, session_id)
            if s.status == "active":
                self.close_locked(db, s, at, reason)
        return s

    def current_session(self, db, session_id: int) -> Session:
        """Session `session_id`, or the one it was handed to when its student claimed it
        (`slicehub.quota.prewarm`), locked for the transaction after its project (the order
        in which holds and claims lock them), or a 404 refusal."""
        found = db.execute(
            select(Session.id, Session.project_id).where(Session.id == self.resolve(db, session_id))
        ).first()
        if found is None:
            raise LedgerError(f"There is no session {session_id}.", 404)
        if not self._is_sqlite:
            db.execute(select(Project.id).where(Project.id == found.project_id).with_for_update())
        return db.get(Session, found.id, with_for_update=not self._is_sqlite)

    def close_locked(self, db, s: Session, at: datetime, reason: str) -> None:
        """`close_session` of the active session `s`, locked, inside the caller's transaction."""
        schedule = self._schedule(db, s.slice_type, s.prices_known)
        # a session that never began (its job left the queue without starting) pays nothing
        stop = max(min(at, s.end_at), s.started_at) if s.begun else s.started_at
        if stop < s.metered_until:
            self._reverse(db, s, schedule, stop)
        else:
            self._charge(db, s, schedule, stop)
        s.status = "stopped"
        s.stopped_at = stop
        s.stop_reason = reason
        _record_idle_end(s, schedule, stop)
        pt = Project.__table__.c  # added in SQL: two releases in one project both count
        db.execute(
            update(Project)
            .where(pt.id == s.project_id)
            .values(
                closed_subsidy_cents=pt.closed_subsidy_cents + s.charged_subsidy_cents,
                closed_copay_cents=pt.closed_copay_cents
                + (s.charged_list_cents - s.charged_subsidy_cents),
                closed_credit_cents=pt.closed_credit_cents + hold.credit_taken(s),
            )
        )
        self._audit(
            db,
            at,
            s.username,
            "session.release",
            str(s.id),
            reason=reason,
            charged_list_cents=s.charged_list_cents,
            charged_subsidy_cents=s.charged_subsidy_cents,
        )

    def begin(self, session_id: int, at: datetime) -> Session:
        """The server of a deferred hold has started (its batch job left the queue): metering
        starts now, and the session keeps the length that was held. Its window moves to
        [at, at + length); if prices changed in between, the end comes earlier so that the
        session never costs more than its hold. Repeating it changes nothing."""
        with self.session.begin() as db:
            s = self.current_session(db, session_id)
            if s.begun or s.status != "active":
                return s
            start = max(at, s.started_at)
            end = start + (s.end_at - s.started_at)
            schedule = self._schedule(db, s.slice_type, s.prices_known)
            if schedule.cost(start, end) > s.hold_list_cents:  # priced from its hold on
                end = schedule.end_for_budget(start, s.hold_list_cents, end)
            queued = start - s.started_at
            s.started_at = s.metered_until = start
            s.end_at = end
            s.begun = True
            self._audit(db, at, s.username, "session.begin", str(s.id), queued=queued, end_at=end)
        return s

    def extend(
        self,
        session_id: int,
        username: str | None,
        extra: timedelta,
        now: datetime,
        groups: Collection[str] = (),
    ) -> tuple[Session, str]:
        """Hold `extra` more time for `username`'s active session `session_id` (None: anyone's,
        for staff), or refuse (`LedgerError`, nothing written); the session and its project.
        `groups`: the session's user's hub groups now (their membership may come from the
        project's member group). The project is locked first, as a hold locks it, so
        extensions and holds of one project are decided one after the other. See
        `slicehub.quota.hold.extend` for the rules."""
        with self.session.begin() as db:
            session_id = self.resolve(db, session_id)  # a claimed pre-warmed one: the student's
            found = db.execute(
                select(Session.username, Project.slug)
                .join(Project, Project.id == Session.project_id)
                .where(Session.id == session_id)
            ).first()
            if found is None or (username is not None and found.username != username):
                raise LedgerError(f"There is no session {session_id} of yours.", 404)
            states = load_states(
                db,
                {found.slug},
                now,
                True,
                self._is_sqlite,
                {(found.slug, found.username)},
                {found.username: groups},
            )
            s = db.get(Session, session_id, with_for_update=not self._is_sqlite)
            before = s.end_at
            schedule = self._schedule(db, s.slice_type, s.prices_known)
            member = hold.extend(s, states[found.slug], extra, now, schedule, groups)
            via = {} if member.via == hold.ROW else {"via": member.via}
            self._audit(
                db,
                now,
                username or "staff",
                "session.extend",
                str(s.id),
                extra=extra,
                end_at_before=before,
                end_at=s.end_at,
                hold_list_cents=s.hold_list_cents,
                **via,
            )
        return s, found.slug


class _Metered:
    """The columns of an active session a metering tick reads (and moves, in memory)."""

    __slots__ = (
        "charged_list_cents",
        "charged_subsidy_cents",
        "end_at",
        "extended",
        "hold_list_cents",
        "hold_subsidy_cents",
        "id",
        "metered_until",
        "prices_known",
        "project_id",
        "rate_bp",
        "slice_type",
        "started_at",
    )

    def __init__(self, *values):
        for name, value in zip(self.__slots__, values, strict=True):
            setattr(self, name, value)


def _warning_text(level: str, s: Session, now: datetime) -> str:
    left = s.end_at - now
    if level == "end-10min":
        return (
            f"Your {s.slice_type} session ends at {s.end_at:%H:%M} UTC "
            f"({max(0, round(left.total_seconds() / 60))} min); save your work."
        )
    share = level.split("-")[1]
    return (
        f"{share}% of this session's budget is used; the server stops at "
        f"{s.end_at:%H:%M} UTC unless you extend it."
    )


def _record_idle_end(s: Session, schedule: PriceSchedule, stop: datetime) -> None:
    """The idle stretch a session was charged for at its end (parked, or stopped while the
    culler's last reading found it idle), and its list cost and subsidy, the same running-total
    arithmetic as its charges: what statements report as charged while idle."""
    s.idle_warned_at = s.idle_park_at = None
    if s.idle_since is None or not s.begun or s.idle_since >= stop:
        return
    since = max(s.idle_since, s.started_at)
    s.idle_seconds = int((stop - since).total_seconds())
    before = schedule.cost(s.started_at, since)
    s.idle_list_cents = s.charged_list_cents - before
    # the subsidy runs out at the hold's subsidy: what the idle part got is what was left of it
    s.idle_subsidy_cents = s.charged_subsidy_cents - min(
        subsidy_of(before, s.rate_bp), s.charged_subsidy_cents
    )
