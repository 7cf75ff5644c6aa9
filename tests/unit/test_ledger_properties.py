"""Property tests of the ledger over random schedules of holds, ticks, stops, price changes
and restarts (a new Ledger on the same database, as after a crash), on SQLite.

Checked after every step and at the end:
- subsidy charged never exceeds the grants; credit used never exceeds the credit limit;
- every charge's subsidy + co-pay equals its list cost, to the cent;
- overshoot is zero: nothing is charged past a session's end;
- every second of every session is charged exactly once: its charges tile [start, metered_until)
  without gap or overlap, and their list cents equal the running total's rule at that moment
  (so ticking often, rarely, twice or after a restart charges the same);
- a project's balance (its closed sessions' totals plus its active sessions) equals the sum of
  its charges;
- a batch of simultaneous holds decides exactly as the same holds one at a time, in order;
- a deferred hold (a batch job in its queue) is charged nothing until it begins, and after
  it begins never more than it held.
"""

import sqlite3
from datetime import UTC, datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import func, select

from slicehub.common.money import subsidy_of
from slicehub.quota.errors import LedgerError
from slicehub.quota.hold import HoldRequest
from slicehub.quota.ledger import Ledger
from slicehub.quota.models import Charge, Grant, Project
from slicehub.quota.models import Session as LedgerSession
from slicehub.quota.pricing import PricePoint, PriceSchedule

T0 = datetime(2026, 11, 1, tzinfo=UTC)
TYPES = {"h100.1g.10gb": 550, "h100.3g.40gb": 1650, "cpu": 80}
PROJECTS = {
    "lab-stop": dict(policy="stop", credit_limit_cents=0, grant=20_000),
    "lab-full": dict(policy="full_price", credit_limit_cents=5_000, grant=8_000),
}
USERS = ("alice", "bob", "carol")


def build(url: str) -> Ledger:
    ledger = Ledger(url)
    ledger.upgrade()
    ledger.add_scheme("staff", "scheme", 7000, 10**9, T0)
    for slug, spec in PROJECTS.items():
        ledger.add_project(
            "staff",
            slug,
            scheme="scheme",
            name=slug,
            organisation="uni",
            pi="pi",
            valid_from=T0,
            valid_until=T0 + timedelta(days=60),
            allowed_slice_types=["*"],
            max_concurrent_sessions=4,
            policy=spec["policy"],
            credit_limit_cents=spec["credit_limit_cents"],
            now=T0,
        )
        ledger.add_grant("staff", slug, spec["grant"], T0, T0 + timedelta(days=60), T0)
        for u in USERS:
            ledger.add_member("staff", slug, u, T0, cap_cents=9_000 if u == "carol" else None)
    for name, price in TYPES.items():
        ledger.set_price("staff", name, price, T0, T0)
    return ledger


