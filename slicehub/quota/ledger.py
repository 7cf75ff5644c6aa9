"""The subsidy ledger: holds before a start, metering into charges, release at stop.

Decisions (who may start what, what it costs, how a charge splits) are made here, in one
transaction each, against the database; the pure arithmetic lives in `slicehub.quota.pricing`.

- A *hold* (`open_session`) prices the requested duration at list price, piecewise over price
  changes, and reserves the subsidy part of it. It is refused, with a sentence in HK$, when the
  project cannot pay: outside its validity window, a slice type it may not use, too many
  sessions, a member over their cap, a course student outside a class window, or not enough
  subsidy (policy `stop`) / subsidy plus credit (policy `full_price`). The session's end is
  fixed by the hold.
- *Metering* (`meter`) turns held time into charges up to min(now, end): each charge is the
  difference of the session's running totals (see `slicehub.quota.pricing` for the rounding rule),
  written with a conditional update of the session's `metered_until`, so a tick applied twice, or by
  two processes, charges once, and a tick after a crash charges exactly the time that passed.
- *Release* (`close_session`) meters to the stop and frees what was held and not used.

Invariants the property tests check: subsidy charged never exceeds the grants, credit used never
exceeds the credit limit, every charge's subsidy + co-pay equals its list cost, and every second
of every session is charged exactly once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, case, func, insert, select, update
from sqlalchemy.orm import Session as DBSession
from sqlalchemy.orm import sessionmaker

from . import hold, ledger_db
from .hold import HeldSession, HoldRequest, LedgerError, money
from .models import (
    AuditEntry,
    Charge,
    ClassWindow,
    Grant,
    Member,
    Price,
    Project,
    Scheme,
    Session,
    SessionWarning,
    UTCDateTime,
)
from .pricing import (
    BASIS_POINTS,
    PricePoint,
    PriceSchedule,
    split_increment,
    subsidy_of,
)
from .roster import EMAIL

POLICIES = ("stop", "full_price")
ROLES = ("member", "pi", "instructor", "student")
WARN_LEVELS = ((0.80, "budget-80"), (0.95, "budget-95"))
END_WARNING = timedelta(minutes=10)
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_USERNAME = re.compile(r"^[A-Za-z0-9._@-]{1,100}$")


@dataclass(frozen=True)
class NewMember:
    username: str
    role: str = "member"
    cap_cents: int | None = None
    name: str = ""
    email: str = ""


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


@dataclass(frozen=True)
class MeterResult:
    charges: int
    warnings: list[tuple[int, str, str]]  # (session id, level, message)
    due: list[int]  # sessions whose end has come: the hub must stop their servers


class Ledger:
    def __init__(self, url: str, **engine_kwargs):
        self.url = url
        self.engine = ledger_db.make_engine(url, **engine_kwargs)
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        self._is_sqlite = url.startswith("sqlite")
        self._prices = hold.PriceCache()

    def upgrade(self) -> None:
        ledger_db.upgrade(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run several Ledger calls as one transaction: all of them are written, or none
        (a course and its roster, say). Each call's own transaction becomes a SAVEPOINT inside
        one outer transaction on one connection. For one thread at a time (the CLI)."""
        with self.engine.connect() as conn:
            outer = conn.begin()
            original = self.session
            self.session = sessionmaker(
                bind=conn, expire_on_commit=False, join_transaction_mode="create_savepoint"
            )
            try:
                yield
            except BaseException:
                outer.rollback()
                raise
            else:
                outer.commit()
            finally:
                self.session = original

    # -- lookups ---------------------------------------------------------------------------

    def _project(self, db: DBSession, slug: str, lock: bool = False) -> Project:
        q = select(Project).where(Project.slug == slug)
        if lock and not self._is_sqlite:
            q = q.with_for_update()
        project = db.scalar(q)
        if project is None:
            raise LedgerError(f"There is no project {slug!r}.", 404)
        return project

    def _schedule(self, db: DBSession, slice_type: str, known: int) -> PriceSchedule:
        """The price list of `slice_type` as it was known when price row `known` was newest.

        A session is charged at the prices known when it was held (including changes already
        scheduled then, piecewise); a price set later applies to later sessions only, so a
        hold always covers exactly what the session will be charged.
        """
        rows = db.scalars(
            select(Price).where(Price.slice_type == slice_type, Price.id <= known)
        ).all()
        return PriceSchedule(PricePoint(r.effective_from, r.cents_per_hour) for r in rows)

    def _audit(self, db: DBSession, at, actor: str, action: str, subject: str, **detail) -> None:
        db.add(
            AuditEntry(
                at=at,
                actor=actor,
                action=action,
                subject=subject,
                detail=json.dumps(detail, sort_keys=True, default=str),
            )
        )

    # -- administration (every change audited in the same transaction) -----------------------

    def add_scheme(self, actor, name, rate_bp, fund_cents, now) -> Scheme:
        _check_rate(rate_bp)
        _check_amount("fund", fund_cents)
        with self.session.begin() as db:
            if db.scalar(select(Scheme).where(Scheme.name == name)):
                raise LedgerError(f"A scheme named {name!r} exists already.", 409)
            scheme = Scheme(
                name=name, subsidy_rate_bp=rate_bp, fund_cents=fund_cents, created_at=now
            )
            db.add(scheme)
            self._audit(db, now, actor, "scheme.add", name, rate_bp=rate_bp, fund_cents=fund_cents)
        return scheme

    def add_project(
        self,
        actor,
        slug,
        *,
        scheme,
        name,
        organisation,
        pi,
        valid_from,
        valid_until,
        allowed_slice_types,
        max_concurrent_sessions,
        policy="stop",
        credit_limit_cents=0,
        member_cap_cents=None,
        is_course=False,
        now,
    ) -> Project:
        if not isinstance(slug, str) or not _SLUG.match(slug):
            raise LedgerError(f"{slug!r} is not a project id: use lowercase letters, digits, '-'.")
        _check_window("project", valid_from, valid_until)
        if policy not in POLICIES:
            raise LedgerError(f"Policy {policy!r} is unknown: use one of {', '.join(POLICIES)}.")
        _check_amount("credit limit", credit_limit_cents)
        if member_cap_cents is not None:
            _check_amount("member cap", member_cap_cents)
        if (
            not isinstance(max_concurrent_sessions, int)
            or not 1 <= max_concurrent_sessions <= 10000
        ):
            raise LedgerError(
                "The cap on concurrent sessions must be a whole number from 1 to 10000."
            )
        types = list(allowed_slice_types)
        if not types or not all(isinstance(t, str) and t for t in types):
            raise LedgerError('List the slice types the project may use (or ["*"] for all).')
        with self.session.begin() as db:
            sch = db.scalar(select(Scheme).where(Scheme.name == scheme))
            if sch is None:
                raise LedgerError(f"There is no scheme {scheme!r}.", 404)
            if db.scalar(select(Project).where(Project.slug == slug)):
                raise LedgerError(f"A project {slug!r} exists already.", 409)
            project = Project(
                slug=slug,
                name=name,
                organisation=organisation,
                pi=pi,
                scheme_id=sch.id,
                valid_from=valid_from,
                valid_until=valid_until,
                allowed_slice_types=json.dumps(types),
                max_concurrent_sessions=max_concurrent_sessions,
                policy=policy,
                credit_limit_cents=credit_limit_cents,
                member_cap_cents=member_cap_cents,
                is_course=is_course,
                created_at=now,
            )
            db.add(project)
            self._audit(
                db,
                now,
                actor,
                "project.add",
                slug,
                scheme=scheme,
                policy=policy,
                types=types,
                course=is_course,
            )
        return project

    def add_grant(
        self, actor, project, amount_cents, valid_from, valid_until, now, note=""
    ) -> Grant:
        _check_amount("grant", amount_cents, positive=True)
        _check_window("grant", valid_from, valid_until)
        with self.session.begin() as db:
            p = self._project(db, project, lock=True)
            grant = Grant(
                project_id=p.id,
                amount_cents=amount_cents,
                valid_from=valid_from,
                valid_until=valid_until,
                note=note,
                created_at=now,
            )
            db.add(grant)
            self._audit(
                db,
                now,
                actor,
                "grant.add",
                project,
                amount_cents=amount_cents,
                valid_from=valid_from,
                valid_until=valid_until,
            )
        return grant

    def add_member(
        self, actor, project, username, now, role="member", cap_cents=None, name="", email=""
    ) -> Member:
        (member,) = self.add_members(
            actor, project, [NewMember(username, role, cap_cents, name, email)], now
        )
        return member

    def add_members(self, actor, project, members: list[NewMember], now) -> list[Member]:
        """Add `members` to `project` in one transaction: all of them, or none (a class
        roster of hundreds is one insert, not hundreds of transactions)."""
        seen = set()
        for m in members:
            if not isinstance(m.username, str) or not _USERNAME.match(m.username):
                raise LedgerError(f"{m.username!r} is not a user name.")
            if m.role not in ROLES:
                raise LedgerError(f"Role {m.role!r} is unknown: use one of {', '.join(ROLES)}.")
            if m.cap_cents is not None:
                _check_amount("member cap", m.cap_cents)
            if len(m.name) > 200 or len(m.email) > 254:
                raise LedgerError(f"The name or e-mail of {m.username} is too long.")
            if m.email and not EMAIL.match(m.email):
                raise LedgerError(f"{m.email!r} is not an e-mail address.")
            if m.username in seen:
                raise LedgerError(f"{m.username} is listed twice.")
            seen.add(m.username)
        with self.session.begin() as db:
            p = self._project(db, project)
            exists = db.scalars(
                select(Member.username).where(
                    Member.project_id == p.id, Member.username.in_(sorted(seen))
                )
            ).first()
            if exists:
                raise LedgerError(f"{exists} is already a member of {project}.", 409)
            rows = [
                Member(
                    project_id=p.id,
                    username=m.username,
                    role=m.role,
                    cap_cents=m.cap_cents,
                    name=m.name,
                    email=m.email,
                )
                for m in members
            ]
            db.add_all(rows)
            for m in members:
                self._audit(
                    db,
                    now,
                    actor,
                    "member.add",
                    f"{project}/{m.username}",
                    role=m.role,
                    cap_cents=m.cap_cents,
                )
        return rows

    def set_price(self, actor, slice_type, cents_per_hour, effective_from, now) -> Price:
        _check_amount("price", cents_per_hour)
        if effective_from < now:
            raise LedgerError(
                f"A price cannot take effect in the past ({effective_from:%Y-%m-%d %H:%M}); "
                "sessions already charged keep the prices they were held at."
            )
        if not isinstance(slice_type, str) or not re.match(
            r"^[a-z0-9][a-z0-9.+-]{0,63}$", slice_type
        ):
            raise LedgerError(f"{slice_type!r} is not a slice type name.")
        with self.session.begin() as db:
            clash = db.scalar(
                select(Price).where(
                    Price.slice_type == slice_type, Price.effective_from == effective_from
                )
            )
            if clash:
                raise LedgerError(f"{slice_type} already has a price from {effective_from}.", 409)
            price = Price(
                slice_type=slice_type,
                cents_per_hour=cents_per_hour,
                effective_from=effective_from,
                created_at=now,
            )
            db.add(price)
            self._audit(
                db,
                now,
                actor,
                "price.set",
                slice_type,
                cents_per_hour=cents_per_hour,
                effective_from=effective_from,
            )
        return price

    def add_class_window(self, actor, project, starts_at, ends_at, now) -> ClassWindow:
        _check_window("class window", starts_at, ends_at)
        with self.session.begin() as db:
            p = self._project(db, project)
            if not p.is_course:
                raise LedgerError(f"{project} is not a course; class windows are for courses.")
            window = ClassWindow(project_id=p.id, starts_at=starts_at, ends_at=ends_at)
            db.add(window)
            self._audit(db, now, actor, "window.add", project, starts_at=starts_at, ends_at=ends_at)
        return window

    # -- balances --------------------------------------------------------------------------

    def balance(self, project: str, now: datetime) -> Balance:
        with self.session() as db:
            return self.balances(db, [project], now)[project]

    def balances(self, db: DBSession, slugs, now: datetime) -> dict[str, Balance]:
        """Balances of projects `slugs` (those that exist), from each project's closed totals
        and its active sessions: a few statements, however long the projects' history."""
        states = hold.load_states(db, slugs, now, False, self._is_sqlite)
        if len(states) < len(set(slugs)):
            missing = sorted(set(slugs) - set(states))[0]
            raise LedgerError(f"There is no project {missing!r}.", 404)
        return {slug: _balance_of(st, now) for slug, st in states.items()}

    # -- holds -----------------------------------------------------------------------------

    def open_session(
        self,
        project: str,
        username: str,
        server_name: str,
        slice_type: str,
        duration: timedelta,
        now: datetime,
    ) -> HeldSession:
        """Hold the cost of `duration` on `slice_type` for `username` in `project`, or refuse
        (`LedgerError`). A batch of one; see `open_sessions`."""
        request = HoldRequest(project, username, server_name, slice_type, duration, now)
        (outcome,) = self.open_sessions([request])
        if isinstance(outcome, LedgerError):
            raise outcome
        return outcome

    def open_sessions(self, requests: list[HoldRequest]) -> list[HeldSession | LedgerError]:
        """Decide `requests` in order, in one transaction (`slicehub.quota.hold`): for each, the
        held
        session or the `LedgerError` that refused it."""
        if not requests:
            return []
        with self.session.begin() as db:
            return hold.open_sessions(db, requests, self._prices, self._is_sqlite)

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
            ).where(Session.project_id == p.id, Session.username == username)
        ).one()
        return int(charged), int(held)

    # -- metering --------------------------------------------------------------------------

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
            _apply(db, updates, charges)
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
        _apply(db, [row[0]], [row[1]])
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

    # -- release ---------------------------------------------------------------------------

    def close_session(self, session_id: int, at: datetime, reason: str = "stopped") -> Session:
        """Meter up to the stop (never past the hold's end) and release what is left."""
        with self.session.begin() as db:
            s = db.get(Session, session_id, with_for_update=not self._is_sqlite)
            if s is None:
                raise LedgerError(f"There is no session {session_id}.", 404)
            if s.status != "active":
                return s
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
            pt = Project.__table__.c  # added in SQL: two releases in one project both count
            db.execute(
                update(Project)
                .where(pt.id == s.project_id)
                .values(
                    closed_subsidy_cents=pt.closed_subsidy_cents + s.charged_subsidy_cents,
                    closed_copay_cents=pt.closed_copay_cents
                    + (s.charged_list_cents - s.charged_subsidy_cents),
                    closed_credit_cents=pt.closed_credit_cents + _credit_taken(s),
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
        return s

    def begin(self, session_id: int, at: datetime) -> Session:
        """The server of a deferred hold has started (its batch job left the queue): metering
        starts now, and the session keeps the length that was held. Its window moves to
        [at, at + length); if prices changed in between, the end comes earlier so that the
        session never costs more than its hold. Repeating it changes nothing."""
        with self.session.begin() as db:
            s = db.get(Session, session_id, with_for_update=not self._is_sqlite)
            if s is None:
                raise LedgerError(f"There is no session {session_id}.", 404)
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
        self, session_id: int, username: str | None, extra: timedelta, now: datetime
    ) -> tuple[Session, str]:
        """Hold `extra` more time for `username`'s active session `session_id` (None: anyone's,
        for staff), or refuse (`LedgerError`, nothing written); the session and its project.
        The project is locked first, as a hold locks it, so extensions and holds of one
        project are decided one after the other. See `slicehub.quota.hold.extend` for the rules."""
        with self.session.begin() as db:
            found = db.execute(
                select(Session.username, Project.slug)
                .join(Project, Project.id == Session.project_id)
                .where(Session.id == session_id)
            ).first()
            if found is None or (username is not None and found.username != username):
                raise LedgerError(f"There is no session {session_id} of yours.", 404)
            states = hold.load_states(
                db, {found.slug}, now, True, self._is_sqlite, {(found.slug, found.username)}
            )
            s = db.get(Session, session_id, with_for_update=not self._is_sqlite)
            before = s.end_at
            book = self._prices.book(db)
            hold.extend(
                s, states[found.slug], extra, now, book.schedule(s.slice_type, s.prices_known)
            )
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
            )
        return s, found.slug

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


