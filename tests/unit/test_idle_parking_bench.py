"""The idle-parking benchmark's simulation (bench/idle_parking.py): each policy stops a
hand-made session when it should, and the accounting (held, idle, subsidy) is right to the cent."""

import random
import sys
from functools import partial
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
import idle_parking as bench  # noqa: E402

week = bench.week

MIN, HOUR = 60, 3600
PRICE = 1650  # h100.3g.40gb, HK$16.50 per hour


def silent_run_then_gone(tab_awake: bool) -> week.Session:
    """Works 0-1 h, starts a silent GPU run at 50 min that ends at 3 h, leaves at 1 h; the
    session was chosen for 4 h."""
    s = week.Session(
        1, "research", "h100.3g.40gb", PRICE, week.RESEARCH_POLICY, 0, 4 * HOUR,
        interact=[(0, HOUR)], polling=[(0, HOUR)], away=[(HOUR, 4 * HOUR, "after leaving")],
        work=[week.Work(50 * MIN, 3 * HOUR, "silent")],
    )  # fmt: skip
    if tab_awake:
        s.polling.append((HOUR, 4 * HOUR))
    return s


def test_no_culling_holds_to_the_chosen_end_and_charges_idle_to_the_cent():
    s = silent_run_then_gone(tab_awake=False)
    run = bench.replay(s, bench.no_culling)
    totals = bench.account([s], [run])
    assert run.held == [(0, 4 * HOUR)] and run.stops == []
    assert totals.idle_s == HOUR  # 3 h - 4 h: nothing works, nobody there
    assert totals.subsidy == 4 * PRICE * 7000 // 10_000  # HK$46.20
    assert totals.idle_subsidy == PRICE * 7000 // 10_000 == 1155
    assert totals.idle_by_cause["after leaving"] == 1155


def test_the_stock_culler_kills_a_silent_run_when_the_tab_is_closed():
    s = silent_run_then_gone(tab_awake=False)
    run = bench.replay(s, bench.stock_culler)
    # last activity 1 h (reported at 1 h); the first run an hour later is at 2 h
    assert run.held == [(0, 2 * HOUR)]
    assert [(x.at, x.busy, x.present) for x in run.stops] == [(2 * HOUR, True, False)]
    assert run.lost_s == HOUR
    totals = bench.account([s], [run])
    assert (totals.busy_stops, totals.idle_s) == (1, 0)


def test_the_stock_culler_never_sees_an_open_tab_idle():
    s = silent_run_then_gone(tab_awake=True)
    run = bench.replay(s, bench.stock_culler)
    assert run.held == [(0, 4 * HOUR)] and run.stops == []
    assert bench.account([s], [run]).idle_s == HOUR


@pytest.mark.parametrize("tab_awake", [False, True])
def test_parking_waits_for_the_run_then_parks_at_the_window(tab_awake):
    s = silent_run_then_gone(tab_awake)
    run = bench.replay(s, bench.parking, random.Random(0))
    park_at = 3 * HOUR + 30 * MIN
    assert run.held == [(0, park_at)]
    assert [(x.at, x.busy) for x in run.stops] == [(park_at, False)]
    assert run.warnings == 1 and run.lost_s == 0
    totals = bench.account([s], [run])
    assert totals.idle_s == 30 * MIN
    assert totals.idle_subsidy == PRICE * 30 // 60 * 7000 // 10_000


def reading_then_typing() -> week.Session:
    """At the screen reading for 40 min without touching it, then typing until the 1 h end."""
    return week.Session(
        2, "research", "h100.3g.40gb", PRICE, week.RESEARCH_POLICY, 0, HOUR,
        passive=[(0, 40 * MIN)], interact=[(40 * MIN, HOUR)], polling=[(0, HOUR)],
    )  # fmt: skip


def keep(probability: float):
    return partial(bench.parking, keep=probability)


def test_a_user_at_the_screen_who_clicks_keep_is_not_parked():
    run = bench.replay(reading_then_typing(), keep(1.0), random.Random(0))
    assert run.held == [(0, HOUR)] and run.stops == []
    assert run.warnings == 1 and len(run.keeps_at) == 1
    assert 25 * MIN + 10 <= run.keeps_at[0][0] <= 25 * MIN + 180


def test_a_user_who_misses_the_warning_is_parked_and_starts_again():
    s = reading_then_typing()
    run = bench.replay(s, keep(0.0), random.Random(0))
    assert run.held == [(0, 30 * MIN), (40 * MIN, HOUR)]
    assert [(x.at, x.busy, x.present) for x in run.stops] == [(30 * MIN, False, True)]
    totals = bench.account([s], [run])
    assert (totals.restarts, totals.present_stops, totals.idle_s) == (1, 1, 0)


def test_a_day_is_deterministic_and_passes_the_benchmarks_own_checks():
    sessions = week.make_week(seed=3, days=1)
    assert sessions == week.make_week(seed=3, days=1)
    results = bench.simulate(sessions, seed=3, keep=0.9)
    bench.self_checks(sessions, results)
    assert results[bench.PARKING][1].busy_stops == 0
    idle = [results[name][1].idle_subsidy for name in (bench.NO_CULLING, bench.PARKING)]
    assert idle[1] < idle[0]


def test_other_windows_reuse_the_week_and_shorter_windows_spend_less():
    sessions = week.make_week(seed=3, days=1)
    results = bench.simulate(sessions, seed=3, keep=0.9)
    windows = ((30, 15, 5), (10, 5, 5), (5, 5, 2))
    variants = bench.sensitivity(sessions, results, seed=3, keep=0.9, windows=windows)
    bench.self_checks(sessions, results, variants)  # the default windows reproduce the headline
    assert variants[0].totals == results[bench.PARKING][1]
    # a 5-min course window takes the site's rule: the 5-min lead is cut to 4 min
    assert variants[1].course.warning.total_seconds() == 4 * MIN
    assert variants[2].research.warning.total_seconds() == 2 * MIN
    floors = [v.floor for v in variants]
    idle = [v.totals.idle_subsidy for v in variants]
    assert floors == sorted(floors, reverse=True) and floors[-1] < floors[0]
    assert idle == sorted(idle, reverse=True) and all(v.totals.busy_stops == 0 for v in variants)
    warnings = [v.totals.warnings for v in variants]
    assert warnings[1] > warnings[0]
