"""What every Slicehub spawner does, whatever runs the server: form, options, slice, env, state.

`SliceSpawnerMixin` goes in front of a JupyterHub spawner class (LocalProcessSpawner, or
batchspawner's SlurmSpawner). It renders the options form, validates options from the form and
from the REST API with the same function, holds the session's cost in the ledger, reserves a slice
before the server starts and releases both when the server stops or fails to start, and describes
the slice to the server through its environment. Launching and stopping processes stays with the
spawner it is mixed into.

Where the slice comes from is a hook: `offer()` (free counts for the form), `reserve_slice()`
(hold, then take a slice from the local allocator), `free_slice()` and `holds_slice()`. Under Slurm,
Slurm places the job, so SlurmSliceSpawner replaces them and never touches the local allocator.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import pwd
from datetime import datetime, timedelta
from pathlib import Path

import jinja2
from jupyterhub import orm
from markupsafe import Markup
from tornado import web
from traitlets import Float, Integer, Type, Unicode, default
from traitlets.config import LoggingConfigurable

from slicehub.common import clock
from slicehub.common.money import format_money
from slicehub.common.quota_client import QuotaClient

from . import form_offer
from .local.allocator import Assignment
from .local.manager import Availability, NoSliceFree, SliceManager
from .options import (
    OptionsError,
    SliceOptions,
    duration_words,
    options_from_form,
    validate_options,
)
from .site import Site

STATE_VERSION = 1
TEMPLATES = Path(__file__).parent / "templates"
FORM = "options_form.html.j2"


def human_bytes(n: int) -> str:
    if n <= 0:
        return "—"
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def _form_template(path: str) -> jinja2.Template:
    """The spawn form's template: an admin's file, or the one in the package. Jinja keeps the
    compiled template and reloads it when the file changes."""
    folder, name = (Path(path).parent, Path(path).name) if path else (TEMPLATES, FORM)
    return _template_env(str(folder)).get_template(name)


@functools.cache
def _template_env(folder: str) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader([folder]), autoescape=True)
    env.filters["hours"] = _hours
    env.filters["money"] = format_money
    env.filters["buys"] = _buys
    env.filters["when"] = _when
    return env


# what the form offers when no quota service is configured: one nameless project that may use
# every type, at list price (tests of the allocator alone)
_NO_LEDGER = {
    "project": "",
    "name": "",
    "subsidy_rate_bp": 0,
    "allowed_slice_types": ["*"],
    "policy": "stop",
    "subsidy_left_cents": 0,
    "credit_left_cents": 0,
}


def _hours(value) -> str:
    """2.0 -> "2", 0.25 -> "0.25": hours as people write them."""
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return ""


def _buys(hours: float) -> str:
    """What an allocation buys, in words: "91.3 h", "25 min", "nothing"."""
    return "nothing" if hours * 60 < 1 else form_offer.hours_text(hours)


def _when(iso: str) -> Markup:
    """A time for people: a <time> element the page shows in the browser's zone (the UTC text
    stays when scripts do not run)."""
    moment = datetime.fromisoformat(iso)
    return Markup('<time datetime="{}" class="slicehub-time">{}</time>').format(
        iso, f"{moment:%Y-%m-%d %H:%M} UTC"
    )


def _join_hub_log(hub_log: logging.Logger) -> None:
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
    """Mix in before a Spawner class:

    class LocalSliceSpawner(SliceSpawnerMixin, LocalProcessSpawner): ...
    """

    site_file = Unicode(
        os.environ.get("SLICEHUB_SITE", ""),
        config=True,
        help="""Path of the site file (TOML) that says what this hub offers.

        Default: the SLICEHUB_SITE environment variable. Example: "/etc/slicehub/site.toml".
        """,
    )

    database_url = Unicode(
        "sqlite:///slicehub-slices.sqlite",
        config=True,
        help="""SQLAlchemy URL of the Slicehub database that holds slice reservations.

        Default: an SQLite file in the hub's working directory.
        Example: "postgresql+psycopg://slicehub@db/slicehub".
        """,
    )

    options_form_template = Unicode(
        "",
        config=True,
        help="""Path of a Jinja template that replaces Slicehub's spawn form.

        Default: "" (the form shipped in slicehub/spawners/templates/options_form.html.j2). The
        template gets `rows` (one per slice type: name, description, cpus, memory, gpu_memory,
        price, free, capacity, declared), `selected`, `declared`, `min_hours`, `max_hours`,
        `default_hours`. It must post `slice_type` and `duration_hours`.
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
        os.environ.get("SLICEHUB_QUOTA_TOKEN", ""),
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

    quota_timeout = Float(
        10.0,
        config=True,
        help="""Seconds to wait for the quota service before refusing a start. Default: 10.""",
    )

    reconcile_interval = Integer(
        300,
        config=True,
        help="""Seconds between reconcile passes that free reservations no server holds.

        Default: 300. 0 disables the periodic pass.
        """,
    )

    reconcile_grace = Integer(
        0,
        config=True,
        help="""Seconds a fresh reservation is left alone by reconcile (a spawn in progress).

        Default: twice start_timeout, at least 120.
        """,
    )

    home_root = Unicode(
        "slicehub-homes",
        config=True,
        help="""Directory under which demo users get their home (run_as = "hub-user").

        Default: "slicehub-homes", relative to the hub's working directory. Unused when the site
        runs servers as the users' own Unix accounts.
        """,
    )

    _reconcile_task: asyncio.Task | None = None
    # True where a start with no slice free waits in a queue (Slurm) instead of being refused
    queues_when_full = False

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return _apply_slice_options

    @default("options_from_form")
    def _default_options_from_form(self):
        return options_from_form

    @default("options_form")
    def _default_options_form(self):
        return self._render_options_form

    # -- the site and its slices -----------------------------------------------------------

    @property
    def slices(self) -> SliceManager:
        if not self.site_file:
            raise web.HTTPError(500, "Slicehub is not configured: no site file (SLICEHUB_SITE).")
        manager = SliceManager.for_site(self.site_file, self.database_url)
        self._ensure_reconcile(manager)
        _join_hub_log(self.log)
        return manager

    @property
    def site(self) -> Site:
        return self.slices.site

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

    slice_options: SliceOptions | None = None
    assignment: Assignment | None = None
    session_end = None
    ledger_session: dict | None = None  # the quota service's view of this start's hold
    server_ended_at: datetime | None = None  # when the server stopped, if a spawner knows
    _slice_progress: tuple | list = ()  # this start's progress events, for progress()

    @property
    def quota(self) -> QuotaClient | None:
        if not self.quota_url:
            return None
        return self.quota_client_class(self.quota_url, self.quota_token, self.quota_timeout)

    async def _project_for(self, options: SliceOptions) -> str:
        if options.project:
            return options.project
        projects = await self.quota.projects(self.user.name)
        if len(projects) == 1:
            return projects[0]["project"]
        if not projects:
            raise web.HTTPError(
                403,
                f"{self.user.name} is not a member of any project, so no session can be paid "
                "for. Ask your PI or the centre's staff to add you.",
            )
        names = ", ".join(p["project"] for p in projects)
        raise web.HTTPError(400, f"Choose the project to charge (project): one of {names}.")

    def check_options(self, user_options) -> SliceOptions:
        try:
            return validate_options(user_options, self.site)
        except OptionsError as e:
            raise web.HTTPError(400, str(e)) from None

    async def offer(self) -> tuple[list[Availability], bool]:
        """Per offered slice type, how many are free now and in all (None: not known right now),
        and whether the devices are declared rather than real. The form shows these."""
        manager = self.slices
        return manager.availability(), manager.inventory.declared

    async def _render_options_form(self, spawner=None):
        site = self.site
        availability, declared = await self.offer()
        previous = (self.orm_spawner.user_options or {}) if self.orm_spawner else {}
        rows = {
            av.slice_type.name: {
                "description": av.slice_type.description,
                "cpus": av.slice_type.cpus,
                "memory": human_bytes(av.slice_type.memory_bytes),
                "gpu_memory": human_bytes(av.slice_type.gpu_memory_bytes)
                if av.slice_type.shape.kind != "cpu"
                else "—",
                "declared": av.slice_type.shape.kind != "cpu" and declared,
            }
            for av in availability
        }
        projects, quota_problem = [], None
        if self.quota is not None:
            try:
                projects = await self.quota.projects(self.user.name)
            except web.HTTPError as e:
                quota_problem = e.log_message
            if not projects and not quota_problem:
                quota_problem = (
                    "You are not a member of any project yet, so no session can be paid for. "
                    "Ask your PI or the centre's staff to add you."
                )
        else:  # no ledger (tests of the allocator alone): list prices only
            projects = [_NO_LEDGER]
        offers = form_offer.offer(projects, availability, self.queues_when_full, clock.utcnow())
        limits = site.sessions
        ids = [o.id for o in offers]
        selected_project = previous.get("project")
        if selected_project not in ids:
            selected_project = ids[0] if ids else None
        template = _form_template(self.options_form_template)
        return template.render(
            offers=offers,
            rows=rows,
            ledger=self.quota is not None,
            selected_project=selected_project,
            selected=previous.get("slice_type"),
            quota_problem=quota_problem,
            declared=declared,
            min_hours=limits.min_minutes / 60,
            max_hours=limits.max_minutes / 60,
            min_words=duration_words(limits.min_minutes),
            max_words=duration_words(limits.max_minutes),
            # quarter hours, unless the site allows lengths that are not (a test's 1 minute)
            duration_step="0.25" if limits.min_minutes % 15 == 0 else "any",
            default_hours=float(previous.get("duration_hours", limits.default_minutes / 60)),
        )

    # -- lifecycle -----------------------------------------------------------------------

    def _progress_event(self, progress: int, message: str) -> None:
        self._slice_progress.append({"progress": progress, "message": message})

    async def hold_budget(self, deferred: bool = False) -> SliceOptions:
        """Validate again (REST and reused options skip the form), then hold the session's cost
        in the ledger (when there is one). Refusals are HTTP errors with a sentence.
        `deferred`: the server waits in a batch queue first; metering starts with
        `begin_metering`, so the queue is not charged."""
        self._slice_progress = []
        self.server_ended_at = None
        options = self.check_options(self.user_options)
        self.slice_options = options
        self.session_end = clock.utcnow() + timedelta(minutes=options.duration_minutes)
        st = options.slice_type
        await self._release_hold()  # a hold left by a server that died unnoticed
        if self.quota is not None:
            project = await self._project_for(options)
            self._progress_event(5, f"Holding the cost of {st.name} for project {project}")
            hold = (project, self.user.name, self.name, st.name, options.duration_minutes, deferred)
            try:
                self.ledger_session = await self.quota.hold(*hold)
            except web.HTTPError as e:
                # a hold from an earlier start whose answer never arrived: release it, once
                if e.status_code != 409 or not await self.quota.release_stale(
                    self.user.name, self.name
                ):
                    raise
                self.ledger_session = await self.quota.hold(*hold)
            self.session_end = datetime.fromisoformat(self.ledger_session["end_at"])
            self._progress_event(
                10,
                f"Held {format_money(self.ledger_session['hold_list_cents'])} at list price "
                f"for project {project}; the session ends at {self.session_end:%H:%M} UTC",
            )
        return options

    async def reserve_slice(self) -> Assignment:
        """Hold the cost (`hold_budget`), then take a slice from the local allocator."""
        options = await self.hold_budget()
        st = options.slice_type
        self._progress_event(15, f"Reserving a {st.name} slice")
        try:
            assignment = await self.slices.reserve(self.holder, st, self.session_end)
        except NoSliceFree as e:
            await self._release_hold()
            raise web.HTTPError(409, str(e)) from None
        except BaseException:
            await self._release_hold()
            raise
        self.assignment = assignment
        where = assignment.node
        if assignment.devices:
            where += (
                f" ({', '.join(assignment.devices)}{', declared' if assignment.declared else ''})"
            )
        self._progress_event(30, f"Reserved {st.name} on {where}")
        return assignment

    async def release_slice(self) -> None:
        self.assignment = None
        await self.free_slice()
        await self._release_hold()

    async def free_slice(self) -> None:
        """Give back the slice itself (the hold is released by `release_slice`)."""
        await self.slices.release(self.holder)

    def holds_slice(self) -> bool:
        """Whether a slice is still held for this server (after a hub restart: from the store)."""
        return self.slices.adopt(self.holder) is not None

    async def begin_metering(self) -> None:
        """A deferred hold's server has started: metering starts now, for the length held; the
        session's end moves with it."""
        held = self.ledger_session
        if not held or self.quota is None or held.get("begun", True):
            return
        begun = await self.quota.begin(held["id"])
        self.ledger_session = {**held, **begun}
        self.session_end = datetime.fromisoformat(begun["end_at"])

    async def _release_hold(self) -> None:
        held, self.ledger_session = self.ledger_session, None
        if held and self.quota is not None:
            try:
                await self.quota.release(held["id"], self.server_ended_at)
                self.log.info("Released ledger session %s of %s", held["id"], self.holder)
            except Exception:
                self.log.exception(
                    "Could not release ledger session %s of %s; the quota "
                    "service closes it when the session ends",
                    held["id"],
                    self.holder,
                )

    def slice_env(self) -> dict[str, str]:
        a, opts = self.assignment, self.slice_options
        if a is None or opts is None:
            return {}
        st = opts.slice_type
        return {
            # an empty CUDA_VISIBLE_DEVICES hides every GPU: right for a CPU slice
            "CUDA_VISIBLE_DEVICES": ",".join(a.devices),
            "SLICEHUB_SLICE_TYPE": st.name,
            "SLICEHUB_GPU_MEMORY_BYTES": str(st.gpu_memory_bytes),
            "SLICEHUB_SESSION_END": clock.isoformat(self.session_end),
            "SLICEHUB_NODE": a.node,
            "SLICEHUB_CPUS": str(st.cpus),
            "SLICEHUB_MEMORY_BYTES": str(st.memory_bytes),
            "SLICEHUB_DEVICES_DECLARED": "1" if a.declared and a.devices else "0",
            **self.ledger_env(),
        }

    def ledger_env(self) -> dict[str, str]:
        """Where the server's session stands in the ledger, for its kernels."""
        held = self.ledger_session or {}
        return {
            "SLICEHUB_PROJECT": held.get("project", ""),
            "SLICEHUB_LEDGER_SESSION": str(held.get("id", "")),
            "SLICEHUB_QUOTA_URL": (self.server_quota_url or self.quota_url) if held else "",
        }

    async def poll(self):
        """As the spawner below polls; when the server is found gone outside a start or stop
        (a crash, a kill behind the hub's back), release its slice and hold at once: JupyterHub
        does not call stop() for a server that is already dead."""
        status = await super().poll()
        if status is not None and not (self._spawn_pending or self._start_pending):
            if self.ledger_session or self.holds_slice():
                self.log.warning(
                    "%s is gone (exit status %s); releasing its slice and hold", self.holder, status
                )
                await self.release_slice()
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
        state = super().get_state()
        if self.assignment is not None and self.slice_options is not None:
            state["slicehub"] = {
                "version": STATE_VERSION,
                "assignment": self.assignment.to_dict(),
                "options": self.slice_options.to_user_options(),
                "session_end": clock.isoformat(self.session_end),
                "ledger_session": self.ledger_session,
            }
        return state

    def saved_state(self, state: dict, key: str, version: int, what: str) -> dict | None:
        """The part of the spawner's state saved under `key` (None: nothing saved). One saved
        by another version of the hub is read as far as it goes, and the log says so."""
        saved = state.get(key)
        if saved and saved.get("version") != version:
            self.log.warning(
                "Spawner state of %s has %s version %s (this hub writes %s); reading what it can",
                self.holder,
                what,
                saved.get("version"),
                version,
            )
        return saved or None

    def load_state(self, state):
        super().load_state(state)
        saved = self.saved_state(state, "slicehub", STATE_VERSION, "Slicehub")
        if not saved:
            return
        try:
            self.assignment = Assignment.from_dict(saved["assignment"])
            self.slice_options = validate_options(saved["options"], self.slices.site)
            self.session_end = datetime.fromisoformat(saved["session_end"])
            self.ledger_session = saved.get("ledger_session")
        except (KeyError, ValueError, TypeError) as e:
            self.log.error("Could not read the Slicehub state of %s: %s", self.holder, e)
            return
        held = self.slices.adopt(self.holder)
        if held is None:
            self.log.warning("%s has no stored reservation for its running server", self.holder)
        elif held != self.assignment:
            self.log.warning(
                "%s: spawner state and reservation differ; the reservation wins", self.holder
            )
            self.assignment = held

    def clear_state(self):
        super().clear_state()
        self.assignment = None
        self.slice_options = None
        self.session_end = None
        # ledger_session survives: LocalProcessSpawner.poll clears state as soon as the process
        # is gone (a crash, or during stop), and the hold must still be released afterwards

    # -- reconcile -------------------------------------------------------------------------

    def _ensure_reconcile(self, manager: SliceManager) -> None:
        cls = SliceSpawnerMixin
        if self.reconcile_interval <= 0:
            return
        task = cls._reconcile_task
        if task is not None and not task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        cls._reconcile_task = loop.create_task(self._reconcile_loop(manager))

    def _live_holders(self) -> set[str]:
        """Servers the hub records as running, plus spawns in flight in this process."""
        db = self.user.db
        live = set()
        for sp in db.query(orm.Spawner).filter(orm.Spawner.server_id.isnot(None)):
            live.add(f"{sp.user.name}/{sp.name}")
        users = self.user.settings.get("users") or {}
        for user in list(getattr(users, "values", dict)()):
            for name, sp in user.spawners.items():
                if sp.pending or sp.active:
                    live.add(f"{user.name}/{name}")
        return live

    async def _reconcile_loop(self, manager: SliceManager) -> None:
        grace = self.reconcile_grace or max(2 * self.start_timeout, 120)
        while True:
            await asyncio.sleep(self.reconcile_interval)
            try:
                await manager.reconcile(self._live_holders(), timedelta(seconds=grace))
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("Slice reconcile pass failed; trying again next interval")