def _apply(db, updates: list[dict], charges: list[dict]) -> None:
    """Move sessions' running totals and append their charges, in bulk, in one transaction.
    Each update is conditional on the `metered_until` it was computed from."""
    if not updates:
        return
    conn = db.connection()
    if conn.dialect.name == "postgresql":
        moved = _apply_postgresql(conn, updates, charges)
    else:
        moved = _apply_executemany(conn, updates, charges)
    if moved != len(updates):  # the locks taken before make this impossible; never guess
        raise RuntimeError("a metering write raced another; rolled back, nothing charged")


def _apply_executemany(conn, updates: list[dict], charges: list[dict]) -> int:
    """The writes as SQLAlchemy executemany statements (SQLite's path): one UPDATE with the
    conditional bind parameters, one INSERT of the charges. Returns the sessions moved."""
    t = Session.__table__
    stmt = (
        update(t)
        .where(t.c.id == bindparam("b_id"))
        .where(t.c.metered_until == bindparam("b_old", type_=UTCDateTime))
        .values(
            metered_until=bindparam("b_new", type_=UTCDateTime),
            charged_list_cents=t.c.charged_list_cents + bindparam("b_list"),
            charged_subsidy_cents=t.c.charged_subsidy_cents + bindparam("b_subsidy"),
        )
    )
    moved = conn.execute(stmt, updates).rowcount
    conn.execute(insert(Charge.__table__), charges)
    return moved