def check_ledger(ledger: Ledger, at: datetime | None = None) -> None:
    with ledger.session() as db:
        for p in db.scalars(select(Project)).all():
            grants = db.scalar(select(func.sum(Grant.amount_cents)).where(Grant.project_id == p.id))
            subsidy = db.scalar(
                select(func.coalesce(func.sum(Charge.subsidy_cents), 0)).where(
                    Charge.project_id == p.id
                )
            )
            assert subsidy <= grants, f"{p.slug}: subsidy {subsidy} > grants {grants}"
            bal = ledger.balances(db, [p.slug], at or T0 + timedelta(days=1))[p.slug]
            # the balance's running totals (closed sessions + active ones) agree with the
            # append-only charges they summarise
            copay = db.scalar(
                select(func.coalesce(func.sum(Charge.copay_cents), 0)).where(
                    Charge.project_id == p.id
                )
            )
            assert (bal.subsidy_charged_cents, bal.copay_charged_cents) == (subsidy, copay)
            assert bal.subsidy_left_cents >= 0
            assert bal.credit_used_cents <= p.credit_limit_cents
        for c in db.scalars(select(Charge)).all():
            assert c.subsidy_cents + c.copay_cents == c.list_cents
            sign = 1 if c.kind == "charge" else -1
            assert min(sign * c.subsidy_cents, sign * c.copay_cents, sign * c.list_cents) >= 0
        for s in db.scalars(select(LedgerSession)).all():
            rows = db.scalars(
                select(Charge).where(Charge.session_id == s.id).order_by(Charge.period_start)
            ).all()
            charges = [c for c in rows if c.kind == "charge"]
            reversals = [c for c in rows if c.kind == "reversal"]
            t = s.started_at
            for c in charges:  # contiguous, no overlap, nothing after the end
                assert c.period_start == t and c.period_end > t
                t = c.period_end
            assert t <= s.end_at
            if reversals:  # only a stop reverses, once, back to the moment it stopped
                assert s.status == "stopped" and len(reversals) == 1
                assert reversals[0].period_start == s.metered_until
                assert reversals[0].period_end == t
            else:
                assert t == s.metered_until
            assert sum(c.list_cents for c in rows) == s.charged_list_cents
            assert s.charged_list_cents <= s.hold_list_cents
            assert s.charged_subsidy_cents <= s.hold_subsidy_cents
            expected = _schedule(db, s).cost(s.started_at, s.metered_until)
            assert s.charged_list_cents == expected
            if s.hold_credit_cents == 0:
                assert s.charged_subsidy_cents == subsidy_of(expected, s.rate_bp)
            if s.status == "stopped":
                assert s.stopped_at <= s.end_at and s.metered_until == s.stopped_at
            if not s.begun:  # held, still queued: nothing charged
                assert not rows and s.metered_until == s.started_at


def _outcome(o):
    if isinstance(o, LedgerError):
        return ("refused", o.status, str(o))
    return (
        "held",
        o.username,
        o.server_name,
        o.end_at,
        o.hold_list_cents,
        o.hold_subsidy_cents,
        o.hold_credit_cents,
    )


