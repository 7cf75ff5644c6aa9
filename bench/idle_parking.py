"""Idle parking on a simulated week: subsidy spent on idle slices, and busy sessions stopped.

What it measures. One seeded week of sessions at one centre (research sessions and classes; who
is at the screen, what works and when, drawn from the distributions below) is replayed through
three policies, each on the same sessions:

1. no culling: a server runs until its chosen length ends (or its user stops it);
2. the stock jupyterhub-idle-culler at the common 1-hour setting, `--timeout=3600
   --cull-every=600` (the Zero to JupyterHub chart's defaults), the baseline: every 600 s it
   stops a server whose `last_activity` in the hub is an hour old or older. What feeds that
   value is modelled as JupyterHub does it: the single-user server's own last activity (API
   requests, kernel messages) reported to the hub every 300 s (`JUPYTERHUB_ACTIVITY_INTERVAL`,
   and the proxy's traffic at the hub's `last_activity_interval`, also 300 s). A JupyterLab
   tab that is open, visible and awake polls the server's API every 10 s, so such a session is
   never idle to it; a silent busy kernel (a long loop with no output) or Dask tasks running
   behind an idle kernel send nothing, so a session whose tab is closed is culled while it
   works (jupyterhub#1498, jupyterhub-idle-culler#55);
3. Slicehub's parking: `slicehub.quota.parking.decide` every check (60 s) with a `Reading`
   built from the session's true state (busy: a busy kernel, silent or not, the GPU busy, Dask
   tasks running; idle: since the last browser key or click, kernel message, end of work or
   "Keep working"; polling is not activity), the site's policy (30 min window, 5 min warning)
   and courses' own (15 min window). A user at the screen when warned clicks Keep with a stated
   probability; a user away cannot.

Sensitivity: the same parking on the same sessions (and the same draws for Keep) at shorter
windows (`SENSITIVITY`), each with its idle subsidy, its floor (the first window of every idle
stretch, which no window policy can save) and its cost in warnings, users parked at the screen
and restarts.

A server stopped by a policy is started again when its user next interacts, until the session's
chosen end (the spawn time is not modelled); work running when it was stopped is lost and not
rerun. Idle means nothing works and nobody is at the screen (a student listening to a lecture
is there). Money: list price per slice-hour from hub_config/demo-site.toml, charged per second
and rounded down to the cent per server, the scheme pays 70% (`subsidy_of`).

What it does not measure: the hub, the services, the extension's own readings (here the
reading is always right; the GPU signal on real hardware is tested elsewhere), capacity (no
request is refused), a user rerunning lost work, a user choosing a shorter length next time.

    .venv/bin/python bench/idle_parking.py [--seed 1] [--days 7] [--keep 0.9] [--write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _idle_week as week
from _common import check, cpu_model, publish, usable_cores

from slicehub.common.money import format_money, subsidy_of
from slicehub.quota.parking import PARK, WARN, ParkingPolicy, Reading, decide

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "idle_parking.md"
MIN, HOUR, DAY = 60, 3600, 86400
EPOCH = datetime(2026, 11, 30, tzinfo=UTC)  # a Monday, 00:00
SUBSIDY_BP = 7000
GOAL_REDUCTION = 0.80

# The stock culler and what feeds it.
CULL_TIMEOUT, CULL_EVERY, ACTIVITY_REPORT = 3600, 600, 300
P_KEEP_DEFAULT = 0.9  # a user at the screen when warned clicks "Keep working"
KEEP_DELAY_S = (10, 180)

# Other site windows on the same week: (research window, course window, warning lead), minutes.
# The first is the default (the headline). A course window too short for the lead gets the lead
# cut to one check under the window, as the site's own rule does (`SiteParking.policy`).
SENSITIVITY = (
    (30, 15, 5),
    (20, 10, 5),
    (15, 10, 5),
    (10, 5, 5),
    (7, 5, 5),
    (6, 5, 5),
    (5, 5, 4),
    (5, 5, 2),
)


# -- the policies ------------------------------------------------------------------------------


@dataclass
class Stop:
    at: int
    busy: bool  # something worked: a busy kernel, the GPU, Dask tasks
    present: bool  # the user was at the screen


@dataclass
class Run:
    """One session under one policy."""

    held: list[tuple[int, int]] = field(default_factory=list)
    stops: list[Stop] = field(default_factory=list)
    work: list[list] = field(default_factory=list)  # [start, end as it ran, kind]
    lost_s: int = 0
    warnings: int = 0
    warned_present: int = 0  # warnings shown to a user at the screen
    keeps_at: list[tuple[int, int]] = field(default_factory=list)  # Keep clicks (t, t)


def replay(s: week.Session, first_stop, rng: random.Random | None = None) -> Run:
    """Hold the server from its start; `first_stop(s, run, held_from, rng)` says when the policy
    stops it (None: never); the user's next interaction starts it again."""
    run = Run(work=[[w.start, w.end, w.kind] for w in s.work])
    held_from = s.start
    while held_from is not None:
        stop = first_stop(s, run, held_from, rng)
        if stop is None:
            run.held.append((held_from, s.end))
            break
        run.held.append((held_from, stop))
        busy = week.covers(run.work, stop)
        run.stops.append(
            Stop(stop, busy, week.covers(s.interact, stop) or week.covers(s.passive, stop))
        )
        for w in run.work:
            if w[0] <= stop < w[1]:
                run.lost_s += w[1] - stop
                w[1] = stop
        held_from = min((a for a, _b in s.interact if stop < a < s.end), default=None)
    return run


