"""Slurm as the hub sees it: commands run off the event loop, answers shared between spawners.

Decides how Slurm's commands run (argv lists through `create_subprocess_exec`, a minimal
environment, a timeout, as the server's Unix user where the site says so) and shares what they
say: one `squeue` answers every spawner asking within `max_age` (a class of 100 starting at once
costs a few squeue calls a second, not 100), one `sinfo` feeds every form for a few seconds.

`job_state` turns what squeue said about a job into what it means for a server: pending, running,
ending, finished, absent (squeue worked and does not list it), or unknown (squeue failed: never a
reason to drop a server). Retrying and deciding are the spawner's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from . import answers as sa
from . import commands as sc
from . import reservation as rv

log = logging.getLogger("slicehub.slurm")

PENDING_STATES = frozenset(
    {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
)
# SUSPENDED/STOPPED: the job still holds its slices; the server comes back when it resumes.
RUNNING_STATES = frozenset({"RUNNING", "SUSPENDED", "STOPPED", "RESIZING"})
ENDING_STATES = frozenset({"COMPLETING", "STAGE_OUT", "SIGNALING"})
# What a failing command prints that still is a definite answer, not a transient failure.
UNKNOWN_JOB = ("Invalid job id specified",)
ALREADY_DONE = ("already completing or completed", "Invalid job id specified")


@dataclass(frozen=True)
class RunAs:
    """A Unix identity a command runs as (the hub runs as root to submit as users)."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int | None  # None: it could not start, or ran past its timeout and was killed
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def says(self, phrases: Sequence[str]) -> bool:
        return any(p in self.stderr for p in phrases)

    def why(self) -> str:
        text = self.stderr.strip() or self.stdout.strip() or "no output"
        status = "did not finish" if self.returncode is None else f"exited {self.returncode}"
        return f"{os.path.basename(self.argv[0])} {status}: {text[:300]}"


@dataclass(frozen=True)
class Snapshot:
    """One squeue of the jobs this hub watches (and, when some pend, the pending queue)."""

    started: float  # time.monotonic() when squeue was asked
    ids: frozenset[str]
    jobs: Mapping[str, sa.QueuedJob] = field(default_factory=dict)
    positions: Mapping[str, int] = field(default_factory=dict)
    error: str | None = None  # squeue failed: what it said


def job_state(snapshot: Snapshot, job_id: str) -> str:
    """pending | running | ending | finished | absent | unknown, for one job in a snapshot."""
    if snapshot.error is not None or job_id not in snapshot.ids:
        return "unknown"
    job = snapshot.jobs.get(job_id)
    if job is None:
        return "absent"
    if job.state in PENDING_STATES:
        return "pending"
    if job.state in RUNNING_STATES:
        return "running"
    if job.state in ENDING_STATES:
        return "ending"
    if job.finished:
        return "finished"
    return "unknown"  # a state this Slurm release added: wait for one we know