_TICK_COLUMNS = {  # the update rows, as the temporary table holds them
    "b_id": "int4",
    "b_old": "timestamptz",
    "b_new": "timestamptz",
    "b_list": "int8",
    "b_subsidy": "int8",
}
_CHARGE_COLUMNS = {
    "session_id": "int4",
    "project_id": "int4",
    "period_start": "timestamptz",
    "period_end": "timestamptz",
    "list_cents": "int8",
    "subsidy_cents": "int8",
    "copay_cents": "int8",
    "kind": "text",
}


def _apply_postgresql(conn, updates: list[dict], charges: list[dict]) -> int:
    """The same writes on PostgreSQL through binary COPY (`ledger_db.copy_rows`): the charges
    straight into their table, the updates into a temporary table joined by one UPDATE.
    Returns the number of sessions moved."""
    raw = conn.connection.driver_connection  # the psycopg connection, inside this transaction
    with raw.cursor() as cur:
        cur.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS slicehub_meter_tick ("
            + ", ".join(f"{c} {t}" for c, t in _TICK_COLUMNS.items())
            + ") ON COMMIT DELETE ROWS"
        )
        ledger_db.copy_rows(
            cur, "slicehub_meter_tick", _TICK_COLUMNS, _rows(updates, _TICK_COLUMNS)
        )
        cur.execute(
            "UPDATE sessions SET metered_until = v.b_new, "
            "charged_list_cents = sessions.charged_list_cents + v.b_list, "
            "charged_subsidy_cents = sessions.charged_subsidy_cents + v.b_subsidy "
            "FROM slicehub_meter_tick v "
            "WHERE sessions.id = v.b_id AND sessions.metered_until = v.b_old"
        )
        moved = cur.rowcount
        cur.execute("TRUNCATE slicehub_meter_tick")
        ledger_db.copy_rows(cur, "charges", _CHARGE_COLUMNS, _rows(charges, _CHARGE_COLUMNS))
    return moved


