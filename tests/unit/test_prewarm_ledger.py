"""Pre-warming in the ledger (slicehub.quota.prewarm, prewarm_ledger): a course's setting, a
pre-warmed server's hold on the course's payer (never on the student's cap), the claim that
hands it to the student at a second's notice and to the cent, refusals, the unclaimed, the plan
the classroom service follows; a property test that pre-warm time and student time add up to
the server's whole life, each second charged once, to the right payer."""

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slicehub.common.money import subsidy_of
from slicehub.quota.errors import LedgerError
from slicehub.quota.hold import HoldRequest
from slicehub.quota.models import Session
from slicehub.quota.prewarm import CLAIMABLE, CLOSING, WARMING
from slicehub.quota.store import find_project
from tests.unit.rules_ledger import T0, H, build, project

M = timedelta(minutes=1)
START, END = T0 + 2 * H, T0 + 4 * H  # the class window
COURSE = "ml101"
PRICE = 1000  # h100.1g.10gb, cents an hour


def course(lg, cap=20_00, students=("stu1", "stu2", "stu3"), sessions=5, grant=100_00, **prewarm):
    project(
        lg,
        COURSE,
        grant=grant,
        is_course=True,
        member_cap_cents=cap,
        allowed_slice_types=["h100.1g.10gb"],
        max_concurrent_sessions=sessions,
    )
    for name in students:
        lg.add_member("staff", COURSE, name, T0, role="student")
    window = lg.add_class_window("staff", COURSE, START, END, T0)
    spec = {"lead_minutes": 10, "claim_minutes": 15, **prewarm}
    lg.set_prewarm("staff", COURSE, T0, **spec)
    return window.id


def warm(lg, window, user="stu1", at=START - 5 * M, project_slug=COURSE, slice_type=None):
    request = HoldRequest(
        project_slug, user, "", slice_type or "h100.1g.10gb", H, at, prewarm_window=window
    )
    (out,) = lg.open_sessions([request])
    if isinstance(out, LedgerError):
        raise out
    return out


def row(lg, session_id) -> Session:
    with lg.session() as db:
        return db.get(Session, session_id)


def drawn(lg, username) -> tuple[int, int]:
    """What `username` drew from the course's subsidy: (charged, held)."""
    with lg.session() as db:
        return lg.member_draw(db, find_project(db, COURSE), username)


def test_a_course_pre_warms_on_its_only_slice_type_and_the_setting_is_checked(ledger):
    window = course(ledger)
    plan = ledger.class_plan(START - 20 * M)
    assert [(p["course"], p["window"], p["slice_type"], p["paid_by"]) for p in plan] == [
        (COURSE, window, "h100.1g.10gb", COURSE)
    ]
    for bad, words in (
        ({"lead_minutes": 0}, "lead is from 1 to 120"),
        ({"claim_minutes": 999}, "claim time is from 1 to 240"),
        ({"seats": 0}, "seats are from 1"),
        ({"slice_type": "h100.3g.40gb"}, "may not use h100.3g.40gb"),
        ({"slice_type": "$(reboot)"}, "not a slice type name"),
        ({"paid_by": "nowhere"}, "no project 'nowhere'"),
    ):
        spec = {"lead_minutes": 10, "claim_minutes": 15, **bad}
        with pytest.raises(LedgerError, match=words):
            ledger.set_prewarm("staff", COURSE, T0, **spec)
    project(ledger, "research")
    with pytest.raises(LedgerError, match="only courses pre-warm"):
        ledger.set_prewarm("staff", "research", T0, 10, 15)


def test_a_pre_warmed_hold_is_the_courses_not_the_students_cap(ledger):
    window = course(ledger, cap=1_00)  # a cap far below an hour's subsidy (HK$7.00)
    s = warm(ledger, window)
    assert s.prewarm_window_id == window and s.end_at == END  # it lasts the class
    assert s.hold_list_cents == PRICE * 125 // 60  # 5 min before + 2 h of class
    # the student's cap is untouched: their own session could still start (in the window)
    assert drawn(ledger, "stu1") == (0, 0)


def test_only_roster_students_only_from_the_lead_and_only_the_course_type(ledger):
    window = course(ledger)
    ledger.add_member("staff", COURSE, "prof", T0, role="instructor")
    for kwargs, words in (
        ({"user": "prof"}, "not a student on the roster"),
        ({"user": "stranger"}, "not a student on the roster"),
        ({"at": START - 11 * M}, "pre-warmed from"),
        ({"at": START + 15 * M}, "pre-warmed from"),  # after the claim time: no new ones
        ({"slice_type": "h100.3g.40gb"}, "pre-warms h100.1g.10gb slices"),
    ):
        with pytest.raises(LedgerError, match=words):
            warm(ledger, window, **kwargs)
    with pytest.raises(LedgerError, match="no such class window"):
        warm(ledger, window + 99)
    ledger.clear_prewarm("staff", COURSE, T0)
    with pytest.raises(LedgerError, match="does not pre-warm"):
        warm(ledger, window)


