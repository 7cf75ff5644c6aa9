"""slicehub/spawners/slurm/reconcile.py: per job, Slurm's elapsed time against the ledger's charged
time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from slicehub.spawners.slurm import answers as sa
from slicehub.spawners.slurm.reconcile import LedgerSession, compare, report

from .test_slurm_site import site_with

T0 = datetime(2026, 11, 22, 14, 0, 0, tzinfo=UTC)


def session(sid=7, user="alice", seconds=600.0, start=T0, slice_type="h100.1g.10gb"):
    end = start + timedelta(seconds=seconds)
    return LedgerSession(sid, "ai-lab", user, slice_type, "stopped", start, end)


def job(name="slicehub-7-alice", elapsed=600, submit=T0, wait=0, gres=None, state="COMPLETED"):
    local = submit.astimezone().replace(tzinfo=None)  # sacct prints local time
    start = local + timedelta(seconds=wait)
    return sa.AccountedJob(
        job_id="812",
        state=state,
        partition="gpu",
        account="ai_lab",
        user="root",
        submit=local,
        start=start,
        end=start + timedelta(seconds=elapsed),
        elapsed_s=elapsed,
        gres={"nvidia_h100_80gb_hbm3_1g.10gb": 1} if gres is None else gres,
        exit_code="0:0",
        name=name,
    )


def test_a_job_and_its_session_agree_within_the_tick():
    (row,) = compare([job(elapsed=598)], {7: session(seconds=600.4)}, 2.0, site_with())
    assert (row.session_id, row.job_id, row.problem) == (7, "812", "")
    assert round(row.difference_s, 1) == 2.4  # within 2 s + 1 s of sacct's whole seconds
    assert "all 1 agree within 2 s" in report([row], 2.0)


def test_a_difference_beyond_the_tick_is_reported_and_a_queue_wait_explained():
    (row,) = compare([job(elapsed=500)], {7: session(seconds=600)}, 10.0)
    assert row.problem == "differs by +100 s"
    (queued,) = compare([job(elapsed=540, wait=60)], {7: session(seconds=600)}, 10.0)
    assert queued.queued_s == 60
    assert queued.problem == (
        "differs by +60 s (the queue wait: charged as if the job had started at its hold)"
    )
    assert "1 of 1 differ" in report([queued], 10.0)


def test_jobs_and_sessions_without_a_counterpart():
    rows = compare(
        [job(name="slicehub-9-bob"), job(name="someone-elses-job")],
        {7: session(), 8: session(sid=8, seconds=1.0)},
        10.0,
    )
    assert [(r.session_id, r.problem) for r in rows] == [
        (9, "no ledger session"),
        (7, "no Slurm job"),  # charged 600 s; session 8 charged ~nothing (a refused submit)
    ]


def test_a_job_of_another_ledger_with_the_same_session_id_does_not_match():
    other_user = compare([job(name="slicehub-7-bob")], {7: session()}, 10.0)
    long_ago = compare([job(submit=T0 - timedelta(days=1))], {7: session()}, 10.0)
    for rows in (other_user, long_ago):
        assert rows[0].problem == "no ledger session"


def test_slices_other_than_the_site_gives_the_type_are_reported():
    (row,) = compare([job(gres={"h100": 1})], {7: session()}, 10.0, site_with())
    assert row.problem == "held gpu:h100:1, not gpu:nvidia_h100_80gb_hbm3_1g.10gb:1"
