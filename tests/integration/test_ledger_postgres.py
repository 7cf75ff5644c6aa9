"""The ledger on a real PostgreSQL: concurrent holds never overspend; a project's member group
(migration 0004, and a batch of group members' holds, still a fixed number of statements); a
class's pre-warmed servers held in one batch and claimed at once."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, func, select

from slicehub.quota.errors import LedgerError
from slicehub.quota.hold import HoldRequest
from slicehub.quota.hold_queue import HoldQueue
from slicehub.quota.ledger import Ledger
from slicehub.quota.models import AuditEntry
from slicehub.quota.models import Session as LedgerSession
from tests.unit.rules_ledger import T0 as RULES_T0
from tests.unit.rules_ledger import build as build_rules_ledger
from tests.unit.rules_ledger import project as rules_project
from tests.unit.test_ledger_migrations import check_0004_down_and_up_keeps_everything

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def lab_affording_10_sessions(pg_url) -> tuple[Ledger, list[str]]:
    ledger = Ledger(pg_url, pool_size=50, max_overflow=50)
    ledger.upgrade()
    ledger.add_scheme("staff", "hk-ai", 7000, 10**9, T0)
    ledger.add_project(
        "staff",
        "ai-lab",
        scheme="hk-ai",
        name="AI lab",
        organisation="HKU",
        pi="dr-chan",
        valid_from=T0,
        valid_until=T0 + timedelta(days=365),
        allowed_slice_types=["*"],
        max_concurrent_sessions=1000,
        now=T0,
    )
    ledger.set_price("staff", "h100.1g.10gb", 1000, T0, T0)  # HK$10/h -> HK$7 subsidy per hour
    ledger.add_grant("staff", "ai-lab", 10 * 700, T0, T0 + timedelta(days=365), T0)
    users = [f"student{i:03d}" for i in range(200)]
    for u in users:
        ledger.add_member("staff", "ai-lab", u, T0)
    return ledger, users


def check_exactly_10_held(ledger: Ledger, results: list[str], now) -> None:
    held = [r for r in results if r == "held"]
    refused = [r for r in results if r != "held"]
    assert len(held) == 10
    assert len(refused) == 190
    assert all("has HK$0.00 of subsidy left" in r and "needs HK$7.00" in r for r in refused)
    with ledger.session() as db:
        assert db.scalar(select(func.count()).select_from(LedgerSession)) == 10
    bal = ledger.balance("ai-lab", now)
    assert bal.subsidy_held_cents == 7000 and bal.subsidy_left_cents == 0


def test_200_concurrent_starts_against_a_project_that_affords_10(pg_url):
    """Each start its own transaction, from 50 threads at once: the project's row lock."""
    ledger, users = lab_affording_10_sessions(pg_url)
    now = T0 + timedelta(hours=1)
    barrier = threading.Barrier(50)

    def start(user):
        try:
            barrier.wait(timeout=5)
        except threading.BrokenBarrierError:
            pass
        try:
            ledger.open_session("ai-lab", user, "", "h100.1g.10gb", timedelta(hours=1), now)
            return "held"
        except LedgerError as e:
            assert e.status == 402
            return str(e)

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(start, users))
    check_exactly_10_held(ledger, results, now)
    ledger.dispose()


async def test_200_simultaneous_starts_through_the_services_hold_queue(pg_url):
    """What the quota service does: 200 requests at once, decided in a few batches."""
    ledger, users = lab_affording_10_sessions(pg_url)
    now = T0 + timedelta(hours=1)
    queue = HoldQueue(ledger)

    async def start(user):
        request = HoldRequest("ai-lab", user, "", "h100.1g.10gb", timedelta(hours=1), now)
        try:
            await queue.hold(request)
            return "held"
        except LedgerError as e:
            assert e.status == 402
            return str(e)

    results = await asyncio.gather(*(start(u) for u in users))
    await queue.close()
    check_exactly_10_held(ledger, list(results), now)
    assert queue.batches < 10, f"{queue.batches} batches: the requests were not gathered"
    ledger.dispose()


def test_migration_0004_down_and_up_keeps_the_ledger(pg_url):
    """A project's member group (0004) on PostgreSQL: down to 0003 and up again, every row kept
    (tests/unit/test_ledger_migrations.py runs the same on SQLite)."""
    ledger = build_rules_ledger(pg_url)
    try:
        check_0004_down_and_up_keeps_everything(ledger)
    finally:
        ledger.dispose()