def _rows(dicts: list[dict], columns) -> list[list]:
    names = list(columns)
    return [[d[c] for c in names] for d in dicts]


def _balance_of(st: hold.ProjectState, now: datetime) -> Balance:
    return Balance(
        st.row.slug,
        st.grants_at(now),
        st.subsidy_charged,
        st.subsidy_held,
        st.copay_charged,
        st.row.credit_limit_cents,
        st.credit_used,
    )


def _credit_taken(s: Session) -> int:
    """Credit a stopped session actually used: the subsidy its list cost would have drawn at
    the scheme's rate, less what the subsidy did pay."""
    return max(0, subsidy_of(s.charged_list_cents, s.rate_bp) - s.charged_subsidy_cents)


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


def _check_amount(what: str, cents, positive: bool = False) -> None:
    if isinstance(cents, bool) or not isinstance(cents, int):
        raise LedgerError(f"The {what} must be a whole number of cents.")
    if cents < 0 or (positive and cents == 0):
        raise LedgerError(f"The {what} must be {'more than' if positive else 'at least'} zero.")
    if cents > 10**13:  # HK$100 billion: a typo, not a grant
        raise LedgerError(f"The {what} of {money(cents)} is absurd; check the amount.")


def _check_rate(rate_bp) -> None:
    if (
        isinstance(rate_bp, bool)
        or not isinstance(rate_bp, int)
        or not 0 <= rate_bp <= BASIS_POINTS
    ):
        raise LedgerError("The subsidy rate must be between 0% and 100%.")


