"""SlurmSliceSpawner: a notebook server as a Slurm job on a GPU slice (the centre's cluster).

Built on batchspawner's SlurmSpawner, with what batchspawner does through shell templates done here
through argv lists: `sbatch` (the batch script on stdin), `squeue`, `scancel`, `scontrol`, `sinfo`,
run with `create_subprocess_exec`. Nothing from `user_options` reaches a command or the script:
batchspawner merges them into its template variables, and this class never calls the code that does
(`submit_batch_script`, `query_job_status`, `cancel_batch_job` are replaced, and `get_req_subvars`
answers only with the validated request). Its `/hub/api/batchspawner`, which would let a server's
token set any spawner attribute, is replaced by `slicehub.spawners.slurm.batch_api`.

A start: validate (400) -> hold the cost in the ledger (402/403/...) -> build the job from the site
file (`slicehub.spawners.slurm.job`) -> sbatch -> while the job waits, progress says Slurm's reason
and the queue position -> once it runs, tighten its time limit to the hold's end (Slurm ends it then
at the latest, behind the quota service) -> the server binds a port of the OS's choosing and
reports it once it listens (`SLICEHUB_REPORT_PORT`, slicehub.extensions.port_report; not
batchspawner-singleuser, whose port is picked seconds before the bind) -> ready. Any failure or a
cancel on the way scancels the job and releases the hold.

Slurm places jobs (the slice source is `SlurmSlices`: free counts from sinfo, nothing taken
before sbatch). A transient squeue failure never drops a server; only Slurm saying the job ended
(or no longer knowing it) does, and then the session is released as "crashed".
"""

from __future__ import annotations

import asyncio
import functools
import os
import pwd
import time
from dataclasses import replace
from datetime import UTC
from pathlib import Path

from batchspawner import JobStatus, SlurmSpawner
from jupyterhub.utils import exponential_backoff
from sqlalchemy.orm import object_session
from tornado import web
from traitlets import Float, Integer, Type, Unicode, default

from slicehub.common import clock
from slicehub.common.environment import REPORT_PORT

from ..mixin import SliceSpawnerMixin, join_hub_log
from ..options import SliceOptions
from ..site_model import Site, SiteError
from . import answers as sa
from . import commands as sc
from . import job as slurm_job
from . import reservation as rv
from .batch_api import batchspawner_api_closed
from .client import ALREADY_DONE, RunAs, SlurmClient, job_state
from .site import load_slurm_site
from .source import SlurmSlices

# batchspawner settings this spawner does not use: its jobs come from the site file and run
# Spawner.cmd itself (the server reports its own port); `req_*` are ignored as well
IGNORED_BATCHSPAWNER_SETTINGS = frozenset(
    {
        "batch_script",
        "batch_submit_cmd",
        "batch_query_cmd",
        "batch_cancel_cmd",
        "exec_prefix",
        "batchspawner_singleuser_cmd",
    }
)


