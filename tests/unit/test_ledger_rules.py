"""The ledger's rules one by one: who may start what, when, and what is refused, in words."""

from datetime import timedelta

import pytest
from sqlalchemy import text

from slicehub.common.money import subsidy_of
from slicehub.quota.errors import LedgerError
from slicehub.quota.hold import HoldRequest
from slicehub.quota.pricing import PricePoint, PriceSchedule, split_increment
from tests.unit.rules_ledger import T0, H, project


def refused(fn, *args, status=None):
    with pytest.raises(LedgerError) as e:
        fn(*args)
    if status:
        assert e.value.status == status
    return str(e.value)


def test_course_students_start_only_inside_a_window_which_also_ends_the_session(ledger):
    project(ledger, "ml101", is_course=True, member_cap_cents=20_00)
    ledger.add_member("staff", "ml101", "stu1", T0, role="student")
    ledger.add_member("staff", "ml101", "prof", T0, role="instructor")
    ledger.add_class_window("staff", "ml101", T0 + 2 * H, T0 + 5 * H, T0)
    msg = refused(ledger.open_session, "ml101", "stu1", "", "h100.1g.10gb", H, T0 + H, status=403)
    assert "outside its class windows" in msg and "2026-11-02 03:00" in msg
    s = ledger.open_session("ml101", "stu1", "", "h100.1g.10gb", 4 * H, T0 + 4 * H)
    assert s.end_at == T0 + 5 * H  # the class ends, so does the session
    ledger.open_session(
        "ml101", "prof", "", "h100.1g.10gb", H, T0 + H
    )  # staff of the course: any time


def test_member_caps_concurrency_validity_and_allowed_types(ledger):
    project(ledger, "lab", allowed_slice_types=["h100.1g.10gb"], max_concurrent_sessions=2)
    ledger.add_member("staff", "lab", "ann", T0, cap_cents=10_00)
    ledger.add_member("staff", "lab", "ben", T0)
    msg = refused(ledger.open_session, "lab", "ann", "", "h100.3g.40gb", H, T0, status=403)
    assert msg == "Project lab may not use h100.3g.40gb; it may use h100.1g.10gb."
    msg = refused(ledger.open_session, "lab", "ann", "", "h100.1g.10gb", 2 * H, T0, status=402)
    assert msg.startswith("ann has HK$10.00 left of a HK$10.00 cap in lab")
    ledger.open_session("lab", "ben", "a", "h100.1g.10gb", H, T0)
    ledger.open_session("lab", "ben", "b", "h100.1g.10gb", H, T0)
    msg = refused(ledger.open_session, "lab", "ann", "", "h100.1g.10gb", H, T0, status=409)
    assert "already runs 2 sessions" in msg
    msg = refused(ledger.open_session, "lab", "ben", "c", "h100.1g.10gb", H, T0 + 40 * 24 * H)
    assert "cannot start sessions now" in msg
    assert "carl is not a member" in refused(
        ledger.open_session, "lab", "carl", "", "h100.1g.10gb", H, T0, status=403
    )
    assert "no project 'nope'" in refused(
        ledger.open_session, "nope", "ann", "", "h100.1g.10gb", H, T0, status=404
    )


def test_full_price_goes_on_past_the_subsidy_up_to_the_credit_limit(ledger):
    project(ledger, "startup", policy="full_price", credit_limit_cents=30_00)
    ledger.add_member("staff", "startup", "eve", T0)
    # HK$100 of subsidy; 3g.40gb costs HK$30/h, subsidy HK$21/h: 4 h use HK$84 of subsidy
    ledger.open_session("startup", "eve", "a", "h100.3g.40gb", 4 * H, T0)
    # 2 h more need HK$42 of subsidy: HK$16 is left, HK$26 goes on the credit (limit HK$30)
    s = ledger.open_session("startup", "eve", "b", "h100.3g.40gb", 2 * H, T0)
    assert (s.hold_subsidy_cents, s.hold_credit_cents) == (16_00, 26_00)
    msg = refused(ledger.open_session, "startup", "eve", "c", "h100.3g.40gb", H, T0, status=402)
    assert "HK$0.00 of subsidy and HK$4.00 of credit left" in msg
    ledger.meter(T0 + 2 * H)
    b = ledger.close_session(s.id, T0 + 2 * H)
    assert b.charged_list_cents == 60_00 and b.charged_subsidy_cents == 16_00  # rest is co-pay
    assert ledger.balance("startup", T0 + 2 * H).credit_used_cents == 26_00