class SlurmClient:
    """One per hub process and set of Slurm commands; shared by every SlurmSliceSpawner."""

    _instances: dict[tuple, SlurmClient] = {}

    def __init__(self, commands: Mapping[str, str], command_timeout: float = 30.0):
        self.commands = dict(commands)
        self.command_timeout = command_timeout
        self._watched: set[str] = set()
        self._last: Snapshot | None = None
        self._inflight: asyncio.Future | None = None
        self._nodes: tuple[float, dict[str, sa.NodeResources] | None] | None = None
        self._nodes_inflight: asyncio.Future | None = None
        self._reservations: tuple[float, list[rv.ShownReservation] | None] | None = None

    @classmethod
    def for_commands(cls, commands: Mapping[str, str]) -> SlurmClient:
        key = (cls, *sorted(commands.items()))
        if key not in cls._instances:
            cls._instances[key] = cls(commands)
        return cls._instances[key]

    def command(self, name: str) -> str:
        return self.commands.get(name, name)

    # -- running commands --------------------------------------------------------------------

    @staticmethod
    def base_env() -> dict[str, str]:
        """What the Slurm commands need from the hub's environment, and nothing more."""
        return {k: os.environ[k] for k in ("PATH", "SLURM_CONF", "LANG") if k in os.environ}

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        run_as: RunAs | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run one command; never raises for the command's own failure (see `returncode`)."""
        argv = tuple(argv)
        kwargs = {}
        if run_as is not None and run_as.uid != os.geteuid():
            kwargs = {"user": run_as.uid, "group": run_as.gid, "extra_groups": list(run_as.groups)}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=dict(env if env is not None else self.base_env()),
                cwd="/",
                **kwargs,
            )
        except OSError as e:
            return CommandResult(argv, None, "", f"could not run it: {e}")
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None),
                timeout or self.command_timeout,
            )
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return CommandResult(
                argv, None, "", f"no answer in {timeout or self.command_timeout} s"
            )
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
            raise
        return CommandResult(
            argv, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        )

    # -- jobs --------------------------------------------------------------------------------

    def watch(self, job_id: str) -> None:
        self._watched.add(sc.check_job_id(job_id))

    def forget(self, job_id: str) -> None:
        self._watched.discard(job_id)

    async def snapshot(self, max_age: float, need: str | None = None) -> Snapshot:
        """A squeue of the watched jobs no older than `max_age` seconds that covers `need`.
        Callers at the same moment share one squeue."""
        if need is not None:
            self.watch(need)
        while True:
            last = self._last
            if (
                last is not None
                and time.monotonic() - last.started <= max_age
                and (need is None or need in last.ids)
            ):
                return last
            if self._inflight is None:
                self._inflight = asyncio.ensure_future(self._refresh())
            snap = await asyncio.shield(self._inflight)
            if need is None or need in snap.ids:
                return snap

    async def _refresh(self) -> Snapshot:
        ids = frozenset(self._watched)
        started = time.monotonic()
        try:
            if not ids:
                snap = Snapshot(started, ids)
            else:
                snap = await self._query(started, ids)
            self._last = snap
            return snap
        finally:
            self._inflight = None

    async def _query(self, started: float, ids: frozenset[str]) -> Snapshot:
        squeue = self.command("squeue")
        done = await self.run(sc.squeue_argv(sorted(ids, key=int), executable=squeue))
        if not done.ok:
            # with one id, an unknown job is an error; it is a definite answer all the same
            if len(ids) == 1 and done.says(UNKNOWN_JOB):
                return Snapshot(started, ids)
            log.warning("squeue failed for jobs %s: %s", ",".join(sorted(ids)), done.why())
            return Snapshot(started, ids, error=done.why())
        try:
            jobs = {j.job_id: j for j in sa.parse_squeue(done.stdout)}
        except ValueError as e:
            return Snapshot(started, ids, error=f"squeue's output could not be read: {e}")
        positions: dict[str, int] = {}
        if any(j.state in PENDING_STATES for j in jobs.values()):
            queue = await self.run(sc.squeue_argv(pending_only=True, executable=squeue))
            if queue.ok:
                try:
                    positions = sa.queue_positions(sa.parse_squeue(queue.stdout))
                except ValueError:
                    positions = {}
        return Snapshot(started, ids, jobs, positions)

    async def accounted(self, job_id: str) -> sa.AccountedJob | None:
        """What sacct knows of a job that squeue no longer lists (None: nothing, or no
        accounting on this cluster)."""
        done = await self.run(sc.sacct_argv([job_id], executable=self.command("sacct")))
        if not done.ok:
            return None
        try:
            jobs = sa.parse_sacct(done.stdout)
        except ValueError:
            return None
        return next((j for j in jobs if j.job_id == job_id), None)

    # -- reservations ------------------------------------------------------------------------

    async def reservations(self, max_age: float) -> list[rv.ShownReservation] | None:
        """Every advance reservation (one `scontrol show reservation` shared for `max_age`
        seconds, as sinfo is: a class starting at once asks it once); None when scontrol did
        not answer."""
        cached = self._reservations
        if cached is not None and time.monotonic() - cached[0] <= max_age:
            return cached[1]
        started = time.monotonic()
        done = await self.run(rv.show_reservations_argv(executable=self.command("scontrol")))
        found = None
        if done.ok or rv.NO_RESERVATIONS in done.stdout:
            try:
                found = rv.parse_reservations(done.stdout)
            except ValueError as e:
                log.warning("scontrol show reservation could not be read: %s", e)
        else:
            log.warning("scontrol show reservation failed: %s", done.why())
        self._reservations = (started, found)
        return found

    # -- nodes -------------------------------------------------------------------------------

    async def nodes(self, max_age: float) -> dict[str, sa.NodeResources] | None:
        """Every node's partitions, address and free CPUs, memory and slices (one sinfo shared
        for `max_age` seconds); None when sinfo did not answer."""
        while True:
            cached = self._nodes
            if cached is not None and time.monotonic() - cached[0] <= max_age:
                return cached[1]
            if self._nodes_inflight is None:
                self._nodes_inflight = asyncio.ensure_future(self._refresh_nodes())
            await asyncio.shield(self._nodes_inflight)
            if self._nodes is not None:
                return self._nodes[1]

    async def _refresh_nodes(self) -> None:
        started = time.monotonic()
        try:
            done = await self.run(sc.sinfo_nodes_argv(executable=self.command("sinfo")))
            nodes = None
            if done.ok:
                try:
                    nodes = sa.parse_sinfo_nodes(done.stdout)
                except ValueError as e:
                    log.warning("sinfo's output could not be read: %s", e)
            else:
                log.warning("sinfo failed: %s", done.why())
            self._nodes = (started, nodes)
        finally:
            self._nodes_inflight = None
