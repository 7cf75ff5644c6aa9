"""slicehub/spawners/slurm/client.py: what a squeue answer means for a server, and one squeue shared
by every spawner that asks at the same moment (checked with a fake squeue, named as one)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from slicehub.spawners.slurm import answers as sa
from slicehub.spawners.slurm.batch_api import ROUTE, PortReportHandler, batchspawner_api_closed
from slicehub.spawners.slurm.batch_api import close_batchspawner_api as close
from slicehub.spawners.slurm.client import CommandResult, SlurmClient, Snapshot, job_state

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"


def snapshot_of(fixture: str, ids, error=None) -> Snapshot:
    jobs = {j.job_id: j for j in sa.parse_squeue((FIXTURES / fixture).read_text())}
    return Snapshot(0.0, frozenset(ids), {k: v for k, v in jobs.items() if k in ids}, {}, error)


def test_job_states_from_a_recorded_squeue():
    snap = snapshot_of("squeue-jobs.txt", {"10", "11", "13", "15", "99"})
    assert [job_state(snap, i) for i in ("10", "11", "13", "15", "99")] == [
        "finished",  # COMPLETED
        "running",
        "pending",
        "finished",  # CANCELLED
        "absent",  # squeue answered and does not list it
    ]
    assert job_state(snap, "12") == "unknown"  # not asked about


def test_a_failed_squeue_never_means_the_job_is_gone():
    snap = snapshot_of("squeue-jobs.txt", {"11"}, error="squeue exited 1: Unable to contact")
    assert job_state(snap, "11") == "unknown"


class FakeSqueueClient(SlurmClient):
    """A fake: answers squeue from a recorded file after a delay, counting the calls."""

    def __init__(self, fail=False, stderr=""):
        super().__init__({})
        self.calls: list[tuple[str, ...]] = []
        self.fail, self.stderr = fail, stderr

    async def run(self, argv, **kw):
        self.calls.append(tuple(argv))
        await asyncio.sleep(0.05)
        if self.fail:
            return CommandResult(tuple(argv), 1, "", self.stderr)
        text = (FIXTURES / "squeue-jobs.txt").read_text()
        if "--states=PENDING" in argv:
            text = (FIXTURES / "squeue-pending.txt").read_text()
        return CommandResult(tuple(argv), 0, text, "")


async def test_forty_spawners_asking_at_once_share_a_couple_of_squeue_calls():
    client = FakeSqueueClient()
    snaps = await asyncio.gather(
        *(client.snapshot(0.5, need=str(job_id)) for job_id in [10, 11, 13, 15] * 10)
    )
    queries = [c for c in client.calls if "--states=all" in c]
    assert len(queries) <= 2, client.calls
    assert all(s.ids >= {"10", "11", "13", "15"} or len(s.ids) < 4 for s in snaps)
    assert job_state(snaps[-1], "13") == "pending" and "13" in snaps[-1].positions
    # fresh enough: no new squeue
    await client.snapshot(10.0, need="11")
    assert len([c for c in client.calls if "--states=all" in c]) == len(queries)


async def test_a_failing_squeue_gives_an_unknown_snapshot_and_an_unknown_job_an_absent_one():
    failing = FakeSqueueClient(fail=True, stderr="slurm_load_jobs error: Unable to contact")
    snap = await failing.snapshot(0, need="11")
    assert snap.error and job_state(snap, "11") == "unknown"
    unknown = FakeSqueueClient(fail=True, stderr="slurm_load_jobs error: Invalid job id specified")
    snap = await unknown.snapshot(0, need="999999")
    assert snap.error is None and job_state(snap, "999999") == "absent"


async def test_commands_run_without_a_shell_and_time_out():
    client = SlurmClient({})
    done = await client.run(["printf", "%s", "$(id); `id`"])
    assert (done.ok, done.stdout) == (True, "$(id); `id`")
    slow = await client.run(["sleep", "5"], timeout=0.2)
    assert slow.returncode is None and "no answer" in slow.why()
    missing = await client.run(["/nonexistent/squeue"])
    assert missing.returncode is None and "could not run it" in missing.stderr


def test_the_batchspawner_api_is_closed_to_everything_but_the_port():
    import batchspawner.api

    handlers = [("/api/users", object), (ROUTE, batchspawner.api.BatchSpawnerAPIHandler)]
    assert not batchspawner_api_closed(handlers)
    close(handlers)
    close(handlers)  # twice: still one route
    assert handlers == [("/api/users", object), (ROUTE, PortReportHandler)]
    assert batchspawner_api_closed(handlers)


@pytest.mark.parametrize("job_id", ["1;2", "$(id)", "-1"])
def test_watching_refuses_what_is_not_a_job_id(job_id):
    with pytest.raises(ValueError, match="job id"):
        SlurmClient({}).watch(job_id)
