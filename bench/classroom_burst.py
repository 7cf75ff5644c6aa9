"""Classroom burst: 40 students press Start within 10 s on the test Slurm cluster.

One real hub (hub_config/jupyterhub_config.py with the test cluster's site, SlurmSliceSpawner)
and a course `class-101` in the ledger (40 students, a class window open now, its own Slurm
account). Student i sends `POST /users/student<i>/server` for an h100.1g.10gb slice at
i x 10 s / 40, each from its own thread; the bench then lists every user once every 0.25 s
(`GET /users`) and records when each server first says `ready: true`. A student counts as served
(ready), queued (still pending, with a progress message from Slurm's queue such as "Slurm job 812
pending: Resources (position 2 in the queue)"), or lost (anything else: failed, vanished, or
pending with no word). Afterwards every server is checked through the proxy and against Slurm
(one RUNNING job each) and the ledger (one active session each), then all are stopped together
and the bench checks that no job and no hold is left.

    .venv/bin/python bench/classroom_burst.py [--students 40] [--window 10] [--write]

Needs the test Slurm (`make slurm`; run as root). The goal: none lost; p50/p95 reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from _common import check, cpu_model, load_average, publish, usable_cores  # noqa: E402
from demo_ledger import add_project  # noqa: E402
from hubprocess import CONFIGURABLE_HTTP_PROXY, HubProcess  # noqa: E402
from slurm_spawn import slurm_env  # noqa: E402
from spawn_latency import p95  # noqa: E402

from slicehub.spawners.slurm import answers as sa  # noqa: E402
from slicehub.spawners.slurm import commands as sc  # noqa: E402

RESULTS = REPO / "bench" / "results" / "classroom_burst.md"
SLURM_SH = REPO / "scripts" / "slurm.sh"
COURSE = "class-101"
OPTIONS = {"project": COURSE, "slice_type": "h100.1g.10gb", "duration_hours": 1}


def write_site(path: Path) -> Path:
    text = (REPO / "hub_config" / "slurm-site.toml").read_text()
    anchor = 'vision-group = "vision-group"\n'
    path.write_text(text.replace(anchor, f'{anchor}{COURSE} = "{COURSE}"\n', 1))
    return path


def write_config(path: Path, students: list[str]) -> Path:
    path.write_text(
        f"load_subconfig({str(REPO / 'hub_config' / 'jupyterhub_config.py')!r})\n"
        "c.Spawner.http_timeout = 120\n"
        f"c.Authenticator.allowed_users = {set(students) | {'staff'}!r}\n"
    )
    return path


def add_course(data: Path, students: list[str]) -> None:
    """The course, once the hub's quota service has made the ledger: its students and a class
    window open now."""
    now = datetime.now(UTC)
    add_project(
        data,
        COURSE,
        grant_cents=1000_00,
        members={s: "student" for s in students},
        windows=((now - timedelta(hours=1), now + timedelta(hours=3)),),
        name="Class 101",
        allowed_slice_types=["h100.1g.10gb"],
        max_concurrent_sessions=200,
        is_course=True,
    )


class Student:
    def __init__(self, name: str, at: float):
        self.name, self.at = name, at
        self.sent: float | None = None
        self.sent_wall: dt.datetime | None = None
        self.status: int | None = None
        self.answer = ""
        self.ready: float | None = None
        self.last_message = ""

    def press_start(self, hub: HubProcess, t0: float) -> None:
        time.sleep(max(0.0, t0 + self.at - time.monotonic()))
        self.sent = time.monotonic()
        self.sent_wall = dt.datetime.now()
        r = hub.start_server(self.name, OPTIONS)
        self.status, self.answer = r.status_code, r.text[:300]


def last_progress(hub: HubProcess, user: str) -> str:
    """The last progress message of a server that is still starting."""
    r = hub.api("GET", f"/users/{user}/server/progress", stream=True, timeout=5)
    last = ""
    try:
        for line in r.iter_lines():
            if line.startswith(b"data:"):
                last = json.loads(line[5:]).get("message", last)
    except Exception:  # the stream is cut by the timeout: what came so far is enough
        pass
    finally:
        r.close()
    return last


_LOG_TIME = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")


def phases(log: str, students: list[Student]) -> dict[str, list[float]]:
    """Per student, from the hub's log: POST -> sbatch, sbatch -> port reported (the job ran
    and its server picked a port), port -> ready (the server answering, then the proxy)."""
    marks: dict[tuple[str, str], dt.datetime] = {}
    for line in log.splitlines():
        m = _LOG_TIME.match(line)
        if not m:
            continue
        at = dt.datetime.fromisoformat(m.group(1))
        if w := re.search(r"Submitting the job of (\w+)/", line):
            marks.setdefault((w.group(1), "submit"), at)
        elif w := re.search(r"Slurm job \d+ of (\w+)/ runs on", line):
            marks.setdefault((w.group(1), "port"), at)
        elif w := re.search(r"User (\w+) took [0-9.]+ seconds to start", line):
            marks.setdefault((w.group(1), "ready"), at)
    out: dict[str, list[float]] = {"POST to sbatch": [], "sbatch to port": [], "port to ready": []}
    for s in students:
        sub, port, ready = (marks.get((s.name, k)) for k in ("submit", "port", "ready"))
        if s.sent_wall and sub and port and ready:
            out["POST to sbatch"].append((sub - s.sent_wall).total_seconds())
            out["sbatch to port"].append((port - sub).total_seconds())
            out["port to ready"].append((ready - port).total_seconds())
    return out


def squeue_jobs() -> list[sa.QueuedJob]:
    done = subprocess.run(sc.squeue_argv(), capture_output=True, text=True, check=True)
    return [j for j in sa.parse_squeue(done.stdout) if j.name.startswith("slicehub-")]


def run_burst(hub: HubProcess, students: list[Student], timeout: float) -> float:
    t0 = time.monotonic()
    threads = [threading.Thread(target=s.press_start, args=(hub, t0)) for s in students]
    for t in threads:
        t.start()
    by_name = {s.name: s for s in students}
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        users = hub.api("GET", "/users", params={"limit": 500}).json()
        now = time.monotonic()
        for u in users:
            s = by_name.get(u["name"])
            server = (u.get("servers") or {}).get("")
            if s and s.ready is None and s.sent is not None and server and server.get("ready"):
                s.ready = now
        if all(s.ready is not None for s in students) and all(not t.is_alive() for t in threads):
            break
        time.sleep(0.25)
    for t in threads:
        t.join()
    return time.monotonic() - t0


def report(students: list[Student], args, wall: float, checks: list[str], log: str) -> str:
    ready = [s.ready - s.sent for s in students if s.ready is not None]
    queued = [s for s in students if s.ready is None and "pending" in s.last_message]
    lost = [s for s in students if s.ready is None and s not in queued]
    sent = [s.sent for s in students if s.sent is not None]
    spread = max(sent) - min(sent) if sent else 0.0
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    slurm = subprocess.run(["sinfo", "--version"], capture_output=True, text=True).stdout.strip()
    p50 = statistics.median(ready) if ready else float("nan")
    p95_ = p95(ready) if len(ready) > 1 else float("nan")
    lines = [
        "# Classroom burst on the test Slurm cluster",
        "",
        "| students | Start pressed within (s) | ready | queued with a message | lost "
        "| p50 time-to-ready (s) | p95 (s) | max (s) | all ready after (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(students)} | {spread:.1f} | {len(ready)} | {len(queued)} | {len(lost)} "
        f"| {p50:.1f} | {p95_:.1f} | {max(ready, default=float('nan')):.1f} | {wall:.1f} |",
        "",
        f"**Goal: none lost — {'met' if not lost else 'NOT met'}.**",
        "",
        f"- Method: {len(students)} students of course {COURSE} (class window open, HK$1,000 "
        f"grant, account {COURSE}) each send `POST /users/<student>/server` with "
        f"`{json.dumps(OPTIONS)}`, student i at i x {args.window:g} s / {len(students)}, each "
        "from its own thread; time-to-ready is from that student's POST to the first "
        "`GET /users` (listed every 0.25 s) showing the server ready.",
        "- Where the time goes (hub log, median / max s): "
        + "; ".join(
            f"{k} {statistics.median(v):.2f} / {max(v):.2f}"
            for k, v in phases(log, students).items()
            if v
        )
        + ". The servers' own start-up on a shared 2-core machine dominates.",
        "- Checks after the burst: " + "; ".join(checks),
        f"- Time-to-ready, sorted (s): {', '.join(f'{v:.1f}' for v in sorted(ready))}",
    ]
    for s in queued + lost:
        lines.append(f"- {s.name}: POST {s.status} {s.answer!r}; last progress: {s.last_message!r}")
    lines += [
        f"- Machine: {cpu_model()}, {usable_cores()} cores, {platform.platform()}; every server "
        "(40 jupyterhub-singleuser processes) runs on this same machine",
        f"- Python {platform.python_version()}, JupyterHub {metadata.version('jupyterhub')}, "
        f"batchspawner {metadata.version('batchspawner')}, {slurm}",
        f"- Load average (1 min) before / after: {args.load_before} / {load_average()}",
        f"- Date: {now}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--window", type=float, default=10.0, help="seconds to spread starts")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for all")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=REPO / ".bench-data" / "classroom_burst",
        help="emptied, then holds the hub's files and logs (default: %(default)s)",
    )
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS}")
    args = parser.parse_args(argv)
    if not CONFIGURABLE_HTTP_PROXY.exists():
        raise SystemExit(f"{CONFIGURABLE_HTTP_PROXY} is missing: run `make node_modules`")
    args.load_before = load_average()
    env = slurm_env()
    os.environ.update(env)
    for cmd in (["ensure-account", COURSE], ["ensure-user", "root", COURSE]):
        subprocess.run(["bash", str(SLURM_SH), *cmd], check=True, capture_output=True)
    check(not squeue_jobs(), "Slicehub jobs are already on the cluster: cancel them first")
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)

    names = [f"student{i:02d}" for i in range(1, args.students + 1)]
    students = [Student(n, i * args.window / args.students) for i, n in enumerate(names)]
    hub_env = {"SLICEHUB_SITE": str(write_site(args.workdir / "site.toml")), **env}
    hub = HubProcess(write_config(args.workdir / "config.py", names), args.workdir / "hub", hub_env)
    checks: list[str] = []
    try:
        hub.start()
        add_course(args.workdir / "hub" / "data", names)
        for n in names:
            hub.create_user(n)
        wall = run_burst(hub, students, args.timeout)
        for s in students:
            if s.ready is None and hub.server_model(s.name):
                s.last_message = last_progress(hub, s.name)
        served = [s for s in students if s.ready is not None]
        reachable = sum(hub.get(f"/user/{s.name}/api/status").status_code == 200 for s in served)
        check(reachable == len(served), f"only {reachable} of {len(served)} servers answer")
        running = [j for j in squeue_jobs() if j.state == "RUNNING"]
        check(len(running) == len(served), f"{len(running)} RUNNING jobs for {len(served)} ready")
        check(all(j.gres == {"1g.10gb": 1} for j in running), "a job holds other slices")
        checks.append(f"{reachable} servers answer through the proxy")
        checks.append(f"{len(running)} RUNNING Slurm jobs, one 1g.10gb slice each")
        stop_t0 = time.monotonic()
        stoppers = [
            threading.Thread(target=hub.api, args=("DELETE", f"/users/{s.name}/server"))
            for s in students
        ]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        deadline = time.monotonic() + 120
        while (squeue_left := [j for j in squeue_jobs() if not j.finished]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.5)
        check(not squeue_left, f"{len(squeue_left)} jobs left after stopping everyone")
        checks.append(f"all stopped together: no job left after {time.monotonic() - stop_t0:.1f} s")
    finally:
        leftovers = hub.close()
        if leftovers:
            print(f"the hub left processes behind, killed: {len(leftovers)}", file=sys.stderr)
    from slicehub.quota.ledger import Ledger
    from slicehub.quota.reader import LedgerReader

    ledger = Ledger(f"sqlite:///{args.workdir / 'hub' / 'data' / 'ledger.sqlite'}")
    sessions = LedgerReader(ledger).sessions(None, COURSE)
    ledger.dispose()
    check(
        len(sessions) == len(served) and all(s["status"] == "stopped" for s in sessions),
        f"ledger: {len(sessions)} sessions for {len(served)} servers, not all stopped",
    )
    checks.append(f"ledger: {len(sessions)} sessions, all released")

    text = report(students, args, wall, checks, hub.log_text())
    publish(text, RESULTS, args.write)
    return 0 if all(s.ready is not None or "pending" in s.last_message for s in students) else 1


if __name__ == "__main__":
    sys.exit(main())
