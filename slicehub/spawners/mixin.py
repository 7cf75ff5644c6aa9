"""What every Slicehub spawner does, whatever runs the server: the form and the options, the
ledger hold, the slice from a source, the server's environment, the saved state.

`SliceSpawnerMixin` goes in front of a JupyterHub spawner class (LocalProcessSpawner, or
batchspawner's SlurmSpawner). It renders the options form, validates options from the form and
from the REST API with the same function, holds the session's cost in the ledger (`LedgerHold`),
takes a slice from its `slice_source` before the server starts and gives both back when the
server stops, crashes or fails to start, saying which, and describes the slice to the server
through its environment (`slicehub.common.environment`, the one writer). Launching and stopping
processes stays with the spawner it is mixed into; where a slice comes from is the source's
(`slicehub.spawners.source`).

How a server ends, told apart in the log and in the ledger's stop reason:
- a stop (the user, an admin, the quota service at the session's end): "stopped";
- gone without a stop (a crash, a kill behind the hub's back), found by `poll`: "crashed";
- a start that fails or is cancelled: "start-failed".
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
from datetime import datetime
from pathlib import Path

from tornado import web
from traitlets import Float, Type, Unicode, default
from traitlets.config import LoggingConfigurable

from slicehub.common import clock
from slicehub.common.environment import SliceEnvironment
from slicehub.common.quota_client import QuotaClient
from slicehub.settings import Settings

from .form import parked_notice, render_form
from .hold import LedgerHold
from .options import OptionsError, SliceOptions, options_from_form, validate_options
from .site_model import Site
from .source import NoSliceFree, SliceSource, TakenSlice

STATE_KEY = "slicehub"
STATE_VERSION = 2


def join_hub_log(hub_log: logging.Logger) -> None:
    """Send Slicehub's own loggers ("slicehub.*") to the hub's log, as JupyterHub does for
    tornado's, so reservations and reconcile passes show up where operators look."""
    ours = logging.getLogger("slicehub")
    if ours.parent is not hub_log:
        ours.parent = hub_log
        ours.propagate = True
        ours.setLevel(hub_log.getEffectiveLevel())


def _apply_slice_options(spawner, user_options):
    """JupyterHub's apply_user_options hook: refuse bad options with a 400 before start."""
    spawner.slice_options = spawner.check_options(user_options)