def no_culling(s, run, held_from, rng):
    return None


def stock_culler(s, run, held_from, rng):
    """jupyterhub-idle-culler: at each run, stop if the hub's last_activity is a timeout old."""
    activity = s.interact + s.polling + [(a, b) for a, b, k in run.work if k == "chatty"]
    activity += [(a, a) for a, _b, _k in run.work]  # the execute request that started it
    t = (held_from // CULL_EVERY + 1) * CULL_EVERY
    while t < s.end:
        reported = held_from + (t - held_from) // ACTIVITY_REPORT * ACTIVITY_REPORT
        last = max(held_from, week.last_at(activity, reported) or held_from)
        if t - last >= CULL_TIMEOUT:
            return t
        t += CULL_EVERY
    return None


def busy_now(s: week.Session, run: Run, t: int) -> tuple[str, ...]:
    out = []
    for a, b, kind in run.work:
        if a <= t < b:
            if kind == "dask":
                out.append("Dask tasks running")
            else:
                out.append("kernel busy" + (" (silent)" if kind == "silent" else ""))
                if s.gpu:
                    out.append("GPU busy")
    return tuple(out)


def parking(s, run, held_from, rng, keep=P_KEEP_DEFAULT):
    """Slicehub: `decide` at every check; a user at the screen when warned clicks Keep with
    probability `keep` (before leaving the screen)."""
    policy, check_s = s.policy, int(s.policy.check.total_seconds())
    t, warned_at = (held_from // check_s + 1) * check_s, None
    started = EPOCH + timedelta(seconds=held_from)
    signals = s.interact + [(a, b) for a, b, _k in run.work]
    while t < s.end:
        last = max(
            held_from, week.last_at(signals, t) or held_from, week.last_at(run.keeps_at, t) or 0
        )
        reading = Reading(timedelta(seconds=t - last), busy_now(s, run, t))
        now = EPOCH + timedelta(seconds=t)
        warned = None if warned_at is None else EPOCH + timedelta(seconds=warned_at)
        d = decide(policy, reading, started, warned, now)
        if d.action == PARK:
            return t
        if d.action == WARN:
            warned_at = t
            run.warnings += 1
            there = [b for a, b in s.interact + s.passive if a <= t < b]
            run.warned_present += bool(there)
            if there and rng.random() < keep:
                run.keeps_at.append((min(there[0], t + rng.randint(*KEEP_DELAY_S)),) * 2)
        t += check_s
    return None


def policies(keep: float):
    return (
        ("no culling", no_culling),
        ("stock idle-culler, 1 h (baseline)", stock_culler),
        ("Slicehub parking", partial(parking, keep=keep)),
    )


NO_CULLING, STOCK, PARKING = (name for name, _f in policies(P_KEEP_DEFAULT))


# -- accounting --------------------------------------------------------------------------------


@dataclass
class Totals:
    held_s: int = 0
    idle_s: int = 0
    subsidy: int = 0  # cents
    idle_subsidy: int = 0
    stops: int = 0
    busy_stops: int = 0
    present_stops: int = 0
    restarts: int = 0
    lost_s: int = 0
    warnings: int = 0
    warned_present: int = 0
    keeps: int = 0
    idle_by_cause: Counter = field(default_factory=Counter)  # cents
    idle_by_kind: Counter = field(default_factory=Counter)  # cents
    longest_idle_s: dict = field(default_factory=dict)  # session kind -> longest idle held
    window_share: int = 0  # cents: the first parking window of every idle stretch


def idle_seconds(s: week.Session, run: Run) -> tuple[int, Counter, list[int]]:
    """Held seconds in which nothing worked and nobody was at the screen, by cause, and the
    length of each such stretch (a stretch ends where a held span ends)."""
    by_cause = Counter()
    busy = [(a, b) for a, b, _k in run.work]
    for h0, h1 in run.held:
        for a, b, cause in s.away:
            lo, hi = max(a, h0), min(b, h1)
            if hi > lo:
                by_cause[cause] += sum(d - c for c, d in week.gaps(lo, hi, busy))
    stretches = []
    for a, b in week.merged((a, b) for a, b, _c in s.away):
        for h0, h1 in run.held:
            lo, hi = max(a, h0), min(b, h1)
            if hi > lo:
                stretches += [d - c for c, d in week.gaps(lo, hi, busy)]
    return sum(by_cause.values()), by_cause, stretches


def money(price_cents: int, seconds: int) -> int:
    """Subsidy for `seconds` of a slice at this list price per hour: list rounded down to the
    cent, the scheme's share rounded down (the ledger's rule)."""
    return subsidy_of(price_cents * seconds // HOUR, SUBSIDY_BP)


def account(sessions: list[week.Session], runs: list[Run]) -> Totals:
    t = Totals()
    for s, run in zip(sessions, runs, strict=True):
        held = sum(b - a for a, b in run.held)
        idle, by_cause, stretches = idle_seconds(s, run)
        t.held_s += held
        t.idle_s += idle
        t.subsidy += money(s.price_cents, held)
        cents = money(s.price_cents, idle)
        t.idle_subsidy += cents
        t.idle_by_kind[s.kind] += cents
        for cause, secs in by_cause.items():
            t.idle_by_cause[cause] += secs * cents // idle if idle else 0
        t.stops += len(run.stops)
        t.busy_stops += sum(x.busy for x in run.stops)
        t.present_stops += sum(x.present for x in run.stops)
        t.restarts += len(run.held) - 1
        t.lost_s += run.lost_s
        t.warnings += run.warnings
        t.warned_present += run.warned_present
        t.keeps += len(run.keeps_at)
        t.longest_idle_s[s.kind] = max([t.longest_idle_s.get(s.kind, 0), *stretches])
        window = int(s.policy.window.total_seconds())
        t.window_share += money(s.price_cents, sum(min(x, window) for x in stretches))
    return t


def session_rng(seed: int, s: week.Session) -> random.Random:
    """Each session's warnings draw from its own rng, the same under every policy."""
    return random.Random(seed * 1_000_003 + s.sid)


def simulate(sessions: list[week.Session], seed: int, keep: float) -> dict:
    """Each policy's runs and totals, by name."""
    out = {}
    for name, policy in policies(keep):
        runs = [replay(s, policy, session_rng(seed, s)) for s in sessions]
        out[name] = (runs, account(sessions, runs))
    return out


@dataclass
class Variant:
    """Slicehub's parking at other windows, on the same week."""

    research: ParkingPolicy
    course: ParkingPolicy
    totals: Totals
    floor: int  # cents: the no-culling run's idle stretches, each cut to this window


def sensitivity(sessions, results, seed: int, keep: float, windows=SENSITIVITY) -> list[Variant]:
    """Parking at each (research, course, warning) in minutes, the site's rules applied."""
    no_culling_runs = results[NO_CULLING][0]
    out = []
    for research, course, warning in windows:
        policy = week.SITE.policy(research, warning), week.SITE.policy(course, warning)
        variant = [replace(s, policy=policy[s.kind == "class"]) for s in sessions]
        runs = [replay(s, partial(parking, keep=keep), session_rng(seed, s)) for s in variant]
        floor = account(variant, no_culling_runs).window_share
        out.append(Variant(*policy, account(variant, runs), floor))
    return out


def check_cap(totals: Totals, research: ParkingPolicy, course: ParkingPolicy) -> None:
    for kind, policy in (("research", research), ("class", course)):
        cap = (policy.window + policy.check).total_seconds()
        check(totals.longest_idle_s.get(kind, 0) <= cap, f"parking leaves no {kind} idle past cap")


def self_checks(sessions, results, variants=()) -> None:
    """The simulation's accounting: no culling holds every server to its end; nothing holds
    more than that; parking never leaves an idle stretch past its window + one check, at any
    window; the sensitivity run at the default windows is the headline's run."""
    _runs, base = results[NO_CULLING]
    check(base.held_s == sum(s.end - s.start for s in sessions), "no culling held it all")
    check(base.stops == 0 and base.lost_s == 0, "no culling stopped nothing")
    for _name, (_runs, t) in results.items():
        check(0 <= t.idle_s <= t.held_s <= base.held_s, "idle <= held <= held without culling")
        check(0 <= t.idle_subsidy <= t.subsidy <= base.subsidy, "idle <= total subsidy")
        check(sum(t.idle_by_cause.values()) <= t.idle_subsidy, "causes add up")
    _runs, park = results[PARKING]
    check_cap(park, week.RESEARCH_POLICY, week.COURSE_POLICY)
    for v in variants:
        t = v.totals
        check(0 <= t.idle_subsidy <= t.subsidy <= base.subsidy, "idle <= total subsidy")
        check(v.floor <= base.idle_subsidy, "the floor is part of the idle subsidy")
        check_cap(t, v.research, v.course)
        if (v.research, v.course) == (week.RESEARCH_POLICY, week.COURSE_POLICY):
            check(t == park, "the default windows reproduce the headline's run")


# -- the report --------------------------------------------------------------------------------


def hours(seconds: int) -> str:
    return f"{seconds / HOUR:,.1f}"


def share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def policy_table(results) -> list[str]:
    base = results[STOCK][1]
    rows = [
        "| policy | stopped by the policy | busy sessions wrongly stopped (work lost, h) "
        "| stopped with the user at the screen | started again | slice-hours held "
        "| idle slice-hours | subsidy, total | subsidy on idle slice-hours "
        "| idle subsidy vs stock culler |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (_runs, t) in results.items():
        versus = f"{t.idle_subsidy / base.idle_subsidy - 1:+.1%}" if base.idle_subsidy else "-"
        rows.append(
            f"| {name} | {t.stops:,} | {t.busy_stops:,} ({hours(t.lost_s)}) "
            f"| {t.present_stops:,} | {t.restarts:,} | {hours(t.held_s)} | {hours(t.idle_s)} "
            f"| {format_money(t.subsidy)} | {format_money(t.idle_subsidy)} "
            f"({share(t.idle_subsidy, t.subsidy)}) | {versus} |"
        )
    return rows


CAUSES = ("short break", "meeting", "lunch", "after leaving")


def cause_table(results) -> list[str]:
    rows = [
        "| policy | " + " | ".join(CAUSES) + " | research | classes |",
        "|---|" + "---:|" * (len(CAUSES) + 2),
    ]
    for name, (_runs, t) in results.items():
        cells = [format_money(t.idle_by_cause[c]) for c in CAUSES]
        cells += [format_money(t.idle_by_kind["research"]), format_money(t.idle_by_kind["class"])]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def goal_line(results) -> str:
    stock = results[STOCK][1]
    park = results[PARKING][1]
    reduction = 1 - park.idle_subsidy / stock.idle_subsidy if stock.idle_subsidy else 0.0
    met = reduction >= GOAL_REDUCTION and park.busy_stops == 0
    verdict = "met" if met else "not met"
    return (
        f"**Goal: at least 80% less idle subsidy than the stock culler at 1 hour, and zero busy "
        f"sessions stopped: {verdict}.** {format_money(park.idle_subsidy)} against "
        f"{format_money(stock.idle_subsidy)}, {reduction:.1%} less; busy sessions stopped: "
        f"{park.busy_stops} (the stock culler: {stock.busy_stops})."
    )


def why_line(results) -> str:
    stock, base = results[STOCK][1], results[NO_CULLING][1]
    park = results[PARKING][1]
    best = 1 - base.window_share / stock.idle_subsidy if stock.idle_subsidy else 0.0
    gap = park.idle_subsidy / base.window_share - 1 if base.window_share else 0.0
    return (
        "Why: a window policy spends the first window (30 min; 15 in courses) of every idle "
        "stretch by design, short breaks included. On this week that share alone is "
        f"{format_money(base.window_share)} (the idle stretches of the no-culling run, each cut "
        f"to its window), so a 30/15-min window can save about {best:.0%} against the stock "
        f"culler at most; parking spends {gap:+.1%} against that share (below it where a "
        "user sat at the screen without touching it before leaving: the window counts from "
        "the last touch; above it by up to one check per stretch and after restarts)."
    )


def reduction(idle_subsidy: int, stock: Totals) -> float:
    return 1 - idle_subsidy / stock.idle_subsidy if stock.idle_subsidy else 0.0


def meets_goal(t: Totals, stock: Totals) -> bool:
    return reduction(t.idle_subsidy, stock) >= GOAL_REDUCTION and t.busy_stops == 0


def windows(v: Variant) -> str:
    m = lambda d: f"{d.total_seconds() / 60:g}"  # noqa: E731
    lead = m(v.research.warning)
    if v.course.warning != v.research.warning:
        lead += f" / {m(v.course.warning)}"
    return f"{m(v.research.window)} / {m(v.course.window)} (warning {lead})"


def sensitivity_table(variants: list[Variant], stock: Totals) -> list[str]:
    rows = [
        "| windows, min: research / courses | subsidy on idle slice-hours "
        "| less than the stock culler | floor: first window of every idle stretch (most it "
        "can save) | busy sessions wrongly stopped | users at the screen parked (missed the "
        "warning) | warnings given (to a user at the screen) | started again | goal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for v in variants:
        t = v.totals
        rows.append(
            f"| {windows(v)} | {format_money(t.idle_subsidy)} "
            f"| {reduction(t.idle_subsidy, stock):.1%} | {format_money(v.floor)} "
            f"({reduction(v.floor, stock):.1%}) | {t.busy_stops:,} | {t.present_stops:,} "
            f"| {t.warnings:,} ({t.warned_present:,}) | {t.restarts:,} "
            f"| {'met' if meets_goal(t, stock) else 'not met'} |"
        )
    return rows


def sensitivity_lines(variants: list[Variant], results) -> list[str]:
    stock, base = results[STOCK][1], results[NO_CULLING][1]
    park = results[PARKING][1]
    target = stock.idle_subsidy * (1 - GOAL_REDUCTION)
    floor = (
        f"Floor: no window policy can save the first window of an idle stretch; at the default "
        f"30 / 15 min that is {format_money(base.window_share)} of the stock culler's "
        f"{format_money(stock.idle_subsidy)} (so at most {reduction(base.window_share, stock):.1%} "
        f"less), short breaks (5-15 min, all inside it) "
        f"{format_money(base.idle_by_cause['short break'])} of it; 80% less "
        f"needs the floor under {format_money(int(target))}."
    )
    met = [v for v in variants if meets_goal(v.totals, stock)]
    if not met:
        return [floor, "", "**None of these windows meets the goal.**"]
    v, t = met[0], met[0].totals
    return [
        floor,
        "",
        f"**The longest windows here that meet the goal: {windows(v)}**, "
        f"{reduction(t.idle_subsidy, stock):.1%} less than the stock culler, "
        f"{t.busy_stops} busy sessions stopped, at a cost against the default 30 / 15 min of "
        f"{t.warnings:,} warnings ({t.warnings / park.warnings:.1f}x {park.warnings:,}), "
        f"{t.restarts:,} restarts ({t.restarts / park.restarts:.1f}x {park.restarts:,}) and "
        f"{t.present_stops:,} users parked at the screen ({park.present_stops:,}). "
        "Windows that short warn a research user after "
        f"{(v.research.window - v.research.warning).total_seconds() / 60:g} min without a key "
        "or click, and park a reader or a student at a lecture who misses the warning.",
    ]


def week_lines(sessions: list[week.Session]) -> list[str]:
    kinds = Counter(s.kind for s in sessions)
    types = Counter(s.slice_type for s in sessions)
    runs = Counter(w.kind for s in sessions for w in s.work)
    stopped_by_user = sum(s.user_stopped for s in sessions)
    return [
        f"- Sessions: {len(sessions):,} (research {kinds['research']:,}, class "
        f"{kinds['class']:,}); by slice type: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(types.items())),
        f"- Long runs: {sum(runs.values()):,} ("
        + ", ".join(f"{k} {v:,}" for k, v in sorted(runs.items()))
        + f"); servers the user stopped on leaving: {stopped_by_user:,}",
    ]


def assumptions(args) -> list[str]:
    return [
        *week.assumptions(args.seed, args.days),
        f"- Stock culler: `--timeout={CULL_TIMEOUT} --cull-every={CULL_EVERY}`, runs at every "
        f"{CULL_EVERY} s of the week; the hub's last_activity is the server's as of its last "
        f"report ({ACTIVITY_REPORT} s from the server's start).",
        f"- Parking: research {describe(week.RESEARCH_POLICY)}, "
        f"courses {describe(week.COURSE_POLICY)}; "
        f"checks on every whole minute. A user at the screen when warned clicks Keep with "
        f"probability {args.keep:.0%}, {KEEP_DELAY_S[0]}-{KEEP_DELAY_S[1]} s later.",
        "- Other windows: the same sessions and the same draws for Keep, only the policies "
        "change; a course window too short for the warning lead gets the lead cut to one check "
        "under it (the site's rule).",
        f"- Money: list prices from {week.SITE_FILE.relative_to(REPO)}, subsidy rate "
        f"{SUBSIDY_BP / 100:g}%; a server charged per second held, rounded down to the cent.",
    ]


def describe(p: ParkingPolicy) -> str:
    m = lambda d: f"{d.total_seconds() / 60:g} min"  # noqa: E731
    return f"window {m(p.window)}, warning {m(p.warning)}, check {m(p.check)}"


def machine_info() -> str:
    return (
        f"{cpu_model()}, {usable_cores()} usable cores, {platform.platform()}, "
        f"Python {platform.python_version()}"
    )


def report(args, sessions, results, variants, wall_s: float) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join([".venv/bin/python bench/idle_parking.py", *args.argv])
    park = results[PARKING]
    return "\n".join(
        [
            "# Idle parking on a simulated week",
            "",
            f"`{command}`",
            "",
            f"- Date: {now}; machine: {machine_info()}; simulated in {wall_s:.1f} s",
            *week_lines(sessions),
            "",
            "## Each policy on the same week",
            "",
            *policy_table(results),
            "",
            goal_line(results),
            "",
            why_line(results),
            "",
            "Idle: held while nothing works (no busy kernel, no GPU work, no Dask task) and "
            "nobody is at the screen. 'Wrongly stopped': stopped while something worked; its "
            "work is lost. 'Started again': the user came back before the chosen end.",
            f"Parking's warnings: {park[1].warnings:,}, {park[1].warned_present:,} of them to a "
            f"user at the screen (a lecture, reading), who clicked Keep {park[1].keeps:,} times; "
            "the others were parked, or their user came back first.",
            "",
            "## Slicehub's parking at other windows, on the same week",
            "",
            *sensitivity_table(variants, results[STOCK][1]),
            "",
            *sensitivity_lines(variants, results),
            "",
            "## Where the idle subsidy goes",
            "",
            *cause_table(results),
            "",
            "A short break (5-15 min) is idle for every policy: a window of 30 min (15 for "
            "courses) cannot see it. The rest is what the window can reach.",
            "",
            "## Assumptions",
            "",
            *assumptions(args),
            "",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="week seed (default: %(default)s)")
    parser.add_argument("--days", type=int, default=7, help="simulated days (default: %(default)s)")
    parser.add_argument(
        "--keep",
        type=float,
        default=P_KEEP_DEFAULT,
        help="probability that a user at the screen clicks Keep (default: %(default)s)",
    )
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS}")
    args = parser.parse_args(argv)
    if args.days < 1 or not 0 <= args.keep <= 1:
        parser.error("--days must be at least 1 and --keep within 0..1")
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    sessions = week.make_week(args.seed, args.days)
    results = simulate(sessions, args.seed, args.keep)
    variants = sensitivity(sessions, results, args.seed, args.keep)
    self_checks(sessions, results, variants)
    wall_s = time.perf_counter() - t0
    publish(report(args, sessions, results, variants, wall_s), RESULTS, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
