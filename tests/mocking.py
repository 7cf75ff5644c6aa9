"""An in-process harness for Slicehub's spawners, in the style of JupyterHub's tests/mocking.py.

Fakes, named as fakes, at the two seams a spawner talks through, swapped in by configuration
(the spawners' `quota_client_class` and `slurm_client_class` traits), never by patching the code
under test:

- `FakeQuotaClient`: the quota service's REST API as an in-memory book of holds. It records every
  hold, begin and release (with the reason the spawner gave) and the user's groups each project
  list and hold was given, and refuses or goes down when a test says so. Each test gets its own
  subclass with its own `FakeBook`.
- `FakeSlurmClient`: the real `SlurmClient` (its squeue sharing, its parsers) with `run`
  answering from a `FakeCluster` instead of running sbatch, squeue, scancel, scontrol, sacct:
  jobs pend, run, end and vanish as the test moves them, and answers are printed in the formats
  Slurm prints (tests/fixtures/slurm).

`new_spawner` builds a spawner directly on an in-memory JupyterHub database, with tiny timeouts,
as JupyterHub's own spawner tests do. A server is a real process (a Python that sleeps), so
start, poll and stop run the spawner's real code; only the two seams are fake.
"""

from __future__ import annotations

import itertools
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jupyterhub import orm
from jupyterhub.objects import Hub
from jupyterhub.spawner import LocalProcessSpawner
from jupyterhub.user import User
from tornado import web

from slicehub.common import clock
from slicehub.common.quota_client import RELEASE_REASONS, QuotaClient
from slicehub.spawners.slurm import answers as sa
from slicehub.spawners.slurm.client import CommandResult, SlurmClient

FIXTURES = Path(__file__).parent / "fixtures" / "slurm"

SLEEPING_SERVER = "import time\nwhile True:\n    time.sleep(1)\n"


# -- the quota service ------------------------------------------------------------------------


@dataclass
class FakeBook:
    """What the fake quota service holds, and how it answers next."""

    projects: list[dict] = field(
        default_factory=lambda: [
            {
                "project": "ai-lab",
                "name": "AI lab",
                "subsidy_rate_bp": 7000,
                "allowed_slice_types": ["*"],
                "policy": "stop",
                "subsidy_left_cents": 100_000,
                "credit_left_cents": 0,
            }
        ]
    )
    holds: dict[int, dict] = field(default_factory=dict)  # id -> the session view
    releases: list[tuple[int, str, datetime | None]] = field(default_factory=list)
    begins: list[int] = field(default_factory=list)
    groups: list[tuple[str, list[str]]] = field(default_factory=list)  # (call, groups given)
    prewarmed: list[int | None] = field(default_factory=list)  # each hold's prewarm_window
    refusal: tuple[int, str] | None = None  # the next holds answer this (status, sentence)
    down: bool = False  # every call answers 503, as a quota service that does not answer
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def active(self) -> list[dict]:
        return [h for h in self.holds.values() if h["status"] == "active"]

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.releases]