def test_a_claim_hands_the_server_to_the_student_to_the_second_and_the_cent(ledger):
    window = course(ledger)
    s = warm(ledger, window, at=START - 10 * M)
    with pytest.raises(LedgerError, match="Your class starts at") as early:
        ledger.claim(s.id, "stu1", START - M)
    assert early.value.status == 425
    with pytest.raises(LedgerError, match="no pre-warmed session"):
        ledger.claim(s.id, "stu2", START)  # another student's server
    at = START + 3 * M
    mine = ledger.claim(s.id, "stu1", at)
    warm_row, own = row(ledger, s.id), row(ledger, mine.id)
    assert (warm_row.status, warm_row.stop_reason, warm_row.handed_to) == (
        "stopped",
        "claimed",
        mine.id,
    )
    assert warm_row.charged_list_cents == PRICE * 13 // 60  # 13 minutes before the claim
    assert (own.username, own.started_at, own.end_at, own.prewarm_window_id) == (
        "stu1",
        at,
        END,
        None,
    )
    assert own.hold_subsidy_cents == subsidy_of(own.hold_list_cents, 7000)
    assert drawn(ledger, "stu1") == (0, own.hold_subsidy_cents)
    # the server's spawner and kernels know the pre-warmed id: it stands for the student's now
    assert ledger.close_session(s.id, at + H).id == mine.id
    assert row(ledger, mine.id).stop_reason == "stopped"
    assert row(ledger, mine.id).charged_list_cents == PRICE  # one hour, the student's
    with pytest.raises(LedgerError, match="claimed already"):
        ledger.claim(s.id, "stu1", at + 2 * H)


def test_a_student_whose_cap_does_not_cover_the_class_gets_what_it_pays_for(ledger):
    window = course(ledger, cap=3_50)  # HK$3.50 of subsidy: 30 minutes at HK$7.00 an hour
    s = warm(ledger, window)
    mine = ledger.claim(s.id, "stu1", START)
    assert (mine.started_at, mine.end_at) == (START, START + 30 * M)
    assert mine.hold_subsidy_cents == 3_50


def test_a_claim_the_student_cannot_pay_stops_the_course_paying(ledger):
    window = course(ledger, cap=50)  # 4 minutes: less than the least a claim holds
    s = warm(ledger, window)
    with pytest.raises(LedgerError, match=r"left of a HK\$0\.50 cap") as refused:
        ledger.claim(s.id, "stu1", START + M)
    assert refused.value.status == 402
    assert (row(ledger, s.id).status, row(ledger, s.id).stop_reason) == ("stopped", "claim-refused")


def test_unclaimed_servers_are_released_as_waste_and_the_plan_says_what_to_do(ledger):
    window = course(ledger, seats=2)
    a = warm(ledger, window, "stu1", at=START - 10 * M)
    b = warm(ledger, window, "stu2", at=START - 10 * M)
    ledger.claim(a.id, "stu1", START + M)
    phases = {
        t: ledger.class_plan(t) for t in (START - 20 * M, START - 5 * M, START, START + 15 * M)
    }
    assert [p[0]["phase"] if p else None for p in phases.values()] == [
        "before",
        WARMING,
        CLAIMABLE,
        CLOSING,
    ]
    plan = phases[START + 15 * M][0]
    assert plan["students"] == ["stu1", "stu2"]  # the seats: the first two on the roster
    assert {s["user"]: s["state"] for s in plan["servers"]} == {
        "stu1": "claimed",
        "stu2": "pre-warmed",
    }
    assert plan["stop_unclaimed"]
    gone = ledger.stop_unclaimed(b.id, START + 15 * M)
    assert (gone.stop_reason, gone.charged_list_cents) == ("unclaimed", PRICE * 25 // 60)
    assert ledger.stop_unclaimed(b.id, START + 20 * M).charged_list_cents == PRICE * 25 // 60
    assert ledger.class_plan(END) == []


def test_a_centre_project_can_pay_for_pre_warming(ledger):
    project(ledger, "centre-classes", grant=500_00)
    window = course(ledger, paid_by="centre-classes")
    s = warm(ledger, window, at=START - 10 * M)
    with ledger.session() as db:
        assert row(ledger, s.id).project_id == find_project(db, "centre-classes").id
    ledger.claim(s.id, "stu1", START)
    centre, own = ledger.balance("centre-classes", START), ledger.balance(COURSE, START)
    ten_minutes = PRICE * 10 // 60
    assert centre.subsidy_charged_cents + centre.copay_charged_cents == ten_minutes
    assert own.subsidy_charged_cents == own.copay_charged_cents == 0
    with pytest.raises(LedgerError, match="another course"):
        project(ledger, "other-course", is_course=True)
        ledger.set_prewarm("staff", COURSE, T0, 10, 15, paid_by="other-course")


@settings(max_examples=40, deadline=None)
@given(
    warm_at=st.integers(0, 10 * 60),  # seconds into the lead
    claim_after=st.integers(0, 3 * 60 * 60),  # seconds after the window opens (past it: none)
    stop_after=st.integers(1, 3 * 60 * 60),
)
def test_every_second_of_a_pre_warmed_server_is_charged_once_to_the_right_payer(
    tmp_path_factory, warm_at, claim_after, stop_after
):
    lg = build(f"sqlite:///{tmp_path_factory.mktemp('p') / 'l.sqlite'}")
    try:
        window = course(lg, cap=None)
        began = START - 10 * M + timedelta(seconds=warm_at)
        s = warm(lg, window, at=began)
        claim_at = START + timedelta(seconds=claim_after)
        claimed = claim_at < END
        if claimed:
            mine = lg.claim(s.id, "stu1", claim_at)
        stop = min(claim_at if claimed else START, END) + timedelta(seconds=stop_after)
        lg.close_session(s.id, stop)
        with lg.session() as db:
            rows = db.query(Session).order_by(Session.id).all()
        seconds = sum((r.stopped_at - r.started_at).total_seconds() for r in rows)
        assert seconds == (min(stop, END) - began).total_seconds()  # the server's whole life
        warmed = rows[0]
        assert warmed.prewarm_window_id == window
        if claimed:
            assert (warmed.stop_reason, warmed.stopped_at) == ("claimed", claim_at)
            assert rows[1].id == mine.id and rows[1].prewarm_window_id is None
        total = sum(r.charged_list_cents for r in rows)
        assert abs(total - PRICE * seconds / 3600) <= len(rows)  # a cent's rounding per row
    finally:
        lg.dispose()