def _schedule(db, s):
    from slicehub.quota.models import Price

    rows = db.scalars(
        select(Price).where(Price.slice_type == s.slice_type, Price.id <= s.prices_known)
    ).all()
    return PriceSchedule(PricePoint(r.effective_from, r.cents_per_hour) for r in rows)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        import tempfile

        self.dir = tempfile.TemporaryDirectory()
        self.url = f"sqlite:///{self.dir.name}/ledger.sqlite"
        self.ledger = build(self.url)
        self.now = T0 + timedelta(hours=1)
        self.n = 0

    def teardown(self):
        self.ledger.dispose()
        self.dir.cleanup()

    def active(self):
        with self.ledger.session() as db:
            return db.scalars(
                select(LedgerSession.id).where(LedgerSession.status == "active")
            ).all()

    @rule(
        project=st.sampled_from(sorted(PROJECTS)),
        user=st.sampled_from(USERS),
        slice_type=st.sampled_from(sorted(TYPES)),
        minutes=st.integers(1, 6 * 60),
        deferred=st.booleans(),  # a batch job: metered only from its begin
    )
    def open(self, project, user, slice_type, minutes, deferred):
        self.n += 1
        request = HoldRequest(
            project, user, f"s{self.n}", slice_type, timedelta(minutes=minutes), self.now, deferred
        )
        (s,) = self.ledger.open_sessions([request])
        if isinstance(s, LedgerError):
            assert s.status in (402, 409), str(s)
            return
        assert s.end_at == self.now + timedelta(minutes=minutes)
        assert s.begun is not deferred

    def waiting(self):
        with self.ledger.session() as db:
            return db.scalars(
                select(LedgerSession.id).where(
                    LedgerSession.status == "active", LedgerSession.begun.is_(False)
                )
            ).all()

    @precondition(lambda self: self.waiting())
    @rule(data=st.data())
    def begin(self, data):
        """A queued job starts: its window moves to now, its cost stays within its hold."""
        sid = data.draw(st.sampled_from(self.waiting()))
        before = self._row(sid)
        s = self.ledger.begin(sid, self.now)
        assert s.begun and s.started_at == max(self.now, before.started_at)
        assert s.end_at - s.started_at <= before.end_at - before.started_at
        assert s.charged_list_cents == 0

    def _row(self, sid):
        with self.ledger.session() as db:
            return db.get(LedgerSession, sid)

    @rule(
        requests=st.lists(
            st.tuples(
                st.sampled_from(sorted(PROJECTS)),
                st.sampled_from(USERS),
                st.integers(0, 2),  # server: a repeat inside the batch must be refused
                st.sampled_from(sorted(TYPES)),
                st.integers(1, 6 * 60),
            ),
            min_size=2,
            max_size=8,
        )
    )
    def open_batch(self, requests):
        """Simultaneous starts, decided as one batch, decide exactly as they would have one at a
        time in the same order (checked on a copy of the database)."""
        self.n += 1
        batch = [
            HoldRequest(p, u, f"b{self.n}-{server}", t, timedelta(minutes=m), self.now)
            for p, u, server, t, m in requests
        ]
        copy_url = f"sqlite:///{self.dir.name}/copy{self.n}.sqlite"
        with sqlite3.connect(self.url.removeprefix("sqlite:///")) as src:
            with sqlite3.connect(copy_url.removeprefix("sqlite:///")) as dst:
                src.backup(dst)
        one_by_one = Ledger(copy_url)
        try:
            expected = [one_by_one.open_sessions([r])[0] for r in batch]
        finally:
            one_by_one.dispose()
        got = self.ledger.open_sessions(batch)
        assert [_outcome(o) for o in got] == [_outcome(o) for o in expected]

    @precondition(lambda self: self.active())
    @rule(data=st.data(), minutes=st.integers(1, 6 * 60))
    def extend(self, data, minutes):
        """More time for a running session: held only if the project can pay, all or nothing."""
        sid = data.draw(st.sampled_from(self.active()))
        before = self._row(sid)
        try:
            s, _ = self.ledger.extend(sid, before.username, timedelta(minutes=minutes), self.now)
        except LedgerError as e:
            assert e.status in (402, 403, 409), str(e)
            after = self._row(sid)
            assert (after.end_at, after.hold_list_cents, after.hold_subsidy_cents) == (
                before.end_at,
                before.hold_list_cents,
                before.hold_subsidy_cents,
            )
            return
        assert s.end_at == before.end_at + timedelta(minutes=minutes)
        assert s.hold_list_cents >= before.hold_list_cents
        assert s.hold_subsidy_cents >= before.hold_subsidy_cents
        assert s.extended == before.extended + 1

    @rule(seconds=st.integers(1, 3 * 3600), twice=st.booleans())
    def tick(self, seconds, twice):
        self.now += timedelta(seconds=seconds)
        self.ledger.meter(self.now)
        if twice:  # the same tick again (a retry, or a second metering process): charges nothing
            assert self.ledger.meter(self.now).charges == 0

    @precondition(lambda self: self.active())
    @rule(data=st.data(), back=st.integers(0, 600))
    def stop(self, data, back):
        sid = data.draw(st.sampled_from(self.active()))
        self.ledger.close_session(sid, self.now - timedelta(seconds=back) if back else self.now)

    @rule(
        slice_type=st.sampled_from(sorted(TYPES)),
        ahead=st.integers(0, 4 * 3600),
        price=st.integers(0, 5000),
    )
    def change_price(self, slice_type, ahead, price):
        try:
            self.ledger.set_price(
                "staff", slice_type, price, self.now + timedelta(seconds=ahead), self.now
            )
        except LedgerError as e:
            assert e.status == 409

    @rule()
    def restart(self):
        """A crash: the process and its caches are gone; the database is what remains."""
        self.ledger.dispose()
        self.ledger = Ledger(self.url)
        self.ledger.upgrade()

    @invariant()
    def ledger_is_sound(self):
        check_ledger(self.ledger)


TestLedger = LedgerMachine.TestCase
TestLedger.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
