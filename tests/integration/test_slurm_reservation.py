"""A class window as a real Slurm advance reservation, on the test cluster's two nodes: the
nodes Slicehub plans from sinfo are reserved for the window (scontrol shows it), a job that asks
for the reservation waits with reason Reservation and then runs in it, a job without it cannot
take a slice of those nodes while the reservation holds them, and the reservation is changed and
removed. Every command is an argv of slicehub/spawners/slurm/reservation.py or commands.py.

Lean (about 20 s: the window starts 10 s after it is made) and clean: the reservation and both
jobs are removed even when an assertion fails. The jobs are not named slicehub-* or filler-*,
which other Slurm tests cancel as their own.
"""

from __future__ import annotations

import os
import pwd
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import slurmcluster
from slurmcluster import SlurmCluster

from slicehub.spawners.class_window import ClassWindowNeed, ClassWindowRefused
from slicehub.spawners.site import load_site
from slicehub.spawners.slurm import answers as sa
from slicehub.spawners.slurm import commands as sc
from slicehub.spawners.slurm import reservation as rv
from tests.integration.test_slurm_cluster import jobs, poll, wait_for_jobs

pytestmark = pytest.mark.slurm

SITE = load_site(Path(__file__).resolve().parents[2] / "hub_config" / "slurm-site.toml")
SLICE_TYPE = "h100.1g.10gb"
LEAD_S = 10  # the window starts this long after it is reserved
LENGTH_S = 90


@pytest.fixture(scope="module")
def slurm() -> SlurmCluster:
    return slurmcluster.ensure_slurm(accounting=False)


def ok(slurm: SlurmCluster, argv: list[str]) -> str:
    done = slurm.run(argv)
    assert done.returncode == 0, f"{argv}: {done.stderr or done.stdout}"
    return done.stdout


def shown(slurm: SlurmCluster, name: str) -> rv.ShownReservation | None:
    out = ok(slurm, rv.show_reservations_argv(executable=slurm.scontrol))
    return next((r for r in rv.parse_reservations(out) if r.name == name), None)


def submit(slurm: SlurmCluster, tmp_path: Path, name: str, *, reservation=None, node=None) -> str:
    argv = sc.sbatch_argv(
        job_name=name,
        partition=SITE.slurm.slice_types[SLICE_TYPE].partition,
        gres=[(SITE.slurm.slice_types[SLICE_TYPE].gres_type, 1)],
        cpus=1,
        mem_mb=500,
        time_minutes=1,
        output="/dev/null",
        chdir=str(tmp_path),
        reservation=reservation,
        executable=slurm.sbatch,
    ) + ([f"--nodelist={node}"] if node else [])
    done = slurm.run(argv, stdin="#!/bin/sh\nsleep 120\n")
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return sa.parse_sbatch(done.stdout)


