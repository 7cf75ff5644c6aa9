"""The simulated week of bench/idle_parking.py: who is at the screen, what works, and when.

The distributions are the constants below; `make_week(seed, days)` draws the sessions from them
(deterministic for a seed). Not a benchmark itself (`make bench` skips files starting with "_").
"""

from __future__ import annotations

import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from slicehub.common.money import format_money, parse_cents
from slicehub.quota.parking import ParkingPolicy
from slicehub.quota.site_parking import SiteParking

REPO = Path(__file__).resolve().parent.parent
SITE_FILE = REPO / "hub_config" / "demo-site.toml"
MIN, HOUR, DAY = 60, 3600, 86400

# Slicehub's parking: the site's defaults, and a course's own window.
SITE = SiteParking()
RESEARCH_POLICY = SITE.policy()
COURSE_POLICY = SITE.policy(idle_minutes=15)

# Research: sessions started per day, start hours, chosen lengths, slice types.
RESEARCH_PER_DAY = {"weekday": (30, 50), "weekend": (5, 15)}
RESEARCH_START_H = {"weekday": (8.0, 17.0, 9.5), "weekend": (9.0, 18.0, 12.0)}  # triangular
RESEARCH_HOURS = (2, 8)  # whole hours, uniform
RESEARCH_MIX = {
    "h100.1g.10gb": 0.15,
    "h100.2g.20gb": 0.20,
    "h100.3g.40gb": 0.25,
    "h100.4g.40gb": 0.15,
    "h100x1": 0.15,
    "cpu": 0.10,
}
P_LEAVE_EARLY = 0.6  # leaves before the chosen end, by 20-60% of the length
WORK_BLOCK_MIN = (20, 90)  # at the keyboard, between breaks
# Breaks between work blocks: (probability, minutes, cause; "passive" = at the screen, reading).
BREAKS = ((0.5, (5, 15), "short break"), (0.3, (10, 40), "passive"), (0.2, (30, 90), "meeting"))
LUNCH_START_H, LUNCH_MIN = (12.0, 13.0), (40, 80)
# Probability that the tab stays visible on an awake screen (JupyterLab keeps polling) while
# the user is away, by cause; otherwise the laptop is closed, the screen asleep or the tab shut.
P_TAB_AWAKE = {"short break": 0.8, "meeting": 0.6, "lunch": 0.6, "after leaving": 0.35}
P_CLASS_TAB_AWAKE = 0.4  # a lab PC left logged in
P_USER_STOPS = {"research": 0.15, "class": 0.10}  # stops the server on leaving (nothing running)
# Long runs started from the notebook: per session 0, 1 or 2 runs; 30 min - 4 h each; 60% are
# started right before the user goes away (lunch, a meeting, home).
RUNS_P = (0.3, 0.5, 0.2)
RUN_MIN = (30, 240)
P_RUN_BEFORE_AWAY = 0.6
RUN_KINDS_GPU = {"silent": 0.55, "chatty": 0.45}  # silent: no output for hours, GPU busy
RUN_KINDS_CPU = {"dask": 0.5, "silent": 0.3, "chatty": 0.2}
# Classes: weekdays, slots, classes per slot, students, class length; students choose the form's
# default 2 h or the class length rounded up to 30 min; some leave early.
CLASS_SLOTS_H = (9.0, 11.0, 14.0, 16.0)
CLASSES_PER_SLOT = (1, 3)
CLASS_SIZE = (15, 45)
CLASS_HOURS = (1.0, 1.5, 2.0)
CLASS_TYPE = "h100.1g.10gb"
P_DEFAULT_LENGTH = 0.5
P_STUDENT_LEAVES_EARLY = 0.3  # at 50-90% of the class
LECTURE_MIN = (10, 25)  # at the start; a second one mid-class in classes over 1 h
P_STUDENT_LOOP = 0.25  # a silent training loop of 3-15 min in the exercises


@dataclass(frozen=True)
class Work:
    start: int
    end: int
    kind: str  # "silent" (kernel busy, no output), "chatty" (kernel printing), "dask"