def test_a_stop_policy_project_refuses_with_what_is_left_and_what_is_needed(ledger):
    project(ledger, "ai-lab")
    ledger.add_member("staff", "ai-lab", "amy", T0)
    ledger.open_session("ai-lab", "amy", "a", "h100.3g.40gb", 4 * H, T0)  # HK$84 of HK$100
    assert refused(ledger.open_session, "ai-lab", "amy", "b", "h100.3g.40gb", H, T0) == (
        "Project ai-lab has HK$16.00 of subsidy left; a h100.3g.40gb slice for 1 h needs "
        "HK$21.00 of subsidy (HK$30.00 at list price)."
    )


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda lg: lg.add_grant("staff", "ai-lab", -5, T0, T0 + H, T0), "more than zero"),
        (lambda lg: lg.add_grant("staff", "ai-lab", 10**15, T0, T0 + H, T0), "absurd"),
        (lambda lg: lg.add_grant("staff", "ai-lab", 1.5, T0, T0 + H, T0), "whole number"),
        (lambda lg: lg.add_grant("staff", "ai-lab", 100, T0 + H, T0, T0), "ends before it starts"),
        (lambda lg: lg.add_grant("staff", "zz", 100, T0, T0 + H, T0), "no project"),
        (lambda lg: lg.add_member("staff", "ai-lab", "x;rm", T0), "not a user name"),
        (lambda lg: lg.set_price("staff", "cpu", 100, T0 - H, T0), "in the past"),
        (lambda lg: lg.add_scheme("staff", "t", 12000, 0, T0), "between 0% and 100%"),
        (lambda lg: lg.add_class_window("staff", "ai-lab", T0, T0 + H, T0), "not a course"),
    ],
)
def test_bad_admin_input_is_refused_and_writes_nothing(ledger, call, words):
    project(ledger, "ai-lab")
    with ledger.session() as db:
        before = [
            r
            for t in ("grants", "members", "prices", "schemes", "audit_log")
            for r in db.execute(text(f"SELECT * FROM {t}")).all()
        ]
    with pytest.raises(LedgerError, match=words):
        call(ledger)
    with ledger.session() as db:
        after = [
            r
            for t in ("grants", "members", "prices", "schemes", "audit_log")
            for r in db.execute(text(f"SELECT * FROM {t}")).all()
        ]
    assert before == after


def test_piecewise_price_and_the_rounding_rule():
    sched = PriceSchedule([PricePoint(T0, 1000), PricePoint(T0 + H, 1300)])
    assert sched.cost(T0 + H / 2, T0 + 3 * H / 2) == 500 + 650
    assert sched.cost(T0, T0 + timedelta(seconds=1)) == 0  # 0.28 cents: rounded down
    assert subsidy_of(1001, 7000) == 700  # 700.7 rounded down; co-pay gets the rest
    part = split_increment(1000, 1001, 7000, subsidy_room=10**6)
    assert (part.list_cents, part.subsidy_cents, part.copay_cents) == (1, 0, 1)
    assert sched.end_for_budget(T0, 1650, T0 + 10 * H) == T0 + H + timedelta(seconds=1800)


def test_queued_time_is_not_charged_a_deferred_hold_is_metered_from_its_begin(ledger):
    project(ledger, "lab")
    ledger.add_member("staff", "lab", "ann", T0)
    s = ledger.open_sessions([HoldRequest("lab", "ann", "", "h100.1g.10gb", 2 * H, T0, True)])[0]
    assert not s.begun
    assert ledger.meter(T0 + H).charges == 0  # 1 h in the queue: nothing charged
    assert ledger.balance("lab", T0 + H).subsidy_held_cents == 14_00  # but the money is held
    begun = ledger.begin(s.id, T0 + H)
    assert (begun.started_at, begun.end_at) == (T0 + H, T0 + 3 * H)  # the full 2 h, from now
    assert ledger.begin(s.id, T0 + 2 * H).started_at == T0 + H  # a repeat changes nothing
    ledger.meter(T0 + 2 * H)
    closed = ledger.close_session(s.id, T0 + 2 * H)
    assert closed.charged_list_cents == 10_00  # one hour at HK$10.00, none of the queue


def test_a_deferred_hold_that_never_began_costs_nothing(ledger):
    project(ledger, "lab")
    ledger.add_member("staff", "lab", "ann", T0)
    s = ledger.open_sessions([HoldRequest("lab", "ann", "", "h100.1g.10gb", H, T0, True)])[0]
    closed = ledger.close_session(s.id, T0 + H / 2)  # cancelled while queued
    assert (closed.status, closed.charged_list_cents) == ("stopped", 0)
    assert ledger.balance("lab", T0 + H).subsidy_left_cents == 100_00


def test_a_begin_after_a_price_rise_ends_the_session_where_the_hold_runs_out(ledger):
    project(ledger, "lab")
    ledger.add_member("staff", "lab", "ann", T0)
    ledger.set_price("staff", "h100.1g.10gb", 2000, T0 + 2 * H, T0)  # doubles in 2 h
    s = ledger.open_sessions([HoldRequest("lab", "ann", "", "h100.1g.10gb", 2 * H, T0, True)])[0]
    assert s.hold_list_cents == 20_00
    begun = ledger.begin(s.id, T0 + H)  # 1 h at HK$10 + then HK$20/h: HK$20 lasts 1.5 h
    assert begun.end_at == T0 + H + 1.5 * H
    ledger.meter(begun.end_at)
    assert ledger.close_session(s.id, begun.end_at).charged_list_cents == 20_00
