"""The slice manager: one per hub process, shared by every spawner of that hub.

It joins the site (what is offered), the allocator (what is free) and the reservation store
(what is durably held). Deciding and taking a slice happens without awaiting, so two spawns on
the hub's event loop can never both take the same device; writing the reservation then runs in
a single database thread, off the loop. If that write fails the in-memory hold is undone.

It also reconciles: reservations whose holder the hub no longer runs (a crash between
reserving and the hub recording the server, an operator's `kill -9`) are released.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from slicehub.common import clock

from ..site_model import SiteError, SliceType
from ..source import Availability, NoSliceFree
from . import nvml
from .allocator import AllocationConflict, Allocator, Assignment, SliceRequest
from .inventory import Inventory, Node
from .reservations import ReservationStore
from .site import LocalSite, can_ever_run, load_local_site

log = logging.getLogger("slicehub.slices")


def request_for(slice_type: SliceType) -> SliceRequest:
    return SliceRequest(slice_type.shape, slice_type.cpus, slice_type.memory_bytes)


def resolve_inventory(site: LocalSite, discover=nvml.discover) -> Inventory:
    """The inventory the site file asks for: declared, discovered through NVML, or (auto)
    discovered where a GPU answers and declared otherwise."""
    if site.inventory_source == "declared":
        return site.inventory()
    node_name = site.nodes[0].name if site.nodes else "localhost"
    found: Node | None = discover(node_name)
    if found is None or not found.gpus:
        if site.inventory_source == "nvml":
            raise SiteError(
                site.path,
                "site.inventory",
                "is nvml but NVML found no usable GPU",
                'use inventory = "auto" or "declared" on machines without GPUs',
            )
        log.info("No GPU found through NVML; using the devices declared in %s", site.path)
        return site.inventory()
    inventory = Inventory((found,))
    for name, st in site.slice_types.items():
        if not can_ever_run(st.shape, inventory.nodes):
            raise SiteError(
                site.path,
                f'slice_types."{name}"',
                "the GPUs NVML found cannot provide it",
                "remove it, or change the GPUs' MIG layout",
            )
    return inventory


class SliceManager:
    _instances: dict[tuple[str, str], SliceManager] = {}

    def __init__(self, site: LocalSite, database_url: str, inventory: Inventory | None = None):
        self.site = site
        self.inventory = inventory if inventory is not None else resolve_inventory(site)
        self.allocator = Allocator(self.inventory)
        self.store = ReservationStore(database_url)
        self.store.upgrade()
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slicehub-db")
        self._created: dict[str, datetime] = {}
        self._capacity = {
            st: self.allocator.capacity(request_for(st)) for st in site.slice_types.values()
        }
        self._availability: tuple[int, list[Availability]] | None = None
        for stored in self.store.all():
            try:
                self.allocator.hold(stored.holder, stored.assignment)
                self._created[stored.holder] = stored.created_at
            except (AllocationConflict, KeyError) as e:
                log.error(
                    "Stored reservation of %s (%s) does not match the inventory any more (%s); "
                    "it stays in the database until its server stops",
                    stored.holder,
                    stored.assignment.slice_type,
                    e,
                )

    @classmethod
    def for_site(cls, site_file: str, database_url: str) -> SliceManager:
        """The process-wide manager for this site file and database (created on first use)."""
        key = (str(site_file), database_url)
        if key not in cls._instances:
            cls._instances[key] = cls(load_local_site(site_file), database_url)
        return cls._instances[key]

    @classmethod
    def forget_all(cls) -> None:
        for m in cls._instances.values():
            m.close()
        cls._instances.clear()

    def close(self) -> None:
        self._db.shutdown(wait=True)
        self.store.dispose()

    async def _in_db(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    # -- what users see ------------------------------------------------------------------

    def availability(self) -> list[Availability]:
        """Free and total counts per offered type; free counts are recomputed only after a
        hold or a release, totals never (the inventory does not change while the hub runs)."""
        version = self.allocator.version
        if self._availability is None or self._availability[0] != version:
            rows = [
                Availability(st, self.allocator.free_count(request_for(st)), capacity)
                for st, capacity in self._capacity.items()
            ]
            self._availability = (version, rows)
        return self._availability[1]

    # -- holding -------------------------------------------------------------------------

    async def reserve(
        self, holder: str, slice_type: SliceType, session_end: datetime
    ) -> Assignment:
        """Take a slice for `holder` (decided and held before the first await)."""
        existing = self.allocator.held_by(holder)
        if existing is not None:
            log.warning("%s already held %s; releasing it before a new start", holder, existing)
            await self.release(holder)
        req = request_for(slice_type)
        assignment = self.allocator.place(req)
        if assignment is None:
            raise NoSliceFree(self._why_none(slice_type))
        self.allocator.hold(holder, assignment)
        now = clock.utcnow()
        self._created[holder] = now
        try:
            await self._in_db(self.store.add, holder, assignment, now, session_end)
        except BaseException:
            self.allocator.release(holder)
            self._created.pop(holder, None)
            raise
        log.info(
            "Reserved %s for %s on %s: %s%s",
            slice_type.name,
            holder,
            assignment.node,
            ",".join(assignment.devices) or "no GPU",
            " (declared devices)" if assignment.declared and assignment.devices else "",
        )
        return assignment

    def _why_none(self, st: SliceType) -> str:
        capacity = self._capacity[st]
        if capacity == 0:
            return f"This site has no hardware for a {st.name} slice right now."
        return (
            f"No {st.name} slice is free right now: all {capacity} are in use. "
            "Choose another slice type or try again later."
        )

    async def release(self, holder: str) -> Assignment | None:
        """Give back `holder`'s slice; safe to call twice or for a holder with nothing."""
        released = self.allocator.release(holder)
        self._created.pop(holder, None)
        removed = await self._in_db(self.store.remove, holder)
        if released is not None or removed:
            log.info("Released the slice of %s", holder)
        return released

    def adopt(self, holder: str) -> Assignment | None:
        """What `holder` holds (after a hub restart the reservation comes from the database)."""
        return self.allocator.held_by(holder)

    async def reconcile(self, live_holders: Iterable[str], grace: timedelta) -> list[str]:
        """Release reservations no live server holds, except ones younger than `grace`
        (a spawn may be between reserving and the hub recording it). Returns the holders freed."""
        live = set(live_holders)
        cutoff = clock.utcnow() - grace
        stored = await self._in_db(self.store.all)
        created = {r.holder: r.created_at for r in stored} | self._created
        # the database's rows count too: one that could not be re-held at start-up is an orphan
        holders = set(self.allocator.holders) | set(created)
        orphans = sorted(h for h in holders if h not in live and created.get(h, cutoff) <= cutoff)
        for holder in orphans:
            log.warning("Reconcile: no live server holds the slice of %s; releasing it", holder)
            await self.release(holder)
        return orphans
