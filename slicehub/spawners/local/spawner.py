"""LocalSliceSpawner: the embedded default. One machine, one process per server, each on a slice.

It is JupyterHub's LocalProcessSpawner with a slice: a reservation before the process starts,
the slice in the environment, CPU pinning and a memory limit where the machine allows, and the
reservation released when the server stops or fails to start. The site file decides whether
servers run as the users' own Unix accounts (`run_as = "unix-users"`) or, for a demo, as the
hub's own user with a home under `home_root`.
"""

from __future__ import annotations

import os
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner

from ..slicing import SliceSpawnerMixin
from . import limits


class LocalSliceSpawner(SliceSpawnerMixin, LocalProcessSpawner):
    _cgroup: Path | None = None

    def make_preexec_fn(self, name):
        if self.runs_as_hub_user:
            home = self.home_dir

            def enter_home():
                os.makedirs(home, 0o700, exist_ok=True)
                os.chdir(home)

            then = enter_home
        else:
            then = super().make_preexec_fn(name)
        a = self.assignment
        cpus = limits.pin_cpus(a.cpu_ids, os.sched_getaffinity(0)) if a else None
        return limits.make_preexec(cpus, self._cgroup, then)

    def get_env(self):
        env = super().get_env()
        env.update(self.slice_env())
        return env

    async def move_certs(self, paths):
        if self.runs_as_hub_user:
            return paths
        return await super().move_certs(paths)

    async def start(self):
        assignment = await self.reserve_slice()
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
            if assignment.cpu_ids and not set(assignment.cpu_ids) <= real:
                self.log.info(
                    "%s: declared CPUs %s folded onto this machine's %d CPUs",
                    self.holder,
                    list(assignment.cpu_ids),
                    len(real),
                )
            self._progress_event(50, "Starting the notebook server on its slice")
            address = await super().start()
            self._progress_event(70, "Server process started; waiting for it to answer")
            return address
        except BaseException:
            await self.release_slice()
            limits.remove_cgroup(self._cgroup)
            raise

    async def stop(self, now=False):
        try:
            await super().stop(now=now)
        finally:
            await self.release_slice()
            limits.remove_cgroup(self._cgroup)
            self._cgroup = None