class SlurmJobFailed(RuntimeError):
    """The job ended, or could not be made, before the notebook server started. The message is
    for the user (JupyterHub shows `jupyterhub_message` on the spawn page)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.jupyterhub_message = message


@functools.cache
def _site(path: str) -> Site:
    return load_slurm_site(path)


class SlurmSliceSpawner(SliceSpawnerMixin, SlurmSpawner):
    # batchspawner waits 300 s; a queued start may wait that long for a slice
    start_timeout = Integer(300, config=True, help="Seconds a start may take, queueing included.")
    poll_interval = Integer(
        10,
        config=True,
        help="""Seconds between the hub's checks that a server's job still runs.

        Default: 10 (JupyterHub's is 30). A job that ends behind the hub's back is released (and
        stops being charged) within about this long. One squeue answers all servers' checks.
        """,
    )

    bind_ip = Unicode(
        "0.0.0.0",
        config=True,
        help="""Address the notebook server listens on, on the compute node.

        Default: "0.0.0.0" (every interface: the hub reaches it at the node's address as Slurm
        knows it, NodeAddr). Example: "127.0.0.1" for a one-machine cluster.
        """,
    )

    batch_template = Unicode(
        "",
        config=True,
        help="""Path of a Jinja template that replaces the batch script in the package
        (slicehub/spawners/slurm/templates/slurm_job.sh.j2).

        Default: "". Every {{ value }} in it is shell-quoted and may hold no control character;
        it gets only slice_type, ledger_session, cpu_only and command.
        """,
    )

    startup_poll_interval = Float(
        0.5,
        config=True,
        help="""Seconds between looks at a starting job (pending -> running, port reported).

        Default: 0.5 (as batchspawner). Spawners starting together share each squeue.
        """,
    )

    queue_timeout = Integer(
        config=True,
        help="""Seconds a start waits in Slurm's queue before it is cancelled with a message.

        Default: start_timeout minus 60 s (time for the server itself to start), at least 30.
        """,
    )

    slurm_retry_timeout = Float(
        60.0,
        config=True,
        help="""Seconds to keep retrying a Slurm command that fails (controller restarting,
        network) before giving up on that check.

        Default: 60. A server whose job cannot be checked for longer is still kept: only Slurm
        saying that the job ended drops it.
        """,
    )

    slurm_client_class = Type(
        SlurmClient,
        config=True,
        help="""The class that runs Slurm's commands and shares their answers between spawners.

        Default: slicehub.spawners.slurm.client.SlurmClient. Tests swap in one whose `run`
        answers from recorded output (tests/mocking.py).
        """,
    )

    sinfo_max_age = Float(
        5.0,
        config=True,
        help="""Seconds the form reuses one `sinfo` for its free counts. Default: 5.""",
    )

    @default("queue_timeout")
    def _queue_timeout_default(self):
        return max(self.start_timeout - 60, 30)

    _job_spec: slurm_job.JobSpec | None = None
    _port_reported: asyncio.Event | None = None
    _node: str | None = None
    _warned_config = False

    # -- site and cluster ------------------------------------------------------------------

    @property
    def slice_source(self) -> SlurmSlices:
        if not self.site_file:
            raise web.HTTPError(500, "Slicehub is not configured: no site file (SLICEHUB_SITE).")
        try:
            site = _site(self.site_file)
        except SiteError as e:
            raise web.HTTPError(500, f"Slicehub is misconfigured: {e}") from None
        join_hub_log(self.log)  # slicehub.slurm's warnings belong in the hub's log
        client = self.slurm_client_class.for_commands(site.slurm.commands)
        return SlurmSlices(site, client, self.sinfo_max_age)

    @property
    def client(self) -> SlurmClient:
        return self.slice_source.client

    def _run_as(self) -> RunAs | None:
        """Submit and cancel as the user's own Unix account (run_as = "unix-users")."""
        if self.runs_as_hub_user:
            return None
        pw = pwd.getpwnam(self.user.name)
        groups = tuple(g for g in os.getgrouplist(pw.pw_name, pw.pw_gid) if g != pw.pw_gid)
        return RunAs(pw.pw_uid, pw.pw_gid, groups)

    def get_req_subvars(self):
        """batchspawner's template variables: only the validated request, never user_options."""
        spec, opts = self._job_spec, self.slice_options
        if spec is None or opts is None:
            return {}
        return {
            "slice_type": opts.slice_type.name,
            "partition": spec.partition,
            "account": spec.account or "",
            "gres": ",".join(f"gpu:{t}:{n}" for t, n in spec.gres),
            "nprocs": str(spec.cpus),
            "memory": f"{spec.mem_mb}M",
            "runtime": str(spec.time_minutes),
        }

    async def submit_batch_script(self):
        raise NotImplementedError("SlurmSliceSpawner submits in start(), from argv lists")

    async def run_command(self, cmd, input=None, env=None):
        raise NotImplementedError("SlurmSliceSpawner runs no shell command lines")

    # -- start ---------------------------------------------------------------------------

    def get_env(self):
        env = super().get_env()
        env[REPORT_PORT] = "1"  # it binds a port of the OS's choosing, then says which
        return env

    def report_port(self, port: int) -> None:
        """Called by `batch_api` when the server reports the port it listens on."""
        self.port = port
        if self._port_reported is not None:
            self._port_reported.set()

    def _refuse_without_closed_api(self) -> None:
        if not batchspawner_api_closed():
            self.log.error(
                "batchspawner's /hub/api/batchspawner is open (it lets a server's token set any "
                "spawner attribute). Fix: call "
                "slicehub.spawners.slurm.batch_api.close_batchspawner_api() in the hub's config, "
                "as slicehub.hub.configure does for a Slurm site."
            )
            raise web.HTTPError(500, "This hub is misconfigured; no server can start. Staff know.")

    def _warn_ignored_config(self) -> None:
        cls = type(self)
        if cls._warned_config:
            return
        cls._warned_config = True
        ours = self.config.get(cls.__name__, {})
        ignored = sorted(
            k for k in ours if k.startswith("req_") or k in IGNORED_BATCHSPAWNER_SETTINGS
        )
        if ignored:
            self.log.warning(
                "%s ignores %s: jobs are shaped by the site file's [slurm] table only, and run "
                "the server (Spawner.cmd) itself, which reports its own port",
                cls.__name__,
                ", ".join(ignored),
            )

    async def start(self):
        self._refuse_without_closed_api()
        self._warn_ignored_config()
        self.ip, self.port = self.bind_ip, 0
        if self.server:
            self.server.port = 0
        self._port_reported = asyncio.Event()
        self.job_id, self._node, self._job_spec = "", None, None
        # refusals are 4xx with a sentence, nothing submitted; metered from the job's start
        await self.take_slice(deferred=True)
        try:
            return await self._run_job(self.slice_options)
        except BaseException:
            await asyncio.shield(self._abandon())
            raise

    async def _run_job(self, options: SliceOptions):
        now = clock.utcnow()
        held = self.ledger_session or {}
        try:
            spec = slurm_job.job_spec(
                options,
                self.site.slurm,
                project=held.get("project") or options.project,
                session_end=self.session_end,
                now=now,
                home=self.home_dir,
                username=self.user.name,
                ledger_session=held.get("id"),
            )
        except slurm_job.JobRefused as e:
            raise web.HTTPError(400, str(e)) from None
        reserved = await self._class_reservation(spec, options, held.get("project"), now)
        if reserved:
            spec = replace(spec, reservation=reserved)
        self._job_spec = spec
        await self._submit(spec, options)
        self._progress_event(
            20,
            f"Submitted Slurm job {self.job_id}: {spec.describe()}, "
            f"time limit {spec.time_minutes} min",
        )
        job = await self._wait_until_running()
        self._node = job.nodes or ""
        self.ip = await self._node_address(self._node)
        self._progress_event(
            50, f"Slurm job {self.job_id} running on {self._node}; starting the notebook server"
        )
        await self.begin_metering()  # the queue was not charged; the session ends later
        await self._tighten_time_limit(job, spec)
        await self._wait_for_port()
        self._progress_event(
            70, f"Notebook server listening on {self._node}:{self.port}; waiting for it to answer"
        )
        self.log.info(
            "Slurm job %s of %s runs on %s (%s:%s)",
            self.job_id,
            self.holder,
            self._node,
            self.ip,
            self.port,
        )
        return self.ip, self.port

    async def _class_reservation(self, spec, options: SliceOptions, project, now) -> str | None:
        """The class window's reservation this job runs in, when one is in force for this user
        (the classroom service makes them, `slicehub.classroom`); None when there is none or
        scontrol does not answer (the job then waits in the queue like any other)."""
        if not project:
            return None
        reservations = await self.client.reservations(max_age=self.sinfo_max_age)
        if not reservations:
            return None
        # the job's Unix account: the user's own, or the hub's (run_as = "hub-user")
        unix_user = pwd.getpwuid(os.getuid()).pw_name if self.runs_as_hub_user else self.user.name
        return rv.reservation_for(
            reservations, project, unix_user, spec.account, now, options.prewarm_window
        )

    async def _submit(self, spec: slurm_job.JobSpec, options: SliceOptions) -> None:
        client = self.client
        run_as = self._run_as()
        await self._make_log_dir(spec, run_as)
        script = slurm_job.render_script(
            slurm_job.script_template(self.batch_template),
            slice_type=options.slice_type.name,
            ledger_session=(self.ledger_session or {}).get("id"),
            cpu_only=spec.cpu_only,
            command=[*self.cmd, *self.get_args()],
        )
        argv = slurm_job.sbatch_argv(spec, client.command("sbatch"))
        env = slurm_job.submit_env(client.base_env(), self.get_env())
        self.log.info("Submitting the job of %s: %s", self.holder, " ".join(argv))
        done = await client.run(argv, stdin=script, env=env, run_as=run_as)
        if not done.ok:
            raise SlurmJobFailed(f"Slurm refused the job: {done.why()}")
        self.job_id = sa.parse_sbatch(done.stdout)
        self.job_status = "PENDING"
        client.watch(self.job_id)
        # Recorded at once: a hub that restarts while the job waits finds it and cancels it.
        db = object_session(self.orm_spawner) if self.orm_spawner is not None else None
        if db is not None:
            self.orm_spawner.state = self.get_state()
            db.commit()

    async def _make_log_dir(self, spec: slurm_job.JobSpec, run_as: RunAs | None) -> None:
        folder = str(Path(spec.output).parent)
        if run_as is None:
            await asyncio.to_thread(os.makedirs, folder, 0o700, True)
            return
        done = await self.client.run(["mkdir", "-p", "-m", "0700", folder], run_as=run_as)
        if not done.ok:
            raise SlurmJobFailed(f"Could not create {folder} for the job's log: {done.why()}")

    async def _wait_until_running(self) -> sa.QueuedJob:
        client, job_id = self.client, self.job_id
        queued_since = time.monotonic()
        said = None
        while True:
            snap = await client.snapshot(self.startup_poll_interval, need=job_id)
            state = job_state(snap, job_id)
            job = snap.jobs.get(job_id)
            if state == "running":
                return job
            if state in ("ending", "finished", "absent"):
                raise await self._died(job)
            if state == "pending":
                waited = time.monotonic() - queued_since
                if waited > self.queue_timeout:
                    raise SlurmJobFailed(
                        f"Slurm job {job_id} waited {waited / 60:.0f} min in the queue "
                        f"({job.reason or 'no reason given'}) without starting; it has been "
                        "cancelled and the hold released. Try a smaller slice or again later."
                    )
                message = f"Slurm job {job_id} pending: {job.reason or 'waiting'}"
                if job_id in snap.positions:
                    message += f" (position {snap.positions[job_id]} in the queue)"
            else:
                message = f"Slurm job {job_id}: Slurm is not answering; still waiting"
            if message != said:
                self._progress_event(30, message)
                said = message
            await asyncio.sleep(self.startup_poll_interval)

    async def _died(self, job: sa.QueuedJob | None) -> SlurmJobFailed:
        """The error for a job that ended before its server started, with its log's end."""
        state = job.state if job is not None else None
        if job is None:
            accounted = await self.client.accounted(self.job_id)
            state = accounted.state if accounted else "no longer known to Slurm"
        message = f"Slurm job {self.job_id} ended ({state}) before the notebook server started."
        tail = await asyncio.to_thread(self._log_tail)
        if tail:
            message += f" The end of its log ({self._log_path()}):\n{tail}"
        self.log.warning("%s: %s", self.holder, message)
        return SlurmJobFailed(message)

    def _log_path(self) -> str:
        return slurm_job.log_path(self._job_spec, self.job_id) if self._job_spec else ""

    def _log_tail(self, lines: int = 8) -> str:
        try:
            with open(self._log_path(), errors="replace") as f:
                return "\n".join(f.read()[-4000:].splitlines()[-lines:])
        except (OSError, ValueError):
            return ""

    async def _node_address(self, node: str) -> str:
        """Where the hub reaches the node: its NodeAddr in Slurm (the node name if unknown)."""
        for max_age in (60.0, 0.0):
            nodes = await self.client.nodes(max_age)
            if nodes and node in nodes:
                return nodes[node].address
        return node

    async def poll(self):
        status = await super().poll()
        if status is None and self.job_id and self.ledger_session and self.quota is not None:
            await self._follow_extension()
        return status

    async def _follow_extension(self) -> None:
        """An Extend (JupyterLab, the quota API) moved the session's end in the ledger: raise
        the job's time limit to match, so that Slurm does not end the job at the first hold's
        end. Only a Slurm operator may raise a limit: this scontrol runs as the hub's account
        (which a site makes an operator: docs/slurm.md), never as the user."""
        end = await self.ledger.extended_end()
        if end is None or self.session_end is None or end <= self.session_end:
            return
        snap = await self.client.snapshot(self.poll_interval, need=self.job_id)
        queued = snap.jobs.get(self.job_id)
        if queued is None or queued.start is None:
            return
        minutes = slurm_job.time_limit_minutes(end, queued.start.astimezone())
        argv = sc.scontrol_time_limit_argv(
            self.job_id, minutes, executable=self.client.command("scontrol")
        )
        done = await self.client.run(argv)
        if done.ok:
            self.log.info(
                "Slurm job %s of %s extended: time limit %s min (session ends %s)",
                self.job_id,
                self.holder,
                minutes,
                end,
            )
            self.session_end = end
        else:
            self.log.warning(
                "Could not raise the time limit of Slurm job %s to %s min (%s): the hub's "
                "account must be a Slurm operator for extensions to reach Slurm",
                self.job_id,
                minutes,
                done.why(),
            )

    async def _tighten_time_limit(self, job: sa.QueuedJob, spec: slurm_job.JobSpec) -> None:
        """The job may have waited: cap its limit at the session's end counted from its real
        start, so Slurm ends it when the hold runs out at the latest."""
        started = job.start.astimezone() if job.start else clock.utcnow()  # naive: local time
        minutes = slurm_job.time_limit_minutes(self.session_end, started)
        if minutes >= spec.time_minutes:
            return
        argv = sc.scontrol_time_limit_argv(
            self.job_id, minutes, executable=self.client.command("scontrol")
        )
        done = await self.client.run(argv, run_as=self._run_as())
        if done.ok:
            self.log.info("Slurm job %s: time limit lowered to %s min", self.job_id, minutes)
        else:
            self.log.warning(
                "Could not lower the time limit of Slurm job %s to %s min (%s); the quota "
                "service still stops the server at the session's end",
                self.job_id,
                minutes,
                done.why(),
            )

    async def _wait_for_port(self) -> None:
        while not self.port:
            try:
                await asyncio.wait_for(self._port_reported.wait(), 2 * self.startup_poll_interval)
            except TimeoutError:
                snap = await self.client.snapshot(self.startup_poll_interval, need=self.job_id)
                if job_state(snap, self.job_id) in ("ending", "finished", "absent"):
                    raise await self._died(snap.jobs.get(self.job_id)) from None

    async def _abandon(self) -> None:
        """A start that failed or was cancelled: cancel its job, release its hold."""
        self.log.info("The start of %s did not complete; cancelling its job", self.holder)
        job_id = self.job_id
        try:
            if job_id:
                await self._cancel(job_id)
        except Exception:
            self.log.exception("Could not cancel Slurm job %s of %s", job_id, self.holder)
        finally:
            if job_id:
                self.client.forget(job_id)
            self.job_id = ""
            await self.release_slice("start-failed")

    # -- poll and stop -------------------------------------------------------------------

    async def _definite_state(self, max_age: float) -> str | None:
        """pending/running/ending/finished/gone, or None while Slurm cannot say."""
        snap = await self.client.snapshot(max_age, need=self.job_id)
        state = job_state(snap, self.job_id)
        if state == "absent":  # beyond MinJobAge, or lost: ask accounting before calling it gone
            accounted = await self.client.accounted(self.job_id)
            if accounted is not None and accounted.end is None and accounted.start is not None:
                return None  # accounting says it runs; squeue will list it again
            return "gone"
        return None if state == "unknown" else state

    async def query_job_status(self):
        if not self.job_id:
            return JobStatus.NOTFOUND
        max_age = max(1.0, self.poll_interval / 2)
        try:
            state = await exponential_backoff(
                functools.partial(self._definite_state, max_age),
                f"Slurm job {self.job_id} of {self.holder}: no answer from Slurm",
                timeout=self.slurm_retry_timeout,
            )
        except TimeoutError:
            self.log.warning(
                "Slurm job %s of %s: Slurm has not answered for %.0f s; keeping the server",
                self.job_id,
                self.holder,
                self.slurm_retry_timeout,
            )
            self.job_status = "UNKNOWN"
            return JobStatus.UNKNOWN
        self.job_status = state.upper()
        if state == "pending":
            return JobStatus.PENDING
        if state == "running":
            return JobStatus.RUNNING
        if not self._stop_pending:
            self.log.warning(
                "Slurm job %s of %s has ended (%s) without the hub stopping it",
                self.job_id,
                self.holder,
                state,
            )
            accounted = await self.client.accounted(self.job_id)
            if accounted is not None and accounted.end is not None:  # charged to that second
                self.server_ended_at = accounted.end.astimezone(UTC)  # Slurm: local time
        self.client.forget(self.job_id)
        return JobStatus.NOTFOUND

    def state_isrunning(self):
        return self.job_status == "RUNNING"

    def state_ispending(self):
        return self.job_status == "PENDING"

    def state_gethost(self):
        return self.ip

    async def _cancel(self, job_id: str) -> None:
        """scancel, retried while Slurm does not answer; a job already gone counts as done."""
        argv = sc.scancel_argv(job_id, executable=self.client.command("scancel"))

        async def attempt():
            done = await self.client.run(argv, run_as=self._run_as())
            if done.ok or done.says(ALREADY_DONE):
                return True
            self.log.warning("Cancelling Slurm job %s: %s; retrying", job_id, done.why())
            return False

        await exponential_backoff(
            attempt, f"could not cancel Slurm job {job_id}", timeout=self.slurm_retry_timeout
        )

    async def stop(self, now=False):
        job_id = self.job_id
        self.log.info("Stopping Slurm job %s of %s", job_id or "(none)", self.holder)
        if job_id:
            # If this raises, the hold stays: the job may still run, and the ledger keeps
            # charging until Slurm's time limit ends it at the session's end.
            await self._cancel(job_id)
        # released as soon as Slurm has the cancel: its accounting ends the job at this moment
        await self.release_slice("stopped")
        if job_id and not now:
            for _ in range(20):
                snap = await self.client.snapshot(0.5, need=job_id)
                if job_state(snap, job_id) in ("finished", "absent"):
                    break
                await asyncio.sleep(0.5)
            else:
                self.log.warning("Slurm job %s still ending after 10 s", job_id)
        if job_id:
            self.client.forget(job_id)

    # -- state ---------------------------------------------------------------------------

    def launcher_state(self) -> dict:
        if not self.job_id:
            return {}
        job = self._job_spec.__dict__ if self._job_spec else None
        return {"slurm": {"job_id": self.job_id, "node": self._node, "job": job}}

    def load_launcher_state(self, saved: dict, version: int) -> None:
        part = saved.get("slurm") or saved  # version 1 kept these beside the options
        if not part.get("job_id"):
            return
        self.job_id = sc.check_job_id(part["job_id"])
        self._node = part.get("node")
        job = part.get("job")
        if job:
            job["gres"] = tuple(tuple(g) for g in job["gres"])
            self._job_spec = slurm_job.JobSpec(**job)
        self.client.watch(self.job_id)
        self.log.info("%s: reconnected to Slurm job %s", self.holder, self.job_id)

    def clear_state(self):
        super().clear_state()
        self._node = None
        self._job_spec = None
