"""LocalSliceSpawner: the embedded default. One machine, one process per server, each on a slice.

It is JupyterHub's LocalProcessSpawner with a slice: the ledger's hold and a slice from the
local allocator (`LocalSlices`) before the process starts, the slice in the environment, CPU
pinning and a memory limit where the machine allows, and both given back when the server stops,
crashes or fails to start. The site file decides whether servers run as the users' own Unix
accounts (`run_as = "unix-users"`) or, for a demo, as the hub's own user with a home under
`home_root`.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from jupyterhub import orm
from jupyterhub.spawner import LocalProcessSpawner
from tornado import web
from traitlets import Integer, Unicode, default

from slicehub.settings import Settings

from ..mixin import SliceSpawnerMixin, join_hub_log
from . import limits
from .ports import server_port
from .source import LocalSlices


class LocalSliceSpawner(SliceSpawnerMixin, LocalProcessSpawner):
    database_url = Unicode(
        config=True,
        help="""SQLAlchemy URL of the database that holds this hub's slice reservations.

        Default: slicehub.settings.Settings.slices_url ($SLICEHUB_SLICES_URL, else SQLite
        slicehub.sqlite in the data directory).
        Example: "postgresql+psycopg://slicehub@db/slicehub".
        """,
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

    @default("database_url")
    def _database_url_default(self):
        return Settings().slices_url

    _cgroup: Path | None = None

    @property
    def slice_source(self) -> LocalSlices:
        if not self.site_file:
            raise web.HTTPError(500, "Slicehub is not configured: no site file (SLICEHUB_SITE).")
        source = LocalSlices.for_site(self.site_file, self.database_url)
        join_hub_log(self.log)
        grace = self.reconcile_grace or max(2 * self.start_timeout, 120)
        source.keep_reconciling(
            self._live_holders, self.reconcile_interval, timedelta(seconds=grace)
        )
        return source

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

    def make_preexec_fn(self, name):
        if self.runs_as_hub_user:
            home = self.home_dir

            def enter_home():
                os.makedirs(home, 0o700, exist_ok=True)
                os.chdir(home)

            then = enter_home
        else:
            then = super().make_preexec_fn(name)
        taken = self.taken
        cpus = limits.pin_cpus(taken.cpu_ids, os.sched_getaffinity(0)) if taken else None
        return limits.make_preexec(cpus, self._cgroup, then)

    async def move_certs(self, paths):
        if self.runs_as_hub_user:
            return paths
        return await super().move_certs(paths)

    # ports this hub gave to its local servers that have not stopped (one hub process)
    _ports_given: set[int] = set()
    _picked_port = 0

    def _pick_port(self) -> None:
        """A port no kernel's or Dask's port-0 bind can take before the server binds it
        (.ports); a fresh one at each start, unless an admin set one (Spawner.port)."""
        if self.port in (0, self._picked_port):
            LocalSliceSpawner._ports_given.discard(self._picked_port)
            self.port = self._picked_port = server_port(self.ip, LocalSliceSpawner._ports_given)
            LocalSliceSpawner._ports_given.add(self.port)

    async def start(self):
        taken = await self.take_slice()
        st = self.slice_options.slice_type
        self.mem_limit = st.memory_bytes
        self.cpu_limit = float(st.cpus)
        try:
            self._cgroup = limits.memory_cgroup(
                f"{self.user.name}-{self.name or 'default'}", st.memory_bytes
            )
            if self._cgroup is None:
                self.log.info(
                    "No memory cgroup for %s: this machine does not let the hub create "
                    "one; MEM_LIMIT is still set for the server",
                    self.holder,
                )
            real = os.sched_getaffinity(0)
            if taken.cpu_ids and not set(taken.cpu_ids) <= real:
                self.log.info(
                    "%s: declared CPUs %s folded onto this machine's %d CPUs",
                    self.holder,
                    list(taken.cpu_ids),
                    len(real),
                )
            self._progress_event(50, "Starting the notebook server on its slice")
            self._pick_port()
            address = await super().start()
            self._progress_event(70, "Server process started; waiting for it to answer")
            return address
        except BaseException:
            await self.start_failed()
            limits.remove_cgroup(self._cgroup)
            raise

    async def stop(self, now=False):
        try:
            await super().stop(now=now)
        finally:
            LocalSliceSpawner._ports_given.discard(self._picked_port)
            await self.release_slice("stopped")
            limits.remove_cgroup(self._cgroup)
            self._cgroup = None
