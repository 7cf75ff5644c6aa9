"""Extending a running session: more time is held only when the project can pay, priced at
the session's own prices; a refusal says why and changes nothing; the warnings come again."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from slicehub.quota.errors import LedgerError
from slicehub.quota.hold import HoldRequest
from slicehub.quota.models import AuditEntry, SessionWarning
from slicehub.quota.models import Session as LedgerSession
from tests.unit.rules_ledger import T0, H, project

PRICE = 10_00  # h100.1g.10gb in the rules' ledger: HK$10.00 an hour; the scheme pays 70%


def row(lg, sid) -> LedgerSession:
    with lg.session() as db:
        return db.get(LedgerSession, sid)


def refused(lg, sid, user, extra, now, status):
    before = row(lg, sid)
    with pytest.raises(LedgerError) as e:
        lg.extend(sid, user, extra, now)
    assert e.value.status == status, str(e.value)
    after = row(lg, sid)
    assert (after.end_at, after.hold_list_cents, after.hold_subsidy_cents, after.extended) == (
        before.end_at,
        before.hold_list_cents,
        before.hold_subsidy_cents,
        before.extended,
    )
    return str(e.value)


def test_an_affordable_extension_moves_the_end_and_holds_the_cost(ledger):
    project(ledger, "lab")
    ledger.add_member("staff", "lab", "ann", T0)
    sid = ledger.open_session("lab", "ann", "", "h100.1g.10gb", H, T0).id
    s, slug = ledger.extend(sid, "ann", 2 * H, T0 + 30 * timedelta(minutes=1))
    assert slug == "lab" and s.end_at == T0 + 3 * H and s.extended == 1
    assert (s.hold_list_cents, s.hold_subsidy_cents) == (3 * PRICE, 3 * PRICE * 7 // 10)
    assert ledger.balance("lab", T0 + H).subsidy_left_cents == 100_00 - 21_00
    # metering runs to the new end, not the old one
    ledger.meter(T0 + 2 * H)
    assert row(ledger, sid).charged_list_cents == 2 * PRICE
    with ledger.session() as db:
        entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "session.extend")).one()
    assert entry.actor == "ann" and entry.subject == str(sid)


def test_a_project_that_cannot_pay_is_refused_with_the_amounts(ledger):
    project(ledger, "lab", grant=10_00)  # HK$10 of subsidy: HK$7 are held by the first hour
    ledger.add_member("staff", "lab", "ann", T0)
    sid = ledger.open_session("lab", "ann", "", "h100.1g.10gb", H, T0).id
    msg = refused(ledger, sid, "ann", H, T0 + timedelta(minutes=5), 402)
    assert msg == (
        "Project lab has HK$3.00 of subsidy left; a h100.1g.10gb slice for 1 h needs HK$7.00 "
        "of subsidy (HK$10.00 at list price)."
    )
    s, _ = ledger.extend(sid, "ann", 25 * timedelta(minutes=1), T0 + timedelta(minutes=5))
    assert s.hold_subsidy_cents == 7_00 + 2_91  # 25 min: HK$4.16 at list, 70% rounded down


def test_a_full_price_project_extends_on_credit(ledger):
    project(ledger, "startup", grant=7_00, policy="full_price", credit_limit_cents=20_00)
    ledger.add_member("staff", "startup", "bo", T0)
    sid = ledger.open_session("startup", "bo", "", "h100.1g.10gb", H, T0).id
    s, _ = ledger.extend(sid, "bo", H, T0 + timedelta(minutes=10))
    assert (s.hold_subsidy_cents, s.hold_credit_cents) == (7_00, 7_00)
    assert ledger.balance("startup", T0 + H).credit_left_cents == 13_00
    msg = refused(ledger, sid, "bo", 3 * H, T0 + timedelta(minutes=10), 402)
    assert "HK$0.00 of subsidy and HK$13.00 of credit left" in msg


def test_a_members_cap_and_a_class_window_bound_an_extension(ledger):
    project(ledger, "ml101", is_course=True, member_cap_cents=14_00)
    ledger.add_member("staff", "ml101", "stu", T0, role="student")
    ledger.add_class_window("staff", "ml101", T0, T0 + 3 * H, T0)
    sid = ledger.open_session("ml101", "stu", "", "h100.1g.10gb", H, T0).id
    msg = refused(ledger, sid, "stu", 2 * H + timedelta(minutes=1), T0, 403)
    assert msg == (
        "The class window of course ml101 ends at 04:00 UTC; a session cannot run past it."
    )
    msg = refused(ledger, sid, "stu", 2 * H, T0, 402)
    assert msg.startswith("stu has HK$7.00 left of a HK$14.00 cap in ml101")
    s, _ = ledger.extend(sid, "stu", H, T0)
    assert s.end_at == T0 + 2 * H


def test_only_ones_own_running_session_can_be_extended(ledger):
    project(ledger, "lab")
    ledger.add_member("staff", "lab", "ann", T0)
    ledger.add_member("staff", "lab", "ben", T0)
    sid = ledger.open_session("lab", "ann", "", "h100.1g.10gb", H, T0).id
    assert "no session" in refused(ledger, sid, "ben", H, T0, 404)
    with pytest.raises(LedgerError) as e:
        ledger.extend(999, "ann", H, T0)
    assert e.value.status == 404
    assert "from 1 minute to 24 hours" in refused(ledger, sid, "ann", timedelta(0), T0, 400)
    assert "from 1 minute to 24 hours" in refused(ledger, sid, "ann", 25 * H, T0, 400)
    assert "has ended" in refused(ledger, sid, "ann", H, T0 + H, 409)
    (queued,) = ledger.open_sessions(
        [HoldRequest("lab", "ben", "q", "h100.1g.10gb", H, T0, deferred=True)]
    )
    assert "waits in the queue" in refused(ledger, queued.id, "ben", H, T0, 409)
    s, _ = ledger.extend(sid, None, H, T0)  # staff: anyone's
    assert s.end_at == T0 + 2 * H


def test_the_session_keeps_its_prices_when_they_change(ledger):
    project(ledger, "lab")
    ledger.add_member("staff", "lab", "ann", T0)
    sid = ledger.open_session("lab", "ann", "", "h100.1g.10gb", H, T0).id
    ledger.set_price("staff", "h100.1g.10gb", 4 * PRICE, T0 + H, T0 + timedelta(minutes=1))
    s, _ = ledger.extend(sid, "ann", H, T0 + timedelta(minutes=2))
    assert s.hold_list_cents == 2 * PRICE  # held at the price it started with
    ledger.meter(T0 + 2 * H)
    assert row(ledger, sid).charged_list_cents == 2 * PRICE


def test_the_warnings_come_again_after_an_extension(ledger):
    project(ledger, "lab")
    ledger.add_member("staff", "lab", "ann", T0)
    sid = ledger.open_session("lab", "ann", "", "h100.1g.10gb", H, T0).id
    first = ledger.meter(T0 + 55 * timedelta(minutes=1)).warnings
    assert {level for _, level, _ in first} == {"budget-80", "end-10min"}
    ledger.extend(sid, "ann", H, T0 + 55 * timedelta(minutes=1))
    assert ledger.meter(T0 + 56 * timedelta(minutes=1)).warnings == []  # 47% of the new budget
    again = ledger.meter(T0 + 115 * timedelta(minutes=1)).warnings
    assert {level for _, level, _ in again} == {"budget-80", "budget-95", "end-10min"}
    assert all("03:00 UTC" in message for _, _, message in again)
    with ledger.session() as db:
        rounds = db.execute(
            select(SessionWarning.level, SessionWarning.round).order_by(SessionWarning.id)
        ).all()
    assert [r for _, r in rounds] == [0, 0, 1, 1, 1]
