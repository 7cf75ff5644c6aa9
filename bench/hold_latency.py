"""Hold decision latency under 200 simultaneous requests, PostgreSQL first.

What it measures. The shipped path: the quota service's `HoldQueue` (slicehub/quota/hold_queue.py)
on one asyncio loop, as the service runs it; 200 tasks call `queue.hold` at the same moment (one
`asyncio.gather`): a burst of 200 simultaneous hold requests, which the queue decides in batches,
one transaction each (`Ledger.open_sessions`). --rounds bursts, one after the other, each one
simulated minute later than the last. Per call: wall time from just before `hold` to its return or
its `LedgerError` (`time.perf_counter`), split into accepted and refused. Goal: p99 < 20 ms.

The baseline, in the same run: the previous shipped path, one transaction per hold
(`Ledger.open_session`) from 200 OS threads released together by a barrier (each waits for the
project's row lock and a pooled connection).

The requests (the same sequence everywhere): 20 projects; request j goes to project j % 20 as
user u{j % 200} (a member of every project), server s{j // 200}, a slice type and 1-4 h drawn
from a seeded mix. Twelve projects can afford everything; eight have small grants (four on
policy `stop`, four on `full_price` with a small credit line) and run out in the first rounds,
so refusals (402, with the sentence in HK$) happen in every round.

Also: one caller at a time (the service time), the 200 spread over 1 s, and SQLite (labelled,
for comparison). Each configuration runs on a fresh copy of one ledger built through the
Ledger API. For the baseline, where a call waits comes from SQLAlchemy events (pool checkout,
the project lock); for the queue, the batches it formed and how long each took to decide.

Checked afterwards: no project's subsidy held + charged exceeds its grants, no credit used over
its limit (`Ledger.balance`), sessions in the database = accepted calls, every refusal's sentence
shows less left than needed, only the small-grant projects refuse, no other errors.

    .venv/bin/python bench/hold_latency.py [--threads 200] [--rounds 10] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import random
import re
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import event, func, select

from slicehub.common.money import parse_cents
from slicehub.quota.errors import LedgerError
from slicehub.quota.hold import HoldRequest
from slicehub.quota.hold_queue import HoldQueue
from slicehub.quota.ledger import Ledger
from slicehub.quota.models import Grant, Project
from slicehub.quota.models import Session as LedgerSession
from slicehub.quota.service import settle_memory

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import check, publish
from ledger_metering import (
    LOAD,
    Database,
    PostgresDatabase,
    SqliteDatabase,
    load_average,
    machine_info,
    pg,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "hold_latency.md"
GOAL_P99_MS = 20.0
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
SETUP_AT = T0 - timedelta(hours=1)
RATE_BP = 7000
USERS = 200
SLICE_TYPES = {"h100.1g.10gb": (550, 40), "h100.3g.40gb": (1650, 30), "h100.7g.80gb": (3850, 20)}
SLICE_TYPES["cpu"] = (80, 10)  # (cents per hour, weight in the mix)
HOURS = (1, 4)
RICH_GRANT_CENTS = 100_000_000  # HK$1,000,000: never runs out here
# The eight small-grant projects: (policy, grant cents, credit limit cents)
TIGHT = (
    ("stop", 10_000, 0),
    ("stop", 30_000, 0),
    ("stop", 60_000, 0),
    ("stop", 100_000, 0),
    ("full_price", 10_000, 20_000),
    ("full_price", 20_000, 40_000),
    ("full_price", 40_000, 40_000),
    ("full_price", 60_000, 60_000),
)
N_PROJECTS = 20
SEED = 3


def project_slug(k: int) -> str:
    return f"lab-{k:02d}"


def tight_spec(k: int):
    """Projects 12..19 have the small grants."""
    return TIGHT[k - (N_PROJECTS - len(TIGHT))] if k >= N_PROJECTS - len(TIGHT) else None


@dataclass(frozen=True)
class Request(HoldRequest):
    j: int = 0  # its place in the sequence


def make_requests(n: int) -> list[Request]:
    rng = random.Random(SEED)
    types = list(SLICE_TYPES)
    weights = [w for _c, w in SLICE_TYPES.values()]
    return [
        Request(
            project_slug(j % N_PROJECTS),
            f"u{j % USERS:03d}",
            f"s{j // USERS}",
            rng.choices(types, weights)[0],
            timedelta(hours=rng.randint(*HOURS)),
            T0 + timedelta(minutes=j // USERS),
            j=j,
        )
        for j in range(n)
    ]


def build_ledger(url: str) -> float:
    t0 = time.perf_counter()
    ledger = Ledger(url)
    ledger.upgrade()
    ledger.add_scheme("staff", "bench-scheme", RATE_BP, 10**12, SETUP_AT)
    for name, (cents, _w) in SLICE_TYPES.items():
        ledger.set_price("staff", name, cents, SETUP_AT, SETUP_AT)
    until = SETUP_AT + timedelta(days=90)
    for k in range(N_PROJECTS):
        spec = tight_spec(k)
        policy, grant, credit = spec if spec else ("stop", RICH_GRANT_CENTS, 0)
        ledger.add_project(
            "staff",
            project_slug(k),
            scheme="bench-scheme",
            name=f"Lab {k}",
            organisation="bench",
            pi="u000",
            valid_from=SETUP_AT,
            valid_until=until,
            allowed_slice_types=["*"],
            max_concurrent_sessions=10_000,
            policy=policy,
            credit_limit_cents=credit,
            now=SETUP_AT,
        )
        ledger.add_grant("staff", project_slug(k), grant, SETUP_AT, until, SETUP_AT)
        for u in range(USERS):
            ledger.add_member("staff", project_slug(k), f"u{u:03d}", SETUP_AT)
    ledger.dispose()
    return time.perf_counter() - t0


# -- one configuration --------------------------------------------------------------------------


@dataclass
class Call:
    request: Request
    latency_s: float
    pool_wait_s: float
    lock_wait_s: float
    outcome: str  # accepted | refused | error
    message: str = ""
    status: int = 0


@dataclass
class Config:
    database: str  # "PostgreSQL" | "SQLite"
    concurrency: int
    pool: str  # "shipped" | "per-thread"
    label: str = ""
    spread_s: float = 0.0  # each caller starts at a random moment this long after the barrier
    path: str = "queue"  # "queue": the shipped HoldQueue; "per-call": the baseline

    def engine_kwargs(self) -> dict:
        if self.pool == "per-thread":
            return {"pool_size": self.concurrency, "max_overflow": 0}
        return {}


@dataclass
class Outcome:
    config: Config
    pool_desc: str
    calls: list[Call]
    rounds_wall_s: float
    bursts_s: list[float]
    connects: int
    checks: list[str] = field(default_factory=list)
    batches: list[tuple[int, float]] = field(default_factory=list)  # (size, decision seconds)


class Probe:
    """Per-thread timestamps from SQLAlchemy events: pool checkout and the project lock."""

    LOCK = re.compile(r"FOR UPDATE|BEGIN IMMEDIATE")

    def __init__(self, ledger: Ledger) -> None:
        self.local = threading.local()
        self.connects = 0
        self._lock = threading.Lock()
        event.listen(ledger.engine, "checkout", self._checkout)
        event.listen(ledger.engine, "connect", self._connect)
        event.listen(ledger.engine, "before_cursor_execute", self._before)
        event.listen(ledger.engine, "after_cursor_execute", self._after)

    def reset(self) -> None:
        self.local.checkout = None
        self.local.lock_s = 0.0
        self.local.before = None

    def _checkout(self, *_args) -> None:
        if getattr(self.local, "checkout", 0) is None:
            self.local.checkout = time.perf_counter()

    def _connect(self, *_args) -> None:
        with self._lock:
            self.connects += 1

    def _before(self, _conn, _cursor, statement, *_args) -> None:
        self.local.before = time.perf_counter() if self.LOCK.search(statement) else None

    def _after(self, *_args) -> None:
        before = getattr(self.local, "before", None)
        if before is not None:
            self.local.lock_s = getattr(self.local, "lock_s", 0.0) + time.perf_counter() - before
            self.local.before = None


def run_config(url: str, config: Config, requests: list[Request]) -> Outcome:
    if config.path == "queue":
        return run_queue(url, config, requests)
    return run_per_call(url, config, requests)


def run_queue(url: str, config: Config, requests: list[Request]) -> Outcome:
    """The shipped path: `HoldQueue.hold` from `concurrency` asyncio tasks at once."""
    ledger = Ledger(url)
    pool = ledger.engine.pool
    pool_desc = f"{type(pool).__name__}(size={pool.size()}, max_overflow={pool._max_overflow})"
    probe = Probe(ledger)
    batches: list[tuple[int, float]] = []
    decide = ledger.open_sessions

    def timed(batch):  # the queue's one call into the ledger, timed per batch
        t0 = time.perf_counter()
        try:
            return decide(batch)
        finally:
            batches.append((len(batch), time.perf_counter() - t0))

    ledger.open_sessions = timed
    c = config.concurrency
    rounds = [requests[i : i + c] for i in range(0, len(requests), c)]
    calls: list[Call] = []
    bursts: list[float] = []

    async def one(queue: HoldQueue, req: Request) -> Call:
        if config.spread_s:
            await asyncio.sleep(random.Random(req.j).uniform(0, config.spread_s))
        t0 = time.perf_counter()
        try:
            await queue.hold(req)
            outcome, message, status = "accepted", "", 0
        except LedgerError as e:
            outcome, message, status = "refused", str(e), e.status
        except Exception as e:  # a bug or a timeout: counted and shown, never hidden
            outcome, message, status = "error", f"{type(e).__name__}: {e}", 0
        return Call(req, time.perf_counter() - t0, 0.0, 0.0, outcome, message, status)

    async def run() -> None:
        queue = HoldQueue(ledger)
        # untimed warm-up, as a running service is warm: a connection open, the price list
        # read, the statements compiled (a start by a non-member: refused, nothing written)
        await asyncio.to_thread(ledger.balance, project_slug(0), T0)
        stranger = HoldRequest(project_slug(0), "nobody", "", "cpu", timedelta(hours=1), T0)
        with contextlib.suppress(LedgerError):
            await queue.hold(stranger)
        probe.connects = 0
        batches.clear()
        settle_memory()  # as the quota service does once it has started
        for batch in rounds:
            t0 = time.perf_counter()
            calls.extend(await asyncio.gather(*(one(queue, r) for r in batch)))
            bursts.append(time.perf_counter() - t0)
        await queue.close()

    try:
        asyncio.run(run())
        outcome = Outcome(config, pool_desc, calls, sum(bursts), bursts, probe.connects)
        outcome.batches = batches
        outcome.checks = verify(ledger, calls, requests)
        return outcome
    finally:
        ledger.dispose()


def run_per_call(url: str, config: Config, requests: list[Request]) -> Outcome:
    """The baseline: one transaction per hold (`open_session`) from `concurrency` threads."""
    ledger = Ledger(url, **config.engine_kwargs())
    pool = ledger.engine.pool
    pool_desc = f"{type(pool).__name__}(size={pool.size()}, max_overflow={pool._max_overflow})"
    probe = Probe(ledger)
    c = config.concurrency
    rounds = [requests[i : i + c] for i in range(0, len(requests), c)]
    calls: list[Call] = []
    try:
        # untimed warm-up: connections opened, statements compiled (reads only)
        with ThreadPoolExecutor(max_workers=c) as ex:
            list(ex.map(lambda _i: ledger.balance(project_slug(0), T0), range(c)))
        probe.connects = 0
        barrier = threading.Barrier(c)

        def one(req: Request) -> Call:
            barrier.wait()
            if config.spread_s:
                time.sleep(random.Random(req.j).uniform(0, config.spread_s))
            probe.reset()
            t0 = time.perf_counter()
            try:
                ledger.open_session(
                    req.project,
                    req.username,
                    req.server_name,
                    req.slice_type,
                    req.duration,
                    req.now,
                )
                outcome, message, status = "accepted", "", 0
            except LedgerError as e:
                outcome, message, status = "refused", str(e), e.status
            except Exception as e:  # a bug or a timeout: counted and shown, never hidden
                outcome, message, status = "error", f"{type(e).__name__}: {e}", 0
            t1 = time.perf_counter()
            checkout = probe.local.checkout
            pool_wait = (checkout - t0) if checkout is not None else 0.0
            return Call(req, t1 - t0, pool_wait, probe.local.lock_s, outcome, message, status)

        bursts = []
        with ThreadPoolExecutor(max_workers=c) as ex:
            for batch in rounds:
                if len(batch) != c:
                    barrier = threading.Barrier(len(batch))
                t0 = time.perf_counter()
                calls += list(ex.map(one, batch))
                bursts.append(time.perf_counter() - t0)
        outcome = Outcome(config, pool_desc, calls, sum(bursts), bursts, probe.connects)
        outcome.checks = verify(ledger, calls, requests)
        return outcome
    finally:
        ledger.dispose()


# -- verification -------------------------------------------------------------------------------


_LEFT = re.compile(r"has (HK\$[\d,.]+) of subsidy (?:and (HK\$[\d,.]+) of credit )?left")
_NEEDS = re.compile(r"needs (HK\$[\d,.]+)")


def refusal_is_right(message: str) -> bool:
    """The sentence shows less left than the request needs."""
    left, need = _LEFT.search(message), _NEEDS.search(message)
    if not left or not need:
        return False
    subsidy = parse_cents(left.group(1))
    credit = parse_cents(left.group(2)) if left.group(2) else 0
    return subsidy + credit < parse_cents(need.group(1))


def verify(ledger: Ledger, calls: list[Call], requests: list[Request]) -> list[str]:
    errors = [c for c in calls if c.outcome == "error"]
    check(not errors, f"{len(errors)} calls failed: {errors[0].message if errors else ''}")
    accepted = [c for c in calls if c.outcome == "accepted"]
    refused = [c for c in calls if c.outcome == "refused"]
    check(len(calls) == len(requests), "a request went missing")
    check(refused, "nothing was refused: the small grants are too big")
    wrong = [c for c in refused if c.status != 402 or not refusal_is_right(c.message)]
    check(not wrong, f"{len(wrong)} refusals do not show less left than needed: {wrong[:1]}")
    rich_refused = {c.request.project for c in refused if tight_spec(_k(c.request.project)) is None}
    check(not rich_refused, f"projects that can afford everything refused: {rich_refused}")
    last = requests[-1].now
    with ledger.session() as db:
        held = db.scalar(select(func.count()).select_from(LedgerSession))
        check(held == len(accepted), f"{held} sessions in the database, {len(accepted)} accepted")
        by_project = dict(
            db.execute(
                select(Project.slug, func.sum(LedgerSession.hold_subsidy_cents))
                .join(Project, Project.id == LedgerSession.project_id)
                .group_by(Project.slug)
            ).all()
        )
        grants = dict(
            db.execute(
                select(Project.slug, func.sum(Grant.amount_cents))
                .join(Project, Project.id == Grant.project_id)
                .group_by(Project.slug)
            ).all()
        )
    over = {p: h for p, h in by_project.items() if h > grants[p]}
    check(not over, f"subsidy held over the grants: {over}")
    tight_left = []
    for k in range(N_PROJECTS):
        bal = ledger.balance(project_slug(k), last)
        check(bal.subsidy_left_cents >= 0, f"{bal.project}: subsidy left {bal.subsidy_left_cents}")
        check(
            bal.credit_used_cents <= bal.credit_limit_cents,
            f"{bal.project}: credit used {bal.credit_used_cents} > {bal.credit_limit_cents}",
        )
        if tight_spec(k):
            tight_left.append(bal.subsidy_left_cents + bal.credit_left_cents)
    return [
        f"{len(accepted):,} accepted = {held:,} sessions in the database; "
        f"{len(refused):,} refused, every one 402 with less left than needed, all from the "
        "small-grant projects; 0 errors",
        "no overspend: every project's subsidy held <= its grants, subsidy left >= 0, credit "
        "used <= its limit",
        "the small-grant projects end with "
        + ", ".join(f"HK${c / 100:,.2f}" for c in tight_left)
        + " of subsidy + credit left",
    ]


def _k(slug: str) -> int:
    return int(slug.rsplit("-", 1)[1])


# -- report -------------------------------------------------------------------------------------


def pct_ms(values: list[float], p: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1] * 1000


def spread(values: list[float]) -> str:
    if not values:
        return "- | - | - | -"
    return " | ".join(f"{pct_ms(values, p):,.1f}" for p in (50, 95, 99, 100))


def latency_rows(o: Outcome) -> list[str]:
    out = []
    cfg = o.config
    for kind in ("accepted", "refused", "all"):
        lat = [c.latency_s for c in o.calls if kind == "all" or c.outcome == kind]
        p99 = pct_ms(lat, 99)
        if kind == "all":
            goal = "met" if p99 < GOAL_P99_MS else f"**not met** ({p99 / GOAL_P99_MS:,.0f}x)"
        else:
            goal = ""
        thr = f"{len(o.calls) / o.rounds_wall_s:,.0f}" if kind == "all" else ""
        out.append(
            f"| {cfg.label} | {cfg.database} | {cfg.concurrency} | {o.pool_desc} | {kind} | "
            f"{len(lat):,} | {spread(lat)} | {thr} | {goal} |"
        )
    return out


def parts_row(o: Outcome) -> str:
    calls = o.calls
    pool = [c.pool_wait_s for c in calls]
    lock = [c.lock_wait_s for c in calls]
    rest = [max(0.0, c.latency_s - c.pool_wait_s - c.lock_wait_s) for c in calls]

    def two(v):
        return f"{pct_ms(v, 50):,.1f} / {pct_ms(v, 99):,.1f}"

    mean_latency = statistics.fmean(c.latency_s for c in calls)
    return (
        f"| {o.config.label} | {two([c.latency_s for c in calls])} | {two(pool)} | {two(lock)} | "
        f"{two(rest)} | {o.connects:,} | {mean_latency * 1000:,.1f} | "
        f"{statistics.median(o.bursts_s) * 1000:,.1f} |"
    )


def report(args, outcomes: list[Outcome], descriptions: dict[str, str], setup: dict) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join([".venv/bin/python bench/hold_latency.py", *args.argv])
    head = outcomes[0]
    lines = [
        "# Ledger: hold decision latency under 200 concurrent requests",
        "",
        f"`{command}`",
        "",
        f"- Date: {now}; machine: {machine_info()}",
        *[f"- {name}: {d}" for name, d in descriptions.items()],
        f"- Callers: {args.threads} asyncio tasks calling `HoldQueue.hold` together (one "
        "`asyncio.gather`), as the quota service's handlers do; the baseline: "
        f"{args.threads} OS threads calling `Ledger.open_session` (one transaction each) "
        f"released by a barrier. {args.rounds} bursts of {args.threads} simultaneous holds, "
        f"{len(head.calls):,} calls per configuration, one simulated minute between bursts.",
        f"- Ledger: {N_PROJECTS} projects, {USERS} members each; "
        f"{N_PROJECTS - len(TIGHT)} with HK${RICH_GRANT_CENTS // 100:,} grants, "
        f"{len(TIGHT)} with small ones ("
        + ", ".join(
            f"{p} HK${g / 100:,.0f}" + (f" + HK${c / 100:,.0f} credit" if c else "")
            for p, g, c in TIGHT
        )
        + f"); scheme rate {RATE_BP / 100:g}%; requests for "
        + ", ".join(f"{t} (HK${c / 100:.2f}/h, {w}%)" for t, (c, w) in SLICE_TYPES.items())
        + f", {HOURS[0]}-{HOURS[1]} h; seed {SEED}. Ledgers built through the API (not timed): "
        + "; ".join(f"{k} {v:.0f} s" for k, v in setup.items())
        + "; each configuration on a fresh copy, after an untimed warm-up "
        "(a `balance()` per thread).",
        "- Latency: `time.perf_counter()` around each `hold` / `open_session` call, nearest-rank "
        "percentiles; throughput = calls / summed burst wall time.",
        "",
        "## Latency (ms)",
        "",
        "| configuration | database | concurrent callers | pool | outcome | calls | p50 | p95 | "
        "p99 | max | throughput (holds/s) | goal p99 < 20 ms |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for o in outcomes:
        lines += latency_rows(o)
    lines += ["", verdict(head), ""]
    lines += [
        "Throughput: calls / summed burst time (for the spread configurations that is the "
        "offered rate, not the capacity).",
    ]
    lines += [
        "",
        "## How the queue batched them",
        "",
        "Each batch is one transaction (`Ledger.open_sessions`); its decision time is the "
        "wall time of that call, in the worker thread.",
        "",
        "| configuration | batches | per burst (median) | batch size p50 / max | "
        "decision ms p50 / max | ms per hold in the largest batch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        if not o.batches:
            continue
        sizes = [n for n, _ in o.batches]
        secs = [t for _, t in o.batches]
        n_max, t_max = max(o.batches)
        lines.append(
            f"| {o.config.label} | {len(o.batches):,} | "
            f"{len(o.batches) / len(o.bursts_s):,.1f} | {statistics.median(sizes):,.0f} / "
            f"{max(sizes):,} | {pct_ms(secs, 50):,.1f} / {pct_ms(secs, 100):,.1f} | "
            f"{t_max * 1000 / n_max:,.2f} |"
        )
    if head.batches and len(head.batches) <= 40:
        lines += [
            "",
            "Every batch of the headline, in order (size: ms): "
            + ", ".join(f"{n}: {t * 1000:.1f}" for n, t in head.batches)
            + ". In a burst of simultaneous requests every request waits for its whole batch, "
            "so one slow batch is the p99 of a tenth of the calls.",
        ]
    lines += [
        "",
        "## Where a call waits in the baseline (ms, p50 / p99)",
        "",
        "Pool wait: from the call to the connection's checkout; project lock: the statement "
        "that takes it (`SELECT projects ... FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on "
        "SQLite), i.e. waiting for the holds of the same project (the whole database on "
        "SQLite) ahead of it; the rest: everything else, in Python and in the database, "
        "sharing the GIL with the other threads. New connections: opened during the timed "
        "bursts. A burst lasts from the barrier to its last call's return: when the holds are "
        "served one at a time, the mean latency is about half of it.",
        "",
        "| configuration | whole call | pool wait | project lock | the rest | new connections | "
        "mean latency | burst (median) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [parts_row(o) for o in outcomes if o.config.path == "per-call"]
    lines += ["", "## Checks (every configuration)", ""]
    lines += [f"- {c}" for c in head.checks]
    lines += [
        "- accepted / refused per configuration (inside a burst the order of the holds decides "
        "which of a small-grant project's requests still fit, so the counts can differ): "
        + ", ".join(
            f"{o.config.label}: {sum(c.outcome == 'accepted' for c in o.calls):,} / "
            f"{sum(c.outcome == 'refused' for c in o.calls):,}"
            for o in outcomes
        ),
        "",
        "## Notes",
        "",
        *notes(outcomes),
        f"- Timings are wall time on a shared machine; the PostgreSQL server, the {args.threads} "
        "callers and the probe's events share its cores. The probe (SQLAlchemy `checkout`, "
        "`connect` and cursor events) costs a few microseconds per statement. Load average "
        f"(1 min) before / after: {LOAD[0]} / {load_average()}.",
        "",
    ]
    return "\n".join(lines)


def verdict(head: Outcome) -> str:
    acc = [c.latency_s for c in head.calls if c.outcome == "accepted"]
    ref = [c.latency_s for c in head.calls if c.outcome == "refused"]
    p99 = pct_ms([c.latency_s for c in head.calls], 99)
    met = "met" if p99 < GOAL_P99_MS else "not met"
    return (
        f"**Goal p99 < {GOAL_P99_MS:g} ms on PostgreSQL under {head.config.concurrency} "
        f"concurrent requests: {met}**: p99 {p99:,.0f} ms over all calls (accepted "
        f"{pct_ms(acc, 99):,.0f} ms, refused {pct_ms(ref, 99):,.0f} ms), shipped code and "
        "engine settings."
    )


def notes(outcomes: list[Outcome]) -> list[str]:
    head = outcomes[0]
    base = next((o for o in outcomes if o.config.path == "per-call"), None)
    single = next(
        (o for o in outcomes if o.config.concurrency == 1 and o.config.database == "PostgreSQL"),
        None,
    )
    out = []
    h99 = pct_ms([c.latency_s for c in head.calls], 99)
    if base is not None:
        b99 = pct_ms([c.latency_s for c in base.calls], 99)
        out.append(
            f"- The queue against the baseline, same requests, same database: p99 {h99:,.1f} ms "
            f"vs {b99:,.1f} ms ({b99 / h99:,.0f}x lower). One transaction per hold serves the "
            f"{head.config.concurrency} about one at a time (each holds its project's lock from "
            "its first statement to its commit, and the threads share one interpreter), so the "
            "last waits for all the others; the queue decides them together with a fixed "
            "number of statements."
        )
    if single is not None:
        s50 = pct_ms([c.latency_s for c in single.calls], 50)
        out.append(
            f"- One caller at a time a hold takes {s50:.1f} ms (p50) on PostgreSQL: a batch of "
            "one, whose cost is the statements' round trips and the commit's fsync."
        )
    if head.batches:
        sizes = [n for n, _ in head.batches]
        per_burst = len(head.batches) / max(len(head.bursts_s), 1)
        out.append(
            f"- In the headline the queue made {per_burst:.1f} batches per burst (median size "
            f"{statistics.median(sizes):.0f}, largest {max(sizes)}): the requests of a burst "
            "that are ready together join one batch, so a burst's latency is about one batch "
            "decision plus the event loop's turn to answer them."
        )
    return out


# -- main ---------------------------------------------------------------------------------------


def configs(args) -> list[Config]:
    t = args.threads
    out = [
        Config("PostgreSQL", t, "shipped", f"**headline**: PostgreSQL, {t} at once, HoldQueue"),
        Config(
            "PostgreSQL",
            t,
            "shipped",
            f"baseline: PostgreSQL, {t} threads, one transaction per hold",
            path="per-call",
        ),
    ]
    if not args.quick:
        out += [
            Config(
                "PostgreSQL",
                t,
                "shipped",
                f"PostgreSQL, {t} spread over 1 s, HoldQueue",
                spread_s=1.0,
            ),
            Config("PostgreSQL", 1, "shipped", "PostgreSQL, 1 caller, HoldQueue (service time)"),
        ]
    out += [Config("SQLite", t, "shipped", f"SQLite (comparison), {t} at once, HoldQueue")]
    if not args.quick:
        out += [Config("SQLite", 1, "shipped", "SQLite (comparison), 1 caller, HoldQueue")]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=200, help="callers (%(default)s)")
    parser.add_argument("--rounds", type=int, default=10, help="bursts (%(default)s)")
    parser.add_argument(
        "--quick", action="store_true", help="only the headline and its SQLite comparison"
    )
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS}")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.rounds < 1:
        parser.error("--threads and --rounds must be at least 1")
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    requests = make_requests(args.threads * args.rounds)
    try:
        databases: dict[str, Database] = {"PostgreSQL": PostgresDatabase()}
    except pg.PostgresUnavailable as e:
        print(f"PostgreSQL unavailable: {e.reason}", file=sys.stderr)
        return 1
    databases["SQLite"] = SqliteDatabase()
    outcomes, descriptions, setup = [], {}, {}
    try:
        for name, db in databases.items():
            setup[name] = build_ledger(db.template_url())
            descriptions[name] = db.describe(db.template_url())
            print(f"{name}: ledger built in {setup[name]:.0f} s", flush=True)
        for cfg in configs(args):
            db = databases[cfg.database]
            url = db.copy()
            try:
                o = run_config(url, cfg, requests)
            finally:
                db.discard(url)
            lat = [c.latency_s for c in o.calls]
            print(
                f"{cfg.label}: p50 {pct_ms(lat, 50):.1f} ms, p99 {pct_ms(lat, 99):.1f} ms, "
                f"{len(lat) / o.rounds_wall_s:.0f} holds/s",
                flush=True,
            )
            outcomes.append(o)
    finally:
        for db in databases.values():
            db.close()
    text = report(args, outcomes, descriptions, setup)
    publish(text, RESULTS, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
