"""Classroom burst: 40 students press Start within 10 s, with and without pre-warming, on the
local spawner and on the test Slurm cluster (issue 15).

For each spawner and each way, one real hub (hub_config/jupyterhub_config.py) and a course
`class-101` in the ledger (40 students, HK$1,000, its own Slurm account):

- **cold**: the class window is open; student i sends `POST /users/<student>/server` for an
  h100.1g.10gb slice at i x 10 s / 40 (each from its own thread, with their own token); ready
  is the first `GET /users` (every 0.25 s) that shows the server ready.
- **pre-warmed**: the course pre-warms (`slicehub admin course prewarm --lead`), the window
  opens `--lead` minutes after the course is made, and the classroom service starts the 40
  students' servers in the meantime. The students have signed in (the hub's login form);
  once the window is open, student i presses Start at i x 10 s / 40: `GET /hub/spawn` with
  their browser's cookies, following the redirects (the hub sends them to their running
  server, whose first visit goes through the hub's OAuth) to their JupyterLab page; ready is
  that page's answer (which also claims the server). `--no-shows` students never come: their
  servers are stopped once the claim time is over, and the ledger's pre-warm lines say what was
  claimed and what was wasted.

Then, in both ways, each student opens a notebook on the GPU kernel (`POST /user/<s>/api/
sessions`, kernel slicehub-gpu: CPU path here) and runs one cell (`print(int((xp.arange(10**6)
** 2).sum()))`) over the kernel's websocket: Start-to-first-cell is from pressing Start to that
cell's result.
A student counts as lost when their server or their cell does not come within `--timeout`.

    .venv/bin/python bench/classroom_burst.py [--spawners local,slurm] [--ways cold,prewarm]
        [--students 40] [--window 10] [--lead 4] [--no-shows 4] [--write]

Needs the test Slurm for the Slurm rows (`make slurm`; run as root). Goal (pre-warmed): p95
Start-to-ready <= 2 s and Start-to-first-cell <= 5 s, none lost, waste reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from _common import check, cpu_model, load_average, publish, usable_cores  # noqa: E402
from demo_ledger import add_project  # noqa: E402
from hubprocess import CONFIGURABLE_HTTP_PROXY, HubProcess  # noqa: E402
from slurm_spawn import slurm_env  # noqa: E402
from spawn_latency import p95  # noqa: E402

from tests.integration.test_kernel_hub import run_cell  # noqa: E402

RESULTS = REPO / "bench" / "results" / "classroom_burst.md"
SLURM_SH = REPO / "scripts" / "slurm.sh"
COURSE = "class-101"
SLICE = "h100.1g.10gb"
OPTIONS = {"project": COURSE, "slice_type": SLICE, "duration_hours": 1}
CELL = "print(int((xp.arange(10**6) ** 2).sum()))"
CELL_ANSWER = str(sum(i * i for i in range(10**6)))
CLAIM_MINUTES = 1
DEMO_PASSWORD = os.environ.get("SLICEHUB_DEMO_PASSWORD", "slicehub-demo")
GOAL_READY_S, GOAL_CELL_S = 2.0, 5.0


# -- the hubs ----------------------------------------------------------------------------------


def local_site(path: Path) -> Path:
    """The classroom test site (tests/fixtures/sites) with a third node: 42 1g.10gb slices."""
    text = (REPO / "tests" / "fixtures" / "sites" / "classroom-site.toml").read_text()
    node = text[text.index('[[nodes]]\nname = "gpu-node-02"') : text.index("[slice_types")]
    path.write_text(text.replace("[slice_types", node.replace("02", "03") + "[slice_types", 1))
    return path


def slurm_site(path: Path) -> Path:
    text = (REPO / "hub_config" / "slurm-site.toml").read_text()
    anchor = 'vision-group = "vision-group"\n'
    path.write_text(text.replace(anchor, f'{anchor}{COURSE} = "{COURSE}"\n', 1))
    return path


def write_config(path: Path, students: list[str]) -> Path:
    path.write_text(
        f"load_subconfig({str(REPO / 'hub_config' / 'jupyterhub_config.py')!r})\n"
        "c.Spawner.http_timeout = 180\n"
        "c.Spawner.start_timeout = 300\n"
        f"c.Authenticator.allowed_users = {set(students) | {'staff'}!r}\n"
    )
    return path


def add_course(data: Path, students: list[str], opens: datetime, closes: datetime) -> None:
    add_project(
        data,
        COURSE,
        grant_cents=1000_00,
        members=dict.fromkeys(students, "student"),
        windows=((opens, closes),),
        name="Class 101",
        allowed_slice_types=[SLICE],
        max_concurrent_sessions=200,
        is_course=True,
    )


def set_prewarm(data: Path, lead_minutes: int) -> None:
    from slicehub.quota.ledger import Ledger

    ledger = Ledger(f"sqlite:///{data / 'ledger.sqlite'}")
    try:
        ledger.set_prewarm(
            "staff", COURSE, datetime.now(UTC), lead_minutes, CLAIM_MINUTES, slice_type=SLICE
        )
    finally:
        ledger.dispose()


# -- one student -------------------------------------------------------------------------------


@dataclass
class Student:
    name: str
    at: float  # seconds after the burst's start that they press Start
    token: str = ""
    sent: float | None = None
    ready: float | None = None
    cell: float | None = None
    problem: str = ""
    hops: list[tuple[str, float]] = field(default_factory=list)  # the Start's requests, timed
    http: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.http.trust_env = False

    def auth(self) -> dict:
        return {"Authorization": f"token {self.token}"}

    def press_start(self, hub: HubProcess, t0: float, prewarmed: bool, timeout: float) -> None:
        time.sleep(max(0.0, t0 + self.at - time.monotonic()))
        self.sent = time.monotonic()
        try:
            if prewarmed:  # the signed-in browser's Start: the hub sends them to their server
                r = self.http.get(f"{hub.url}/hub/spawn", timeout=timeout)
                self.hops = [(hop(h.url), h.elapsed.total_seconds()) for h in [*r.history, r]]
                if r.status_code != 200 or f"/user/{self.name}/" not in r.url:
                    self.problem = f"Start answered {r.status_code} at {r.url}"
                    return
                self.ready = time.monotonic()
            else:
                r = self.http.post(
                    f"{hub.api_url}/users/{self.name}/server",
                    json=OPTIONS,
                    headers=self.auth(),
                    timeout=timeout,
                )
                if r.status_code not in (201, 202):
                    self.problem = f"POST answered {r.status_code}: {r.text[:200]}"
                    return
                while self.ready is None and time.monotonic() - self.sent < timeout:
                    time.sleep(0.05)  # the poller below sets it
                if self.ready is None:
                    self.problem = "the server was not ready in time"
                    return
            self.first_cell(hub, timeout)
        except Exception as e:  # a bench records what went wrong and goes on
            self.problem = f"{type(e).__name__}: {e}"

    def first_cell(self, hub: HubProcess, timeout: float) -> None:
        r = self.http.post(
            f"{hub.url}/user/{self.name}/api/sessions",
            json={
                "path": "class.ipynb",
                "type": "notebook",
                "name": "class.ipynb",
                "kernel": {"name": "slicehub-gpu"},
            },
            headers=self.auth(),
            timeout=timeout,
        )
        if r.status_code != 201:
            self.problem = f"opening the notebook answered {r.status_code}: {r.text[:200]}"
            return
        kernel = r.json()["kernel"]["id"]
        ws = (
            hub.url.replace("http://", "ws://") + f"/user/{self.name}/api/kernels/{kernel}/channels"
        )
        out = run_cell(ws, self.token, CELL, timeout=timeout)
        if CELL_ANSWER not in out:
            self.problem = f"the cell printed {out[-200:]!r}"
            return
        self.cell = time.monotonic()


def hop(url: str) -> str:
    """Which step of the pre-warmed Start a request was (its path, the student's name elided)."""
    path = url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
    parts = path.split("/")
    if len(parts) > 1 and parts[0] == "user":
        parts[1] = "<s>"
    return "/" + "/".join(parts)


def poll_ready(hub: HubProcess, students: list[Student], stop: threading.Event) -> None:
    """One `GET /users` every 0.25 s: when each started server is first listed ready."""
    by_name = {s.name: s for s in students}
    while not stop.is_set():
        for u in hub.api("GET", "/users", params={"limit": 500}).json():
            s = by_name.get(u["name"])
            server = (u.get("servers") or {}).get("")
            if s and s.sent is not None and s.ready is None and server and server.get("ready"):
                s.ready = time.monotonic()
        stop.wait(0.25)


# -- one row -----------------------------------------------------------------------------------


@dataclass
class Row:
    spawner: str
    way: str
    students: list[Student]
    spread: float = 0.0
    warm_ready: int = 0  # pre-warmed servers ready when the window opened
    warm_seconds: float = 0.0  # from the course's creation until every one was ready
    claimed: tuple[int, float, int] = (0, 0.0, 0)  # sessions, server-minutes, list cents
    wasted: tuple[int, float, int] = (0, 0.0, 0)
    checks: list[str] = field(default_factory=list)

    def came(self) -> list[Student]:
        return [s for s in self.students if s.at >= 0]

    def times(self, which: str) -> list[float]:
        return [getattr(s, which) - s.sent for s in self.came() if getattr(s, which)]

    def lost(self) -> list[Student]:
        return [s for s in self.came() if s.cell is None]


def run_row(spawner: str, way: str, args, env: dict[str, str]) -> Row:
    prewarmed = way == "prewarm"
    work = args.workdir / f"{spawner}-{way}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    names = [f"student{i:02d}" for i in range(1, args.students + 1)]
    shows = args.students - (args.no_shows if prewarmed else 0)
    students = [
        Student(n, i * args.window / shows if i < shows else -1.0) for i, n in enumerate(names)
    ]
    site = local_site(work / "site.toml") if spawner == "local" else slurm_site(work / "site.toml")
    hub_env = {"SLICEHUB_SITE": str(site), "SLICEHUB_CLASSROOM_INTERVAL": "2", **env}
    hub = HubProcess(write_config(work / "config.py", names), work / "hub", hub_env)
    row = Row(spawner, way, students)
    data = work / "hub" / "data"
    try:
        hub.start()
        now = datetime.now(UTC).replace(microsecond=0)
        opens = now + timedelta(minutes=args.lead) if prewarmed else now - timedelta(hours=1)
        add_course(data, names, opens, opens + timedelta(hours=3))
        for s in students:
            hub.create_user(s.name)
            r = hub.api("POST", f"/users/{s.name}/tokens", json={"note": "bench"})
            s.token = r.json()["token"]
            if prewarmed and s.at >= 0:  # signed in before the class, as a student's browser
                s.http = hub.login(s.name, DEMO_PASSWORD)
        if prewarmed:
            made = time.monotonic()
            set_prewarm(data, args.lead)
            row.warm_seconds = wait_warm(hub, names, opens, made)
            row.warm_ready = sum(bool(_ready(hub, n)) for n in names)
            time.sleep(max(0.0, (opens - datetime.now(UTC)).total_seconds()) + 1)
        came = row.came()
        stop = threading.Event()
        poller = threading.Thread(target=poll_ready, args=(hub, came, stop))
        poller.start()
        t0 = time.monotonic()
        threads = [
            threading.Thread(target=s.press_start, args=(hub, t0, prewarmed, args.timeout))
            for s in came
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        poller.join()
        sent = [s.sent for s in came if s.sent is not None]
        row.spread = max(sent) - min(sent) if sent else 0.0
        if prewarmed:  # the claim time over: the no-shows' servers are stopped, waste counted
            claim_over = opens + timedelta(minutes=CLAIM_MINUTES, seconds=10)
            time.sleep(max(0.0, (claim_over - datetime.now(UTC)).total_seconds()))
            absent = [s.name for s in students if s.at < 0]
            deadline = time.monotonic() + 60
            while any(_ready(hub, n, True) for n in absent) and time.monotonic() < deadline:
                time.sleep(0.5)
            left = [n for n in absent if _ready(hub, n, True)]
            check(not left, f"unclaimed servers still running: {left}")
            row.checks.append(f"{len(absent)} no-shows' servers stopped at the claim time")
            row.claimed, row.wasted = prewarm_lines(data)
        served = [s for s in came if s.ready is not None]
        answering = sum(hub.get(f"/user/{s.name}/api/status").status_code == 200 for s in served)
        row.checks.append(f"{answering} of {len(served)} servers answer through the proxy")
        stopped_at = time.monotonic()
        stoppers = [
            threading.Thread(target=hub.api, args=("DELETE", f"/users/{n}/server")) for n in names
        ]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        deadline = time.monotonic() + 120
        while any(_ready(hub, n, True) for n in names) and time.monotonic() < deadline:
            time.sleep(0.5)
        row.checks.append(f"all stopped together in {time.monotonic() - stopped_at:.1f} s")
    finally:
        hub.close()
        if spawner == "slurm":  # the class's reservation outlives its hub: remove it
            drop_reservations()
    active = _active_sessions(data)
    check(active == 0, f"{active} ledger sessions still active after stopping everyone")
    row.checks.append("no ledger session left active")
    return row


def drop_reservations() -> None:
    from slicehub.spawners.slurm import reservation as rv

    shown = subprocess.run(rv.show_reservations_argv(), capture_output=True, text=True)
    for r in rv.parse_reservations(shown.stdout) if shown.returncode == 0 else ():
        if (r.window or ("",))[0] == COURSE:
            subprocess.run(rv.delete_reservation_argv(r.name), capture_output=True)


def wait_warm(hub: HubProcess, names: list[str], opens: datetime, made: float) -> float:
    """Until every pre-warmed server is ready, or the window opens; how long that took."""
    while datetime.now(UTC) < opens:
        if all(_ready(hub, n) for n in names):
            return time.monotonic() - made
        time.sleep(1)
    return float("nan")


def _ready(hub: HubProcess, name: str, any_state: bool = False) -> bool:
    r = hub.api("GET", f"/users/{name}")
    server = (r.json().get("servers") or {}).get("") if r.status_code == 200 else None
    return bool(server) and (any_state or bool(server.get("ready")))


def prewarm_lines(data: Path):
    """(sessions, server-minutes, list cents) of the pre-warmed sessions: claimed, wasted."""
    with sqlite3.connect(data / "ledger.sqlite") as db:
        rows = db.execute(
            "SELECT stop_reason, started_at, stopped_at, charged_list_cents FROM sessions "
            "WHERE prewarm_window_id IS NOT NULL AND status = 'stopped'"
        ).fetchall()

    def total(selected) -> tuple[int, float, int]:
        minutes = sum(
            (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds() / 60
            for _, a, b, _ in selected
        )
        return len(selected), minutes, sum(c for *_, c in selected)

    claimed = [r for r in rows if r[0] == "claimed"]
    return total(claimed), total([r for r in rows if r[0] != "claimed"])


def _active_sessions(data: Path) -> int:
    with sqlite3.connect(data / "ledger.sqlite") as db:
        return db.execute("SELECT count(*) FROM sessions WHERE status = 'active'").fetchone()[0]


# -- the report --------------------------------------------------------------------------------


def stats(values: list[float]) -> str:
    if not values:
        return "- | - | -"
    q = p95(values) if len(values) > 1 else values[0]
    return f"{statistics.median(values):.2f} | {q:.2f} | {max(values):.2f}"


def report(rows: list[Row], args) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Classroom burst: cold and pre-warmed, local spawner and test Slurm",
        "",
        "| spawner | way | students pressing Start (within s) | lost | Start-to-ready p50 "
        "| p95 | max (s) | Start-to-first-cell p50 | p95 | max (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.spawner} | {r.way} | {len(r.came())} ({r.spread:.1f}) | {len(r.lost())} "
            f"| {stats(r.times('ready'))} | {stats(r.times('cell'))} |"
        )
    lines += [
        "",
        "| spawner | pre-warmed ready before the window | all ready after (s) | claimed: "
        "servers, server-min, list cost | wasted: servers, server-min, list cost |",
        "|---|---:|---:|---|---|",
    ]
    for r in rows:
        if r.way != "prewarm":
            continue
        lines.append(
            f"| {r.spawner} | {r.warm_ready} of {args.students} | {r.warm_seconds:.0f} "
            f"| {_line(r.claimed)} | {_line(r.wasted)} |"
        )
    lines += ["", *goals(rows), "", *hop_table(rows), "## Method", ""]
    lines += [
        f"- {args.students} students of course {COURSE} (HK$1,000 grant, one {SLICE} slice "
        f"each). Cold: the window is open; student i sends `POST /users/<student>/server` with "
        f"their own token at i x {args.window:g} s / n; ready when `GET /users` (every 0.25 s) "
        "lists the server ready. Pre-warmed: `set_prewarm(lead="
        f"{args.lead} min, claim={CLAIM_MINUTES} min)` when the course is made, the window "
        f"opening {args.lead} min later; {args.no_shows} students never come; the others press "
        "Start inside the window, signed in: `GET /hub/spawn` with their browser's cookies, "
        "following the redirects (the hub's OAuth on the first visit) to their JupyterLab page "
        "(ready: that page's answer, which claims the server).",
        "- First cell: `POST /user/<s>/api/sessions` (a notebook on the slicehub-gpu kernel, CPU "
        f"path) and `{CELL}` over the kernel's websocket; Start-to-first-cell ends at its result.",
        "- Claimed and wasted: the ledger's pre-warmed sessions once the claim time is over "
        "(server-minutes from each session's start to its claim or stop; list cost as charged).",
    ]
    for r in rows:
        lines.append(f"- Checks, {r.spawner} {r.way}: " + "; ".join(r.checks))
        for s in r.came():
            if s.problem:
                lines.append(f"  - {s.name}: {s.problem}")
    slurm = subprocess.run(["sinfo", "--version"], capture_output=True, text=True).stdout.strip()
    lines += [
        f"- Machine: {cpu_model()}, {usable_cores()} cores, {platform.platform()}; every server, "
        "kernel and Dask cluster of the class runs on this same machine (Slurm's two nodes too)",
        f"- Python {platform.python_version()}, JupyterHub {metadata.version('jupyterhub')}, "
        f"batchspawner {metadata.version('batchspawner')}, {slurm or 'no Slurm'}",
        f"- Load average (1 min) before / after: {args.load_before} / {load_average()}",
        f"- Date: {now}",
        "",
    ]
    return "\n".join(lines)


def hop_table(rows: list[Row]) -> list[str]:
    """The pre-warmed Start's requests, each timed (to its answer's headers), p50 / p95 / max."""
    lines = []
    for r in rows:
        by_hop: dict[str, list[float]] = {}
        for s in r.came():
            for name, seconds in s.hops:
                by_hop.setdefault(name, []).append(seconds)
        if not by_hop:
            continue
        if not lines:
            lines = [
                "The pre-warmed Start's requests, in order (seconds to each answer):",
                "",
                "| spawner | request | p50 | p95 | max |",
                "|---|---|---:|---:|---:|",
            ]
        for name, values in by_hop.items():
            lines.append(f"| {r.spawner} | `{name}` | {stats(values)} |")
    return [*lines, ""] if lines else []


def _line(t: tuple[int, float, int]) -> str:
    n, minutes, cents = t
    return f"{n}, {minutes:.1f}, HK${cents / 100:,.2f}"


def goals(rows: list[Row]) -> list[str]:
    out = []
    for r in rows:
        if r.way != "prewarm":
            continue
        ready, cell = r.times("ready"), r.times("cell")
        met = (
            not r.lost()
            and len(ready) > 1
            and p95(ready) <= GOAL_READY_S
            and len(cell) > 1
            and p95(cell) <= GOAL_CELL_S
        )
        out.append(
            f"**Goal ({r.spawner}, pre-warmed: p95 Start-to-ready <= {GOAL_READY_S:g} s, "
            f"Start-to-first-cell <= {GOAL_CELL_S:g} s, none lost): "
            f"{'met' if met else 'NOT met'}.**"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spawners", default="local,slurm")
    parser.add_argument("--ways", default="cold,prewarm")
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--window", type=float, default=10.0, help="seconds to spread starts")
    parser.add_argument("--lead", type=int, default=4, help="pre-warm lead, minutes")
    parser.add_argument("--no-shows", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=REPO / ".bench-data" / "classroom_burst",
        help="emptied, then holds the hubs' files and logs (default: %(default)s)",
    )
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS}")
    args = parser.parse_args(argv)
    if not CONFIGURABLE_HTTP_PROXY.exists():
        raise SystemExit(f"{CONFIGURABLE_HTTP_PROXY} is missing: run `make node_modules`")
    args.load_before = load_average()
    spawners = [s for s in args.spawners.split(",") if s]
    ways = [w for w in args.ways.split(",") if w]
    rows = []
    for spawner in spawners:
        env: dict[str, str] = {}
        if spawner == "slurm":
            env = slurm_env()
            os.environ.update(env)
            for cmd in (["ensure-account", COURSE], ["ensure-user", "root", COURSE]):
                subprocess.run(["bash", str(SLURM_SH), *cmd], check=True, capture_output=True)
        for way in ways:
            print(f"{spawner} {way} ...", file=sys.stderr, flush=True)
            rows.append(run_row(spawner, way, args, env))
    publish(report(rows, args), RESULTS, args.write)
    return 0 if all(not r.lost() for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
