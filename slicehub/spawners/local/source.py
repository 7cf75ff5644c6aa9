"""The local allocator as a slice source: one machine, or a fleet a site file declares.

A slice is taken before the server's process starts (`SliceManager.reserve`: decided before
the first await, then made durable), given back when it stops, and found again after a hub
restart from the reservation store, which wins over what a spawner state says. A reconcile pass
frees reservations no live server holds (a crash between reserving and the hub recording the
server, an operator's `kill -9`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from ..site_model import SliceType
from ..source import Offer, TakenSlice
from .allocator import Assignment
from .manager import SliceManager

log = logging.getLogger("slicehub.slices")


def taken_of(a: Assignment) -> TakenSlice:
    return TakenSlice(a.node, a.devices, a.declared and bool(a.devices), a.cpu_ids)


class LocalSlices:
    """A `SliceSource` over one SliceManager (one per hub process, site file and database)."""

    reserves = True
    _instances: dict[tuple[str, str], LocalSlices] = {}

    def __init__(self, manager: SliceManager):
        self.manager = manager
        self.site = manager.site
        self._reconcile: asyncio.Task | None = None

    @classmethod
    def for_site(cls, site_file: str, database_url: str) -> LocalSlices:
        """The process-wide source for this site file and database (created on first use)."""
        key = (str(site_file), database_url)
        if key not in cls._instances:
            cls._instances[key] = cls(SliceManager.for_site(site_file, database_url))
        return cls._instances[key]

    async def offer(self) -> Offer:
        return Offer(self.manager.availability(), self.manager.inventory.declared, False)

    def admit(self, project: str) -> None:
        """Every project may run on this machine: the ledger decides what it may pay for."""

    async def take(self, holder: str, slice_type: SliceType, session_end: datetime) -> TakenSlice:
        return taken_of(await self.manager.reserve(holder, slice_type, session_end))

    async def give_back(self, holder: str) -> None:
        await self.manager.release(holder)

    def holds(self, holder: str) -> bool:
        return self.manager.adopt(holder) is not None

    def recover(self, holder: str, saved: TakenSlice | None) -> TakenSlice | None:
        held = self.manager.adopt(holder)
        if held is None:
            log.warning("%s has no stored reservation for its running server", holder)
            return saved
        taken = taken_of(held)
        if saved is not None and saved != taken:
            log.warning("%s: spawner state and reservation differ; the reservation wins", holder)
        return taken

    # -- reconcile -------------------------------------------------------------------------

    def keep_reconciling(
        self, live_holders: Callable[[], set[str]], interval: float, grace: timedelta
    ) -> None:
        """Every `interval` seconds, free reservations no live server holds (0: never). One
        loop per source; started from the hub's event loop on first use."""
        if interval <= 0 or (self._reconcile is not None and not self._reconcile.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._reconcile = loop.create_task(self._reconcile_loop(live_holders, interval, grace))

    async def _reconcile_loop(self, live_holders, interval: float, grace: timedelta) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.manager.reconcile(live_holders(), grace)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Slice reconcile pass failed; trying again next interval")