class FakeQuotaClient(QuotaClient):
    """The quota service's calls answered from `book`; nothing goes over HTTP."""

    book: FakeBook = FakeBook()

    async def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        raise AssertionError(f"FakeQuotaClient has no answer for {method} {path}")

    def _up(self) -> None:
        if self.book.down:
            raise web.HTTPError(503, "The quota service is not answering (a fake, down).")

    async def projects(self, user: str, groups=()) -> list[dict]:
        self._up()
        self.book.groups.append(("projects", list(groups)))
        return list(self.book.projects)

    async def hold(
        self,
        project,
        user,
        server_name,
        slice_type,
        minutes,
        deferred=False,
        groups=(),
        prewarm_window=None,
    ) -> dict:
        self._up()
        self.book.groups.append(("hold", list(groups)))
        self.book.prewarmed.append(prewarm_window)
        if self.book.refusal is not None:
            raise web.HTTPError(*self.book.refusal)
        if any(h["user"] == user and h["server_name"] == server_name for h in self.book.active()):
            raise web.HTTPError(409, f"{user}/{server_name} already has an active session.")
        now = clock.utcnow()
        sid = next(self.book._ids)
        self.book.holds[sid] = {
            "id": sid,
            "project": project,
            "user": user,
            "server_name": server_name,
            "slice_type": slice_type,
            "status": "active",
            "begun": not deferred,
            "started_at": now.isoformat(),
            "end_at": (now + timedelta(minutes=minutes)).isoformat(),
            "hold_list_cents": 550 * minutes // 60,
        }
        return dict(self.book.holds[sid])

    async def begin(self, session_id: int) -> dict:
        self._up()
        self.book.begins.append(session_id)
        held = self.book.holds[session_id]
        length = datetime.fromisoformat(held["end_at"]) - datetime.fromisoformat(held["started_at"])
        now = clock.utcnow()
        held.update(begun=True, started_at=now.isoformat(), end_at=(now + length).isoformat())
        return {k: held[k] for k in ("id", "begun", "started_at", "end_at")}

    async def last_session(self, user: str, server_name: str) -> dict | None:
        self._up()
        mine = [
            h
            for h in self.book.holds.values()
            if (h["user"], h["server_name"]) == (user, server_name)
        ]
        return dict(max(mine, key=lambda h: h["id"])) if mine else None

    async def session(self, session_id: int, user: str) -> dict | None:
        self._up()
        held = self.book.holds.get(session_id)
        return dict(held) if held and held["status"] == "active" else None

    async def release_stale(self, user: str, server_name: str) -> bool:
        self._up()
        stale = [
            h for h in self.book.active() if h["user"] == user and h["server_name"] == server_name
        ]
        for h in stale:
            await self.release(h["id"], reason="crashed")
        return bool(stale)

    async def release(self, session_id, stopped_at=None, attempts_timeout=60, reason="stopped"):
        self._up()
        assert reason in RELEASE_REASONS, reason
        self.book.releases.append((session_id, reason, stopped_at))
        self.book.holds[session_id]["status"] = "stopped"


def fake_quota() -> type[FakeQuotaClient]:
    """A FakeQuotaClient class with a book of its own (one per test)."""
    return type("FakeQuotaClient", (FakeQuotaClient,), {"book": FakeBook()})


# -- Slurm ------------------------------------------------------------------------------------


@dataclass
class FakeJob:
    job_id: str
    name: str
    partition: str
    account: str
    gres: str
    state: str = "PENDING"
    reason: str = "Resources"
    node: str = ""
    submit: datetime = field(default_factory=lambda: datetime.now().replace(microsecond=0))
    start: datetime | None = None
    end: datetime | None = None
    in_squeue: bool = True  # False once the controller has forgotten it (MinJobAge)


class FakeCluster:
    """The jobs a fake Slurm knows, moved by the test; every command it was asked, in order."""

    def __init__(self):
        self.jobs: dict[str, FakeJob] = {}
        self.calls: list[tuple[str, ...]] = []
        self.scripts: list[str] = []  # the batch scripts sbatch got on stdin
        self.envs: list[dict[str, str]] = []  # the environment sbatch got
        self.squeue_fails = False
        self._ids = itertools.count(812)

    def commands(self, name: str) -> list[tuple[str, ...]]:
        return [argv for argv in self.calls if Path(argv[0]).name == name]

    def run_job(self, job_id: str, node: str = "vm") -> None:
        job = self.jobs[job_id]
        job.state, job.reason, job.node = "RUNNING", "None", node
        job.start = datetime.now().replace(microsecond=0)

    def end_job(self, job_id: str, state: str = "FAILED", forget: bool = False) -> None:
        job = self.jobs[job_id]
        job.state, job.reason = state, "None"
        job.end = datetime.now().replace(microsecond=0)
        job.in_squeue = not forget

    # the commands, as Slurm answers them

    def answer(self, argv: tuple[str, ...], stdin: str | None, env) -> CommandResult:
        self.calls.append(argv)
        command = Path(argv[0]).name
        options = dict(a.split("=", 1) for a in argv[1:] if a.startswith("--") and "=" in a)
        if command == "sbatch":
            job_id = str(next(self._ids))
            self.scripts.append(stdin or "")
            self.envs.append(dict(env or {}))
            gres = options.get("--gres", "")
            self.jobs[job_id] = FakeJob(
                job_id,
                options.get("--job-name", "job"),
                options.get("--partition", "gpu"),
                options.get("--account", ""),
                f"gres:{gres}" if gres else "",
            )
            return CommandResult(argv, 0, f"{job_id}\n", "")
        if command == "squeue":
            if self.squeue_fails:
                return CommandResult(argv, 1, "", "slurm_load_jobs error: Socket timed out")
            wanted = options.get("--jobs", "").split(",") if "--jobs" in options else None
            rows = [
                _squeue_line(j)
                for j in self.jobs.values()
                if j.in_squeue
                and (wanted is None or j.job_id in wanted)
                and (
                    "--states" not in options
                    or options["--states"] != "PENDING"
                    or j.state == "PENDING"
                )
            ]
            return CommandResult(argv, 0, "".join(rows), "")
        if command == "scancel":
            job = self.jobs.get(argv[-1])
            if job is None or job.state in sa.FINISHED_STATES:
                return CommandResult(argv, 1, "", "Invalid job id specified")
            job.state, job.end = "CANCELLED", datetime.now().replace(microsecond=0)
            return CommandResult(argv, 0, "", "")
        if command == "sacct":
            wanted = options.get("--jobs", "").split(",")
            rows = [_sacct_line(self.jobs[j]) for j in wanted if j in self.jobs]
            return CommandResult(argv, 0, "".join(rows), "")
        if command == "scontrol":
            return CommandResult(argv, 0, "", "")
        if command == "sinfo":
            return CommandResult(argv, 0, (FIXTURES / "sinfo-nodes.txt").read_text(), "")
        if command == "mkdir":
            os.makedirs(argv[-1], mode=0o700, exist_ok=True)
            return CommandResult(argv, 0, "", "")
        return CommandResult(argv, None, "", f"the fake cluster does not know {command}")