def test_a_batch_of_group_members_is_a_fixed_number_of_statements(pg_url):
    """Members through a project's group, under its member cap: a batch of 1 and a batch of 60
    cost the same statements (their draws read set-wise, their audit entries in one insert),
    and each is decided against what the ones before it drew."""
    ledger = build_rules_ledger(pg_url)
    try:
        rules_project(
            ledger,
            "vision",
            grant=10_000_00,
            member_group="proj-vision",
            member_cap_cents=10_00,
            max_concurrent_sessions=500,
        )
        check_group_batches(ledger)
    finally:
        ledger.dispose()


def check_group_batches(ledger: Ledger) -> None:
    g = frozenset({"proj-vision"})
    hour = timedelta(hours=1)

    def batch(users, server):
        return [
            HoldRequest("vision", u, server, "h100.1g.10gb", hour, RULES_T0, groups=g)
            for u in users
        ]

    def statements(requests) -> tuple[int, list]:
        seen = []

        def count(*_):
            seen.append(1)

        event.listen(ledger.engine, "before_cursor_execute", count)
        try:
            outcomes = ledger.open_sessions(requests)
        finally:
            event.remove(ledger.engine, "before_cursor_execute", count)
        return len(seen), outcomes

    statements(batch(["warm-up"], "a"))  # the price list, once
    users = [f"u{i:02d}" for i in range(60)]
    one, _ = statements(batch(["solo"], "a"))
    many, outcomes = statements(batch(users, "a"))
    assert one == many
    assert [str(o) for o in outcomes if isinstance(o, LedgerError)] == []
    # a second hour each is past the HK$10 cap (HK$7.00 drawn): every one refused, set-wise
    again, refusals = statements(batch(users, "b"))
    assert again < many  # no sessions written, no audit entries
    assert {str(e).split(";")[0] for e in refusals} == {
        f"{u} has HK$3.00 left of a HK$10.00 cap in vision" for u in users
    }
    with ledger.session() as db:
        audited = db.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "session.hold")
        )
    assert audited == 62


def test_pre_warmed_servers_of_a_class_are_held_and_claimed_at_once(pg_url):
    """Forty pre-warmed servers held in one batch on the course's payer, then claimed by their
    forty students at once from forty threads: every claim hands over exactly once (the row
    locks), the students' sessions are the course's, and the payer was charged to the claims."""
    from tests.unit.test_prewarm_ledger import COURSE, START, course

    H1 = timedelta(hours=1)
    lg = build_rules_ledger(pg_url)
    try:
        students = [f"stu{i:02d}" for i in range(40)]
        window = course(lg, cap=None, students=students, sessions=100, grant=10_000_00)
        at = START - timedelta(minutes=5)
        warm = lg.open_sessions(
            [
                HoldRequest(COURSE, s, "", "h100.1g.10gb", H1, at, prewarm_window=window)
                for s in students
            ]
        )
        assert [w for w in warm if isinstance(w, LedgerError)] == []
        claim_at = START + timedelta(seconds=30)
        with ThreadPoolExecutor(max_workers=20) as pool:
            mine = list(pool.map(lambda w: lg.claim(w.id, w.username, claim_at), warm))
        with lg.session() as db:
            rows = db.scalars(select(LedgerSession).order_by(LedgerSession.id)).all()
        handed = [r for r in rows if r.prewarm_window_id is not None]
        own = [r for r in rows if r.prewarm_window_id is None]
        assert len(handed) == len(own) == 40
        assert {r.stop_reason for r in handed} == {"claimed"}
        assert sorted(r.handed_to for r in handed) == sorted(m.id for m in mine)
        assert {(r.status, r.started_at) for r in own} == {("active", claim_at)}
        # every pre-warmed server was charged its 5.5 minutes to the course: 40 x HK$0.91
        assert sum(r.charged_list_cents for r in handed) == 40 * (1000 * 330 // 3600)
        with pytest.raises(LedgerError, match="claimed already"):
            lg.claim(warm[0].id, warm[0].username, claim_at)
    finally:
        lg.dispose()
