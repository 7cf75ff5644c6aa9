"""The test Slurm behaves like a GPU centre's: slices are GRES a job gets and sees, a job that
finds no free slice waits with a Reason, a waiting job can be cancelled, and accounting reports
the slices a finished job held.

Every command goes through slicehub/spawners/slurm/commands.py, so these tests also show that its
argv are accepted and its parsers read what this Slurm prints.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import slurmcluster
from slurmcluster import SlurmCluster

from slicehub.spawners.slurm import answers as sa
from slicehub.spawners.slurm import commands as sc

pytestmark = pytest.mark.slurm

WAIT_S = 30.0  # a job starts within a second or two here; generous for a loaded CI machine
TEST_ACCOUNT = "slicehub-test"


@pytest.fixture(scope="module")
def slurm() -> SlurmCluster:
    return slurmcluster.ensure_slurm(accounting=False)


@pytest.fixture
def submit(slurm: SlurmCluster, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """`submit(script, gres=[(type, n)], name=..., account=None)` -> job id; every job it made
    is cancelled afterwards (finished ones ignore it)."""
    job_ids: list[str] = []

    def make(
        script: str,
        *,
        gres: list[tuple[str, int]],
        name: str = "slicehub-test",
        account: str | None = None,
        cluster: SlurmCluster = slurm,
    ) -> str:
        argv = sc.sbatch_argv(
            job_name=name,
            partition="gpu",
            account=account,
            gres=gres,
            cpus=1,
            mem_mb=500,
            time_minutes=10,
            output=str(tmp_path / "job-%j.out"),
            chdir=str(tmp_path),
            executable=cluster.sbatch,
        )
        done = cluster.run(argv, stdin=f"#!/bin/sh\n{script}\n")
        assert done.returncode == 0, done.stderr
        job_ids.append(sa.parse_sbatch(done.stdout))
        return job_ids[-1]

    yield make
    for job_id in job_ids:
        slurm.run(sc.scancel_argv(job_id, executable=slurm.scancel))
    # The next test counts free slices: wait until these jobs have given theirs back.
    if job_ids:
        wait_for_jobs(slurm, job_ids, "the test's jobs end after scancel", lambda j: j.finished)


def poll(what: str, probe: Callable[[], object], timeout: float = WAIT_S) -> object:
    """probe() every 0.2 s until it returns something truthy; fail naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s", pytrace=False)
        time.sleep(0.2)


def jobs(slurm: SlurmCluster, job_ids: list[str]) -> dict[str, sa.QueuedJob]:
    done = slurm.run(sc.squeue_argv(job_ids, executable=slurm.squeue))
    assert done.returncode == 0, done.stderr
    return {job.job_id: job for job in sa.parse_squeue(done.stdout)}


def wait_for_jobs(
    slurm: SlurmCluster,
    job_ids: list[str],
    what: str,
    condition: Callable[[sa.QueuedJob], bool],
    timeout: float = WAIT_S,
) -> dict[str, sa.QueuedJob]:
    """squeue until every one of `job_ids` is listed and meets `condition`; returns those jobs."""

    def probe() -> dict[str, sa.QueuedJob] | None:
        found = jobs(slurm, job_ids)
        ok = set(found) == set(job_ids) and all(condition(j) for j in found.values())
        return found if ok else None

    return poll(what, probe, timeout)


def smallest_type(slurm: SlurmCluster) -> str:
    return min(slurm.gres, key=lambda t: (slurm.gres[t], t))


def one_g_type(slurm: SlurmCluster) -> str:
    return next((t for t in slurm.gres if t.startswith("1g")), max(slurm.gres, key=slurm.gres.get))


def free_slices(slurm: SlurmCluster) -> dict[str, sa.GresAvailability]:
    done = slurm.run(sc.sinfo_gres_argv(executable=slurm.sinfo))
    assert done.returncode == 0, done.stderr
    return sa.parse_sinfo_gres(done.stdout)


