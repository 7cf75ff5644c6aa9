"""The parking rules (slicehub.quota.parking): never park a session with any activity in the
window; always park one idle past window + check; warn first, at least one check before."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slicehub.quota.parking import (
    KEEP,
    PARK,
    WARN,
    ParkingPolicy,
    PolicyError,
    Reading,
    decide,
)

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
POLICY = ParkingPolicy(window=30 * MIN, warning=5 * MIN, check=MIN)


def test_the_rules_in_order_keep_warn_park():
    start = T0
    d = decide(POLICY, Reading(idle=24 * MIN), start, None, T0 + 24 * MIN)
    assert (d.action, d.warned, d.park_at) == (KEEP, False, T0 + 30 * MIN)
    d = decide(POLICY, Reading(idle=25 * MIN), start, None, T0 + 25 * MIN)
    assert (d.action, d.warned, d.park_at) == (WARN, True, T0 + 30 * MIN)
    warned = T0 + 25 * MIN
    d = decide(POLICY, Reading(idle=29 * MIN), start, warned, T0 + 29 * MIN)
    assert (d.action, d.warned) == (KEEP, True)
    d = decide(POLICY, Reading(idle=30 * MIN), start, warned, T0 + 30 * MIN)
    assert (d.action, d.idle, d.idle_since) == (PARK, 30 * MIN, T0)


def test_a_busy_session_is_never_idle_however_long_the_silence():
    d = decide(POLICY, Reading(idle=600 * MIN, busy=("kernel a.ipynb is busy",)), T0, T0, T0)
    assert (d.action, d.idle, d.idle_since, d.park_at) == (KEEP, timedelta(0), None, None)


def test_activity_after_the_warning_withdraws_it():
    warned = T0 + 25 * MIN
    # "Keep working" at 27 min: 3 minutes idle at 30
    d = decide(POLICY, Reading(idle=3 * MIN), T0, warned, T0 + 30 * MIN)
    assert (d.action, d.warned, d.park_at) == (KEEP, False, T0 + 57 * MIN)


def test_a_late_warning_still_comes_one_check_before_parking():
    # the culler was down: first reading already 40 minutes idle
    now = T0 + 40 * MIN
    d = decide(POLICY, Reading(idle=40 * MIN), T0, None, now)
    assert (d.action, d.park_at) == (WARN, now + MIN)
    assert decide(POLICY, Reading(idle=41 * MIN), T0, now, now + MIN).action == PARK


def test_idle_is_counted_from_the_start_at_the_latest():
    # a server whose clock says an hour idle, started 10 minutes ago by the ledger's clock
    d = decide(POLICY, Reading(idle=60 * MIN), T0, None, T0 + 10 * MIN)
    assert (d.action, d.idle, d.idle_since) == (KEEP, 10 * MIN, T0)


def test_an_opted_out_project_is_never_parked_but_its_idle_time_is_known():
    policy = ParkingPolicy(30 * MIN, 5 * MIN, MIN, enabled=False)
    d = decide(policy, Reading(idle=300 * MIN), T0, T0, T0 + 300 * MIN)
    assert (d.action, d.idle, d.park_at) == (KEEP, 300 * MIN, None)


@pytest.mark.parametrize(
    "window, warning, check, words",
    [
        (30, 5, 10, "at least the check interval"),
        (5, 5, 1, "longer than the warning lead"),
        (30, 5, 0, "longer than 0 seconds"),
    ],
)
def test_a_policy_that_cannot_work_is_refused_with_the_reason(window, warning, check, words):
    with pytest.raises(PolicyError, match=words):
        ParkingPolicy(window * MIN, warning * MIN, check * MIN)


policies = st.builds(
    lambda check, lead, extra: ParkingPolicy(
        window=timedelta(seconds=check * lead + extra),
        warning=timedelta(seconds=check * lead),
        check=timedelta(seconds=check),
    ),
    st.integers(10, 600),
    st.integers(1, 10),
    st.integers(1, 7200),
)


@settings(max_examples=300, deadline=None)
@given(
    policy=policies,
    phase=st.floats(0, 1),
    # moments of activity (seconds after the start) and stretches of busy work
    touches=st.lists(st.integers(0, 40_000), max_size=12),
    busy=st.lists(st.tuples(st.integers(0, 40_000), st.integers(1, 20_000)), max_size=4),
)
def test_checked_every_interval_a_session_is_parked_exactly_when_it_should_be(
    policy, phase, touches, busy
):
    """Replays a session's life with a check every `check` (first one at a random phase):
    never parked while anything happened in the last window; once idle for window + check,
    parked; warned at an earlier check of the same idle stretch."""
    start = T0
    horizon = 60_000
    check = policy.check.total_seconds()
    warned_at = None
    t = phase * check
    while t < horizon:
        now = start + timedelta(seconds=t)
        working = [f"busy {a}" for a, n in busy if a <= t < a + n]
        ends = [min(a + n, t) for a, n in busy if a <= t]
        last = max([0] + [x for x in touches if x <= t] + ends)
        reading = Reading(idle=timedelta(seconds=t - last), busy=tuple(working))
        d = decide(policy, reading, start, warned_at, now)
        idle = 0 if working else t - last
        if d.action == PARK:
            assert not working and idle >= policy.window.total_seconds()
            assert warned_at is not None and warned_at < now
            assert (warned_at - start).total_seconds() >= last  # in this idle stretch
            return
        # idle past window + check at this check: it must have been parked
        assert idle < policy.window.total_seconds() + check
        if d.action == WARN:
            assert idle >= (policy.window - policy.warning).total_seconds()
            warned_at = now
        t += check
