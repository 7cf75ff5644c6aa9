"""Class windows as Slurm advance reservations, kept in step with the ledger's windows.

Each tick the classroom service hands the windows of pre-warming courses that start within the
plan's horizon (a week); for each, the reservation ``slicehub-<course>-<window id>`` is made if
missing (on the nodes `slicehub.spawners.slurm.reservation.plan_reservation` chooses, from the
window's pre-warm lead to its end, for the course's students and its Slurm account), its users
follow the roster, and a reservation of Slicehub's whose window is no longer in the plan and
has not started is removed (Slurm removes ended ones itself). A window the cluster cannot hold
is logged once, as an error with the numbers: staff were told at creation
(`slicehub admin course window` refuses it), this says it again if the cluster shrank since.

The service runs scontrol as the hub's account, which must be a Slurm operator (docs/slurm.md).
Decides nothing about money; which nodes is the planner's, what a reservation admits is Slurm's.
"""

from __future__ import annotations

import logging
import os
import pwd
from collections.abc import Iterable
from datetime import datetime

from slicehub.spawners.class_window import ClassWindowNeed, ClassWindowRefused
from slicehub.spawners.site_model import Site
from slicehub.spawners.slurm import reservation as rv
from slicehub.spawners.slurm.client import SlurmClient

from .plan import ClassWindow

log = logging.getLogger("slicehub.classroom")


class ClassReservations:
    """The reservations of the class windows of `site` (a Slurm site), through `client`."""

    def __init__(self, site: Site, client: SlurmClient):
        if site.slurm is None:
            raise ValueError("class reservations need a Slurm site")
        self.site = site
        self.slurm = site.slurm
        self.client = client
        self._said: set[tuple[str, int, str]] = set()  # refusals logged once each

    async def sync(self, windows: Iterable[ClassWindow], now: datetime) -> None:
        shown = await self.client.reservations(max_age=0)
        nodes = await self.client.nodes(max_age=0)
        if shown is None or nodes is None:
            return  # scontrol or sinfo did not answer: the next tick tries again
        ours = {r.window: r for r in shown if r.window is not None}
        wanted = set()
        for w in windows:
            key = (w.course, w.window)
            wanted.add(key)
            users = self._job_users(w)
            if not users:
                continue
            existing = ours.get(key)
            if existing is None:
                await self._create(w, users, nodes, shown, now)
            elif set(existing.users) != set(users) and existing.end.astimezone() > now:
                argv = rv.update_reservation_argv(existing.name, users=users, **self._exe)
                await self._scontrol("update", existing.name, w, argv)
        for key, r in ours.items():
            if key not in wanted and r.start.astimezone() > now:
                argv = rv.delete_reservation_argv(r.name, **self._exe)
                await self._scontrol("delete", r.name, None, argv)

    @property
    def _exe(self) -> dict:
        return {"executable": self.client.command("scontrol")}

    async def _create(self, w: ClassWindow, users, nodes, shown, now: datetime) -> None:
        slice_type = self.site.slice_types.get(w.slice_type)
        where = self.slurm.slice_types.get(w.slice_type)
        if slice_type is None or where is None:
            self._once(w, "type", f"slice type {w.slice_type} is not offered on this cluster")
            return
        try:
            need = ClassWindowNeed(
                w.course, w.window, w.prewarm_from, w.ends_at, slice_type, len(w.students)
            )
            plan = rv.plan_reservation(need, where, nodes, shown)
        except ClassWindowRefused as e:
            self._once(w, "seats", str(e))
            return
        account = self.slurm.account_for(w.course)
        argv = rv.create_reservation_argv(
            plan.name,
            starts_at=max(w.prewarm_from, now),
            ends_at=w.ends_at,
            nodes=plan.nodes,
            users=users,
            accounts=[account] if account else [],
            **self._exe,
        )
        if await self._scontrol("create", plan.name, w, argv):
            log.info(
                "Reserved %s for class window %s of %s (%d seats) until %s",
                ",".join(plan.nodes),
                w.window,
                w.course,
                len(w.students),
                w.ends_at.isoformat(),
            )

    async def _scontrol(self, action: str, name: str, w: ClassWindow | None, argv) -> bool:
        done = await self.client.run(argv)
        if done.ok:
            return True
        sentence = rv.scontrol_refusal(action, name, done.stdout + done.stderr)
        if w is not None:
            self._once(w, action, sentence)
        else:
            log.warning("%s", sentence)
        return False

    def _job_users(self, w: ClassWindow) -> list[str]:
        """Whom the reservation admits: the Unix accounts the class's jobs run as. The
        window's students who have one (scontrol refuses a reservation naming an unknown user,
        which would leave the whole class without one); on a site whose servers run as the
        hub's own account (run_as = "hub-user", demos and tests), that account, with the
        course's Slurm account narrowing it to the class's jobs."""
        if self.site.run_as == "hub-user":
            return [pwd.getpwuid(os.getuid()).pw_name]
        found = []
        for name in w.students:
            try:
                pwd.getpwnam(name)
            except KeyError:
                self._once(w, f"user:{name}", f"student {name} has no Unix account on this host")
                continue
            found.append(name)
        return found

    def _once(self, w: ClassWindow, what: str, sentence: str) -> None:
        key = (w.course, w.window, what)
        if key not in self._said:
            self._said.add(key)
            log.error("Class window %s of %s cannot be reserved: %s", w.window, w.course, sentence)