def _slurm_time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S") if moment else "Unknown"


def _squeue_line(j: FakeJob) -> str:
    start = _slurm_time(j.start) if j.start else "N/A"
    return (
        f"{j.job_id}|{j.state}|{j.reason}|{j.partition}|{j.account}|root|{j.gres}|{j.node}|"
        f"{start}|{_slurm_time(j.submit)}|4294901745|{j.name}\n"
    )


def _sacct_line(j: FakeJob) -> str:
    elapsed = int(((j.end or datetime.now()) - j.start).total_seconds()) if j.start else 0
    return (
        f"{j.job_id}|{j.state}|{j.partition}|{j.account}|root|{_slurm_time(j.submit)}|"
        f"{_slurm_time(j.start)}|{_slurm_time(j.end)}|{elapsed}|cpu=1|0:0|{j.name}\n"
    )


class FakeSlurmClient(SlurmClient):
    """The real SlurmClient, whose `run` asks `cluster` instead of starting a process."""

    cluster: FakeCluster = FakeCluster()

    async def run(self, argv, *, stdin=None, env=None, run_as=None, timeout=None):
        return self.cluster.answer(tuple(argv), stdin, env)


def fake_slurm() -> type[FakeSlurmClient]:
    """A FakeSlurmClient class with a cluster of its own (one per test)."""
    return type("FakeSlurmClient", (FakeSlurmClient,), {"cluster": FakeCluster()})


# -- spawners, built directly -------------------------------------------------------------------


def hub_db():
    """An in-memory JupyterHub database with one user, "ann"."""
    db = orm.new_session_factory("sqlite:///:memory:")()
    db.add(orm.User(name="ann"))
    db.commit()
    return db


def new_spawner(spawner_class, db, **kwargs):
    """A spawner of `spawner_class` for ann's default server, as the hub would make it, with
    a sleeping Python as the server and second-scale timeouts."""
    user = kwargs.pop("user", None) or User(db.query(orm.User).filter_by(name="ann").one(), {})
    kwargs.setdefault("cmd", [sys.executable, "-c", SLEEPING_SERVER])
    kwargs.setdefault("hub", Hub())
    kwargs.setdefault("notebook_dir", os.getcwd())
    kwargs.setdefault("oauth_client_id", "mock-client-id")
    if issubclass(spawner_class, LocalProcessSpawner):
        kwargs.setdefault("interrupt_timeout", 1)
        kwargs.setdefault("term_timeout", 1)
        kwargs.setdefault("kill_timeout", 1)
    kwargs.setdefault("poll_interval", 1)
    kwargs.setdefault("quota_url", "http://quota.invalid/services/quota/")
    return user._new_spawner("", spawner_class=spawner_class, **kwargs)


def utc_now() -> datetime:
    return datetime.now(UTC)