class SliceSpawnerMixin(LoggingConfigurable):
    """Mix in before a Spawner class, and give it a `slice_source`:

    class LocalSliceSpawner(SliceSpawnerMixin, LocalProcessSpawner): ...
    """

    site_file = Unicode(
        config=True,
        help="""Path of the site file (TOML) that says what this hub offers.

        Default: slicehub.settings.Settings.site_file ($SLICEHUB_SITE, else the embedded
        demo's site). Example: "/etc/slicehub/site.toml".
        """,
    )

    options_form_template = Unicode(
        "",
        config=True,
        help="""Path of a Jinja template that replaces Slicehub's spawn form.

        Default: "" (the form shipped in slicehub/spawners/templates/options_form.html.j2). The
        template gets `offers` (per project: its quotes, one per slice type it may use), `rows`
        (per slice type: description, cpus, memory, gpu_memory, declared), `selected`,
        `selected_project`, `declared`, `min_hours`, `max_hours`, `default_hours`. It must post
        `slice_type`, `duration_hours` and, with several projects, `project`.
        """,
    )

    quota_url = Unicode(
        "",
        config=True,
        help="""URL of the quota service's API root, as the hub reaches it.

        Default: "" (no ledger: slices are handed out without holds, for tests of the
        allocator alone). Example: "http://127.0.0.1:10101/services/quota/".
        """,
    )

    server_quota_url = Unicode(
        "",
        config=True,
        help="""URL of the quota service's API root, as single-user servers reach it: their
        kernels read the session's money left from it (`%slicehub`), with the server's own
        token. Passed to servers as SLICEHUB_QUOTA_URL.

        Default: "" (quota_url, right when servers run where the hub runs). Example, compute
        nodes that reach the hub's proxy: "https://hub.example.org/services/quota/".
        """,
    )

    quota_token = Unicode(
        config=True,
        help="""API token with the custom:quota:holds scope, used to open and release holds.

        Default: the SLICEHUB_QUOTA_TOKEN environment variable.
        """,
    )

    quota_client_class = Type(
        QuotaClient,
        config=True,
        help="""The class that talks to the quota service (hold, begin, release).

        Default: slicehub.common.quota_client.QuotaClient. Tests swap in a fake
        (tests/mocking.py) to run a spawner's start, poll and stop in-process.
        """,
    )

    prewarm_service = Unicode(
        "classroom",
        config=True,
        help="""The hub-managed service that pre-warms class servers: only a start it asks for
        may carry `prewarm_window` (slicehub.classroom). Default: "classroom".
        """,
    )

    quota_timeout = Float(
        10.0,
        config=True,
        help="""Seconds to wait for the quota service before refusing a start. Default: 10.""",
    )

    home_root = Unicode(
        config=True,
        help="""Directory under which demo users get their home (run_as = "hub-user").

        Default: homes/ in the data directory (slicehub.settings). Unused when the site runs
        servers as the users' own Unix accounts.
        """,
    )

    @default("site_file")
    def _site_file_default(self):
        return Settings().site_file

    @default("quota_token")
    def _quota_token_default(self):
        return os.environ.get("SLICEHUB_QUOTA_TOKEN", "")

    @default("home_root")
    def _home_root_default(self):
        return str(Path(Settings().data_dir) / "homes")

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return _apply_slice_options

    @default("options_from_form")
    def _default_options_from_form(self):
        return options_from_form

    @default("options_form")
    def _default_options_form(self):
        return self._render_options_form

    slice_options: SliceOptions | None = None
    taken: TakenSlice | None = None  # what the source took for this server
    server_ended_at: datetime | None = None  # when the server stopped, if a spawner knows
    _slice_progress: tuple | list = ()  # this start's progress events, for progress()
    _stopping = False  # inside stop(): a server found gone then is not a crash
    _ledger: LedgerHold | None = None

    # -- where the slice comes from (the spawner class says) -----------------------------

    @property
    def slice_source(self) -> SliceSource:
        raise NotImplementedError("a Slicehub spawner names its slice source")

    @property
    def site(self) -> Site:
        return self.slice_source.site

    @property
    def holder(self) -> str:
        return f"{self.user.name}/{self.name}"

    @property
    def runs_as_hub_user(self) -> bool:
        return self.site.run_as == "hub-user"

    @property
    def home_dir(self) -> str:
        if self.runs_as_hub_user:
            return str(Path(self.home_root).resolve() / self.user.name)
        return pwd.getpwnam(self.user.name).pw_dir

    def user_env(self, env):
        """In demo mode the server runs as the hub's user, in a home of its own."""
        if self.runs_as_hub_user:
            env["USER"] = self.user.name
            env["HOME"] = self.home_dir
            env["SHELL"] = "/bin/bash"
            return env
        return super().user_env(env)

    # -- the ledger ------------------------------------------------------------------------

    @property
    def quota(self) -> QuotaClient | None:
        if not self.quota_url:
            return None
        return self.quota_client_class(self.quota_url, self.quota_token, self.quota_timeout)

    @property
    def ledger(self) -> LedgerHold:
        if self._ledger is None:
            self._ledger = LedgerHold(
                self.quota, self.user.name, self.name, self.log, self._progress_event
            )
        return self._ledger

    @property
    def ledger_session(self) -> dict | None:
        """The quota service's view of this server's hold (None: nothing held)."""
        return self.ledger.session

    @property
    def session_end(self) -> datetime | None:
        return self.ledger.end

    @session_end.setter
    def session_end(self, end: datetime | None) -> None:
        self.ledger.end = end

    # -- the form and the options ----------------------------------------------------------

    def check_options(self, user_options) -> SliceOptions:
        try:
            return validate_options(user_options, self.site)
        except OptionsError as e:
            raise web.HTTPError(400, str(e)) from None

    async def _render_options_form(self, spawner=None):
        offer = await self.slice_source.offer()
        previous = (self.orm_spawner.user_options or {}) if self.orm_spawner else {}
        projects, problem, last = None, None, None
        if self.quota is not None:
            projects = []
            try:
                projects, last = await asyncio.gather(
                    self.quota.projects(self.user.name, self.user_groups()),
                    self.quota.last_session(self.user.name, self.name),
                )
            except web.HTTPError as e:
                problem = e.log_message
            if not projects and not problem:
                problem = (
                    "You are not a member of any project yet, so no session can be paid for. "
                    "Ask your PI or the centre's staff to add you."
                )
        return render_form(
            self.options_form_template,
            offer,
            projects,
            problem,
            previous,
            self.site.sessions,
            clock.utcnow(),
            parked_notice(last),
        )

    def user_groups(self) -> list[str]:
        """The user's hub groups (at sign-in, their directory groups): a project's member group
        among them makes them its member."""
        return sorted(g.name for g in self.user.groups)

    # -- a start ---------------------------------------------------------------------------

    def _progress_event(self, progress: int, message: str) -> None:
        self._slice_progress.append({"progress": progress, "message": message})

    async def open_session(self, deferred: bool = False) -> SliceOptions:
        """Validate again (REST and reused options skip the form), then hold the session's cost
        in the ledger (when there is one). Refusals are HTTP errors with a sentence.
        `deferred`: the server waits in a batch queue first; metering starts with
        `begin_metering`, so the queue is not charged."""
        self._slice_progress = []
        self.server_ended_at = None
        options = self.check_options(self.user_options)
        self.slice_options = options
        if options.prewarm_window is not None:
            self.check_prewarm_requester()
        await self.ledger.release("crashed")  # a hold left by a server that died unnoticed
        project = options.project or ""
        groups = self.user_groups()
        if self.quota is not None:
            project = await self.ledger.project_for(options, groups)
            self.slice_source.admit(project)  # before any hold
        await self.ledger.open(options, project, deferred, groups)
        return options

    def check_prewarm_requester(self) -> None:
        """A pre-warmed start (`prewarm_window`) is the classroom service's to ask for: the
        course pays for the server until its student claims it. Anyone else asking is refused
        (JupyterHub remembers a server's last options: a student's start without options after
        a pre-warmed run lands here too, and is told to choose)."""
        handler = getattr(self, "handler", None)
        who = getattr(handler, "current_user", None) if handler is not None else None
        if getattr(who, "kind", None) == "service" and who.name == self.prewarm_service:
            return
        raise web.HTTPError(
            403,
            "Servers are pre-warmed for a class by Slicehub itself; start yours with the form "
            "(or send project, slice_type and duration_hours without prewarm_window).",
        )

    async def take_slice(self, deferred: bool = False) -> TakenSlice:
        """Hold the cost (`open_session`), then take a slice from the source. On a refusal or
        a failure nothing stays held."""
        options = await self.open_session(deferred)
        st = options.slice_type
        if self.slice_source.reserves:
            self._progress_event(15, f"Reserving a {st.name} slice")
        try:
            taken = await self.slice_source.take(self.holder, st, self.session_end)
        except NoSliceFree as e:
            await self.ledger.release("start-failed")
            raise web.HTTPError(409, str(e)) from None
        except BaseException:
            await self.ledger.release("start-failed")
            raise
        self.taken = taken
        if self.slice_source.reserves:
            self._progress_event(30, f"Reserved {st.name} on {taken.describe()}")
        return taken

    async def begin_metering(self) -> None:
        """A deferred hold's server has started: metering starts now, for the length held."""
        await self.ledger.begin()

    async def release_slice(self, reason: str) -> None:
        """Give back the slice and release the hold, saying why (RELEASE_REASONS)."""
        self.taken = None
        await self.slice_source.give_back(self.holder)
        await self.ledger.release(reason, self.server_ended_at)

    async def start_failed(self) -> None:
        """A start failed or was cancelled: nothing it took stays held."""
        self.log.info("The start of %s did not complete; releasing its slice and hold", self.holder)
        await asyncio.shield(self.release_slice("start-failed"))

    def slice_env(self) -> dict[str, str]:
        """The slice and the session, for the server (`slicehub.common.environment`)."""
        taken, opts = self.taken, self.slice_options
        if taken is None or opts is None:
            return {}
        st = opts.slice_type
        return SliceEnvironment(
            slice_type=st.name,
            gpu_memory_bytes=st.gpu_memory_bytes,
            cpus=st.cpus,
            memory_bytes=st.memory_bytes,
            session_end=self.session_end,
            devices=taken.devices,
            node=taken.node,
            declared=taken.declared,
            project=self.ledger.project,
            ledger_session=self.ledger.session_id,
            quota_url=self.ledger.quota_url_for_server(self.server_quota_url or self.quota_url),
            prewarmed=opts.prewarm_window is not None,
        ).to_env()

    def get_env(self):
        env = super().get_env()
        env.update(self.slice_env())
        return env

    # -- while it runs, and its end --------------------------------------------------------

    async def stop(self, now=False):
        self._stopping = True
        try:
            return await super().stop(now=now)
        finally:
            self._stopping = False

    async def poll(self):
        """As the spawner below polls; a server found gone outside a start or a stop (a crash,
        a kill behind the hub's back) has its slice and hold released at once, as "crashed":
        JupyterHub does not call stop() for a server that is already dead."""
        status = await super().poll()
        busy = self._spawn_pending or self._start_pending or self._stopping or self._stop_pending
        if status is not None and not busy:
            if self.ledger.session or self.slice_source.holds(self.holder):
                self.log.warning(
                    "%s is gone (exit status %s) without being stopped; releasing its slice and "
                    "hold as crashed",
                    self.holder,
                    status,
                )
                await self.release_slice("crashed")
        return status

    async def progress(self):
        """Slicehub's own steps first, then whatever the spawner below reports."""
        sent = 0
        while True:
            events = self._slice_progress
            while sent < len(events):
                yield events[sent]
                sent += 1
            if not self._spawn_pending or self.ready:
                break
            await asyncio.sleep(0.25)

    # -- state ---------------------------------------------------------------------------

    def get_state(self):
        """Version 2: {"slicehub": {version, options, session_end, ledger_session, taken}};
        a spawner adds its own part under the same key (`launcher_state`)."""
        state = super().get_state()
        if self.slice_options is not None:
            state[STATE_KEY] = {
                "version": STATE_VERSION,
                "options": self.slice_options.to_user_options(),
                **self.ledger.to_state(),
                "taken": _taken_to_dict(self.taken),
                **self.launcher_state(),
            }
        return state

    def launcher_state(self) -> dict:
        """What the spawner below needs to find its server again (a batch job's id)."""
        return {}

    def load_launcher_state(self, saved: dict, version: int) -> None:
        """Read back `launcher_state` (`version` 1: the old layout, see `saved_state`)."""

    def saved_state(self, state: dict) -> tuple[dict, int] | None:
        """This hub's part of a spawner state, and its version. Version 1 (hubs before the
        source protocol) kept a local server's part under "slicehub" with the allocator's
        "assignment", and a Slurm job's under "slicehub_slurm"; both are read, and the log
        says so."""
        saved = state.get(STATE_KEY) or state.get("slicehub_slurm")
        if not saved:
            return None
        version = saved.get("version")
        if version != STATE_VERSION:
            self.log.warning(
                "Spawner state of %s has Slicehub version %s (this hub writes %s); reading what "
                "it can",
                self.holder,
                version,
                STATE_VERSION,
            )
        return saved, version

    def load_state(self, state):
        super().load_state(state)
        found = self.saved_state(state)
        if found is None:
            return
        saved, version = found
        try:
            self.slice_options = validate_options(saved["options"], self.site)
            self.ledger.load_state(saved)
            taken = _taken_from_dict(saved.get("taken"))
            if taken is None and "assignment" in saved:  # version 1, local
                taken = _taken_from_assignment(saved["assignment"])
            self.load_launcher_state(saved, version)
        except (KeyError, ValueError, TypeError) as e:
            self.log.error("Could not read the Slicehub state of %s: %s", self.holder, e)
            return
        self.taken = self.slice_source.recover(self.holder, taken)

    def clear_state(self):
        super().clear_state()
        self.taken = None
        self.slice_options = None
        # the ledger hold survives: LocalProcessSpawner.poll clears state as soon as the process
        # is gone (a crash, or during stop), and the hold must still be released afterwards


def _taken_to_dict(taken: TakenSlice | None) -> dict | None:
    if taken is None:
        return None
    return {
        "node": taken.node,
        "devices": None if taken.devices is None else list(taken.devices),
        "declared": taken.declared,
        "cpu_ids": list(taken.cpu_ids),
    }


def _taken_from_dict(d: dict | None) -> TakenSlice | None:
    if not d:
        return None
    devices = d.get("devices")
    return TakenSlice(
        d.get("node"),
        None if devices is None else tuple(devices),
        bool(d.get("declared")),
        tuple(d.get("cpu_ids") or ()),
    )


def _taken_from_assignment(a: dict) -> TakenSlice:
    """A version-1 local state's allocator assignment, as what was taken."""
    devices = tuple(a.get("devices") or ())
    declared = bool(a.get("declared")) and bool(devices)
    return TakenSlice(a["node"], devices, declared, tuple(a.get("cpu_ids") or ()))