def test_a_class_window_reserves_whole_nodes_and_only_its_jobs_run_there(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    nodes = sa.parse_sinfo_nodes(ok(slurm, sc.sinfo_nodes_argv(executable=slurm.sinfo)))
    existing = rv.parse_reservations(
        ok(slurm, rv.show_reservations_argv(executable=slurm.scontrol))
    )
    where = SITE.slurm.slice_types[SLICE_TYPE]
    per_node = slurm.gres_per_node[where.gres_type]
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=LEAD_S)
    end = start + timedelta(seconds=LENGTH_S)

    def need(seats: int) -> ClassWindowNeed:
        window_id = os.getpid()  # one name per run: a leftover of another run never collides
        return ClassWindowNeed(
            "reservation-test", window_id, start, end, SITE.slice_types[SLICE_TYPE], seats
        )

    with pytest.raises(ClassWindowRefused) as refused:
        rv.plan_reservation(need(slurm.gres[where.gres_type] + 1), where, nodes, existing)
    assert str(refused.value).startswith(
        f"The class window needs {slurm.gres[where.gres_type] + 1} {SLICE_TYPE} slices; the "
        f"cluster has {slurm.gres[where.gres_type]} in all ("
    )

    plan = rv.plan_reservation(need(per_node), where, nodes, existing)
    (node,) = plan.nodes  # a node's worth of seats: one whole node
    user = pwd.getpwuid(os.geteuid()).pw_name
    made: list[str] = []
    create = rv.create_reservation_argv(
        plan.name,
        starts_at=start,
        ends_at=end,
        nodes=plan.nodes,
        users=[user],
        executable=slurm.scontrol,
    )
    try:
        ok(slurm, create)
        reserved = shown(slurm, plan.name)
        assert reserved is not None
        assert (reserved.nodes, reserved.users, reserved.window) == (
            (node,),
            (user,),
            ("reservation-test", os.getpid()),
        )
        assert "IGNORE_JOBS" in reserved.flags
        assert reserved.start.astimezone() == start and reserved.end.astimezone() == end

        # made twice (a retry after a lost answer): Slurm checks the overlap before the name
        again = slurm.run(create)
        assert again.returncode != 0
        assert rv.scontrol_refusal("create", plan.name, again.stderr + again.stdout) == (
            f"Slurm refused to create reservation {plan.name}: its nodes are in another "
            "reservation at that time; plan the window again with the reservations Slurm has now."
        )

        # the class's job waits for its window; a research job pinned to the node waits too
        in_class = submit(slurm, tmp_path, "resv-test-class", reservation=plan.name)
        made.append(in_class)
        research = submit(slurm, tmp_path, "resv-test-research", node=node)
        made.append(research)
        wait_for_jobs(
            slurm,
            [in_class],
            "the class's job waits for its window with reason Reservation",
            lambda j: j.pending and j.reason == "Reservation",
            timeout=LEAD_S,
        )

        ran = wait_for_jobs(
            slurm,
            [in_class],
            "the class's job runs in its window",
            lambda j: j.state == "RUNNING",
        )
        assert ran[in_class].nodes == node
        assert shown(slurm, plan.name).state == "ACTIVE"
        time.sleep(2)  # a few scheduler passes (bf_interval=1) with slices free on the node
        research_job = jobs(slurm, [research])[research]
        assert research_job.pending, research_job
        # 22.05 says "ReqNodeNotAvail, May be reserved for other job"
        assert research_job.reason.startswith("ReqNodeNotAvail"), research_job

        later = end + timedelta(seconds=30)
        ok(
            slurm,
            rv.update_reservation_argv(
                plan.name, ends_at=later, users=[user], executable=slurm.scontrol
            ),
        )
        assert shown(slurm, plan.name).end.astimezone() == later

        # Slurm keeps a reservation that a job runs in; once it has ended, it goes
        in_use = slurm.run(rv.delete_reservation_argv(plan.name, executable=slurm.scontrol))
        assert in_use.returncode != 0
        assert rv.scontrol_refusal("delete", plan.name, in_use.stderr + in_use.stdout) == (
            f"Slurm refused to delete reservation {plan.name}: jobs run in it; cancel them (or "
            "let them end) first."
        )
        end_jobs(slurm, [in_class])
        ok(slurm, rv.delete_reservation_argv(plan.name, executable=slurm.scontrol))
        assert shown(slurm, plan.name) is None
    finally:  # whatever failed: no job and no reservation of this test is left
        for job_id in made:
            slurm.run(sc.scancel_argv(job_id, executable=slurm.scancel))

        def removed() -> bool:  # Slurm deletes it once no job runs in it any more
            slurm.run(rv.delete_reservation_argv(plan.name, executable=slurm.scontrol))
            return shown(slurm, plan.name) is None

        poll("the test's reservation is removed", removed)
        end_jobs(slurm, made)


def end_jobs(slurm: SlurmCluster, job_ids: list[str]) -> None:
    for job_id in job_ids:
        slurm.run(sc.scancel_argv(job_id, executable=slurm.scancel))
    if job_ids:
        wait_for_jobs(slurm, job_ids, "the test's jobs end", lambda j: j.finished)
