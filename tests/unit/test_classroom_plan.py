"""The classroom service's decisions (slicehub.classroom.plan), on plain data: which students'
servers to pre-warm and which unclaimed ones to stop, from the quota service's plan and the
hub's view; a property test that it never starts a second server for anyone, never starts
outside the pre-warm phases and never stops a claimed or a student's own server."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from slicehub.classroom.plan import ClassWindow, WarmServer, decide, server_options

START = datetime(2026, 12, 4, 1, 0, tzinfo=UTC)
END = START + timedelta(hours=2)
STUDENTS = ("stu1", "stu2", "stu3", "stu4")


def window(phase="warming", servers=(), students=STUDENTS) -> ClassWindow:
    return ClassWindow(
        "ml101", 7, START, END, START - timedelta(minutes=5), phase, "h100.1g.10gb",
        tuple(students), tuple(servers),
    )  # fmt: skip


def test_the_plan_reads_the_quota_services_answer():
    raw = {
        "course": "ml101",
        "window": 7,
        "starts_at": START.isoformat(),
        "ends_at": END.isoformat(),
        "prewarm_from": (START - timedelta(minutes=5)).isoformat(),
        "claim_until": (START + timedelta(minutes=15)).isoformat(),
        "phase": "warming",
        "slice_type": "h100.1g.10gb",
        "paid_by": "ml101",
        "students": ["stu1"],
        "servers": [
            {"user": "stu1", "server_name": "", "session": 3, "state": "claimed", "stop_reason": ""}
        ],
        "stop_unclaimed": False,
    }
    w = ClassWindow.from_plan(raw)
    assert w.servers == (WarmServer("stu1", "", 3, "claimed"),) and w.students == ("stu1",)


def test_who_is_pre_warmed_and_who_is_made_a_hub_user_first():
    hub = {
        "stu1": {"": "ready"},  # started their own: left alone
        "stu2": {},  # a hub user with no server
        "stu3": {"": "stopped"},
        # stu4 never signed in: not a hub user yet
    }
    moves = decide(window(servers=[WarmServer("stu3", "", 9, "stopped")]), hub)
    assert moves.start == ("stu2", "stu4")  # stu3's pre-warmed server stopped: not again
    assert moves.add_users == ("stu4",)
    assert moves.stop == ()


def test_the_unclaimed_are_stopped_once_the_claim_time_is_over():
    servers = [
        WarmServer("stu1", "", 1, "claimed"),
        WarmServer("stu2", "", 2, "pre-warmed"),
        WarmServer("stu3", "", 3, "stopped"),
    ]
    moves = decide(window("closing", servers), {})
    assert moves.stop == (WarmServer("stu2", "", 2, "pre-warmed"),)
    assert moves.start == () == decide(window("before"), {}).start


def test_a_pre_warmed_start_asks_for_the_window_within_the_sites_limits():
    now = START - timedelta(minutes=5)
    options = server_options(window(), now, 15, 12 * 60)
    assert options == {
        "project": "ml101",
        "slice_type": "h100.1g.10gb",
        "duration_hours": 125 / 60,
        "prewarm_window": 7,
    }
    assert server_options(window(), now, 15, 60)["duration_hours"] == 1.0
    late = END - timedelta(minutes=2)
    assert server_options(window(), late, 15, 720)["duration_hours"] == 0.25


STATES = st.sampled_from(["ready", "pending", "stopped", None])
WARM = st.sampled_from(["pre-warmed", "claimed", "stopped", None])


@given(
    phase=st.sampled_from(["before", "warming", "claimable", "closing", "over"]),
    hub_states=st.lists(STATES, min_size=4, max_size=4),
    warm_states=st.lists(WARM, min_size=4, max_size=4),
)
def test_never_a_second_server_never_outside_the_lead_never_a_claimed_one_stopped(
    phase, hub_states, warm_states
):
    hub = {u: ({} if s is None else {"": s}) for u, s in zip(STUDENTS, hub_states, strict=True)}
    del hub["stu4"]  # one student is not a hub user
    servers = [
        WarmServer(u, "", i, s)
        for i, (u, s) in enumerate(zip(STUDENTS, warm_states, strict=True))
        if s is not None
    ]
    moves = decide(window(phase, servers), hub)
    warmed = {s.user for s in servers}
    for name in moves.start:
        assert phase in ("warming", "claimable")
        assert name not in warmed
        assert hub.get(name, {}).get("") not in ("ready", "pending")
    assert set(moves.add_users) <= set(moves.start) and "stu4" not in hub
    assert all(u not in hub for u in moves.add_users)
    for s in moves.stop:
        assert phase == "closing" and s.state == "pre-warmed"
    if phase not in ("warming", "claimable"):
        assert moves.start == ()
