"""Holds decided in batches (`slicehub.quota.hold`, `slicehub.quota.hold_queue`): the same answers
as one at a
time, gathered while a batch is decided, and one failing batch refuses nobody by mistake."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from slicehub.quota.errors import LedgerError
from slicehub.quota.hold import HoldRequest
from slicehub.quota.hold_queue import HoldQueue
from slicehub.quota.ledger import Ledger
from slicehub.quota.models import Session as LedgerSession

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.fixture
def ledger(tmp_path):
    lg = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}")
    lg.upgrade()
    lg.add_scheme("staff", "s", 7000, 10**9, T0)
    lg.set_price("staff", "h100.1g.10gb", 1000, T0, T0)  # HK$7.00 of subsidy an hour
    for slug, grant in (("lab", 5 * 700), ("rich", 10**6)):
        lg.add_project(
            "staff",
            slug,
            scheme="s",
            name=slug,
            organisation="U",
            pi="pi",
            valid_from=T0,
            valid_until=T0 + 30 * 24 * H,
            allowed_slice_types=["*"],
            max_concurrent_sessions=100,
            now=T0,
        )
        lg.add_grant("staff", slug, grant, T0, T0 + 30 * 24 * H, T0)
        for i in range(30):
            lg.add_member("staff", slug, f"u{i:02d}", T0)
    yield lg
    lg.dispose()


def req(project, user, server="", now=T0 + H):
    return HoldRequest(project, user, server, "h100.1g.10gb", H, now)


async def test_simultaneous_requests_are_gathered_and_never_overspend(ledger):
    queue = HoldQueue(ledger)

    async def start(r):
        try:
            return await queue.hold(r)
        except LedgerError as e:
            return e

    requests = [req("lab", f"u{i:02d}") for i in range(30)]
    requests += [req("rich", f"u{i:02d}", "second") for i in range(30)]
    outcomes = await asyncio.gather(*(start(r) for r in requests))
    await queue.close()
    held = [o for o in outcomes if not isinstance(o, LedgerError)]
    refused = [o for o in outcomes if isinstance(o, LedgerError)]
    assert queue.batches < len(requests)  # the first batch decided while the rest queued
    assert sorted(s.username for s in held if s.project_id == 1) == [f"u{i:02d}" for i in range(5)]
    assert len(held) == 35 and len(refused) == 25
    assert all(e.status == 402 and "has HK$0.00 of subsidy left" in str(e) for e in refused)
    assert ledger.balance("lab", T0 + H).subsidy_left_cents == 0
    assert len({s.id for s in held}) == 35  # each its own row


def test_a_batch_decides_in_order_and_refuses_a_second_start_of_one_server(ledger):
    batch = [
        req("lab", "u01", "nb"),
        req("lab", "u01", "nb"),  # the same server twice
        req("nope", "u01"),
        req("lab", "zz"),
        req("rich", "u01", "other"),
    ]
    outcomes = ledger.open_sessions(batch)
    assert outcomes[0].server_name == "nb" and outcomes[0].id
    assert [getattr(o, "status", None) for o in outcomes[1:4]] == [409, 404, 403]
    assert "already has an active session for this server" in str(outcomes[1])
    assert outcomes[4].project_id != outcomes[0].project_id


def test_the_database_refuses_a_second_active_session_for_one_server(ledger):
    first = ledger.open_session("lab", "u01", "nb", "h100.1g.10gb", H, T0 + H)
    columns = LedgerSession.__table__.columns  # those a hold writes; the rest have defaults
    row = {c.name: getattr(first, c.name) for c in columns if hasattr(first, c.name)}
    row.pop("id")
    with ledger.session.begin() as db, pytest.raises(IntegrityError):
        db.execute(insert(LedgerSession), [row])
    ledger.close_session(first.id, T0 + 2 * H)
    again = ledger.open_session("lab", "u01", "nb", "h100.1g.10gb", H, T0 + 2 * H)
    assert again.id != first.id


async def test_a_failing_batch_is_decided_again_one_by_one(ledger, monkeypatch):
    real = ledger.open_sessions
    calls = []

    def flaky(requests):
        calls.append(len(requests))
        if len(requests) > 1:
            raise RuntimeError("the database went away mid-batch")
        return real(requests)

    monkeypatch.setattr(ledger, "open_sessions", flaky)
    queue = HoldQueue(ledger)
    results = await asyncio.gather(
        *(queue.hold(req("rich", f"u{i:02d}")) for i in range(6)), return_exceptions=True
    )
    await queue.close()
    assert all(not isinstance(r, Exception) for r in results), results
    assert max(calls) > 1 and calls.count(1) >= 6