@dataclass
class Session:
    sid: int
    kind: str  # "research" or "class"
    slice_type: str
    price_cents: int  # list price per slice-hour
    policy: ParkingPolicy
    start: int  # seconds after Monday 00:00
    end: int  # the chosen end, or when the user stops the server
    interact: list[tuple[int, int]] = field(default_factory=list)  # keys and clicks
    passive: list[tuple[int, int]] = field(default_factory=list)  # at the screen, hands off
    away: list[tuple[int, int, str]] = field(default_factory=list)  # (from, to, cause)
    polling: list[tuple[int, int]] = field(default_factory=list)  # tab visible and awake
    work: list[Work] = field(default_factory=list)
    user_stopped: bool = False  # the user stopped the server on leaving

    @property
    def gpu(self) -> bool:
        return self.slice_type != "cpu"


# -- intervals ---------------------------------------------------------------------------------


def covers(intervals, t: int) -> bool:
    return any(a <= t < b for a, b, *_ in intervals)


def last_at(intervals, t: int) -> int | None:
    """The latest moment <= t inside the intervals (an instant (a, a) counts at a)."""
    out = None
    for a, b, *_ in intervals:
        if a <= t:
            x = min(b, t)
            out = x if out is None or x > out else out
    return out


def gaps(a: int, b: int, cuts) -> list[tuple[int, int]]:
    """The pieces of [a, b) outside the union of `cuts`."""
    out, reach = [], a
    for c, d in sorted((max(a, c), min(b, d)) for c, d in cuts if c < b and d > a):
        if c > reach:
            out.append((reach, c))
        reach = max(reach, d)
    if b > reach:
        out.append((reach, b))
    return out


def merged(spans) -> list[tuple[int, int]]:
    out = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


# -- the week ----------------------------------------------------------------------------------


def prices() -> dict[str, int]:
    site = tomllib.loads(SITE_FILE.read_text())
    return {n: parse_cents(t["price_per_hour"]) for n, t in site["slice_types"].items()}


def pick(rng: random.Random, mix: dict[str, float]) -> str:
    return rng.choices(list(mix), list(mix.values()))[0]


def away_tab(s: Session, rng, a: int, b: int, cause: str, p_awake: float) -> None:
    s.away.append((a, b, cause))
    if rng.random() < p_awake:
        s.polling.append((a, b))


def research_session(rng, sid: int, day: int, price: dict[str, int]) -> Session:
    kind = "weekend" if day % 7 >= 5 else "weekday"
    start = day * DAY + int(rng.triangular(*RESEARCH_START_H[kind]) * HOUR)
    length = rng.randint(*RESEARCH_HOURS) * HOUR
    chosen_end = start + length
    leave = chosen_end
    if rng.random() < P_LEAVE_EARLY:
        leave = max(start + 30 * MIN, chosen_end - int(rng.uniform(0.2, 0.6) * length))
    st = pick(rng, RESEARCH_MIX)
    s = Session(sid, "research", st, price[st], RESEARCH_POLICY, start, chosen_end)
    lunch = day * DAY + int(rng.uniform(*LUNCH_START_H) * HOUR)
    lunch_pending = start < lunch < leave - 10 * MIN
    blocks, t = [], start  # (from, to, what follows)
    while t < leave:
        end = min(leave, t + rng.randint(*WORK_BLOCK_MIN) * MIN)
        if lunch_pending and end >= lunch:
            lunch_pending = False
            end = max(t, lunch)
            cause, back = "lunch", min(leave, end + rng.randint(*LUNCH_MIN) * MIN)
        else:
            _p, (lo, hi), cause = rng.choices(BREAKS, [b[0] for b in BREAKS])[0]
            back = min(leave, end + rng.randint(lo, hi) * MIN)
        if end >= leave:
            cause = "after leaving"
        if end > t:
            s.interact.append((t, end))
            s.polling.append((t, end))
            blocks.append((t, end, cause))
        if cause == "passive":
            s.passive.append((end, back))
            s.polling.append((end, back))
        elif end < leave:
            away_tab(s, rng, end, back, cause, P_TAB_AWAKE[cause])
        t = max(back, end)
    if leave < chosen_end:
        away_tab(s, rng, leave, chosen_end, "after leaving", P_TAB_AWAKE["after leaving"])
    add_runs(rng, s, blocks)
    running_at_leave = any(w.start <= leave < w.end for w in s.work)
    if leave < chosen_end and not running_at_leave and rng.random() < P_USER_STOPS["research"]:
        stop_at(s, leave)
    return s