def test_a_slice_job_runs_and_sees_its_device(
    slurm: SlurmCluster, submit: Callable[..., str], tmp_path: Path
) -> None:
    slice_type = one_g_type(slurm)
    job_id = submit(
        'echo "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"; echo "SLURM_JOB_GPUS=$SLURM_JOB_GPUS"',
        gres=[(slice_type, 1)],
    )

    job = wait_for_jobs(slurm, [job_id], "the job ends", lambda j: j.finished)[job_id]

    assert job.state == "COMPLETED"
    assert job.gres == {slice_type: 1}
    output = (tmp_path / f"job-{job_id}.out").read_text()
    visible = re.search(r"^CUDA_VISIBLE_DEVICES=(\d+)$", output, re.M)
    assert visible, output
    assert re.search(r"^SLURM_JOB_GPUS=\d+$", output, re.M), output
    if slurm.cgroup:  # task/cgroup renumbers a job's devices from 0, as on real GPUs
        assert visible.group(1) == "0"


def test_more_jobs_than_slices_the_extra_ones_wait_with_a_reason(
    slurm: SlurmCluster, submit: Callable[..., str]
) -> None:
    slice_type = smallest_type(slurm)
    free = free_slices(slurm)[slice_type].free
    running = [submit("sleep 120", gres=[(slice_type, 1)], name=f"hold-{i}") for i in range(free)]
    extra = [submit("sleep 120", gres=[(slice_type, 1)], name=f"wait-{i}") for i in range(2)]

    wait_for_jobs(slurm, running, f"{free} {slice_type} jobs run", lambda j: j.state == "RUNNING")
    wait_for_jobs(
        slurm, extra, "the extra jobs wait", lambda j: j.pending and j.reason == "Resources"
    )

    assert free_slices(slurm)[slice_type].free == 0
    pending = slurm.run(sc.squeue_argv(pending_only=True, executable=slurm.squeue))
    positions = sa.queue_positions(sa.parse_squeue(pending.stdout))
    assert positions[extra[0]] < positions[extra[1]]


def test_a_waiting_job_can_be_cancelled(slurm: SlurmCluster, submit: Callable[..., str]) -> None:
    slice_type = smallest_type(slurm)
    for i in range(free_slices(slurm)[slice_type].free):
        submit("sleep 120", gres=[(slice_type, 1)], name=f"hold-{i}")
    waiting = submit("sleep 120", gres=[(slice_type, 1)], name="to-cancel")
    wait_for_jobs(slurm, [waiting], "the job waits", lambda j: j.reason == "Resources")

    done = slurm.run(sc.scancel_argv(waiting, executable=slurm.scancel))

    assert done.returncode == 0, done.stderr
    job = wait_for_jobs(slurm, [waiting], "it is cancelled", lambda j: j.state == "CANCELLED")
    assert job[waiting].finished
    assert job[waiting].nodes is None  # it never ran


def test_a_classroom_burst_of_40_one_slice_jobs_all_start(
    slurm: SlurmCluster, submit: Callable[..., str]
) -> None:
    slice_type = one_g_type(slurm)
    students = min(40, slurm.gres[slice_type])
    started = time.monotonic()

    ids = [submit("sleep 60", gres=[(slice_type, 1)], name=f"student-{i}") for i in range(students)]

    wait_for_jobs(slurm, ids, f"{students} jobs run", lambda j: j.state == "RUNNING", timeout=60)
    print(f"{students} jobs submitted and running in {time.monotonic() - started:.1f} s")


def test_accounting_reports_the_slices_a_finished_job_held(submit: Callable[..., str]) -> None:
    slurm = slurmcluster.ensure_slurm(accounting=True)
    assert slurm.accounting
    slurm.ensure_account(TEST_ACCOUNT, "root")
    slice_type = one_g_type(slurm)
    job_id = submit("sleep 1", gres=[(slice_type, 2)], account=TEST_ACCOUNT, cluster=slurm)

    def accounted() -> sa.AccountedJob | None:
        done = slurm.run(sc.sacct_argv([job_id], executable=slurm.sacct))
        assert done.returncode == 0, done.stderr
        found = sa.parse_sacct(done.stdout)
        # slurmdbd hears of a start and an end a moment after slurmctld: wait for both.
        return found[0] if found and found[0].state == "COMPLETED" and found[0].gres else None

    job = poll(f"sacct reports job {job_id} completed", accounted)

    assert job.gres == {slice_type: 2}
    assert job.account == TEST_ACCOUNT
    assert job.start is not None and job.end is not None and job.end >= job.start
    assert job.elapsed_s == int((job.end - job.start).total_seconds())
