"""A class on the test Slurm cluster (issue 15): a course of two students, a window 30 s away
with a one-minute lead. The classroom service reserves the nodes the window needs (one node's
worth of 1g.10gb seats: one node) as a Slurm advance reservation for the course's account; the
two pre-warmed servers' jobs run in it; a research job pinned to that node cannot take its
slices meanwhile; the first student claims their server through the proxy, the other one is
stopped when the claim time is over; at the window's end the class's job ends with it and the
reservation is gone.

About 3 minutes (the window's lead, claim time and length, cut to what the rules allow);
everything it makes is removed even when an assertion fails.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import slurmcluster
from slurmcluster import SlurmCluster

from slicehub.quota.ledger import Ledger
from slicehub.spawners.slurm import answers as sa
from slicehub.spawners.slurm import commands as sc
from slicehub.spawners.slurm import reservation as rv
from tests.demo_ledger import add_project
from tests.integration.test_slurm_hub import SITE, write_config
from tests.integration.test_slurm_reservation import submit

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

COURSE = "cls-101"
STUDENTS = ("stu1", "stu2")


@pytest.fixture(scope="module")
def slurm() -> SlurmCluster:
    cluster = slurmcluster.ensure_slurm(accounting=True)
    cluster.ensure_account(COURSE, "root")
    return cluster


def reservations(slurm: SlurmCluster) -> list[rv.ShownReservation]:
    done = slurm.run(rv.show_reservations_argv(executable=slurm.scontrol))
    if done.returncode != 0 and rv.NO_RESERVATIONS not in done.stdout:
        raise AssertionError(done.stderr)
    return [r for r in rv.parse_reservations(done.stdout) if (r.window or ("",))[0] == COURSE]


def ours(slurm: SlurmCluster) -> list[sa.QueuedJob]:
    done = slurm.run(sc.squeue_argv(executable=slurm.squeue))
    return [
        j
        for j in sa.parse_squeue(done.stdout)
        if j.name.startswith(("slicehub", "resv-prewarm")) and not j.finished
    ]


def show_job(slurm: SlurmCluster, job_id: str) -> dict[str, str]:
    done = slurm.run([slurm.scontrol, "show", "job", "--oneliner", job_id])
    return dict(w.split("=", 1) for w in done.stdout.split() if "=" in w)


def wait(what, check, timeout: float, hub=None):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            tail = hub.log_tail(80) if hub is not None else ""
            raise AssertionError(f"{what}: not within {timeout} s\n{tail}")
        time.sleep(0.5)
    return found


def test_a_class_runs_in_its_reservation_on_slurm(hub_factory, tmp_path: Path, slurm) -> None:
    site = tmp_path / "slurm-site.toml"
    site.write_text(
        SITE.read_text().replace(
            'vision-group = "vision-group"\n',
            f'vision-group = "vision-group"\n{COURSE} = "{COURSE}"\n',
            1,
        )
    )
    data = tmp_path / "data"
    hub = hub_factory(
        write_config(tmp_path),
        env={
            "SLICEHUB_SITE": str(site),
            "SLICEHUB_DATA_DIR": str(data),
            "SLURM_CONF": slurm.slurm_conf,
            "SLICEHUB_METER_INTERVAL": "1",
            "SLICEHUB_CLASSROOM_INTERVAL": "1",
        },
    )
    now = datetime.now(UTC).replace(microsecond=0)
    # 100 s of class: the jobs' time limits are whole minutes, rounded down from the session's
    # end (Slurm stops a job no later than its hold runs out): submitted ~25 s before the
    # window, they get 2 minutes, which outlast the claim time
    start = now + timedelta(seconds=35)
    end = start + timedelta(seconds=100)
    add_project(
        data,
        COURSE,
        grant_cents=1000_00,
        members=dict.fromkeys(STUDENTS, "student"),
        windows=((start, end),),
        allowed_slice_types=["h100.1g.10gb"],
        max_concurrent_sessions=20,
        is_course=True,
    )
    ledger = Ledger(f"sqlite:///{data / 'ledger.sqlite'}")
    try:
        ledger.set_prewarm("staff", COURSE, now, lead_minutes=1, claim_minutes=1)
    finally:
        ledger.dispose()
    research = None
    try:
        # the window's reservation: one node's worth of seats, the course's account
        (reserved,) = wait("the class reservation", lambda: reservations(slurm), 30, hub)
        assert len(reserved.nodes) == 1 and reserved.accounts == (COURSE,)
        assert reserved.end.astimezone() == end
        (node,) = reserved.nodes

        for name in STUDENTS:
            wait(f"{name}'s pre-warmed server", lambda n=name: _ready(hub, n), 90, hub)
        jobs = {j.job_id: j for j in ours(slurm)}
        assert len(jobs) == 2
        for job_id, j in jobs.items():
            assert (j.state, j.nodes) == ("RUNNING", node)
            shown = show_job(slurm, job_id)
            assert (shown["Reservation"], shown["Account"]) == (reserved.name, COURSE)

        # a research job pinned to the reserved node cannot take a slice there
        research = submit(slurm, tmp_path, "resv-prewarm-research", node=node)
        time.sleep(3)  # a few scheduler passes with slices free on the node
        (pending,) = [j for j in ours(slurm) if j.job_id == research]
        assert pending.pending and pending.reason.startswith("ReqNodeNotAvail"), pending

        # stu1 reaches their server inside the window: claimed; stu2's is stopped later
        r = hub.api("POST", "/users/stu1/tokens", json={"note": "test"})
        token = r.json()["token"]
        wait("the window to open", lambda: datetime.now(UTC) >= start, 60)
        reached = requests.get(
            f"{hub.url}/user/stu1/api/status",
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )
        assert reached.status_code == 200
        wait("stu1's claim", lambda: _reasons(data).get("stu1") == "claimed", 20, hub)
        wait("stu2's server stopped", lambda: not _ready(hub, "stu2", any_state=True), 120, hub)
        assert _reasons(data)["stu2"] == "unclaimed"

        # the window ends: the class's job ends by then, and the reservation goes
        left = (end - datetime.now(UTC)).total_seconds()
        # (by its time limit or the reservation's end; Slurm acts on either within ~30 s, and
        # the hub notices at its next poll)
        ended = left + 45
        wait("stu1's server ended", lambda: not _ready(hub, "stu1", True), ended, hub)
        wait("the reservation removed", lambda: not reservations(slurm), left + 60)
    finally:
        for j in ours(slurm):
            slurm.run(sc.scancel_argv(j.job_id, executable=slurm.scancel))
        for r in reservations(slurm):
            slurm.run(rv.delete_reservation_argv(r.name, executable=slurm.scontrol))


def _ready(hub, name: str, any_state: bool = False) -> bool:
    r = hub.api("GET", f"/users/{name}")
    server = r.json().get("servers", {}).get("") if r.status_code == 200 else None
    return bool(server) and (any_state or bool(server.get("ready")))


def _reasons(data) -> dict[str, str]:
    """The stop reason of each student's pre-warmed session."""
    with sqlite3.connect(data / "ledger.sqlite") as db:
        rows = db.execute(
            "SELECT username, stop_reason FROM sessions WHERE prewarm_window_id IS NOT NULL"
        ).fetchall()
    return dict(rows)