def add_runs(rng, s: Session, blocks) -> None:
    n = rng.choices(range(len(RUNS_P)), RUNS_P)[0]
    before_away = [b for b in blocks if b[2] in ("lunch", "meeting", "after leaving")]
    for _ in range(min(n, len(blocks))):
        if before_away and rng.random() < P_RUN_BEFORE_AWAY:
            a, b, _cause = rng.choice(before_away)
            begin = max(a, b - rng.randint(1, 10) * MIN)
        else:
            a, b, _cause = rng.choice(blocks)
            begin = a + rng.randint(0, max(0, (b - a) // MIN - 1)) * MIN
        kind = pick(rng, RUN_KINDS_GPU if s.gpu else RUN_KINDS_CPU)
        end = min(s.end, begin + rng.randint(*RUN_MIN) * MIN)
        s.work.append(Work(begin, end, kind))


def stop_at(s: Session, t: int) -> None:
    """The user stops the server at t: nothing after t happens in this session."""
    s.end, s.user_stopped = t, True
    s.away = [(a, min(b, t), c) for a, b, c in s.away if a < t]
    s.polling = [(a, min(b, t)) for a, b in s.polling if a < t]


def class_sessions(rng, sid: int, day: int, price: dict[str, int]) -> list[Session]:
    out = []
    for slot in CLASS_SLOTS_H:
        for _ in range(rng.randint(*CLASSES_PER_SLOT)):
            begin = day * DAY + int(slot * HOUR)
            hours = rng.choice(CLASS_HOURS)
            over = begin + int(hours * HOUR)
            for _student in range(rng.randint(*CLASS_SIZE)):
                out.append(student_session(rng, sid + len(out), begin, over, price))
    return out


def student_session(rng, sid: int, begin: int, over: int, price) -> Session:
    arrive = begin + rng.randint(0, 10 * MIN)
    if rng.random() < P_DEFAULT_LENGTH:
        length = max(2 * HOUR, over - begin)
    else:
        length = -(-(over - arrive) // (30 * MIN)) * 30 * MIN
    chosen_end = arrive + length
    s = Session(sid, "class", CLASS_TYPE, price[CLASS_TYPE], COURSE_POLICY, arrive, chosen_end)
    leave = over + rng.randint(0, 5 * MIN)
    if rng.random() < P_STUDENT_LEAVES_EARLY:
        leave = begin + int(rng.uniform(0.5, 0.9) * (over - begin))
    leave = min(max(leave, arrive + 5 * MIN), chosen_end)
    lecture_end = min(leave, max(arrive, begin + rng.randint(*LECTURE_MIN) * MIN))
    spans = [("passive", arrive, lecture_end)]
    if over - begin > HOUR:
        mid = begin + (over - begin) // 2
        mid_end = mid + rng.randint(10, 20) * MIN
        spans += [("interact", lecture_end, mid), ("passive", mid, mid_end)]
        spans.append(("interact", mid_end, leave))
    else:
        spans.append(("interact", lecture_end, leave))
    for what, a, b in spans:
        a, b = min(a, leave), min(b, leave)
        if b > a:
            (s.passive if what == "passive" else s.interact).append((a, b))
            s.polling.append((a, b))
    if rng.random() < P_STUDENT_LOOP and s.interact:
        a, b = max(s.interact, key=lambda x: x[1] - x[0])
        w0 = a + rng.randint(0, max(0, (b - a) // 2))
        s.work.append(Work(w0, min(chosen_end, w0 + rng.randint(3, 15) * MIN), "silent"))
    if leave < chosen_end:
        away_tab(s, rng, leave, chosen_end, "after leaving", P_CLASS_TAB_AWAKE)
        if rng.random() < P_USER_STOPS["class"] and not any(w.end > leave for w in s.work):
            stop_at(s, leave)
    return s


def make_week(seed: int, days: int) -> list[Session]:
    rng, price, out = random.Random(seed), prices(), []
    for day in range(days):
        kind = "weekend" if day % 7 >= 5 else "weekday"
        for _ in range(rng.randint(*RESEARCH_PER_DAY[kind])):
            out.append(research_session(rng, len(out), day, price))
        if kind == "weekday":
            out += class_sessions(rng, len(out), day, price)
    return out


def assumptions(seed: int, days: int) -> list[str]:
    """The distributions, in sentences for the report."""
    price = prices()
    br = "; ".join(f"{p:.0%} {c} {lo}-{hi} min" for p, (lo, hi), c in BREAKS)
    awake = ", ".join(f"{c} {p:.0%}" for c, p in P_TAB_AWAKE.items())
    mix = ", ".join(f"{t} {w:.0%} ({format_money(price[t])}/h)" for t, w in RESEARCH_MIX.items())
    return [
        f"- Week: seed {seed}, {days} days from Monday 00:00. Research: "
        f"{RESEARCH_PER_DAY['weekday'][0]}-{RESEARCH_PER_DAY['weekday'][1]} sessions per "
        f"weekday (start 08-17 h, peak 09:30), {RESEARCH_PER_DAY['weekend'][0]}-"
        f"{RESEARCH_PER_DAY['weekend'][1]} per weekend day; chosen length "
        f"{RESEARCH_HOURS[0]}-{RESEARCH_HOURS[1]} h (whole hours, uniform); slice types {mix}.",
        f"- A research user works in blocks of {WORK_BLOCK_MIN[0]}-{WORK_BLOCK_MIN[1]} min; "
        f"between blocks: {br} ('passive': reading at the screen, not idle); lunch starting "
        f"12:00-13:00 for {LUNCH_MIN[0]}-{LUNCH_MIN[1]} min; leaves {P_LEAVE_EARLY:.0%} of the "
        "time 20-60% of the chosen length early, otherwise stays to the end.",
        f"- Tab visible on an awake screen while away (JupyterLab polls every 10 s; its polls "
        f"stand by when the page is hidden): {awake}; classes after leaving "
        f"{P_CLASS_TAB_AWAKE:.0%}. Otherwise the laptop is closed, the screen asleep or the tab "
        f"shut. On leaving with nothing running the user stops the server: research "
        f"{P_USER_STOPS['research']:.0%}, students {P_USER_STOPS['class']:.0%}.",
        f"- Long runs per research session: 0/1/2 with {RUNS_P[0]:.0%}/{RUNS_P[1]:.0%}/"
        f"{RUNS_P[2]:.0%}, {RUN_MIN[0]}-{RUN_MIN[1]} min each, {P_RUN_BEFORE_AWAY:.0%} started "
        "just before lunch, a meeting or going home; on GPU slices "
        + ", ".join(f"{k} {p:.0%}" for k, p in RUN_KINDS_GPU.items())
        + " (GPU busy either way); on CPU slices "
        + ", ".join(f"{k} {p:.0%}" for k, p in RUN_KINDS_CPU.items())
        + ". 'silent': a busy kernel with no output; 'chatty': prints every minute; 'dask': "
        "tasks running behind an idle kernel.",
        f"- Classes on weekdays at {', '.join(f'{h:g}' for h in CLASS_SLOTS_H)} h: "
        f"{CLASSES_PER_SLOT[0]}-{CLASSES_PER_SLOT[1]} classes per slot of {CLASS_SIZE[0]}-"
        f"{CLASS_SIZE[1]} students, {'/'.join(f'{h:g}' for h in CLASS_HOURS)} h, {CLASS_TYPE}; "
        f"students arrive within 10 min, choose the default 2 h ({P_DEFAULT_LENGTH:.0%}) or the "
        f"class rounded up to 30 min; a {LECTURE_MIN[0]}-{LECTURE_MIN[1]} min lecture at the "
        "start and a 10-20 min one mid-class in classes over 1 h (at the screen, passive); "
        f"{P_STUDENT_LEAVES_EARLY:.0%} leave at 50-90% of the class; {P_STUDENT_LOOP:.0%} run "
        "a silent 3-15 min training loop.",
    ]