def _check_window(what: str, start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise LedgerError(f"The {what} dates need a time zone.")
    if end <= start:
        raise LedgerError(f"The {what} ends before it starts ({start:%Y-%m-%d} to {end:%Y-%m-%d}).")


# -- reading, for the API (every query scoped by the caller's identity) ---------------------


def project_view(p: Project, bal: Balance, scheme: Scheme) -> dict:
    return {
        "project": p.slug,
        "name": p.name,
        "organisation": p.organisation,
        "policy": p.policy,
        "subsidy_rate_bp": scheme.subsidy_rate_bp,
        "allowed_slice_types": json.loads(p.allowed_slice_types),
        "valid_from": p.valid_from.isoformat(),
        "valid_until": p.valid_until.isoformat(),
        "is_course": p.is_course,
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
    }


class LedgerReader:
    """Read-only queries behind the REST API."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def projects(self, username: str | None, now: datetime, slug: str | None = None) -> list:
        """The projects `username` belongs to (None: all, for staff), with balances; only
        project `slug` when given."""
        with self.ledger.session() as db:
            q = select(Project).order_by(Project.slug)
            if slug is not None:
                q = q.where(Project.slug == slug)
            if username is not None:
                q = q.join(Member, Member.project_id == Project.id).where(
                    Member.username == username
                )
            projects = db.scalars(q).all()
            balances = self.ledger.balances(db, [p.slug for p in projects], now)
            views = [
                project_view(p, balances[p.slug], db.get(Scheme, p.scheme_id)) for p in projects
            ]
            if username is not None:
                for p, view in zip(projects, views, strict=True):
                    view["member"] = self._membership(db, p, username, now)
            return views

    def _membership(self, db, p: Project, username: str, now: datetime) -> dict:
        """What the spawn form needs to know of `username` in `p`: their role, what their cap
        leaves them, and (a course) the class windows still to come."""
        m = db.scalar(select(Member).where(Member.project_id == p.id, Member.username == username))
        cap = m.cap_cents if m.cap_cents is not None else p.member_cap_cents
        out = {"role": m.role, "cap_cents": cap, "cap_left_cents": None, "class_windows": []}
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

    def is_member(self, username: str, project: str) -> bool:
        with self.ledger.session() as db:
            return bool(
                db.scalar(
                    select(Member.id)
                    .join(Project, Project.id == Member.project_id)
                    .where(Project.slug == project, Member.username == username)
                )
            )

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
            return [session_view(s, slug) for s, slug in rows]

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
